"""The committed generated code must be what `make protos` would produce from the .proto files now."""

import subprocess
import sys
from pathlib import Path

from tests.support import REPO

PROTO_DIR = REPO / "protos" / "controlplane" / "v1"


def test_committed_generated_code_is_fresh(tmp_path: Path) -> None:
    protos = sorted(PROTO_DIR.glob("*.proto"))
    assert protos, "no .proto sources found"
    relative = [str(path.relative_to(REPO)) for path in protos]
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            "-I.",
            f"--python_out={tmp_path}",
            f"--grpc_python_out={tmp_path}",
            f"--pyi_out={tmp_path}",
            *relative,
        ],
        cwd=REPO,
        check=True,
    )
    generated = sorted(path for path in tmp_path.rglob("*") if path.is_file())
    assert len(generated) == 3 * len(protos)
    for fresh in generated:
        committed = REPO / fresh.relative_to(tmp_path)
        assert committed.is_file(), f"{committed} is missing: run `make protos`"
        assert committed.read_bytes() == fresh.read_bytes(), f"{committed} is stale: run `make protos`"


def test_the_api_service_lives_in_package_controlplane_v1() -> None:
    from protos.controlplane.v1 import controlplane_pb2

    assert controlplane_pb2.DESCRIPTOR.package == "controlplane.v1"
    methods = {method.name for method in controlplane_pb2.DESCRIPTOR.services_by_name["ControlPlane"].methods}
    assert {"GetGraph", "GetServiceStats"} <= methods
