"""`TelemetryView`: the immutable snapshot every controller reads each tick, and the inventory in it.

The view joins what traces say (the graph snapshot: per-service, per-operation and per-edge windows and
the dependency graph) with what actuators report (the inventory: replicas, nodes, placements, routing
weights, serving pipelines). Controllers read it and never reach into the receiver or the actuators.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import networkx as nx

from telemetry import EdgeSnapshot, GraphSnapshot, NodeSnapshot, WindowSummary
from telemetry.critical_path import CriticalPath


@dataclass(frozen=True, slots=True)
class ServiceInventory:
    """What the substrate runs for one service."""

    name: str
    replicas: int
    ready_replicas: int | None = None
    cpu_request: float = 0.0  # cores per replica
    memory_request_mb: float = 0.0
    min_replicas: int = 1
    max_replicas: int = 1_000
    version: str = ""


@dataclass(frozen=True, slots=True)
class NodeInventory:
    name: str
    cpu_capacity: float
    memory_capacity_mb: float
    labels: Mapping[str, str] = field(default_factory=dict)
    ready: bool = True


@dataclass(frozen=True, slots=True)
class PipelineInventory:
    """A pipeline-parallel serving deployment: layers per stage and the device of each stage."""

    name: str
    layers_per_stage: tuple[int, ...]
    devices: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Inventory:
    """Everything actuators report; empty parts mean no actuator reports them."""

    services: Mapping[str, ServiceInventory] = field(default_factory=dict)
    nodes: Mapping[str, NodeInventory] = field(default_factory=dict)
    placements: Mapping[str, str] = field(default_factory=dict)  # replica -> node
    replica_services: Mapping[str, str] = field(default_factory=dict)  # replica -> service
    routing: Mapping[str, Mapping[str, float]] = field(default_factory=dict)  # service -> weights
    pipelines: Mapping[str, PipelineInventory] = field(default_factory=dict)

    def replicas_of(self, service: str) -> int:
        known = self.services.get(service)
        return known.replicas if known else 0

    def frozen(self) -> Inventory:
        """A copy whose mappings cannot be changed through the view."""
        return Inventory(
            services=MappingProxyType(dict(self.services)),
            nodes=MappingProxyType(dict(self.nodes)),
            placements=MappingProxyType(dict(self.placements)),
            replica_services=MappingProxyType(dict(self.replica_services)),
            routing=MappingProxyType(
                {key: MappingProxyType(dict(value)) for key, value in self.routing.items()}
            ),
            pipelines=MappingProxyType(dict(self.pipelines)),
        )


@dataclass(frozen=True)
class TelemetryView:
    """One tick's read-only picture of the application."""

    tick: int
    now: float
    graph_snapshot: GraphSnapshot
    inventory: Inventory = field(default_factory=Inventory)

    @property
    def graph(self) -> nx.DiGraph:
        """The dependency graph (frozen networkx DiGraph; attribute `snapshot` on nodes and edges)."""
        return self.graph_snapshot.graph

    @property
    def _nodes(self) -> Mapping[str, NodeSnapshot]:
        return self.graph_snapshot.by_name

    @property
    def services(self) -> list[str]:
        """Instrumented services, sorted."""
        return [node.name for node in self.graph_snapshot.nodes if node.kind == "service"]

    def service(self, name: str) -> NodeSnapshot | None:
        return self._nodes.get(name)

    def stats(self, service: str) -> WindowSummary | None:
        node = self._nodes.get(service)
        return node.stats if node else None

    def edges(self) -> tuple[EdgeSnapshot, ...]:
        return self.graph_snapshot.edges

    @property
    def critical_paths(self) -> Mapping[tuple[str, str], tuple[CriticalPath, ...]]:
        """Per (entry service, entry operation): critical paths of the slowest sampled traces."""
        return self.graph_snapshot.critical_paths
