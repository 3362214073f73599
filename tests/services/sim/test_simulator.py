"""The simulator: determinism, spans through the real model, platform behaviour, and every action type."""

import asyncio
import dataclasses
import subprocess
import sys

import pytest

from bench.sim_run import run_scenario
from controlplane.actions import (
    Isolate,
    IsolationMechanism,
    Place,
    ReconfigurePipeline,
    Remediate,
    RemediationOperation,
    Route,
    Scale,
)
from services.demo.app import load_app
from services.demo.results import RunRecorder
from services.demo.scenario import ClusterSpec, Event, NodeSpec, Scenario, Workload
from services.sim.actuator import SimActuator
from services.sim.cluster import DRAINING, READY, STARTING
from services.sim.engine import Simulator
from services.sim.events import apply_event
from telemetry import ModelConfig, TelemetryModel
from tests.support import REPO

CLUSTER = ClusterSpec(nodes=tuple(NodeSpec(f"node-{index}", 16.0, 65536.0) for index in range(3)))


def _sim(seed: int = 1, seconds: int = 30) -> Simulator:
    return Simulator(load_app(), CLUSTER, seed, RunRecorder(seconds))


def _drive(sim: Simulator, start: int, end: int, rate: float) -> list[bytes]:
    exports = []
    for second in range(start, end):
        sim.schedule_arrivals(float(second), rate)
        sim.run_until(second + 1.0)
        exports.append(sim.take_spans().SerializeToString())
    return exports


def test_the_same_seed_gives_the_same_run_bit_for_bit_and_another_seed_does_not() -> None:
    first, second, other = _sim(7), _sim(7), _sim(8)
    runs = [_drive(sim, 0, 8, 150.0) for sim in (first, second, other)]
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]
    assert [s.latencies_ms for s in first.recorder.seconds] == [
        s.latencies_ms for s in second.recorder.seconds
    ]


CRASHED_RUN = """
import hashlib
from services.demo.scenario import Event
from services.sim.events import apply_event
from tests.services.sim.test_simulator import _drive, _sim

sim = _sim(11)
exports = _drive(sim, 0, 3, 800.0)
for service in sorted(sim.services):  # every replica of every service dies with requests in hand
    apply_event(sim, Event(3.0, "crash", {"service": service, "replicas": 20}))
exports += _drive(sim, 3, 4, 800.0)
print(hashlib.sha256(b"".join(exports)).hexdigest())
"""


def test_a_seeded_run_with_crashes_exports_the_same_spans_in_every_process() -> None:
    """Benchmark runs happen in worker processes, each with its own memory layout: the requests a crashed
    replica held must fail in the order they came, not in an order set by where objects sit in memory."""
    digests = {
        subprocess.run(
            [sys.executable, "-c", CRASHED_RUN],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        ).stdout.strip()
        for _ in range(6)
    }
    assert len(digests) == 1, digests


def test_seeded_benchmark_runs_are_reproducible_through_the_control_loop(tmp_path) -> None:
    scenario = Scenario(
        name="short",
        description="",
        dynamics=(),
        duration_seconds=40,
        workload=Workload(mean_rps=300.0),
        cluster=CLUSTER,
        events=(Event(15.0, "interference", {"node": "node-1", "slowdown": 4.0}, 10.0),),
        warmup_seconds=5,
    )
    budget = {"mode": "active", "time_budget_seconds": 60.0}  # a busy machine must not fault a decide
    controllers = {"hpa": {**budget, "period_seconds": 5.0}, "queueing": budget}
    first = asyncio.run(run_scenario(scenario, controllers, 3, "x", tmp_path / "a.db"))
    second = asyncio.run(run_scenario(scenario, controllers, 3, "x", tmp_path / "b.db"))
    assert first.score == second.score
    assert [s.latencies_ms for s in first.recorder.seconds] == [
        s.latencies_ms for s in second.recorder.seconds
    ]
    assert first.score.requests > 8000


def test_spans_go_through_the_model_and_draw_the_apps_call_graph() -> None:
    sim = _sim()
    model = TelemetryModel(ModelConfig(window_seconds=10.0), clock=lambda: sim.base_unix + sim.now)
    for second in range(6):
        sim.schedule_arrivals(float(second), 300.0)
        sim.run_until(second + 1.0)
        model.ingest(sim.take_spans())
    model.flush()
    snapshot = model.snapshot()
    observed = {(edge.source, edge.target) for edge in snapshot.edges}
    expected = {
        (caller, call.service)
        for request in sim.app.requests
        for caller, stages in request.calls.items()
        for stage in stages
        for call in stage
    }
    assert observed == expected
    assert {node.name for node in snapshot.nodes} == set(sim.app.services)
    entry = snapshot.node("nginx-web-server")
    assert {op.operation for op in entry.operations} == {r.operation for r in sim.app.requests}


