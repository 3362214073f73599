"""`placement`: graph- and interference-aware placement of replicas on nodes.

Each round the controller builds a model of the cluster from the inventory (which replica of which service
runs on which node, what each replica requests, what each node offers) and plans moves on it, in order of
urgency, until `max_migrations_per_round` moves are planned:

1. **Evacuate** replicas from nodes that are not ready.
2. **Interference.** Per node the controller keeps, across ticks, the window latency and request rate of the
   services running there. A node whose co-located services' latency rose together (by
   `interference_latency_rise`, at least `interference_min_services` of them and at least half of those
   observed) over `interference_history_ticks` ticks while their load stayed flat (request rate up by no
   more than `interference_max_load_rise`) is interfered: the replica of the most slowed-down service is
   moved to another node, and the node's history starts over so the effect is measured before acting
   again. Service windows are per service, not per replica, so a service spread over several nodes lends
   its latency to each of them; requiring several services to rise together on one node is what points at
   the node rather than at a service.
3. **Capacity.** Nodes whose placed CPU or memory requests exceed `capacity_fraction` of their capacity
   shed replicas, largest first.
4. **Spread.** A replica moves when another node has fewer replicas of its service, or as few but in a zone
   (`labels["zone"]`) with fewer, so a node or zone failure takes out as little of a service as possible.
5. **Co-location.** For service pairs by decreasing affinity (call rate x mean latency of the edges between
   them, both directions, from the dependency graph), above `min_affinity`, that share no node: one replica
   moves onto a node running the partner, if it fits, does not worsen the spread, and raises the replica's
   affinity with its node's services by at least `min_affinity` (net of the partners it leaves behind; a
   service with several heavy partners would otherwise be moved between them round after round).

A target node must be ready, not interfered and have room (bin packing on CPU and memory requests). Among
those, nodes are ranked by fewest replicas of the same service, then of the same zone (availability), then
by affinity with the services already there, then by how full the node would be (best fit, to consolidate).
Replicas the inventory counts but has not placed get a `Place(replica="")` on the best node, one per service
per round; these are not migrations and do not count against the limit.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from controlplane import (
    Action,
    ActionKind,
    Controller,
    ControlLocus,
    Dynamics,
    Inventory,
    Objective,
    Place,
    Strategy,
    Taxonomy,
    Telemetry,
    TelemetryView,
)


@dataclass
class _Cluster:
    """The working model one round plans on; planned moves update it."""

    cpu_capacity: dict[str, float]
    memory_capacity: dict[str, float]
    zones: dict[str, str]
    usable: set[str]
    placements: dict[str, str]  # replica -> node
    services: dict[str, str]  # replica -> service
    cpu_request: dict[str, float]  # service -> cores per replica
    memory_request: dict[str, float]
    cpu_used: dict[str, float] = field(default_factory=dict)
    memory_used: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for node in self.cpu_capacity:
            self.cpu_used.setdefault(node, 0.0)
            self.memory_used.setdefault(node, 0.0)
        for replica, node in self.placements.items():
            self._account(node, self.services.get(replica, ""), +1)

    def _account(self, node: str, service: str, sign: int) -> None:
        self.cpu_used[node] = self.cpu_used.get(node, 0.0) + sign * self.cpu_request.get(service, 0.0)
        self.memory_used[node] = self.memory_used.get(node, 0.0) + sign * self.memory_request.get(
            service, 0.0
        )

    def move(self, replica: str, node: str) -> None:
        service = self.services.get(replica, "")
        old = self.placements.get(replica)
        if old is not None:
            self._account(old, service, -1)
        self.placements[replica] = node
        self._account(node, service, +1)

    def replicas_on(self, node: str) -> list[str]:
        return sorted(replica for replica, where in self.placements.items() if where == node)

    def services_on(self, node: str, excluding: str = "") -> set[str]:
        return {
            self.services.get(replica, "")
            for replica, where in self.placements.items()
            if where == node and replica != excluding
        }

    def fits(self, node: str, service: str, fraction: float) -> bool:
        cpu = self.cpu_used.get(node, 0.0) + self.cpu_request.get(service, 0.0)
        memory = self.memory_used.get(node, 0.0) + self.memory_request.get(service, 0.0)
        return (
            cpu <= fraction * self.cpu_capacity[node] + 1e-9
            and memory <= fraction * self.memory_capacity[node] + 1e-9
        )

    def utilization(self, node: str) -> float:
        """The larger of CPU and memory utilization of `node`."""
        cpu = self.cpu_used.get(node, 0.0) / self.cpu_capacity[node] if self.cpu_capacity[node] else 0.0
        memory = (
            self.memory_used.get(node, 0.0) / self.memory_capacity[node]
            if self.memory_capacity[node]
            else 0.0
        )
        return max(cpu, memory)

    def spread_key(self, service: str, node: str, excluding: str) -> tuple[int, int]:
        """Other replicas of `service` on `node` and in its zone (lower is better for availability)."""
        zone = self.zones.get(node, "")
        same_node = same_zone = 0
        for replica, where in self.placements.items():
            if replica == excluding or self.services.get(replica) != service:
                continue
            same_node += where == node
            same_zone += bool(zone) and self.zones.get(where, "") == zone
        return same_node, same_zone


@dataclass
class _Move:
    replica: str
    service: str
    source: str
    node: str
    reason: str
    evidence: dict[str, float | int | str | bool]


class GraphAwarePlacement(Controller):
    """Bin-packs replicas, co-locates chatty services, spreads replicas, escapes interfered nodes."""

    name = "placement"
    description = (
        "Graph- and interference-aware placement: bin packing under CPU/memory, co-location of chatty"
        " service pairs, spread across nodes and zones, migration away from interfered nodes, with a"
        " per-round migration limit."
    )
    # A greedy heuristic over a model of the cluster (ranked candidate nodes), fed by traces (graph and
    # service windows); capacities, requests and readiness come from the actuators' inventory, which no
    # telemetry facet names. Not yet evaluated, so no evidence is claimed.
    taxonomy = Taxonomy.of(
        ControlLocus.CENTRALIZED,
        Strategy.OPTIMIZATION,
        dynamics=[
            Dynamics.INTERFERENCE,
            Dynamics.REQUEST_PATH,
            Dynamics.FAILURE,
            Dynamics.RESOURCE_AVAILABILITY,
        ],
        objectives=[Objective.LATENCY_SLO, Objective.AVAILABILITY, Objective.COST],
        telemetry=[Telemetry.TRACES],
        actions=[ActionKind.PLACEMENT],
    )
    period_seconds = 30.0
    time_budget_seconds = 2.0

    @dataclass(frozen=True)
    class Parameters:
        """Settings from `[controllers.placement.params]`."""

        max_migrations_per_round: int = 2
        # Share of a node's CPU and memory that requests may fill; the rest is headroom.
        capacity_fraction: float = 0.9
        # Call rate (1/s) x mean latency (ms) of a pair's edges above which co-locating it is worth a move.
        min_affinity: float = 100.0
        zone_label: str = "zone"
        interference_history_ticks: int = 5
        interference_latency_rise: float = 1.5
        interference_max_load_rise: float = 1.2
        interference_min_services: int = 2
        # Below this many requests in a window, a service's latency is noise, not evidence.
        min_requests: int = 10

    def __init__(self, params: object | None = None) -> None:
        super().__init__(params)
        # node -> recent ticks of {service: (mean_ms, request_rate)} for the services placed on it.
        self._history: dict[str, deque[dict[str, tuple[float, float]]]] = {}

    async def decide(self, view: TelemetryView) -> list[Action]:
        p = self.params
        inventory = view.inventory
        if not inventory.nodes:
            return []
        cluster = _Cluster(
            cpu_capacity={name: node.cpu_capacity for name, node in inventory.nodes.items()},
            memory_capacity={name: node.memory_capacity_mb for name, node in inventory.nodes.items()},
            zones={name: node.labels.get(p.zone_label, "") for name, node in inventory.nodes.items()},
            usable={name for name, node in inventory.nodes.items() if node.ready},
            placements={
                replica: node for replica, node in inventory.placements.items() if node in inventory.nodes
            },
            services=dict(inventory.replica_services),
            cpu_request={name: svc.cpu_request for name, svc in inventory.services.items()},
            memory_request={name: svc.memory_request_mb for name, svc in inventory.services.items()},
        )
        interfered = self._observe_interference(view, cluster)
        cluster.usable -= set(interfered)
        affinity = _affinities(view, set(inventory.services))

        moves: list[_Move] = []
        budget = p.max_migrations_per_round
        moved: set[str] = set()
        planners = (
            lambda: self._evacuate(inventory, cluster, affinity),
            lambda: self._escape_interference(interfered, cluster, affinity),
            lambda: self._relieve_capacity(cluster, affinity),
            lambda: self._spread(cluster, affinity),
            lambda: self._colocate(cluster, affinity),
        )
        for planner in planners:
            while len(moves) < budget:
                move = planner()
                if move is None or move.replica in moved:
                    break
                cluster.move(move.replica, move.node)
                moved.add(move.replica)
                moves.append(move)
                if move.source in interfered:
                    # Measure the node afresh before judging it again.
                    self._history.pop(move.source, None)
                    interfered.pop(move.source)
        proposals: list[Action] = [
            Place(
                target=move.service,
                node=move.node,
                replica=move.replica,
                reason=move.reason,
                evidence={
                    **move.evidence,
                    "from_node": move.source,
                    "to_node": move.node,
                    "to_node_utilization": round(cluster.utilization(move.node), 4),
                    "migrations_this_round": len(moves),
                    "max_migrations_per_round": budget,
                },
            )
            for move in moves
        ]
        proposals.extend(self._place_new(inventory, cluster, affinity))
        return proposals

    # -- interference -------------------------------------------------------------------------------------

    def _observe_interference(self, view: TelemetryView, cluster: _Cluster) -> dict[str, dict[str, float]]:
        """Record this tick per node; return interfered nodes with the latency rise of each slowed service."""
        p = self.params
        interfered: dict[str, dict[str, float]] = {}
        for node in cluster.cpu_capacity:
            sample: dict[str, tuple[float, float]] = {}
            for service in cluster.services_on(node):
                stats = view.stats(service)
                if stats is not None and stats.requests >= p.min_requests:
                    sample[service] = (stats.mean_ms, stats.request_rate)
            history = self._history.setdefault(node, deque(maxlen=p.interference_history_ticks + 1))
            history.append(sample)
            if len(history) < history.maxlen:
                continue
            old, new = history[0], history[-1]
            common = [service for service in new if service in old and old[service][0] > 0]
            old_load = sum(old[service][1] for service in common)
            new_load = sum(new[service][1] for service in common)
            if not common or new_load > p.interference_max_load_rise * max(old_load, 1e-9):
                continue
            rising = {
                service: new[service][0] / old[service][0]
                for service in common
                if new[service][0] >= p.interference_latency_rise * old[service][0]
                and new[service][1] <= p.interference_max_load_rise * max(old[service][1], 1e-9)
            }
            if len(rising) >= p.interference_min_services and 2 * len(rising) >= len(common):
                interfered[node] = rising
        return interfered

    # -- planners: each returns the next move, or None ----------------------------------------------------

    def _best_node(
        self,
        cluster: _Cluster,
        affinity: dict[frozenset[str], float],
        replica: str,
        service: str,
        candidates: set[str] | None = None,
    ) -> tuple[str, tuple] | None:
        """The best node for `replica` among usable nodes with room (other than its own), and its rank."""
        current = cluster.placements.get(replica)
        best: tuple[str, tuple] | None = None
        for node in sorted(candidates if candidates is not None else cluster.usable):
            if node == current or node not in cluster.usable:
                continue
            if not cluster.fits(node, service, self.params.capacity_fraction):
                continue
            same_node, same_zone = cluster.spread_key(service, node, excluding=replica)
            together = _together(cluster, affinity, service, node, replica)
            rank = (same_node, same_zone, -together, -cluster.utilization(node), node)
            if best is None or rank < best[1]:
                best = (node, rank)
        return best

    def _evacuate(
        self, inventory: Inventory, cluster: _Cluster, affinity: dict[frozenset[str], float]
    ) -> _Move | None:
        for node in sorted(inventory.nodes):
            if inventory.nodes[node].ready:
                continue
            for replica in cluster.replicas_on(node):
                service = cluster.services.get(replica, "")
                best = self._best_node(cluster, affinity, replica, service)
                if best is not None:
                    return _Move(
                        replica,
                        service,
                        node,
                        best[0],
                        f"node {node} is not ready; moving {replica} off it",
                        {"node_ready": False},
                    )
        return None

    def _escape_interference(
        self,
        interfered: dict[str, dict[str, float]],
        cluster: _Cluster,
        affinity: dict[frozenset[str], float],
    ) -> _Move | None:
        # Worst node first; on it, the most slowed-down service's replica is the one to rescue.
        for node, rising in sorted(interfered.items(), key=lambda item: -max(item[1].values())):
            for service, rise in sorted(rising.items(), key=lambda item: -item[1]):
                for replica in cluster.replicas_on(node):
                    if cluster.services.get(replica) != service:
                        continue
                    best = self._best_node(cluster, affinity, replica, service)
                    if best is None:
                        continue
                    return _Move(
                        replica,
                        service,
                        node,
                        best[0],
                        (
                            f"interference on {node}: latency of {len(rising)} co-located services rose"
                            f" together (up to {max(rising.values()):.1f}x) without load rising;"
                            f" moving {replica} ({service}, {rise:.1f}x slower) away"
                        ),
                        {
                            "interfered_node": node,
                            "latency_rise": round(rise, 4),
                            "rising_services": ",".join(sorted(rising)),
                            "history_ticks": self.params.interference_history_ticks,
                        },
                    )
        return None

    def _relieve_capacity(self, cluster: _Cluster, affinity: dict[frozenset[str], float]) -> _Move | None:
        fraction = self.params.capacity_fraction
        for node in sorted(cluster.cpu_capacity):
            cpu_over = cluster.cpu_used.get(node, 0.0) > fraction * cluster.cpu_capacity[node] + 1e-9
            memory_over = cluster.memory_used.get(node, 0.0) > fraction * cluster.memory_capacity[node] + 1e-9
            if not (cpu_over or memory_over):
                continue
            replicas = sorted(
                cluster.replicas_on(node),
                key=lambda r: (
                    -(
                        cluster.cpu_request.get(cluster.services.get(r, ""), 0.0)
                        + cluster.memory_request.get(cluster.services.get(r, ""), 0.0) / 1024
                    )
                ),
            )
            for replica in replicas:
                service = cluster.services.get(replica, "")
                best = self._best_node(cluster, affinity, replica, service)
                if best is not None:
                    return _Move(
                        replica,
                        service,
                        node,
                        best[0],
                        f"node {node} is over {fraction:.0%} of its capacity; moving {replica} to {best[0]}",
                        {
                            "cpu_used": round(cluster.cpu_used[node], 4),
                            "cpu_capacity": cluster.cpu_capacity[node],
                            "memory_used_mb": round(cluster.memory_used[node], 4),
                            "memory_capacity_mb": cluster.memory_capacity[node],
                        },
                    )
        return None

    def _spread(self, cluster: _Cluster, affinity: dict[frozenset[str], float]) -> _Move | None:
        for replica in sorted(cluster.placements):
            service = cluster.services.get(replica, "")
            node = cluster.placements[replica]
            here = cluster.spread_key(service, node, excluding=replica)
            if here == (0, 0):
                continue
            best = self._best_node(cluster, affinity, replica, service)
            if best is None or best[1][:2] >= here:
                continue
            return _Move(
                replica,
                service,
                node,
                best[0],
                (
                    f"spreading {service}: {replica} shares {node} with {here[0]} and its zone with {here[1]}"
                    f" other replicas; {best[0]} has {best[1][0]} and {best[1][1]}"
                ),
                {
                    "same_node_before": here[0],
                    "same_zone_before": here[1],
                    "same_node_after": best[1][0],
                    "same_zone_after": best[1][1],
                },
            )
        return None

    def _colocate(self, cluster: _Cluster, affinity: dict[frozenset[str], float]) -> _Move | None:
        for pair, weight in sorted(affinity.items(), key=lambda item: (-item[1], sorted(item[0]))):
            if weight < self.params.min_affinity:
                break
            a, b = sorted(pair)
            nodes_a = {
                node for replica, node in cluster.placements.items() if cluster.services.get(replica) == a
            }
            nodes_b = {
                node for replica, node in cluster.placements.items() if cluster.services.get(replica) == b
            }
            if not nodes_a or not nodes_b or nodes_a & nodes_b:
                continue
            options: list[tuple[tuple, str, str, str]] = []
            for service, partner_nodes in ((a, nodes_b), (b, nodes_a)):
                for replica, node in sorted(cluster.placements.items()):
                    if cluster.services.get(replica) != service:
                        continue
                    before = cluster.spread_key(service, node, excluding=replica)
                    best = self._best_node(cluster, affinity, replica, service, candidates=partner_nodes)
                    if best is None or best[1][:2] > before:
                        continue
                    # Only a clear net gain: leaving the node may part the replica from other partners as
                    # close as this one, and moving back and forth between them would be churn.
                    gain = -best[1][2] - _together(cluster, affinity, service, node, replica)
                    if gain >= self.params.min_affinity:
                        options.append((best[1], replica, service, best[0]))
            if not options:
                continue
            _, replica, service, node = min(options)
            partner = b if service == a else a
            return _Move(
                replica,
                service,
                cluster.placements[replica],
                node,
                (
                    f"{a} and {b} talk heavily (call rate x latency {weight:.0f} ms/s) but share no node;"
                    f" moving {replica} next to {partner} on {node}"
                ),
                {"affinity": round(weight, 4), "partner": partner},
            )
        return None

    def _place_new(
        self, inventory: Inventory, cluster: _Cluster, affinity: dict[frozenset[str], float]
    ) -> list[Action]:
        proposals: list[Action] = []
        for service, svc in sorted(inventory.services.items()):
            # From the inventory, so a replica on a node it does not describe is not taken for missing.
            placed = sum(
                1 for replica in inventory.placements if inventory.replica_services.get(replica) == service
            )
            if svc.replicas <= placed:
                continue
            best = self._best_node(cluster, affinity, "", service)
            if best is None:
                continue
            proposals.append(
                Place(
                    target=service,
                    node=best[0],
                    reason=(
                        f"{service} has {svc.replicas} replicas but {placed} placed; {best[0]} has room"
                        f" ({svc.cpu_request:g} cores, {svc.memory_request_mb:g} MB) and ranks best on spread"
                        " and fit"
                    ),
                    evidence={
                        "replicas": svc.replicas,
                        "placed": placed,
                        "cpu_request": svc.cpu_request,
                        "memory_request_mb": svc.memory_request_mb,
                        "node_utilization_before": round(cluster.utilization(best[0]), 4),
                        "node_cpu_capacity": cluster.cpu_capacity[best[0]],
                        "node_memory_capacity_mb": cluster.memory_capacity[best[0]],
                    },
                )
            )
        return proposals


def _together(
    cluster: _Cluster, affinity: dict[frozenset[str], float], service: str, node: str, replica: str
) -> float:
    """Affinity of `service` with the other services on `node`, not counting `replica` itself."""
    return sum(
        affinity.get(frozenset((service, other)), 0.0)
        for other in cluster.services_on(node, excluding=replica)
        if other != service
    )


def _affinities(view: TelemetryView, services: set[str]) -> dict[frozenset[str], float]:
    """Call rate x mean latency of the edges between each pair of known services, both directions summed."""
    affinity: dict[frozenset[str], float] = {}
    for edge in view.edges():
        if edge.source == edge.target or edge.source not in services or edge.target not in services:
            continue
        pair = frozenset((edge.source, edge.target))
        affinity[pair] = affinity.get(pair, 0.0) + edge.stats.request_rate * edge.stats.mean_ms
    return affinity
