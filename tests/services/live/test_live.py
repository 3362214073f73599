"""The live fidelity with real processes: replicas and router on 127.0.0.1, the real OpenTelemetry SDK
exporting over OTLP/gRPC to a real control plane, the `LocalProcessActuator` changing them, and `run_live`.

A three-service application written here (front -> api -> store) is started once for the module; the tests
then drive it through the actuator and the router and check what the processes themselves report.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from bench.live_run import run_live
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
from protos.controlplane.v1 import controlplane_pb2 as pb
from protos.controlplane.v1 import controlplane_pb2_grpc as pb_grpc
from services.demo.results import RunRecorder
from services.demo.scenario import Event, load_scenario
from services.live.actuator import LocalProcessActuator, ReplicaState
from services.live.events import apply_event
from services.live.loadgen import LoadGenerator
from services.live.protocol import CALL_PREFIX, REQUEST_TYPE_HEADER, STATS_PATH
from tests.support import TINY_APP, TINY_SCENARIO, RunningServer, running_server

SPANS_PER_REQUEST = 5  # front server + client, api server + client, store server


@pytest.fixture(autouse=True)
def _no_otel_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("OTEL_"):
            monkeypatch.delenv(name)


@pytest.fixture(scope="module")
def app_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("live-app")
    (directory / "tiny.toml").write_text(TINY_APP)
    (directory / "scenario.toml").write_text(TINY_SCENARIO)
    return directory


class Live:
    """The running control plane and actuator, driven from the test thread."""

    def __init__(self, server: RunningServer, actuator: LocalProcessActuator) -> None:
        self.server = server
        self.actuator = actuator
        self.seen_pids: set[int] = set()

    def run(self, coroutine: Any, timeout: float = 30.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.server.loop).result(timeout=timeout)

    def on_loop(self, function: Callable[[], Any]) -> Any:
        return self.server.call(function)

    def replicas(self, service: str) -> list[Any]:
        replicas = self.on_loop(lambda: self.actuator.replicas(service))
        self.seen_pids.update(replica.process.pid for replica in replicas)
        return replicas

    def request(self) -> int:
        """One `read` request through the router, as the load generator sends it; the HTTP status."""
        url = f"http://{self.actuator.router_address}{CALL_PREFIX}front"
        request = urllib.request.Request(url, data=b"", method="POST", headers={REQUEST_TYPE_HEADER: "read"})
        try:
            with urllib.request.urlopen(request, timeout=10) as reply:
                return reply.status
        except urllib.error.HTTPError as error:
            return error.code

    def wait_for(self, condition: Callable[[], bool], timeout: float = 15.0, what: str = "") -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return
            time.sleep(0.05)
        raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")

    def wait_ready(self, service: str, count: int) -> list[Any]:
        def ready() -> bool:
            replicas = self.replicas(service)
            return len(replicas) == count and all(r.state is ReplicaState.READY for r in replicas)

        self.wait_for(ready, what=f"{count} ready replicas of {service}")
        return self.replicas(service)


def served(port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{STATS_PATH}", timeout=5) as reply:
        return int(json.loads(reply.read())["served"])


def alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture(scope="module")
def live(app_dir: Path) -> Iterator[Live]:
    actuator = LocalProcessActuator(app_dir / "tiny.toml", "", seed=7, time_scale=1.0, workdir=app_dir)
    with running_server(server_parts={"actuator": actuator}) as server:
        actuator.otlp_endpoint = server.grpc_target
        harness = Live(server, actuator)
        try:
            harness.run(actuator.start())
            harness.run(actuator.start_replicas(), timeout=60)
            harness.seen_pids.add(actuator.router_process.pid)
            yield harness
        finally:
            for service in actuator.services:
                harness.replicas(service)
            harness.run(actuator.stop(), timeout=60)
    leftovers = [pid for pid in harness.seen_pids if alive(pid)]
    assert not leftovers, f"processes left behind: {leftovers}"


def graph(live: Live) -> pb.GetGraphResponse:
    with grpc.insecure_channel(live.server.api_target) as channel:
        return pb_grpc.ControlPlaneStub(channel).GetGraph(pb.GetGraphRequest(), timeout=10)


def test_requests_succeed_end_to_end_and_the_graph_is_the_apps(live: Live) -> None:
    requests = 20
    assert [live.request() for _ in range(requests)] == [200] * requests
    for service in ("front", "api", "store"):
        assert sum(served(replica.port) for replica in live.replicas(service)) == requests

    # The replicas' SDKs export every span (batched every 250 ms) to the control plane's OTLP port.
    live.wait_for(
        lambda: graph(live).spans_accepted >= requests * SPANS_PER_REQUEST, what="the spans to arrive"
    )
    answer = graph(live)
    assert answer.spans_accepted == requests * SPANS_PER_REQUEST
    assert answer.spans_rejected == 0
    assert {(edge.source, edge.target): edge.calls_total for edge in answer.edges} == {
        ("front", "api"): requests,
        ("api", "store"): requests,
    }
    assert {node.name for node in answer.nodes} == {"front", "api", "store"}
    assert all(node.kind == pb.NODE_KIND_SERVICE for node in answer.nodes)
    snapshot = live.on_loop(lambda: live.server.server.model.snapshot())
    assert {name: snapshot.by_name[name].version for name in ("front", "api", "store")} == dict.fromkeys(
        ("front", "api", "store"), "v1"
    )  # service.version from each replica's OpenTelemetry Resource


def test_scale_up_starts_a_process_that_answers_and_down_stops_it(live: Live) -> None:
    outcome = live.run(live.actuator.apply(Scale(target="api", replicas=2)))
    assert outcome.ok, outcome.detail
    first, second = live.wait_ready("api", 2)
    # Ready no sooner than the spec's startup_seconds (1.5 s), even if the process answers before that.
    assert second.startup_seconds is not None and 1.5 <= second.startup_seconds < 30
    assert 0 < live.actuator.process_start_seconds[-1] <= second.startup_seconds
    inventory = live.run(live.actuator.inventory())
    assert (inventory.services["api"].replicas, inventory.services["api"].ready_replicas) == (2, 2)
    assert inventory.placements[second.id] == "local"
    assert inventory.replica_services[second.id] == "api"
    before = served(second.port)
    for _ in range(30):
        assert live.request() == 200
    assert served(second.port) > before  # the router sends the new replica its share

    assert live.run(live.actuator.apply(Scale(target="api", replicas=1))).ok
    live.wait_for(lambda: not alive(second.process.pid), what="the stopped replica to exit")
    assert [replica.id for replica in live.replicas("api")] == [first.id]
    inventory = live.run(live.actuator.inventory())
    assert (inventory.services["api"].replicas, inventory.services["api"].ready_replicas) == (1, 1)
    assert second.id not in inventory.placements
    assert [live.request() for _ in range(5)] == [200] * 5


def test_routing_weights_steer_traffic_between_versions(live: Live) -> None:
    assert live.run(live.actuator.apply(Scale(target="api", replicas=2))).ok
    old, other = live.wait_ready("api", 2)
    restart = Remediate(target="api", operation=RemediationOperation.RESTART, replica=other.id, version="v2")
    assert live.run(live.actuator.apply(restart)).ok
    live.wait_for(
        lambda: (
            {r.version for r in live.replicas("api") if r.state is ReplicaState.READY} == {"v1", "v2"}
            and len(live.replicas("api")) == 2
        ),
        what="a v2 replica beside the v1 one",
    )
    v1 = next(r for r in live.replicas("api") if r.version == "v1")
    v2 = next(r for r in live.replicas("api") if r.version == "v2")
    assert v1.id == old.id and v2.id != other.id  # a restart is a new process under a new name
    live.wait_for(lambda: not alive(other.process.pid), what="the replaced replica to exit")

    for weights, dark, lit in (({"v1": 1.0, "v2": 0.0}, v2, v1), ({"v1": 0.0, "api-v2": 1.0}, v1, v2)):
        assert live.run(live.actuator.apply(Route(target="api", weights=weights))).ok
        dark_before, lit_before = served(dark.port), served(lit.port)
        assert [live.request() for _ in range(25)] == [200] * 25
        assert served(dark.port) == dark_before
        assert served(lit.port) == lit_before + 25
    inventory = live.run(live.actuator.inventory())
    assert inventory.routing["api"] == {"v1": 0.0, "api-v2": 1.0}
    assert inventory.services["api"].version == "v1"  # one replica restarted with v2 is not a rollout

    assert live.run(live.actuator.apply(Route(target="api", weights={v1.id: 1.0, v2.id: 1.0}))).ok
    assert live.run(live.actuator.apply(Scale(target="api", replicas=1))).ok
    live.wait_ready("api", 1)
    assert [live.request() for _ in range(5)] == [200] * 5


def test_a_crash_fails_requests_until_the_replica_restarts(live: Live) -> None:
    (store,) = live.wait_ready("store", 1)
    recorder = RunRecorder(1)
    load = LoadGenerator(live.actuator.app, live.actuator.router_address, recorder, random.Random(0))
    crash = Event(at=0.0, kind="crash", parameters={"service": "store", "replicas": 1, "recover_seconds": 1})
    applied = live.run(apply_event(crash, live.actuator, load, ["node-0"]))
    assert applied.detail == f"killed {[store.id]}"
    assert not alive(store.process.pid)
    inventory = live.run(live.actuator.inventory())
    assert (inventory.services["store"].replicas, inventory.services["store"].ready_replicas) == (1, 0)
    assert [live.request() for _ in range(5)] == [500] * 5  # store has no ready replica: 503 -> api -> front

    live.run(applied.undo())  # the platform restarts it (recover_seconds later, in a run)
    (restarted,) = live.wait_ready("store", 1)
    assert restarted.id == store.id and restarted.process.pid != store.process.pid
    assert [live.request() for _ in range(5)] == [200] * 5


def test_isolation_in_the_router(live: Live) -> None:
    breaker = Isolate(target="store", mechanism=IsolationMechanism.CIRCUIT_BREAKER, enabled=True)
    assert live.run(live.actuator.apply(breaker)).ok
    (store,) = live.wait_ready("store", 1)
    before = served(store.port)
    assert [live.request() for _ in range(5)] == [500] * 5
    assert served(store.port) == before  # shed in the router: the store never saw them
    closed = Isolate(target="store", mechanism=IsolationMechanism.CIRCUIT_BREAKER, enabled=False)
    assert live.run(live.actuator.apply(closed)).ok
    assert [live.request() for _ in range(5)] == [200] * 5

    rate = Isolate(target="api", mechanism=IsolationMechanism.RATE_LIMIT, limit=2.0)
    assert live.run(live.actuator.apply(rate)).ok
    started = time.monotonic()
    statuses = [live.request() for _ in range(10)]
    elapsed = time.monotonic() - started
    # The bucket starts full (2 tokens) and refills at 2 per second; the rest is shed with a 503.
    assert statuses[:2] == [200, 200]
    assert statuses.count(200) <= 2 + 2 * elapsed + 1 and 500 in statuses
    lifted = Isolate(target="api", mechanism=IsolationMechanism.RATE_LIMIT, enabled=False)
    assert live.run(live.actuator.apply(lifted)).ok
    assert [live.request() for _ in range(5)] == [200] * 5


def test_place_is_a_no_op_on_one_host_and_pipelines_are_refused(live: Live) -> None:
    placed = live.run(live.actuator.apply(Place(target="api", node="node-3")))
    assert placed.ok and "no-op" in placed.detail and "'local'" in placed.detail
    refused = live.run(live.actuator.apply(ReconfigurePipeline(target="llm", layers_per_stage=(2, 2))))
    assert not refused.ok and "pipeline" in refused.detail
    unknown = live.run(live.actuator.apply(Scale(target="nope", replicas=2)))
    assert not unknown.ok and "nope" in unknown.detail
    inventory = live.run(live.actuator.inventory())
    assert list(inventory.nodes) == ["local"] and inventory.nodes["local"].cpu_capacity >= 1


def children_of_this_process() -> set[int]:
    """Pids of live-fidelity processes whose parent is this test process."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            status = (entry / "status").read_text()
            parent = next(line for line in status.splitlines() if line.startswith("PPid:"))
            if int(parent.split()[1]) == os.getpid() and b"services.live" in (entry / "cmdline").read_bytes():
                found.add(int(entry.name))
    return found