def test_sampled_tracing_exports_a_tenth_of_traces_and_the_model_counts_them_back_up() -> None:
    seconds, rate = 20, 400.0
    full = _sim(5, seconds)
    sampled = Simulator(load_app(), CLUSTER, 5, RunRecorder(seconds), trace_sampling=0.1)
    models = []
    spans = []
    for sim in (full, sampled):
        model = TelemetryModel(
            ModelConfig(window_seconds=60.0), clock=lambda sim=sim: sim.base_unix + sim.now
        )
        exported = 0
        for second in range(seconds):
            sim.schedule_arrivals(float(second), rate)
            sim.run_until(second + 1.0)
            request = sim.take_spans()
            exported += sum(len(scope.spans) for rs in request.resource_spans for scope in rs.scope_spans)
            if sim is sampled:
                states = {
                    s.trace_state for rs in request.resource_spans for sc in rs.scope_spans for s in sc.spans
                }
                assert states <= {"ot=th:e6666666666666"}
            model.ingest(request)
        model.flush()
        models.append(model.snapshot())
        spans.append(exported)
    assert spans[1] == pytest.approx(spans[0] * 0.1, rel=0.2)
    full_snapshot, sampled_snapshot = models
    entry = "nginx-web-server"
    assert full_snapshot.node(entry).requests_total == pytest.approx(
        full.requests_started, abs=20
    )  # in flight
    # Every trace is simulated either way; only the export is sampled, and the model scales it back.
    assert sampled_snapshot.node(entry).requests_total == pytest.approx(sampled.requests_started, rel=0.15)
    for edge in full_snapshot.edges:
        if edge.calls_total > 2000:
            seen = sampled_snapshot.edge(edge.source, edge.target)
            assert seen.calls_total == pytest.approx(edge.calls_total, rel=0.2)


def _ready(sim: Simulator, service: str) -> list:
    return [replica for replica in sim.services[service].replicas if replica.state == READY]


def test_scale_starts_replicas_that_are_ready_only_after_start_up_and_scale_in_drains() -> None:
    sim = _sim()
    actuator = SimActuator(sim)
    startup = sim.app.services["text-service"].startup_seconds
    outcome = asyncio.run(actuator.apply(Scale(target="text-service", replicas=3)))
    assert outcome.ok
    states = [replica.state for replica in sim.services["text-service"].replicas]
    assert states.count(STARTING) == 2 and states.count(READY) == 1
    inventory = asyncio.run(actuator.inventory())
    assert (
        inventory.services["text-service"].replicas,
        inventory.services["text-service"].ready_replicas,
    ) == (3, 1)
    sim.run_until(startup + 0.01)
    assert len(_ready(sim, "text-service")) == 3
    _drive(sim, int(sim.now) + 1, int(sim.now) + 2, 200.0)
    asyncio.run(actuator.apply(Scale(target="text-service", replicas=1)))
    inventory = asyncio.run(actuator.inventory())
    assert inventory.services["text-service"].replicas == 1
    assert all(r.state in (READY, DRAINING) for r in sim.services["text-service"].replicas)


def test_a_replica_that_fits_nowhere_stays_pending_until_a_node_joins() -> None:
    sim = Simulator(load_app(), ClusterSpec(nodes=(NodeSpec("node-0", 100.0, 65536.0),)), 1, RunRecorder(60))
    node = sim.nodes["node-0"]
    node.cpu = node.cpu_used + 1.0  # room for exactly one more database replica
    actuator = SimActuator(sim)
    outcome = asyncio.run(actuator.apply(Scale(target="post-storage-mongodb", replicas=4)))
    assert "pending" in outcome.detail
    assert len(sim.pending) == 2
    apply_event(sim, Event(0.0, "node_join", {"node": "node-9", "cpu": 16.0}))
    sim.place_pending()
    assert not sim.pending
    assert {r.node.name for r in sim.services["post-storage-mongodb"].replicas} >= {"node-9"}


