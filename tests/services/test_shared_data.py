"""The shared data directory is found beside a clone of the checkout that sits next to it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.support import REPO


def test_a_clone_elsewhere_finds_the_data_beside_its_origin(tmp_path: Path) -> None:
    origin = tmp_path / "work" / "checkout"
    data = tmp_path / "work" / "shared" / "data"
    data.mkdir(parents=True)
    # A checkout beside the data, holding only the module, and a clone of it somewhere else.
    module = origin / "services" / "shared_data.py"
    module.parent.mkdir(parents=True)
    module.write_text((REPO / "services" / "shared_data.py").read_text())
    (module.parent / "__init__.py").write_text("")
    for command in (
        ["init", "-q"],
        ["add", "."],
        ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x"],
    ):
        subprocess.run(["git", "-C", str(origin), *command], check=True)
    clone = tmp_path / "elsewhere" / "clone"
    subprocess.run(["git", "clone", "-q", str(origin), str(clone)], check=True)

    def found(checkout: Path, **environment: str) -> str:
        script = "from services.shared_data import shared_data_dir; print(shared_data_dir())"
        env = {"PATH": "/usr/bin:/bin", **environment}
        return subprocess.run(
            [sys.executable, "-c", script], cwd=checkout, env=env, capture_output=True, text=True, check=True
        ).stdout.strip()

    assert found(origin) == str(data)
    assert found(clone) == str(data)
    assert found(clone, CONTROLPLANE_SHARED_DATA="/somewhere/else") == "/somewhere/else"
