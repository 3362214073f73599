"""`controlplane serve` as a process with an installed plugin: CLI commands, TLS, kill -9 durability."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest

from bench.tracegen import TraceGenerator, layered_topology
from controlplane import free_port
from protos.controlplane.v1 import controlplane_pb2 as pb
from protos.controlplane.v1 import controlplane_pb2_grpc as pb_grpc
from telemetry.otlp_status import EXPORT_METHOD
from tests.support import EXAMPLE_PLUGIN, REPO, pip_install_target, self_signed_certificate

CLI = [sys.executable, "-m", "controlplane.serve"]
TOKEN = "operator-token"


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    site = tmp_path_factory.mktemp("serve") / "site"
    pip_install_target([EXAMPLE_PLUGIN], site)
    return site


def _config(tmp_path: Path, store: Path) -> Path:
    config = tmp_path / "controlplane.toml"
    config.write_text(
        f"""
[server]
decision_store = "{store}"
tick_seconds = 0.1
api_token = "{TOKEN}"

[model]
window_seconds = 10.0

[guardrails]
cooldown_seconds = 0.0

[controllers.error-budget-isolator]
mode = "active"
period_seconds = 0.1

[controllers.error-budget-isolator.params]
error_rate_threshold = 0.05
min_requests = 5
"""
    )
    return config


class Serve:
    """A `controlplane serve` subprocess with the example plugin on its path."""

    def __init__(self, config: Path, site: Path, *extra: str) -> None:
        self.port = free_port()
        self.target = f"127.0.0.1:{self.port}"
        self.env = {**os.environ, "PYTHONPATH": str(site)}
        self.process = subprocess.Popen(
            [
                *CLI,
                "serve",
                "--config",
                str(config),
                "--otlp-grpc",
                self.target,
                "--api",
                self.target,
                "--otlp-http",
                f"127.0.0.1:{free_port()}",
                *extra,
            ],
            cwd=REPO,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def wait_ready(self, channel: grpc.Channel) -> None:
        grpc.channel_ready_future(channel).result(timeout=30)

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [*CLI, *args, "--target", self.target],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=REPO,
            env=self.env,
        )

    def stop(self, sig: int = signal.SIGTERM) -> str:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        output, _ = self.process.communicate(timeout=30)
        return output


def _send_failing_traffic(channel: grpc.Channel, requests: int) -> None:
    generator = TraceGenerator(layered_topology(service_count=20, depth=4, seed=9), seed=9, error_ratio=0.5)
    export = channel.unary_unary(EXPORT_METHOD)
    for _ in range(requests):
        export(generator.request(min_traces=10).SerializeToString(), timeout=10)


def _applied(stub: pb_grpc.ControlPlaneStub) -> dict[int, pb.DecisionInfo]:
    found, token = {}, ""
    while True:
        page = stub.ListDecisions(
            pb.ListDecisionsRequest(status=pb.DECISION_STATUS_APPLIED, page_size=1000, page_token=token),
            timeout=10,
        )
        found.update({info.id: info for info in page.decisions})
        token = page.next_page_token
        if not token:
            return found


def test_kill_9_loses_no_decision_reported_applied(tmp_path: Path, plugin_site: Path) -> None:
    store = tmp_path / "decisions.db"
    config = _config(tmp_path, store)
    first = Serve(config, plugin_site)
    try:
        with grpc.insecure_channel(first.target) as channel:
            first.wait_ready(channel)
            stub = pb_grpc.ControlPlaneStub(channel)
            reported: dict[int, pb.DecisionInfo] = {}
            deadline = time.monotonic() + 30
            while len(reported) < 30 and time.monotonic() < deadline:
                _send_failing_traffic(channel, 2)
                reported = _applied(stub)
            # The loop keeps deciding while we read: kill it in the middle of its work.
            reported = _applied(stub)
            first.process.kill()
            first.process.wait(timeout=30)
    finally:
        first.stop()
    assert len(reported) >= 30, "the isolator should have armed breakers for the failing services"
    assert all(info.action_kind == "isolate" for info in reported.values())

    second = Serve(config, plugin_site)
    try:
        with grpc.insecure_channel(second.target) as channel:
            second.wait_ready(channel)
            after = _applied(pb_grpc.ControlPlaneStub(channel))
    finally:
        second.stop()
    missing = sorted(set(reported) - set(after))
    assert not missing, f"decisions reported applied were lost by kill -9: {missing[:10]}"
    for decision_id, info in reported.items():
        assert after[decision_id] == info


def test_cli_controllers_decisions_watch_and_mode(tmp_path: Path, plugin_site: Path) -> None:
    serve = Serve(_config(tmp_path, tmp_path / "decisions.db"), plugin_site)
    try:
        with grpc.insecure_channel(serve.target) as channel:
            serve.wait_ready(channel)
            _send_failing_traffic(channel, 3)
            time.sleep(0.5)
            _send_failing_traffic(channel, 1)

        listed = serve.cli("controllers", "--json")
        assert listed.returncode == 0, listed.stderr
        (controller,) = json.loads(listed.stdout)
        assert controller["name"] == "error-budget-isolator" and controller["mode"] == "active"
        assert controller["origin"].startswith(
            "entry point error-budget-isolator (controlplane-example-plugin"
        )
        assert controller["taxonomy"]["actions"] == ["isolation"]
        table = serve.cli("controllers")
        assert "error-budget-isolator" in table.stdout and "availability" in table.stdout

        decisions = serve.cli("decisions", "--json", "--status", "applied", "--limit", "5")
        assert decisions.returncode == 0, decisions.stderr
        page = json.loads(decisions.stdout)
        assert len(page["decisions"]) == 5 and page["next_page_token"]
        assert all(
            item["status"] == "applied" and item["action_kind"] == "isolate" for item in page["decisions"]
        )
        text = serve.cli("decisions", "--limit", "3")
        assert text.stdout.count("isolate(") == 3 and "error rate" in text.stdout
        bad = serve.cli("decisions", "--limit", "5000")
        assert bad.returncode == 1 and "INVALID_ARGUMENT" in bad.stderr and "page_size" in bad.stderr

        watch = subprocess.Popen(
            [*CLI, "decisions", "--watch", "--from-start", "--json", "--target", serve.target],
            cwd=REPO,
            env=serve.env,
            stdout=subprocess.PIPE,
            text=True,
        )
        lines = [json.loads(watch.stdout.readline()) for _ in range(10)]
        watch.kill()
        watch.wait(timeout=10)
        assert [line["id"] for line in lines] == list(range(1, 11))

        refused = serve.cli("mode", "error-budget-isolator", "shadow")
        assert refused.returncode == 1 and "UNAUTHENTICATED" in refused.stderr
        switched = serve.cli("mode", "error-budget-isolator", "shadow", "--token", TOKEN)
        assert switched.returncode == 0, switched.stderr
        assert switched.stdout.strip() == "error-budget-isolator: shadow"
        assert json.loads(serve.cli("controllers", "--json").stdout)[0]["mode"] == "shadow"
    finally:
        serve.stop()


def test_installed_plugins_are_listed_without_a_server(plugin_site: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(plugin_site)}
    listed = subprocess.run(
        [*CLI, "controllers", "--json"], capture_output=True, text=True, timeout=60, cwd=REPO, env=env
    )
    assert listed.returncode == 0, listed.stderr
    names = {row["name"]: row for row in json.loads(listed.stdout)}
    assert names["error-budget-isolator"]["parameters"] == {"error_rate_threshold": 0.2, "min_requests": 20}


def test_tls_when_certificates_are_configured(tmp_path: Path) -> None:
    key, cert = self_signed_certificate(tmp_path)
    from tests.support import running_server

    with running_server(tls_cert=str(cert), tls_key=str(key)) as server:
        credentials = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
        with grpc.secure_channel(server.api_target, credentials) as channel:
            graph = pb_grpc.ControlPlaneStub(channel).GetGraph(pb.GetGraphRequest(), timeout=10)
            assert graph.spans_accepted == 0
        with grpc.insecure_channel(server.api_target) as channel, pytest.raises(grpc.RpcError) as raised:
            pb_grpc.ControlPlaneStub(channel).GetGraph(pb.GetGraphRequest(), timeout=3)
        assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
        cli = subprocess.run(
            [*CLI, "graph", "--json", "--target", server.api_target, "--tls-ca", str(cert)],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=REPO,
        )
        assert cli.returncode == 0, cli.stderr
        assert json.loads(cli.stdout)["nodes"] == []