def test_place_migrates_a_replica_and_the_old_one_serves_until_the_new_one_is_ready() -> None:
    sim = _sim()
    actuator = SimActuator(sim)
    old = sim.services["user-service"].replicas[0]
    target = next(name for name in sim.nodes if name != old.node.name)
    assert asyncio.run(actuator.apply(Place(target="user-service", node=target, replica=old.name))).ok
    assert old.state == READY  # still serving while the new one starts
    sim.run_until(sim.app.services["user-service"].startup_seconds + 0.01)
    replicas = sim.services["user-service"].replicas
    assert [r.node.name for r in replicas if r.state == READY] == [target]
    assert old not in replicas or old.state == DRAINING
    refused = asyncio.run(actuator.apply(Place(target="user-service", node="node-404")))
    assert not refused.ok and "node-404" in refused.detail


def _entry_outcomes(sim: Simulator, seconds: int, rate: float) -> tuple[int, int]:
    start = int(sim.now) + 1
    before_ok = sum(len(s.latencies_ms) for s in sim.recorder.seconds)
    before_failed = sum(s.failed for s in sim.recorder.seconds)
    _drive(sim, start, start + seconds, rate)
    ok = sum(len(s.latencies_ms) for s in sim.recorder.seconds) - before_ok
    failed = sum(s.failed for s in sim.recorder.seconds) - before_failed
    return ok, failed


def test_a_bad_rollout_fails_requests_and_rollback_restores_the_previous_version() -> None:
    sim = _sim(seconds=120)
    actuator = SimActuator(sim)
    apply_event(
        sim, Event(0.0, "rollout", {"service": "social-graph-service", "version": "v2", "error_rate": 0.5})
    )
    sim.run_until(10.0)
    assert {r.version.name for r in _ready(sim, "social-graph-service")} == {"v2"}
    _, failed = _entry_outcomes(sim, 5, 200.0)
    assert failed > 20  # follows go through social-graph-service
    outcome = asyncio.run(
        actuator.apply(Remediate(target="social-graph-service", operation=RemediationOperation.ROLLBACK))
    )
    assert outcome.ok and "v1" in outcome.detail
    sim.run_until(sim.now + 10.0)
    assert {r.version.name for r in _ready(sim, "social-graph-service")} == {"v1"}
    assert asyncio.run(actuator.inventory()).services["social-graph-service"].version == "v1"
    _, failed = _entry_outcomes(sim, 5, 200.0)
    assert failed == 0


def test_route_weights_steer_traffic_between_versions() -> None:
    sim = _sim(seconds=120)
    actuator = SimActuator(sim)
    apply_event(sim, Event(0.0, "rollout", {"service": "home-timeline-service", "version": "v2"}))
    sim.run_until(10.0)
    asyncio.run(actuator.apply(Scale(target="home-timeline-service", replicas=4)))
    # Two of the four replicas go back to v1 by hand, so both versions serve.
    for replica in sim.services["home-timeline-service"].replicas[:2]:
        replica.version = sim.services["home-timeline-service"].versions["v1"]
    sim.run_until(20.0)
    assert asyncio.run(
        actuator.apply(Route(target="home-timeline-service", weights={"v1": 0.0, "v2": 1.0}))
    ).ok
    _drive(sim, 21, 24, 200.0)
    counts = {"v1": 0, "v2": 0}
    start = 24
    sim.schedule_arrivals(float(start), 200.0)
    sim.run_until(start + 1.0)
    for visit in sim.spans:
        if visit.service.spec.name == "home-timeline-service":
            counts[visit.replica.version.name] += 1
    assert counts["v1"] == 0 and counts["v2"] > 50
    assert asyncio.run(actuator.inventory()).routing["home-timeline-service"] == {"v1": 0.0, "v2": 1.0}


def test_isolation_sheds_at_the_caller_and_an_open_breaker_still_lets_probes_through() -> None:
    sim = _sim(seconds=120)
    actuator = SimActuator(sim)
    breaker = Isolate(target="social-graph-service", mechanism=IsolationMechanism.CIRCUIT_BREAKER)
    assert asyncio.run(actuator.apply(breaker)).ok
    sim.schedule_arrivals(1.0, 400.0)
    sim.run_until(2.0)
    served = [v for v in sim.spans if v.service.spec.name == "social-graph-service"]
    assert 0 < len(served) <= 25  # about one probe every 50 ms
    sim.take_spans()
    asyncio.run(actuator.apply(dataclasses.replace(breaker, enabled=False)))
    limit = Isolate(target="nginx-web-server", mechanism=IsolationMechanism.RATE_LIMIT, limit=50.0)
    assert asyncio.run(actuator.apply(limit)).ok
    ok, failed = _entry_outcomes(sim, 3, 300.0)
    assert 100 <= ok <= 230 and failed > 600  # 50/s for 3 s plus a full bucket of 50
    refused = asyncio.run(
        actuator.apply(ReconfigurePipeline(target="nginx-web-server", layers_per_stage=(4, 4)))
    )
    assert not refused.ok and "pipelines" in refused.detail


