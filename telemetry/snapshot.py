"""Immutable pictures of the model: the dependency graph and the statistics of one window.

Readers (the gRPC API, the CLI, later the controllers' TelemetryView) get these plain values, never the
live aggregates that the ingest path keeps changing.
"""

from __future__ import annotations

from dataclasses import dataclass

import networkx as nx

from telemetry.aggregates import TelemetryAggregates
from telemetry.windows import Aggregate, WindowSummary

SERVICE = "service"
EXTERNAL = "external"


@dataclass(frozen=True, slots=True)
class OperationSnapshot:
    operation: str
    stats: WindowSummary
    requests_total: int
    errors_total: int


@dataclass(frozen=True, slots=True)
class NodeSnapshot:
    """A service (sends spans) or an external peer (named only by its callers' client spans)."""

    name: str
    kind: str
    system: str
    stats: WindowSummary
    requests_total: int
    errors_total: int
    last_seen: float
    operations: tuple[OperationSnapshot, ...] = ()


@dataclass(frozen=True, slots=True)
class EdgeSnapshot:
    source: str
    target: str
    stats: WindowSummary
    calls_total: int
    errors_total: int
    last_seen: float


@dataclass(frozen=True, slots=True)
class GraphSnapshot:
    """Nodes and edges, sorted by name, with the window statistics of each."""

    taken_at: float
    window_seconds: float
    nodes: tuple[NodeSnapshot, ...]
    edges: tuple[EdgeSnapshot, ...]
    spans_accepted: int
    spans_rejected: int

    def node(self, name: str) -> NodeSnapshot:
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(name)

    def edge(self, source: str, target: str) -> EdgeSnapshot:
        for edge in self.edges:
            if (edge.source, edge.target) == (source, target):
                return edge
        raise KeyError((source, target))

    def to_networkx(self) -> nx.DiGraph:
        """A read-only DiGraph whose node and edge attribute `snapshot` holds the Node/EdgeSnapshot."""
        graph = nx.DiGraph()
        for node in self.nodes:
            graph.add_node(node.name, kind=node.kind, snapshot=node)
        for edge in self.edges:
            graph.add_edge(edge.source, edge.target, snapshot=edge)
        return nx.freeze(graph)


def build_snapshot(
    aggregates: TelemetryAggregates,
    now: float,
    window_seconds: float,
    spans_accepted: int,
    spans_rejected: int,
) -> GraphSnapshot:
    """Summarise every node and edge over the last `window_seconds`."""
    operations_by_service: dict[str, list[OperationSnapshot]] = {}
    for (service, operation), stats in aggregates.operations.items():
        operations_by_service.setdefault(service, []).append(
            OperationSnapshot(
                operation, stats.summary(now, window_seconds), stats.requests_total, stats.errors_total
            )
        )
    nodes: dict[str, NodeSnapshot] = {}
    empty = WindowSummary.of(Aggregate(aggregates.relative_accuracy), window_seconds)
    service_stats = aggregates.service_stats()
    for service, seen in aggregates.service_last_seen.items():
        stats = service_stats.get(service)
        nodes[service] = NodeSnapshot(
            name=service,
            kind=SERVICE,
            system="",
            stats=stats.summary(now, window_seconds) if stats else empty,
            requests_total=stats.requests_total if stats else 0,
            errors_total=stats.errors_total if stats else 0,
            last_seen=seen,
            operations=tuple(sorted(operations_by_service.get(service, ()), key=lambda op: op.operation)),
        )
    edges = []
    for (source, target), stats in aggregates.edges.items():
        edges.append(
            EdgeSnapshot(
                source,
                target,
                stats.summary(now, window_seconds),
                stats.requests_total,
                stats.errors_total,
                stats.last_seen,
            )
        )
    for name, system in aggregates.externals.items():
        if name in nodes:
            continue  # an instrumented service that some callers also reach unanswered stays a service
        incoming = [aggregates.edges[key] for key in aggregates.edges if key[1] == name]
        merged = None
        for stats in incoming:
            if merged is None:
                merged = type(stats)(
                    stats.bucket_seconds, stats.bucket_count, stats.relative_accuracy, stats.first_seen
                )
            merged.merge(stats)
        nodes[name] = NodeSnapshot(
            name=name,
            kind=EXTERNAL,
            system=system,
            stats=merged.summary(now, window_seconds) if merged else empty,
            requests_total=merged.requests_total if merged else 0,
            errors_total=merged.errors_total if merged else 0,
            last_seen=aggregates.external_last_seen.get(name, 0.0),
        )
    for edge in edges:  # an edge may outlive its node's retention by a moment; keep the graph closed
        for name in (edge.source, edge.target):
            if name not in nodes:
                nodes[name] = NodeSnapshot(name, SERVICE, "", empty, 0, 0, edge.last_seen)
    return GraphSnapshot(
        taken_at=now,
        window_seconds=window_seconds,
        nodes=tuple(sorted(nodes.values(), key=lambda node: node.name)),
        edges=tuple(sorted(edges, key=lambda edge: (edge.source, edge.target))),
        spans_accepted=spans_accepted,
        spans_rejected=spans_rejected,
    )
