"""Tests of `controllers.placement.GraphAwarePlacement` on hand-built views."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from controllers.placement import GraphAwarePlacement
from controlplane import Inventory, NodeInventory, Place, ServiceInventory, TelemetryView
from telemetry import EdgeSnapshot, GraphSnapshot, NodeSnapshot, WindowSummary


def _window(mean_ms: float = 10.0, rate: float = 10.0) -> WindowSummary:
    return WindowSummary(
        window_seconds=10.0,
        requests=int(rate * 10),
        errors=0,
        request_rate=rate,
        error_rate=0.0,
        p50_ms=mean_ms,
        p95_ms=2 * mean_ms,
        p99_ms=3 * mean_ms,
        mean_ms=mean_ms,
        concurrency=1.0,
    )


def _node(
    name: str, cpu: float = 4.0, memory: float = 4096.0, zone: str = "z1", ready: bool = True
) -> NodeInventory:
    return NodeInventory(name, cpu, memory, {"zone": zone}, ready)


def _inventory(
    nodes: list[NodeInventory],
    placements: Mapping[str, str],
    requests: Mapping[str, tuple[float, float]],
    replicas: Mapping[str, int] | None = None,
) -> Inventory:
    """`placements`: replica `<service>-<n>` -> node; `requests`: service -> (cpu, memory)."""
    replica_services = {replica: replica.rsplit("-", 1)[0] for replica in placements}
    counts = dict(replicas or {})
    for service in replica_services.values():
        counts.setdefault(service, sum(1 for s in replica_services.values() if s == service))
    services = {
        name: ServiceInventory(name, counts.get(name, 0), cpu_request=cpu, memory_request_mb=memory)
        for name, (cpu, memory) in requests.items()
    }
    return Inventory(
        services=services,
        nodes={node.name: node for node in nodes},
        placements=dict(placements),
        replica_services=replica_services,
    )


def _view(
    tick: int,
    inventory: Inventory,
    windows: Mapping[str, WindowSummary] | None = None,
    edges: Mapping[tuple[str, str], WindowSummary] | None = None,
) -> TelemetryView:
    windows = windows or {}
    nodes = tuple(
        NodeSnapshot(name, "service", "", stats, 100, 0, float(tick)) for name, stats in windows.items()
    )
    edge_snapshots = tuple(
        EdgeSnapshot(source, target, stats, 100, 0, float(tick))
        for (source, target), stats in (edges or {}).items()
    )
    snapshot = GraphSnapshot(
        float(tick), 10.0, nodes=nodes, edges=edge_snapshots, spans_accepted=0, spans_rejected=0
    )
    return TelemetryView(tick, float(tick), snapshot, inventory)


def _places(controller: GraphAwarePlacement, view: TelemetryView) -> list[Place]:
    proposals = asyncio.run(controller.decide(view))
    for proposal in proposals:
        assert isinstance(proposal, Place) and proposal.reason and proposal.evidence
    return proposals  # type: ignore[return-value]


def test_bin_packing_respects_cpu_and_memory_capacity() -> None:
    nodes = [
        _node("a", cpu=8.0, memory=1024.0),  # lots of CPU, memory nearly full
        _node("b", cpu=4.0),
        _node("c", cpu=8.0),
    ]
    inventory = _inventory(
        nodes,
        {"cache-0": "a", "small-0": "b"},
        {"cache": (1.0, 900.0), "small": (1.0, 256.0), "worker": (2.0, 512.0)},
        replicas={"worker": 1},
    )
    places = _places(GraphAwarePlacement(), _view(0, inventory))
    # `a` would be the fullest (best fit) but has no memory left; `b` is fuller than `c` and has room.
    assert [(p.target, p.node, p.replica) for p in places] == [("worker", "b", "")]
    assert places[0].evidence["cpu_request"] == 2.0


def test_overcommitted_node_sheds_its_largest_replica_where_it_fits() -> None:
    nodes = [_node("a", cpu=4.0), _node("b", cpu=2.0), _node("c", cpu=4.0)]
    inventory = _inventory(nodes, {"big-0": "a", "mid-0": "a"}, {"big": (3.0, 100.0), "mid": (2.0, 100.0)})
    places = _places(GraphAwarePlacement(), _view(0, inventory))
    # 5 cores on a 4-core node: big (3 cores) does not fit on b (2 cores), so it goes to c.
    assert [(p.replica, p.node) for p in places] == [("big-0", "c")]


def test_chatty_pair_is_colocated() -> None:
    nodes = [_node("n1", zone="z1"), _node("n2", zone="z2"), _node("n3", zone="z3")]
    inventory = _inventory(
        nodes,
        {"frontend-0": "n1", "cart-0": "n2", "audit-0": "n3"},
        {"frontend": (1.0, 256.0), "cart": (0.5, 256.0), "audit": (0.5, 256.0)},
    )
    edges = {
        ("frontend", "cart"): _window(mean_ms=10.0, rate=100.0),  # affinity 1000
        ("frontend", "audit"): _window(mean_ms=5.0, rate=2.0),  # affinity 10: below the threshold
    }
    places = _places(GraphAwarePlacement(), _view(0, inventory, edges=edges))
    # Either side could move; cart lands on the fuller node (frontend's), by best fit.
    assert [(p.target, p.replica, p.node) for p in places] == [("cart", "cart-0", "n1")]
    assert places[0].evidence["affinity"] == 1000.0


def test_a_replica_is_not_moved_between_partners_as_close_as_each_other() -> None:
    # frontend already shares n1 with cart; search (on n2) cannot join them: it needs more memory.
    # Moving frontend next to search would part it from cart, an equal partner: no net gain, and next
    # round the pair (frontend, cart) would share no node and move it back. So nothing moves.
    nodes = [_node("n1", zone="z1"), _node("n2", memory=16384.0, zone="z2")]
    inventory = _inventory(
        nodes,
        {"frontend-0": "n1", "cart-0": "n1", "search-0": "n2"},
        {"frontend": (1.0, 256.0), "cart": (0.5, 256.0), "search": (1.0, 8192.0)},  # search fits n2 only
    )
    edges = {
        ("frontend", "cart"): _window(mean_ms=10.0, rate=100.0),  # affinity 1000
        ("frontend", "search"): _window(mean_ms=10.0, rate=100.0),  # affinity 1000
    }
    assert _places(GraphAwarePlacement(), _view(0, inventory, edges=edges)) == []
    # With search the closer partner, the move is a clear gain and is made (and cart follows frontend).
    edges[("frontend", "search")] = _window(mean_ms=30.0, rate=100.0)  # affinity 3000
    places = _places(GraphAwarePlacement(), _view(1, inventory, edges=edges))
    assert [(p.target, p.node) for p in places] == [("frontend", "n2"), ("cart", "n2")]


def test_replicas_are_spread_across_zones() -> None:
    nodes = [_node("a1", zone="a"), _node("a2", zone="a"), _node("b1", zone="b")]
    inventory = _inventory(nodes, {"api-0": "a1", "api-1": "a2"}, {"api": (1.0, 256.0)})
    places = _places(GraphAwarePlacement(), _view(0, inventory))
    assert [(p.replica, p.node) for p in places] == [("api-0", "b1")]
    assert places[0].evidence["same_zone_before"] == 1 and places[0].evidence["same_zone_after"] == 0


def test_replicas_sharing_a_node_are_spread_across_nodes() -> None:
    nodes = [_node("a1"), _node("a2")]
    inventory = _inventory(nodes, {"api-0": "a1", "api-1": "a1"}, {"api": (1.0, 256.0)})
    places = _places(GraphAwarePlacement(), _view(0, inventory))
    assert [(p.replica, p.node) for p in places] == [("api-0", "a2")]


def test_interference_is_detected_and_the_slowed_replica_moved() -> None:
    controller = GraphAwarePlacement(GraphAwarePlacement.Parameters(interference_history_ticks=3))
    nodes = [_node("n1", zone="z1"), _node("n2", zone="z2")]
    inventory = _inventory(
        nodes,
        {"a-0": "n1", "b-0": "n1", "c-0": "n2"},
        {"a": (1.0, 256.0), "b": (1.0, 256.0), "c": (1.0, 256.0)},
    )
    calm = {"a": _window(10.0), "b": _window(10.0), "c": _window(10.0)}
    for tick in range(3):
        assert _places(controller, _view(tick, inventory, calm)) == []
    # a and b, co-located on n1, slow down together (3x and 2.5x) with flat load; c on n2 does not.
    slowed = {"a": _window(30.0), "b": _window(25.0), "c": _window(10.0)}
    places = _places(controller, _view(3, inventory, slowed))
    assert [(p.target, p.replica, p.node) for p in places] == [("a", "a-0", "n2")]
    assert places[0].evidence["interfered_node"] == "n1"
    assert places[0].evidence["rising_services"] == "a,b"
    # The node's history started over: no second move on the next tick.
    assert _places(controller, _view(4, inventory, slowed)) == []


def test_latency_rising_with_load_is_not_interference() -> None:
    controller = GraphAwarePlacement(GraphAwarePlacement.Parameters(interference_history_ticks=3))
    nodes = [_node("n1", zone="z1"), _node("n2", zone="z2")]
    inventory = _inventory(nodes, {"a-0": "n1", "b-0": "n1"}, {"a": (1.0, 256.0), "b": (1.0, 256.0)})
    for tick in range(3):
        _places(controller, _view(tick, inventory, {"a": _window(10.0), "b": _window(10.0)}))
    busy = {"a": _window(30.0, rate=40.0), "b": _window(25.0, rate=40.0)}
    assert _places(controller, _view(3, inventory, busy)) == []


def test_migrations_per_round_are_limited() -> None:
    nodes = [_node("bad", ready=False), _node("n1", cpu=16.0), _node("n2", cpu=16.0)]
    placements = {"a-0": "bad", "b-0": "bad", "c-0": "bad"}
    requests = {"a": (1.0, 256.0), "b": (1.0, 256.0), "c": (1.0, 256.0)}
    inventory = _inventory(nodes, placements, requests)
    places = _places(GraphAwarePlacement(), _view(0, inventory))
    assert len(places) == 2  # default max_migrations_per_round
    assert all(p.node in {"n1", "n2"} for p in places)
    one = GraphAwarePlacement(GraphAwarePlacement.Parameters(max_migrations_per_round=1))
    places = _places(one, _view(0, inventory))
    assert len(places) == 1 and places[0].evidence["from_node"] == "bad"


def test_replica_on_a_node_missing_from_the_inventory_is_not_replaced() -> None:
    inventory = _inventory([_node("n1")], {"api-0": "gone"}, {"api": (1.0, 256.0)})
    assert _places(GraphAwarePlacement(), _view(0, inventory)) == []
