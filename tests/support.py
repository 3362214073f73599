"""Test support: a real control plane server on loopback, run on its own event-loop thread."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from controlplane.serve.config import Config
from controlplane.serve.server import BoundPorts, ControlPlaneServer
from services.shared_data import shared_data_dir
from telemetry import ModelConfig

REPO = Path(__file__).resolve().parent.parent
EXAMPLE_PLUGIN = REPO / "examples" / "plugin"
SHARED_DATA = shared_data_dir()


@dataclass
class RunningServer:
    server: ControlPlaneServer
    ports: BoundPorts
    loop: asyncio.AbstractEventLoop

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.ports.otlp_grpc}"

    @property
    def api_target(self) -> str:
        return f"127.0.0.1:{self.ports.api}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.otlp_http}/v1/traces"

    def call(self, function: Callable[[], Any]) -> Any:
        """Run `function` on the server loop (the only thread that may touch the model); return its result."""

        async def run() -> Any:
            return function()

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(timeout=30)


@contextlib.contextmanager
def running_server(
    model: ModelConfig | None = None,
    config_sections: dict[str, Any] | None = None,
    server_parts: dict[str, Any] | None = None,
    **server_settings: Any,
) -> Iterator[RunningServer]:
    """A ControlPlaneServer on 127.0.0.1 ephemeral ports with its own decision store, stopped on exit.

    `config_sections` sets other Config fields (guardrails, controllers); `server_parts` (actuator,
    registry) go to the server.
    """
    store_dir = tempfile.mkdtemp(prefix="controlplane-test-")
    settings = {
        "otlp_grpc": "127.0.0.1:0",
        "otlp_http": "127.0.0.1:0",
        "api": "127.0.0.1:0",
        "decision_store": os.path.join(store_dir, "decisions.db"),
        **server_settings,
    }
    config = Config(model=model or ModelConfig(), **(config_sections or {})).with_server(**settings)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="control-plane", daemon=True)
    thread.start()
    server = ControlPlaneServer(config, **(server_parts or {}))
    try:
        ports = asyncio.run_coroutine_threadsafe(server.start(), loop).result(timeout=30)
        yield RunningServer(server, ports, loop)
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(0), loop).result(timeout=30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()
        shutil.rmtree(store_dir, ignore_errors=True)


def pip_install_target(sources: list[Path], site: Path) -> None:
    """Install packages for real with pip into a --target directory (no network, no dependencies).

    Builds from copies: setuptools writes build/ and *.egg-info next to the sources it builds.
    """
    copies = []
    for source in sources:
        copy = site.parent / f"{source.name}-src"
        ignore = shutil.ignore_patterns("build", "*.egg-info")
        shutil.copytree(source, copy, ignore=ignore, dirs_exist_ok=True)
        copies.append(str(copy))
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps"]
        + ["--no-build-isolation", "--no-index", "--target", str(site), *copies],
        check=True,
        capture_output=True,
        timeout=120,
    )


# A three-service application and a short steady scenario over it (the scenario names the app file
# `tiny.toml` beside it): small enough to run live, as real processes, inside a test.
TINY_APP = """
name = "tiny"
slo_p99_ms = 50.0

[services.front]
service_time_ms = 1.0
concurrency = 16
startup_seconds = 0.5

[services.api]
service_time_ms = 2.0
concurrency = 4
startup_seconds = 1.5

[services.store]
service_time_ms = 1.0
concurrency = 4
startup_seconds = 0.5

[requests.read]
entry = "front"
operation = "GET /read"

[requests.read.calls]
front = [["api"]]
api = [["store"]]
"""

TINY_SCENARIO = """
name = "tiny-steady"
app = "tiny.toml"
duration_seconds = 6
warmup_seconds = 1

[workload]
mean_rps = 300

[cluster]
nodes = 1
"""


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """A throw-away (key, certificate) pair for 127.0.0.1 and localhost, made with the openssl tool."""
    key, cert = directory / "key.pem", directory / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert)]
        + ["-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return key, cert