def test_run_live_with_hpa_scores_a_run_and_leaves_no_process(app_dir: Path) -> None:
    seen: set[int] = set()
    costs = []
    already_running = children_of_this_process()  # the module's application, still up

    async def run_and_watch() -> Any:
        async def watch() -> None:
            while True:
                seen.update(children_of_this_process() - already_running)
                await asyncio.sleep(0.5)

        watcher = asyncio.create_task(watch())
        try:
            return await run_live(
                load_scenario(app_dir / "scenario.toml"),
                {"hpa": {"mode": "active"}},
                seed=3,
                scale=0.1,
                on_costs=costs.append,
            )
        finally:
            watcher.cancel()

    started = time.monotonic()
    result, recorder = asyncio.run(run_and_watch())
    assert time.monotonic() - started < 40
    assert result.scenario == "tiny-steady" and result.controllers == "hpa" and result.seed == 3
    assert result.requests > 0 and result.error_fraction == 0.0
    # 300 req/s x 0.1 = 30 req/s for the 5 scored seconds (Poisson: well inside 60..240).
    assert 60 <= result.requests <= 240
    # time_scale 1/scale = 10: api's 2 ms becomes 20 ms of wall time, recorded back in the app's time.
    assert 3.0 <= result.p50_ms <= 20.0
    assert sum(second.requests for second in recorder.seconds) > result.requests  # warm-up not scored
    assert [second.replicas for second in recorder.seconds] == [3] * 6
    assert len(seen) == 4  # the router and three replicas
    assert costs and costs[0].processes == 4 and costs[0].process_start_seconds_median is not None
    assert not [pid for pid in seen if alive(pid)]