def test_a_crash_fails_requests_until_restart_and_restart_is_faster_than_the_back_off() -> None:
    sim = _sim(seconds=200)
    actuator = SimActuator(sim)
    apply_event(
        sim, Event(0.0, "crash", {"service": "post-storage-service", "replicas": 2, "recover_seconds": 90})
    )
    _, failed = _entry_outcomes(sim, 3, 200.0)
    assert failed > 100  # both timelines read posts
    assert asyncio.run(
        actuator.apply(Remediate(target="post-storage-service", operation=RemediationOperation.RESTART))
    ).ok
    sim.run_until(sim.now + sim.app.services["post-storage-service"].startup_seconds + 0.5)
    ok, failed = _entry_outcomes(sim, 3, 200.0)
    assert failed == 0 and ok > 400


def test_noisy_neighbour_and_network_events_slow_requests_and_undo_restores() -> None:
    sim = _sim(seconds=200)
    _entry_outcomes(sim, 3, 300.0)
    baseline = sorted(sim.recorder.seconds[2].latencies_ms)
    undo_noise = apply_event(sim, Event(0.0, "interference", {"node": "node-0", "slowdown": 5.0}))
    undo_link = apply_event(
        sim, Event(0.0, "network", {"nodes": ["node-0", "node-1"], "delay_ms": 20.0, "loss": 0.1})
    )
    _entry_outcomes(sim, 3, 300.0)
    slowed = sorted(sim.recorder.seconds[int(sim.now) - 1].latencies_ms)
    assert slowed[len(slowed) // 2] > 2 * baseline[len(baseline) // 2]
    undo_noise()
    undo_link()
    assert sim.nodes["node-0"].slowdown == 1.0 and not sim.links


@pytest.mark.parametrize("kind", ["node_down", "node_leave"])
def test_replicas_leave_a_failed_or_departing_node(kind: str) -> None:
    sim = _sim(seconds=200)
    apply_event(sim, Event(0.0, kind, {"node": "node-0"}))
    sim.run_until(90.0)
    for state in sim.services.values():
        assert all(r.node is not None and r.node.name != "node-0" for r in state.replicas if r.state == READY)
        assert len([r for r in state.replicas if r.state == READY]) == state.spec.replicas


def test_calls_to_a_crashed_service_show_as_its_callers_failing_calls_in_the_model() -> None:
    sim = _sim(seconds=60)
    model = TelemetryModel(ModelConfig(window_seconds=10.0), clock=lambda: sim.base_unix + sim.now)
    for second in range(4):
        if second == 1:
            crash = {"service": "post-storage-service", "replicas": 2, "recover_seconds": 90}
            apply_event(sim, Event(1.0, "crash", crash))
        sim.schedule_arrivals(float(second), 200.0)
        sim.run_until(second + 1.0)
        model.ingest(sim.take_spans())
    model.flush()  # unanswered client spans become calls once their time-out passes
    snapshot = model.snapshot()
    into = {edge.source: edge for edge in snapshot.edges if edge.target == "post-storage-service"}
    assert set(into) == {"home-timeline-service", "user-timeline-service", "compose-post-service"}
    # One healthy second, three dead ones: the callers see mostly failures.
    assert all(edge.stats.error_rate > 0.6 for edge in into.values())
    assert snapshot.node("post-storage-service").kind == "service"


def test_scaling_in_during_a_rollout_keeps_the_rollout_going() -> None:
    sim = _sim(seconds=60)
    actuator = SimActuator(sim)
    apply_event(sim, Event(0.0, "rollout", {"service": "text-service", "version": "v2"}))
    inventory = asyncio.run(actuator.inventory())
    assert inventory.services["text-service"].replicas == 1  # the surge replica is not counted
    assert len(inventory.placements) == sum(len(state.replicas) for state in sim.services.values())
    assert asyncio.run(actuator.apply(Scale(target="text-service", replicas=1))).ok  # an autoscaler's no-op
    sim.run_until(10.0)
    assert [(r.version.name, r.state) for r in sim.services["text-service"].replicas] == [("v2", READY)]
