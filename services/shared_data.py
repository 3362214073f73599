"""Where the shared data sets live (request-rate traces, the Azure LLM trace, OTLP examples, vLLM metric
names), for the scenarios, the benchmarks and the tests alike.

`$CONTROLPLANE_SHARED_DATA` when set; else `shared/data` beside this checkout; else beside the local
checkout this one was cloned from, so that a throw-away clone (`git clone -q . /tmp/ci-N`) finds the data
its origin sits next to. When none exists, the path beside this checkout is returned, and whoever reads a
file from it reports that path as missing.
"""

from __future__ import annotations

import functools
import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
_RELATIVE = Path("shared") / "data"


def shared_data_dir() -> Path:
    """The shared data directory (see the module docstring for the order it is looked for in)."""
    configured = os.environ.get("CONTROLPLANE_SHARED_DATA")
    if configured:
        return Path(configured)
    beside = REPO.parent / _RELATIVE
    if beside.is_dir():
        return beside
    origin = _origin_checkout()
    if origin is not None and (origin.parent / _RELATIVE).is_dir():
        return origin.parent / _RELATIVE
    return beside


@functools.cache
def _origin_checkout() -> Path | None:
    """The checkout this one was cloned from, when that is a directory on this machine."""
    try:
        url = subprocess.run(
            ["git", "-C", str(REPO), "config", "--get", "remote.origin.url"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return None
    url = url.removeprefix("file://")
    if not url or "://" in url or (":" in url and not url.startswith("/")):
        return None  # a remote (https://, ssh://, host:path): no data beside it here
    path = (REPO / url).resolve()
    return path if path.is_dir() else None
