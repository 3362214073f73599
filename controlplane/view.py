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
class DeviceInventory:
    """A device a serving pipeline may put a stage on: its relative speeds and the memory it may use.

    Prefill is compute-bound and decode memory-bound, so a device has a speed for each (1.0: the reference
    device); a layer takes `cost / speed` on it. `budget_bytes` is what the pipeline may use there, which
    shrinks when other work moves onto the device.
    """

    name: str
    budget_bytes: int
    prefill_speed: float = 1.0
    decode_speed: float = 1.0
    ready: bool = True


@dataclass(frozen=True, slots=True)
class StageInventory:
    """One stage as the serving engine reports it (PipeLive's `Status`): layers [first, end) on a device."""

    index: int
    first_layer: int
    end_layer: int
    device: str
    budget_bytes: int = 0
    weight_bytes: int = 0
    kv_bytes: int = 0
    kv_blocks_used: int = 0
    kv_blocks_capacity: int = 0

    @property
    def layers(self) -> int:
        return self.end_layer - self.first_layer


# Tokens per KV block unless an engine says otherwise (vLLM's default, and PipeLive's and the simulator's).
DEFAULT_BLOCK_SIZE = 16


@dataclass(frozen=True, slots=True)
class PipelineInventory:
    """A pipeline-parallel serving deployment: layers per stage and the device of each stage.

    The fields after `devices` are the detail a serving actuator reports when it has it (the PipeLive
    actuators do; others leave them empty): the address it is reached at, each stage's memory and KV use,
    every device the pipeline may use (its stages' and spare ones), the bytes one layer's weights and one
    KV block of one layer take, the KV blocks in use, the engine's metrics under vLLM's Prometheus names
    (gauges as they are, counters and histogram `_sum`/`_count` as cumulative totals) and the tokens one KV
    block holds.
    """

    name: str
    layers_per_stage: tuple[int, ...]
    devices: tuple[str, ...] = ()
    address: str = ""
    stages: tuple[StageInventory, ...] = ()
    pool: Mapping[str, DeviceInventory] = field(default_factory=dict)
    layer_weight_bytes: int = 0
    kv_block_bytes_per_layer: int = 0
    kv_blocks_used: int = 0
    metrics: Mapping[str, float] = field(default_factory=dict)
    # Tokens per KV block, the engine's one knob that every block count above follows (0: not reported).
    block_size: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers_per_stage", tuple(self.layers_per_stage))
        object.__setattr__(self, "devices", tuple(self.devices))
        object.__setattr__(self, "stages", tuple(self.stages))
        # Read-only, like the rest of the view.
        object.__setattr__(self, "pool", MappingProxyType(dict(self.pool)))
        object.__setattr__(self, "metrics", MappingProxyType(dict(self.metrics)))

    @property
    def num_layers(self) -> int:
        return sum(self.layers_per_stage)


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