def test_a_bad_rollout_fails_requests_until_rolled_back(live: Live) -> None:
    recorder = RunRecorder(1)
    load = LoadGenerator(live.actuator.app, live.actuator.router_address, recorder, random.Random(0))
    rollout = Event(
        at=0.0, kind="rollout", parameters={"service": "store", "version": "v2", "error_rate": 1.0}
    )
    live.run(apply_event(rollout, live.actuator, load, ["node-0"]))
    live.wait_for(
        lambda: [(r.version, r.state) for r in live.replicas("store")] == [("v2", ReplicaState.READY)],
        what="store replaced by v2",
    )
    assert live.run(live.actuator.inventory()).services["store"].version == "v2"
    assert [live.request() for _ in range(5)] == [500] * 5  # v2 fails every request

    rollback = Remediate(target="store", operation=RemediationOperation.ROLLBACK)
    outcome = live.run(live.actuator.apply(rollback))
    assert outcome.ok and "v1" in outcome.detail
    live.wait_for(
        lambda: [(r.version, r.state) for r in live.replicas("store")] == [("v1", ReplicaState.READY)],
        what="store rolled back to v1",
    )
    assert [live.request() for _ in range(5)] == [200] * 5


def test_interference_slows_the_replicas_of_one_node(live: Live) -> None:
    def median_seconds(count: int = 5) -> float:
        took = []
        for _ in range(count):
            started = time.monotonic()
            assert live.request() == 200
            took.append(time.monotonic() - started)
        return sorted(took)[count // 2]

    recorder = RunRecorder(1)
    load = LoadGenerator(live.actuator.app, live.actuator.router_address, recorder, random.Random(0))
    noisy = Event(at=0.0, kind="interference", parameters={"node": "node-0", "slowdown": 100.0})
    applied = live.run(apply_event(noisy, live.actuator, load, ["node-0", "node-1"]))
    # Round robin over (service, replica id): api-*, front-*, store-*; node-0 holds the 1st and 3rd.
    ready = sorted(
        (service, r.id)
        for service in ("api", "front", "store")
        for r in live.replicas(service)
        if r.state is ReplicaState.READY
    )
    on_node_0 = [replica_id for position, (_, replica_id) in enumerate(ready) if position % 2 == 0]
    assert applied.detail.endswith(str(on_node_0))
    # Own times x100 on two of the three services: front 1 ms + store 1 ms, or api 2 ms, become >= 100 ms.
    assert median_seconds() >= 0.1
    live.run(applied.undo())
    assert median_seconds() < 0.1
