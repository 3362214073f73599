"""The controllers and decisions API over real gRPC on loopback, with a running control loop."""

import statistics
import time
from dataclasses import dataclass

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from actuators.memory import InMemoryActuator
from bench.tracegen import TraceGenerator, layered_topology
from controlplane import (
    Controller,
    ControllerRegistry,
    Inventory,
    Scale,
    ServiceInventory,
    Taxonomy,
)
from controlplane.engine.guardrails import GuardrailConfig
from protos.controlplane.v1 import controlplane_pb2 as pb
from protos.controlplane.v1 import controlplane_pb2_grpc as pb_grpc
from telemetry.otlp_status import EXPORT_METHOD
from tests.support import running_server

TOKEN = "s3cret-token"
RULE = Taxonomy.of(
    "centralized", "rule", dynamics=["workload"], actions=["autoscaling"], telemetry=["traces"]
)


class Stepper(Controller):
    """Asks for one more replica of every service in the inventory, each tick."""

    name = "stepper"
    taxonomy = RULE
    period_seconds = 0.05

    @dataclass(frozen=True)
    class Parameters:
        step: int = 1

    async def decide(self, view):
        return [
            Scale(target=name, replicas=service.replicas + self.params.step, reason="more", evidence={"n": 1})
            for name, service in sorted(view.inventory.services.items())
        ]


class Raiser(Controller):
    name = "raiser"
    taxonomy = RULE
    period_seconds = 0.05

    async def decide(self, view):
        raise RuntimeError("boom")


class Sleeper(Controller):
    name = "sleeper"
    taxonomy = RULE
    period_seconds = 0.05
    time_budget_seconds = 0.1

    async def decide(self, view):
        time.sleep(1.5)  # blocking call inside async code: must not stall the server
        return []


class Spinner(Controller):
    name = "spinner"
    taxonomy = RULE
    period_seconds = 0.05
    time_budget_seconds = 0.1

    async def decide(self, view):
        end = time.monotonic() + 1.5
        while time.monotonic() < end:  # CPU-bound pure Python
            pass
        return []


def _registry(*classes: type[Controller]) -> ControllerRegistry:
    registry = ControllerRegistry()
    for cls in classes:
        registry.register(cls)
    return registry


def _inventory(*services: str) -> Inventory:
    return Inventory(
        services={name: ServiceInventory(name, replicas=1, max_replicas=1000) for name in services}
    )


def _stub(target: str) -> pb_grpc.ControlPlaneStub:
    return pb_grpc.ControlPlaneStub(grpc.insecure_channel(target))


@pytest.fixture(scope="module")
def deciding():
    """A server whose loop has made plenty of decisions for services a, b and c."""
    controllers = {"stepper": {"mode": "active"}}
    guardrails = GuardrailConfig(cooldown_seconds=0.0, max_disruptive_per_window=None)
    with running_server(
        config_sections={"controllers": controllers, "guardrails": guardrails},
        server_parts={
            "registry": _registry(Stepper),
            "actuator": InMemoryActuator(_inventory("a", "b", "c")),
        },
        tick_seconds=0.05,
        api_token=TOKEN,
    ) as server:
        stub = _stub(server.api_target)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            listed = stub.ListDecisions(pb.ListDecisionsRequest(page_size=1000), timeout=5)
            if len(listed.decisions) >= 60:
                break
            time.sleep(0.1)
        yield server, stub


def test_list_controllers_shows_taxonomy_mode_and_parameters(deciding) -> None:
    _, stub = deciding
    (info,) = stub.ListControllers(pb.ListControllersRequest(), timeout=5).controllers
    assert info.name == "stepper"
    assert info.mode == pb.CONTROLLER_MODE_ACTIVE
    assert info.taxonomy.strategy == "rule" and list(info.taxonomy.actions) == ["autoscaling"]
    assert info.parameters["step"] == 1
    assert info.healthy and info.runs_total > 0 and info.origin == "code"


