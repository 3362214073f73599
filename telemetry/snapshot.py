"""Immutable pictures of the model: the dependency graph and the statistics of one window.

Readers (the gRPC API, the CLI, later the controllers' TelemetryView) get these plain values, never the
live aggregates that the ingest path keeps changing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from types import MappingProxyType

import networkx as nx

from telemetry.aggregates import TelemetryAggregates
from telemetry.critical_path import CriticalPath
from telemetry.windows import Aggregate, UnionAggregate, WindowedStats, WindowSummary

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
    # The service's `service.version` resource attribute, and when that version first appeared.
    version: str = ""
    version_since: float = 0.0


@dataclass(frozen=True, slots=True)
class EdgeSnapshot:
    source: str
    target: str
    stats: WindowSummary
    calls_total: int
    errors_total: int
    last_seen: float


@dataclass(frozen=True)
class GraphSnapshot:
    """Nodes and edges, sorted by name, with the window statistics of each.

    Not slotted: `graph` and `by_name` are cached on the instance, since one snapshot can serve many readers.
    """

    taken_at: float
    window_seconds: float
    nodes: tuple[NodeSnapshot, ...]
    edges: tuple[EdgeSnapshot, ...]
    spans_accepted: int
    spans_rejected: int
    # Per (entry service, entry operation): critical paths of the slowest sampled traces, slowest first.
    critical_paths: Mapping[tuple[str, str], tuple[CriticalPath, ...]] = field(default_factory=dict)

    @cached_property
    def by_name(self) -> Mapping[str, NodeSnapshot]:
        """Nodes keyed by name."""
        return MappingProxyType({node.name: node for node in self.nodes})

    def node(self, name: str) -> NodeSnapshot:
        return self.by_name[name]

    def edge(self, source: str, target: str) -> EdgeSnapshot:
        for edge in self.edges:
            if (edge.source, edge.target) == (source, target):
                return edge
        raise KeyError((source, target))

    @cached_property
    def graph(self) -> nx.DiGraph:
        """The dependency graph, built once per snapshot (see `to_networkx`)."""
        return self.to_networkx()

    def to_networkx(self) -> nx.DiGraph:
        """A read-only DiGraph whose node and edge attribute `snapshot` holds the Node/EdgeSnapshot."""
        graph = nx.DiGraph()
        graph.add_nodes_from((node.name, {"kind": node.kind, "snapshot": node}) for node in self.nodes)
        graph.add_edges_from((edge.source, edge.target, {"snapshot": edge}) for edge in self.edges)
        return nx.freeze(graph)

    def prepare(self) -> None:
        """Work out now what readers would otherwise each pay for on first read: the nodes' latency
        quantiles (a service's are those of the union of its operations), the index by name, the graph."""
        for node in self.nodes:
            node.stats.p50_ms  # noqa: B018 - computes and keeps all three quantiles
        self.by_name  # noqa: B018
        self.graph  # noqa: B018


def build_snapshot(
    aggregates: TelemetryAggregates,
    now: float,
    window_seconds: float,
    spans_accepted: int,
    spans_rejected: int,
    critical_paths: Mapping[tuple[str, str], tuple[CriticalPath, ...]] | None = None,
    complete_buckets: bool = False,
) -> GraphSnapshot:
    """Summarise every node and edge over the last `window_seconds`.

    A service's window is the merge of its operations' windows, an external node's the merge of the
    windows of the calls into it. With `complete_buckets` (what the control loop uses) every series is read
    over the complete buckets of its whole ring, leaving out the one still filling (see
    `WindowedStats.complete_summary`); otherwise the current bucket counts too, as far as it has filled.
    """

    def series(stats: WindowedStats) -> tuple[WindowSummary, Part]:
        if complete_buckets:
            summary = stats.complete_summary(now)
        else:
            summary = WindowSummary.of(*stats.window(now, window_seconds))
        return summary, (summary, stats.requests_total, stats.errors_total)

    operations_by_service: dict[str, list[OperationSnapshot]] = {}
    service_parts: dict[str, list[Part]] = {}
    for (service, operation), stats in aggregates.operations.items():
        summary, part = series(stats)
        operations_by_service.setdefault(service, []).append(
            OperationSnapshot(operation, summary, stats.requests_total, stats.errors_total)
        )
        service_parts.setdefault(service, []).append(part)
    edges = []
    external_parts: dict[str, list[Part]] = {}
    for (source, target), stats in aggregates.edges.items():
        summary, part = series(stats)
        edges.append(
            EdgeSnapshot(source, target, summary, stats.requests_total, stats.errors_total, stats.last_seen)
        )
        if target in aggregates.externals:
            external_parts.setdefault(target, []).append(part)
    empty = (WindowSummary.of(Aggregate(aggregates.relative_accuracy), window_seconds), 0, 0)
    nodes: dict[str, NodeSnapshot] = {}
    for service, seen in aggregates.service_last_seen.items():
        summary, requests_total, errors_total = _combine(service_parts.get(service), empty)
        version, version_since = aggregates.service_versions.get(service, ("", 0.0))
        nodes[service] = NodeSnapshot(
            name=service,
            kind=SERVICE,
            system="",
            stats=summary,
            requests_total=requests_total,
            errors_total=errors_total,
            last_seen=seen,
            operations=tuple(sorted(operations_by_service.get(service, ()), key=lambda op: op.operation)),
            version=version,
            version_since=version_since,
        )
    for name, system in aggregates.externals.items():
        if name in nodes:
            continue  # an instrumented service that some callers also reach unanswered stays a service
        summary, requests_total, errors_total = _combine(external_parts.get(name), empty)
        nodes[name] = NodeSnapshot(
            name=name,
            kind=EXTERNAL,
            system=system,
            stats=summary,
            requests_total=requests_total,
            errors_total=errors_total,
            last_seen=aggregates.external_last_seen.get(name, 0.0),
        )
    for edge in edges:  # an edge may outlive its node's retention by a moment; keep the graph closed
        for name in (edge.source, edge.target):
            if name not in nodes:
                nodes[name] = NodeSnapshot(name, SERVICE, "", empty[0], 0, 0, edge.last_seen)
    return GraphSnapshot(
        taken_at=now,
        window_seconds=window_seconds,
        nodes=tuple(sorted(nodes.values(), key=lambda node: node.name)),
        edges=tuple(sorted(edges, key=lambda edge: (edge.source, edge.target))),
        spans_accepted=spans_accepted,
        spans_rejected=spans_rejected,
        critical_paths=MappingProxyType(dict(critical_paths or {})),
    )


# One series' part of a node: its summary and lifetime totals.
Part = tuple[WindowSummary, int, int]


def _combine(parts: list[Part] | None, empty: Part) -> Part:
    """One node's summary from its parts (operations of a service, calls into an external node)."""
    if not parts:
        return empty
    if len(parts) == 1:
        return parts[0]  # the same summary object serves the part and the node
    union = UnionAggregate([part[0]._aggregate for part in parts])
    return (
        WindowSummary.of(union, max(part[0].window_seconds for part in parts)),
        sum(part[1] for part in parts),
        sum(part[2] for part in parts),
    )
