"""The `controlplane` command against a real server: serve, graph, stats, health and reflection."""

import json
import signal
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from bench.tracegen import TraceGenerator, layered_topology
from controlplane import free_port
from controlplane.serve.config import Config
from telemetry.otlp_status import EXPORT_METHOD
from tests.support import REPO, running_server

CLI = [sys.executable, "-m", "controlplane.serve"]


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=60, cwd=REPO)


def _send_generated(target: str, requests: int) -> int:
    generator = TraceGenerator(layered_topology(service_count=20, depth=4, seed=3), seed=3, error_ratio=0.1)
    spans = 0
    with grpc.insecure_channel(target) as channel:
        export = channel.unary_unary(EXPORT_METHOD)
        for _ in range(requests):
            request = generator.request(min_traces=20)
            export(request.SerializeToString(), timeout=10)
            spans += sum(
                len(scope.spans) for resource in request.resource_spans for scope in resource.scope_spans
            )
    return spans


@pytest.fixture(scope="module")
def populated():
    with running_server() as server:
        spans = _send_generated(server.grpc_target, 5)
        server.call(server.server.model.flush)
        yield server, spans


def test_graph_json_has_the_documented_shape(populated) -> None:
    server, spans = populated
    result = _run("graph", "--target", server.api_target, "--json")
    assert result.returncode == 0, result.stderr
    graph = json.loads(result.stdout)
    assert graph["spans_accepted"] == spans
    names = {node["name"] for node in graph["nodes"]}
    assert "gateway" in names and len(names) >= 20
    for node in graph["nodes"]:
        assert {"name", "kind", "requests", "errors", "rate", "p50_ms", "p95_ms", "p99_ms"} <= node.keys()
    externals = [node for node in graph["nodes"] if node["kind"] == "external"]
    assert externals and all(node.get("system") for node in externals)
    for edge in graph["edges"]:
        assert {"source", "target", "calls", "errors", "p50_ms", "p95_ms", "p99_ms"} <= edge.keys()
        assert edge["source"] in names and edge["target"] in names
        assert 0 < edge["p50_ms"] <= edge["p95_ms"] <= edge["p99_ms"]
    assert any(edge["errors"] for edge in graph["edges"])  # error_ratio=0.1 over hundreds of calls
    assert sum(edge["calls"] for edge in graph["edges"] if edge["source"] == "gateway") > 0


def test_graph_dot_and_table(populated) -> None:
    server, _ = populated
    dot = _run("graph", "--target", server.api_target, "--dot")
    assert dot.returncode == 0, dot.stderr
    assert dot.stdout.startswith("digraph services {") and dot.stdout.rstrip().endswith("}")
    assert '"gateway" -> ' in dot.stdout
    assert "shape=cylinder" in dot.stdout  # the databases
    table = _run("graph", "--target", server.api_target)
    assert table.returncode == 0, table.stderr
    assert "gateway" in table.stdout and "Calls" in table.stdout


def test_stats_json_and_one_service(populated) -> None:
    server, _ = populated
    result = _run("stats", "--target", server.api_target, "--json", "--service", "gateway")
    assert result.returncode == 0, result.stderr
    (gateway,) = json.loads(result.stdout)
    assert gateway["service"] == "gateway"
    assert gateway["requests_total"] == 100  # 5 requests of 20 traces, each entering at the gateway
    assert gateway["operations"] and all(op["operation"].startswith("GET /") for op in gateway["operations"])
    assert sum(op["requests_total"] for op in gateway["operations"]) == 100
    missing = _run("stats", "--target", server.api_target, "--service", "nope")
    assert missing.returncode == 1
    assert "NOT_FOUND" in missing.stderr


def test_unreachable_target_is_a_clear_error() -> None:
    result = _run("graph", "--target", f"127.0.0.1:{free_port()}", "--timeout", "1")
    assert result.returncode == 1
    assert "UNAVAILABLE" in result.stderr or "DEADLINE_EXCEEDED" in result.stderr