def test_decisions_filter_page_and_get(deciding) -> None:
    _, stub = deciding
    for service in ("a", "b"):
        page = stub.ListDecisions(pb.ListDecisionsRequest(service=service, page_size=5), timeout=5)
        assert len(page.decisions) == 5 and page.next_page_token
        assert all(info.target == service and info.controller == "stepper" for info in page.decisions)
        ids = [info.id for info in page.decisions]
        assert ids == sorted(ids, reverse=True)
        following = stub.ListDecisions(
            pb.ListDecisionsRequest(service=service, page_size=5, page_token=page.next_page_token), timeout=5
        )
        assert max(info.id for info in following.decisions) < min(ids)
    applied = stub.ListDecisions(
        pb.ListDecisionsRequest(status=pb.DECISION_STATUS_APPLIED, action_kind="scale", page_size=50),
        timeout=5,
    )
    assert applied.decisions and all(info.status == pb.DECISION_STATUS_APPLIED for info in applied.decisions)
    first = applied.decisions[-1]
    got = stub.GetDecision(pb.GetDecisionRequest(id=first.id), timeout=5)
    assert got == first
    assert got.action["replicas"] >= 2 and got.action["evidence"]["n"] == 1
    assert got.taxonomy.locus == "centralized" and got.layer == "platform"
    assert "replicas" in got.outcome


@pytest.mark.parametrize(
    ("request_fields", "field"),
    [
        ({"page_size": 5000}, "page_size"),
        ({"page_token": "not-a-token"}, "page_token"),
        ({"action_kind": "teleport"}, "action_kind"),
        ({"since_unix": 20.0, "until_unix": 10.0}, "since_unix"),
    ],
)
def test_bad_list_arguments_name_the_field(deciding, request_fields, field) -> None:
    _, stub = deciding
    with pytest.raises(grpc.RpcError) as raised:
        stub.ListDecisions(pb.ListDecisionsRequest(**request_fields), timeout=5)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in raised.value.details()
    with pytest.raises(grpc.RpcError) as raised:
        stub.GetDecision(pb.GetDecisionRequest(id=10**12), timeout=5)
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND


def test_watch_resumes_without_gaps_or_duplicates(deciding) -> None:
    _, stub = deciding
    seen: list[int] = []
    stream = stub.WatchDecisions(pb.WatchDecisionsRequest(from_start=True))
    for info in stream:
        seen.append(info.id)
        if len(seen) == 25:
            break
    stream.cancel()
    resumed = stub.WatchDecisions(pb.WatchDecisionsRequest(after_id=seen[-1]))
    for info in resumed:
        seen.append(info.id)
        if len(seen) == 60:
            break
    resumed.cancel()
    assert seen == list(range(seen[0], seen[0] + 60))  # ids are consecutive: no gap, no duplicate
    assert seen[0] == 1


