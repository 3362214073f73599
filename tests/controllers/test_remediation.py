"""Tests of the `remediation` controller: fault injection on random 20-service DAGs built by hand."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import networkx as nx
import numpy as np
import pytest

from controllers.remediation import DetectLocalizeAct
from controlplane import (
    Inventory,
    Isolate,
    NodeInventory,
    Remediate,
    RemediationOperation,
    ServiceInventory,
    Strategy,
    TelemetryView,
)
from telemetry import WindowSummary
from telemetry.snapshot import EdgeSnapshot, GraphSnapshot, NodeSnapshot

WINDOW = 15.0
BASELINE_TICKS = 30


def summary(rate: float, p99: float, error_rate: float = 0.001) -> WindowSummary:
    requests = int(rate * WINDOW)
    return WindowSummary(
        window_seconds=WINDOW,
        requests=requests,
        errors=int(requests * error_rate),
        request_rate=rate,
        error_rate=error_rate,
        p50_ms=p99 / 3,
        p95_ms=p99 / 1.5,
        p99_ms=p99,
        mean_ms=p99 / 2.5,
        concurrency=rate * p99 / 2500,
    )


@dataclass
class App:
    """A random DAG of services (caller -> callee) and the knobs a test turns to inject faults."""

    graph: nx.DiGraph
    base: dict[str, float]
    rate: dict[str, float]
    rng: np.random.Generator
    versions: dict[str, str] = field(default_factory=dict)
    placements: dict[str, str] = field(default_factory=dict)
    slowdown: dict[str, float] = field(default_factory=dict)
    errors: dict[str, float] = field(default_factory=dict)
    # Services that are down: they answer nothing, their callers' calls into them fail.
    down: set[str] = field(default_factory=set)
    # The share of its usual requests a down service still reports in the window (0: it sends no spans).
    down_served: float = 0.2
    # Where versions show: the inventory, or the `service.version` resource attribute of the spans.
    versions_from_traces: bool = False

    def view(self, tick: int) -> TelemetryView:
        nodes, edges = [], []
        for name in sorted(self.graph):
            p99 = self.base[name] * self.slowdown.get(name, 1.0) * self.rng.lognormal(0.0, 0.05)
            rate = self.rate[name] * self.rng.lognormal(0.0, 0.03)
            error_rate = self.errors.get(name, 0.001 * self.rng.uniform(0.5, 1.5))
            if name in self.down:  # the tail of the window from before it went down: fewer, clean requests
                rate, error_rate = rate * self.down_served, 0.0
            stats = summary(rate, p99, error_rate)
            version = self.versions.get(name, "v1") if self.versions_from_traces else ""
            nodes.append(
                NodeSnapshot(
                    name, "service", "", stats, stats.requests, stats.errors, float(tick), version=version
                )
            )
        for caller, callee in sorted(self.graph.edges):
            failing = 0.8 if callee in self.down else 0.001
            # A callee's callers share its requests between them, as in real traces.
            share = self.rate[callee] / self.graph.in_degree(callee)
            stats = summary(share, self.base[callee] * self.slowdown.get(callee, 1.0), failing)
            edges.append(EdgeSnapshot(caller, callee, stats, stats.requests, stats.errors, float(tick)))
        snapshot = GraphSnapshot(float(tick), WINDOW, tuple(nodes), tuple(edges), 0, 0)
        services = {
            name: ServiceInventory(
                name=name,
                replicas=2,
                version="" if self.versions_from_traces else self.versions.get(name, "v1"),
            )
            for name in self.graph
        }
        node_names = sorted(set(self.placements.values()))
        inventory = Inventory(
            services=services,
            nodes={
                n: NodeInventory(name=n, cpu_capacity=8.0, memory_capacity_mb=16_000.0) for n in node_names
            },
            placements=dict(self.placements),
            replica_services={replica: replica.rsplit("-r", 1)[0] for replica in self.placements},
        )
        return TelemetryView(tick, float(tick) * WINDOW, snapshot, inventory)

    def inject(self, root: str, factor: float = 4.0) -> None:
        """Slow `root` down; each ancestor slows less the further it is from the root."""
        self.slowdown[root] = factor
        distances = nx.single_source_shortest_path_length(self.graph.reverse(copy=False), root)
        for service, hops in distances.items():
            if hops > 0:
                self.slowdown[service] = 1.0 + (factor - 1.0) * 0.5**hops


def random_app(seed: int, size: int = 20) -> App:
    rng = np.random.default_rng(seed)
    names = [f"svc-{i:02d}" for i in range(size)]
    graph = nx.DiGraph()
    graph.add_nodes_from(names)
    for index in range(1, size):
        # Every service has a caller earlier in the order, so the DAG is one application with one entry.
        graph.add_edge(names[int(rng.integers(0, index))], names[index])
        for earlier in range(index):
            if rng.random() < 0.08:
                graph.add_edge(names[earlier], names[index])
    base = {}
    for name in reversed(list(nx.topological_sort(graph))):
        own = float(rng.uniform(5.0, 40.0))
        base[name] = own + 0.5 * sum(base[callee] for callee in graph.successors(name))
    rate = {name: float(rng.uniform(20.0, 200.0)) for name in names}
    return App(graph, base, rate, rng)


def run(controller: DetectLocalizeAct, view: TelemetryView) -> list:
    return asyncio.run(controller.decide(view))


def warm_up(controller: DetectLocalizeAct, app: App) -> None:
    for tick in range(BASELINE_TICKS):
        assert run(controller, app.view(tick)) == [], "no action on a healthy baseline"


def test_taxonomy_and_name() -> None:
    DetectLocalizeAct.validate_class()
    assert DetectLocalizeAct.name == "remediation"
    assert DetectLocalizeAct.taxonomy.strategy is Strategy.HYBRID


def test_true_root_cause_ranks_first_in_most_seeded_faults() -> None:
    hits = 0
    for seed in range(20):
        app = random_app(seed)
        # A smaller forest keeps twenty seeds fast; detection does not depend on its size here.
        controller = DetectLocalizeAct(DetectLocalizeAct.Parameters(forest_trees=20))
        warm_up(controller, app)
        root = f"svc-{int(np.random.default_rng(1000 + seed).integers(1, 20)):02d}"
        app.inject(root)
        proposals = run(controller, app.view(BASELINE_TICKS))
        assert len(proposals) == 1
        action = proposals[0]
        assert action.evidence["rank_1"].startswith(action.target + ":")
        hits += action.target == root
    assert hits >= 16, f"root cause ranked first in {hits}/20 seeded faults"


def test_restart_without_version_change() -> None:
    app = random_app(3)
    controller = DetectLocalizeAct()
    warm_up(controller, app)
    app.inject("svc-07")
    [action] = run(controller, app.view(BASELINE_TICKS))
    assert isinstance(action, Remediate)
    assert action.target == "svc-07"
    assert action.operation is RemediationOperation.RESTART
    assert "rank_1" in action.evidence and "cause_z" in action.evidence


@pytest.mark.parametrize("served", [0.2, 0.0])
def test_a_service_that_is_down_is_found_by_its_callers_failing_calls(served: float) -> None:
    app = random_app(3)
    app.down_served = served
    controller = DetectLocalizeAct()
    warm_up(controller, app)
    down = "svc-07"
    app.down.add(down)
    for caller in app.graph.predecessors(down):  # the failures propagate to the callers' own answers
        app.errors[caller] = 0.5
    [action] = run(controller, app.view(BASELINE_TICKS))
    assert isinstance(action, Remediate) and action.operation is RemediationOperation.RESTART
    assert action.target == down


@pytest.mark.parametrize("from_traces", [False, True], ids=["inventory-version", "service.version-attribute"])
def test_rollback_when_version_changed_with_the_anomaly(from_traces: bool) -> None:
    app = random_app(4)
    app.versions_from_traces = from_traces
    controller = DetectLocalizeAct()
    warm_up(controller, app)
    app.versions["svc-05"] = "v2"
    assert run(controller, app.view(BASELINE_TICKS)) == [], "a version change alone is not an anomaly"
    app.inject("svc-05")
    [action] = run(controller, app.view(BASELINE_TICKS + 1))
    assert isinstance(action, Remediate)
    assert action.target == "svc-05"
    assert action.operation is RemediationOperation.ROLLBACK
    assert action.version == "v1"
    assert controller.versions["svc-05"] == [(0, "v1"), (BASELINE_TICKS, "v2")]


def test_drain_when_anomalous_services_share_a_node() -> None:
    app = random_app(5)
    # Two unrelated leaves and one bystander share node-a; everything else runs on node-b.
    leaves = [name for name in app.graph if app.graph.out_degree(name) == 0]
    first, second = leaves[0], leaves[1]
    bystander = next(name for name in app.graph if name not in (first, second))
    for name in app.graph:
        node = "node-a" if name in (first, second, bystander) else "node-b"
        app.placements[f"{name}-r0"] = node
    controller = DetectLocalizeAct()
    warm_up(controller, app)
    app.slowdown.update({first: 4.0, second: 4.0})
    [action] = run(controller, app.view(BASELINE_TICKS))
    assert isinstance(action, Remediate)
    assert action.operation is RemediationOperation.DRAIN
    assert action.evidence["node"] == "node-a"
    assert action.target in (first, second)
    assert action.replica == f"{action.target}-r0"


def test_isolate_when_a_restart_did_not_help() -> None:
    app = random_app(6)
    controller = DetectLocalizeAct()
    warm_up(controller, app)
    app.errors["svc-09"] = 0.5
    operations = []
    for tick in range(BASELINE_TICKS, BASELINE_TICKS + 4):
        [action] = run(controller, app.view(tick))
        assert action.target == "svc-09"
        operations.append(type(action).__name__)
    assert operations[0] == "Remediate"
    assert isinstance(action, Isolate)
    assert action.mechanism.value == "circuit_breaker"


def test_a_surge_of_load_without_errors_is_left_to_the_autoscalers() -> None:
    app = random_app(3)
    controller = DetectLocalizeAct()
    warm_up(controller, app)
    hot = "svc-07"
    # Four times the requests reach svc-07 and everything below it; it slows down under the load, as do its
    # callers waiting for it, but nothing fails: restarting it would only take capacity away.
    for service in nx.descendants(app.graph, hot) | {hot}:
        app.rate[service] *= 4.0
    app.inject(hot, factor=3.0)
    assert run(controller, app.view(BASELINE_TICKS)) == []
    # The same slowdown without the surge is a fault, and is acted on.
    calm = random_app(3)
    controller = DetectLocalizeAct()
    warm_up(controller, calm)
    calm.inject(hot, factor=3.0)
    [action] = run(controller, calm.view(BASELINE_TICKS))
    assert action.target == hot


def test_less_traffic_alone_is_not_a_fault() -> None:
    app = random_app(3)
    controller = DetectLocalizeAct()
    warm_up(controller, app)
    for service in nx.descendants(app.graph, "svc-07") | {"svc-07"}:
        app.rate[service] *= 0.2  # load ebbs away from one branch; latency and errors stay as they were
    assert run(controller, app.view(BASELINE_TICKS)) == []