def test_serve_answers_health_and_reflection_and_stops_on_sigterm(tmp_path: Path) -> None:
    grpc_port, http_port = free_port(), free_port()
    config = tmp_path / "controlplane.toml"
    config.write_text("[model]\nwindow_seconds = 30.0\nlink_ttl_seconds = 1.0\n")
    process = subprocess.Popen(
        [
            *CLI,
            "serve",
            "--config",
            str(config),
            "--otlp-grpc",
            f"127.0.0.1:{grpc_port}",
            "--otlp-http",
            f"127.0.0.1:{http_port}",
            "--api",
            f"127.0.0.1:{grpc_port}",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            grpc.channel_ready_future(channel).result(timeout=30)
            health = health_pb2_grpc.HealthStub(channel)
            for service in (
                "",
                "controlplane.v1.ControlPlane",
                "opentelemetry.proto.collector.trace.v1.TraceService",
            ):
                answer = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
                assert answer.status == health_pb2.HealthCheckResponse.SERVING
            reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
            responses = reflection.ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(list_services="")])
            )
            listed = {
                service.name for response in responses for service in response.list_services_response.service
            }
            assert {
                "controlplane.v1.ControlPlane",
                "opentelemetry.proto.collector.trace.v1.TraceService",
                "grpc.health.v1.Health",
            } <= listed
            assert _send_generated(f"127.0.0.1:{grpc_port}", 1) > 0
        graph = _run("graph", "--target", f"127.0.0.1:{grpc_port}", "--json", "--window", "30")
        assert json.loads(graph.stdout)["nodes"][0]["window_seconds"] <= 30
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    assert process.returncode == 0, output


def test_config_file_with_a_typo_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("[model]\nwindow_secnds = 30\n")
    with pytest.raises(ValueError, match="window_secnds"):
        Config.load(config)
    result = _run("serve", "--config", str(config))
    assert result.returncode == 2
    assert "window_secnds" in result.stderr


def test_metrics_and_healthz_on_the_http_port() -> None:
    import urllib.request

    with running_server() as server:
        _send_generated(server.grpc_target, 2)
        base = f"http://127.0.0.1:{server.ports.otlp_http}"
        with urllib.request.urlopen(f"{base}/healthz", timeout=10) as response:
            assert response.status == 200
            assert json.loads(response.read()) == {"status": "ok"}
        with urllib.request.urlopen(f"{base}/metrics", timeout=10) as response:
            text = response.read().decode()
    accepted = next(
        line for line in text.splitlines() if line.startswith('controlplane_spans_total{result="accepted"}')
    )
    assert float(accepted.split()[-1]) == server.server.model.spans_accepted > 0
    assert 'controlplane_spans_total{result="rejected"} 0.0' in text
    assert "controlplane_ingest_queue_bytes 0.0" in text


def test_every_query_of_a_running_plane_defaults_to_where_serve_listens() -> None:
    from controlplane.serve.cli import DEFAULT_TARGET, build_parser

    parser = build_parser()
    assert Config().server.api == DEFAULT_TARGET
    for argv in (["graph"], ["stats"], ["decisions"], ["decisions", "--watch"], ["mode", "hpa", "shadow"]):
        assert parser.parse_args(argv).target == DEFAULT_TARGET, argv
    # `controllers` alone lists the installed plugins and needs no server.
    assert parser.parse_args(["controllers"]).target is None


def test_subcommands_beyond_serve_come_from_the_commands_entry_points() -> None:
    from importlib.metadata import entry_points

    from controlplane.serve.cli import COMMANDS_ENTRY_POINT_GROUP, build_parser

    registered = {entry.name for entry in entry_points(group=COMMANDS_ENTRY_POINT_GROUP)}
    assert {"bench", "agent", "pipelive"} <= registered
    parser = build_parser()
    assert parser.parse_args(["bench", "sim-checksum", "--seconds", "5"]).seconds == 5.0
    assert parser.parse_args(["agent", "--node", "n1"]).node == "n1"
    assert parser.parse_args(["demo", "--seconds", "3"]).seconds == 3.0
