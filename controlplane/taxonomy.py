"""The survey's taxonomy of adaptive microservice management, as enums every controller declares.

"Adaptive Management of Microservices in Dynamic Computing Environments: A Taxonomy and Future
Directions" describes a controller by its control locus, the dynamics it models, its adaptation strategy and
its evaluation evidence, with objectives and telemetry as cross-cutting facets; we add the actions it takes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from functools import lru_cache


class ControlLocus(StrEnum):
    """Where decisions are made."""

    CENTRALIZED = "centralized"
    """One controller sees the whole application and decides for it."""
    DECENTRALIZED = "decentralized"
    """Each node or service decides for itself from local observations."""
    HIERARCHICAL = "hierarchical"
    """Local controllers act within bounds that a global controller sets."""


class Dynamics(StrEnum):
    """What changes in the environment that the controller models."""

    WORKLOAD = "workload"
    """Request rate and mix vary over time (diurnal, bursts, flash crowds)."""
    REQUEST_PATH = "request_path"
    """Requests take different paths through the service graph."""
    NETWORK = "network"
    """Delay, bandwidth and loss between nodes vary."""
    INTERFERENCE = "interference"
    """Co-located workloads contend for CPU, memory, cache or I/O."""
    FAILURE = "failure"
    """Replicas, nodes or versions fail."""
    RESOURCE_AVAILABILITY = "resource_availability"
    """Nodes, GPUs or capacity come and go."""


class Strategy(StrEnum):
    """How the controller adapts."""

    RULE = "rule"
    """Rules and thresholds (HPA-style)."""
    MODEL_BASED = "model_based"
    """A queueing or performance model predicts the effect of an action."""
    CONTROL_THEORETIC = "control_theoretic"
    """Feedback control (PID, MPC) around a set point."""
    OPTIMIZATION = "optimization"
    """Solves an optimization problem (ILP, heuristics) for the next configuration."""
    LEARNING = "learning"
    """Supervised or reinforcement learning chooses the action."""
    HYBRID = "hybrid"
    """A combination of the above."""


class Evidence(StrEnum):
    """How the controller's benefit was evaluated."""

    SIMULATION = "simulation"
    """Discrete-event or analytical simulation."""
    EMULATION = "emulation"
    """An emulated testbed or a benchmark application on real machines."""
    PRODUCTION_TRACE = "production_trace"
    """Replay of traces recorded in production."""
    PRODUCTION = "production"
    """Deployed in production."""


class Objective(StrEnum):
    """What the controller optimizes."""

    LATENCY_SLO = "latency_slo"
    """Meet a latency service-level objective."""
    THROUGHPUT = "throughput"
    """Serve as many requests as possible."""
    COST = "cost"
    """Use as few resources (replicas, nodes, money) as possible."""
    AVAILABILITY = "availability"
    """Keep serving through failures."""
    ENERGY = "energy"
    """Use as little energy as possible."""


class Telemetry(StrEnum):
    """Which signals the controller reads."""

    TRACES = "traces"
    """Distributed traces (spans)."""
    METRICS = "metrics"
    """Aggregated metrics (CPU, memory, counters)."""
    LOGS = "logs"
    """Log records."""
    EVENTS = "events"
    """Discrete events (deployments, failures, alerts)."""


class ActionKind(StrEnum):
    """What the controller changes."""

    AUTOSCALING = "autoscaling"
    """The number of replicas of a service."""
    PLACEMENT = "placement"
    """Which node a replica runs on."""
    ROUTING = "routing"
    """How traffic is split between replicas or versions."""
    ISOLATION = "isolation"
    """Concurrency limits, circuit breakers, rate limits."""
    REMEDIATION = "remediation"
    """Restart, roll back or drain."""
    RECONFIGURATION = "reconfiguration"
    """The pipeline-parallel layout of a model-serving service."""


@dataclass(frozen=True, slots=True)
class Taxonomy:
    """A controller's classification along every dimension of the survey."""

    locus: ControlLocus
    strategy: Strategy
    dynamics: frozenset[Dynamics] = field(default_factory=frozenset)
    evidence: frozenset[Evidence] = field(default_factory=frozenset)
    objectives: frozenset[Objective] = field(default_factory=frozenset)
    telemetry: frozenset[Telemetry] = field(default_factory=frozenset)
    actions: frozenset[ActionKind] = field(default_factory=frozenset)

    @classmethod
    def of(
        cls,
        locus: ControlLocus,
        strategy: Strategy,
        dynamics: Iterable[Dynamics] = (),
        evidence: Iterable[Evidence] = (),
        objectives: Iterable[Objective] = (),
        telemetry: Iterable[Telemetry] = (),
        actions: Iterable[ActionKind] = (),
    ) -> Taxonomy:
        """Build from any iterables (lists in code, strings from configuration)."""
        return cls(
            ControlLocus(locus),
            Strategy(strategy),
            frozenset(Dynamics(item) for item in dynamics),
            frozenset(Evidence(item) for item in evidence),
            frozenset(Objective(item) for item in objectives),
            frozenset(Telemetry(item) for item in telemetry),
            frozenset(ActionKind(item) for item in actions),
        )

    @property
    def learning(self) -> bool:
        """Learning-based controllers start in shadow mode until an operator promotes them."""
        return self.strategy in (Strategy.LEARNING, Strategy.HYBRID)

    def as_dict(self) -> dict[str, str | list[str]]:
        """Plain values (sorted lists for sets), for JSON, the decision store and the API."""
        return {
            "locus": self.locus.value,
            "strategy": self.strategy.value,
            "dynamics": sorted(item.value for item in self.dynamics),
            "evidence": sorted(item.value for item in self.evidence),
            "objectives": sorted(item.value for item in self.objectives),
            "telemetry": sorted(item.value for item in self.telemetry),
            "actions": sorted(item.value for item in self.actions),
        }

    @classmethod
    def from_dict(cls, values: dict) -> Taxonomy:
        """The inverse of `as_dict`; a few controllers sign millions of stored decisions, so it is cached."""
        key = tuple(
            sorted(
                (name, tuple(value) if isinstance(value, list) else value) for name, value in values.items()
            )
        )
        return _taxonomy_from_items(key)


@lru_cache(maxsize=4096)
def _taxonomy_from_items(items: tuple[tuple[str, object], ...]) -> Taxonomy:
    return Taxonomy.of(**dict(items))  # type: ignore[arg-type]