def test_set_mode_needs_the_token_and_names_bad_fields(deciding) -> None:
    _, stub = deciding
    request = pb.SetControllerModeRequest(name="stepper", mode=pb.CONTROLLER_MODE_SHADOW)
    with pytest.raises(grpc.RpcError) as raised:
        stub.SetControllerMode(request, timeout=5)
    assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.RpcError) as raised:
        stub.SetControllerMode(request, timeout=5, metadata=(("authorization", "Bearer wrong"),))
    assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED
    auth = (("authorization", f"Bearer {TOKEN}"),)
    for bad, field, code in (
        (pb.SetControllerModeRequest(name="stepper"), "mode", grpc.StatusCode.INVALID_ARGUMENT),
        (
            pb.SetControllerModeRequest(mode=pb.CONTROLLER_MODE_SHADOW),
            "name",
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        (
            pb.SetControllerModeRequest(name="nope", mode=pb.CONTROLLER_MODE_SHADOW),
            "name",
            grpc.StatusCode.NOT_FOUND,
        ),
    ):
        with pytest.raises(grpc.RpcError) as raised:
            stub.SetControllerMode(bad, timeout=5, metadata=auth)
        assert raised.value.code() == code and field in raised.value.details()
    info = stub.SetControllerMode(request, timeout=5, metadata=auth)
    assert info.mode == pb.CONTROLLER_MODE_SHADOW
    newest = stub.ListDecisions(pb.ListDecisionsRequest(page_size=1), timeout=5).decisions[0].id
    deadline = time.monotonic() + 10
    shadowed = []
    while time.monotonic() < deadline and not shadowed:
        page = stub.ListDecisions(pb.ListDecisionsRequest(status=pb.DECISION_STATUS_SHADOW), timeout=5)
        shadowed = [info for info in page.decisions if info.id > newest]
        time.sleep(0.05)
    assert shadowed, (
        "a controller switched to shadow keeps deciding, and its decisions are recorded as shadow"
    )
    stub.SetControllerMode(
        pb.SetControllerModeRequest(name="stepper", mode=pb.CONTROLLER_MODE_ACTIVE), timeout=5, metadata=auth
    )


def test_misbehaving_controllers_are_isolated_while_ingest_keeps_answering() -> None:
    controllers = {name: {"mode": "active"} for name in ("raiser", "sleeper", "spinner", "stepper")}
    generator = TraceGenerator(layered_topology(service_count=20, depth=4, seed=5), seed=5)
    bodies = [generator.request(min_traces=5).SerializeToString() for _ in range(10)]
    with running_server(
        config_sections={"controllers": controllers},
        server_parts={
            "registry": _registry(Raiser, Sleeper, Spinner, Stepper),
            "actuator": InMemoryActuator(_inventory("a")),
        },
        tick_seconds=0.05,
    ) as server:
        latencies = []
        with grpc.insecure_channel(server.grpc_target) as channel:
            export = channel.unary_unary(
                EXPORT_METHOD, response_deserializer=ExportTraceServiceResponse.FromString
            )
            deadline = time.monotonic() + 4.0
            while time.monotonic() < deadline:
                started = time.perf_counter()
                export(bodies[len(latencies) % len(bodies)], timeout=5)
                latencies.append(time.perf_counter() - started)
                time.sleep(0.02)
        stub = _stub(server.api_target)
        infos = {
            info.name: info
            for info in stub.ListControllers(pb.ListControllersRequest(), timeout=5).controllers
        }
        decisions = stub.ListDecisions(pb.ListDecisionsRequest(controller="stepper"), timeout=5).decisions
    assert len(latencies) > 50
    assert max(latencies) < 0.1, f"Export took {max(latencies) * 1000:.0f} ms while controllers misbehaved"
    for name in ("raiser", "sleeper", "spinner"):
        assert infos[name].faults_total >= 1, name
        assert not infos[name].healthy
    assert infos["raiser"].quarantined and "boom" in infos["raiser"].last_error
    assert infos["stepper"].healthy and infos["stepper"].faults_total == 0
    assert decisions, "the well-behaved controller kept deciding"
    assert statistics.median(latencies) < 0.05


def test_metrics_show_decisions_tick_times_and_controller_faults(deciding) -> None:
    import urllib.request

    server, _ = deciding
    with urllib.request.urlopen(f"http://127.0.0.1:{server.ports.otlp_http}/metrics", timeout=10) as response:
        lines = response.read().decode().splitlines()

    def value(prefix: str) -> float:
        return float(next(line for line in lines if line.startswith(prefix)).split()[-1])

    assert value('controlplane_decisions_total{status="applied"}') >= 1
    assert value('controlplane_controller_decide_seconds_count{controller="stepper"}') >= 1
    assert value("controlplane_tick_seconds_count") >= 1
    assert value('controlplane_controller_faults_total{controller="stepper"}') == 0
    assert value('controlplane_controller_quarantined{controller="stepper"}') == 0
