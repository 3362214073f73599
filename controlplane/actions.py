"""Typed actions: what controllers propose and actuators carry out (`Scale`, `Place`, `Route`, ...).

A controller's `decide` returns a list of actions, its proposals; the coordinator turns each into a
`Decision`. Every action names its target (a service, or a serving pipeline), the layer it acts on, the
knob it sets on that target (two proposals on the same target and knob conflict), a reason and the
evidence (plain numbers and strings) it was based on.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar

from controlplane.taxonomy import ActionKind


class Layer(StrEnum):
    """The layer an action changes; the coordinator applies lower layers first."""

    INFRASTRUCTURE = "infrastructure"
    PLATFORM = "platform"
    APPLICATION = "application"
    MODEL_SERVING = "model_serving"


# Infrastructure before platform before application. A serving reconfiguration follows the placement of
# the nodes it runs on, so it comes right after infrastructure.
LAYER_ORDER = (Layer.INFRASTRUCTURE, Layer.MODEL_SERVING, Layer.PLATFORM, Layer.APPLICATION)

ActionEvidence = Mapping[str, float | int | str | bool]


# Every concrete action type by name; a subclass that declares its `name` joins it by being defined.
ACTION_TYPES: dict[str, type[Action]] = {}


@dataclass(frozen=True, kw_only=True)
class Action:
    """Base of every action; subclasses add their settings as fields and declare name, kind and layer."""

    name: ClassVar[str]
    kind: ClassVar[ActionKind]
    layer: ClassVar[Layer]
    disruptive: ClassVar[bool] = False

    target: str
    reason: str = ""
    evidence: ActionEvidence = field(default_factory=dict)

    def __init_subclass__(cls, **options: Any) -> None:
        super().__init_subclass__(**options)
        if "name" in cls.__dict__:
            known = ACTION_TYPES.get(cls.name)
            if known is not None and known.__qualname__ != cls.__qualname__:
                raise TypeError(
                    f"two action types are named {cls.name!r}: {known.__qualname__}, {cls.__qualname__}"
                )
            ACTION_TYPES[cls.name] = cls

    def __post_init__(self) -> None:
        if not self.target:
            raise ValueError(f"{type(self).__name__}.target must name a service or pipeline")

    @property
    def knob(self) -> str:
        """What this action sets on its target; two actions on the same target and knob conflict."""
        return self.name

    def settings(self) -> dict[str, Any]:
        """The subclass's own fields (not target, reason, evidence), as plain values."""
        base = {"target", "reason", "evidence"}
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self) if f.name not in base}

    def to_dict(self) -> dict[str, Any]:
        return {
            "action": self.name,
            "target": self.target,
            "reason": self.reason,
            "evidence": dict(self.evidence),
            **self.settings(),
        }

    def describe(self) -> str:
        settings = ", ".join(f"{key}={value}" for key, value in self.settings().items())
        return f"{self.name}({self.target}{', ' + settings if settings else ''})"


def _plain(value: Any) -> Any:
    if isinstance(value, StrEnum):
        return value.value
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, tuple | list):
        return [_plain(item) for item in value]
    return value


@dataclass(frozen=True, kw_only=True)
class Scale(Action):
    """Set the number of replicas of a service."""

    name: ClassVar[str] = "scale"
    kind: ClassVar[ActionKind] = ActionKind.AUTOSCALING
    layer: ClassVar[Layer] = Layer.PLATFORM

    replicas: int

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.replicas, bool) or not isinstance(self.replicas, int) or self.replicas < 0:
            raise ValueError(f"Scale.replicas must be a whole number >= 0, got {self.replicas!r}")


@dataclass(frozen=True, kw_only=True)
class Place(Action):
    """Run one replica of a service (or a new one, `replica=""`) on a node."""

    name: ClassVar[str] = "place"
    kind: ClassVar[ActionKind] = ActionKind.PLACEMENT
    layer: ClassVar[Layer] = Layer.INFRASTRUCTURE
    disruptive: ClassVar[bool] = True

    node: str
    replica: str = ""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.node:
            raise ValueError("Place.node must name a node")

    @property
    def knob(self) -> str:
        return f"placement:{self.replica}" if self.replica else "placement"


@dataclass(frozen=True, kw_only=True)
class Route(Action):
    """Split a service's traffic between its versions or replicas by weight."""

    name: ClassVar[str] = "route"
    kind: ClassVar[ActionKind] = ActionKind.ROUTING
    layer: ClassVar[Layer] = Layer.APPLICATION

    weights: Mapping[str, float]

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.weights or any(weight < 0 for weight in self.weights.values()):
            raise ValueError("Route.weights must give each destination a weight >= 0")
        if sum(self.weights.values()) <= 0:
            raise ValueError("Route.weights must not all be zero")


class IsolationMechanism(StrEnum):
    CONCURRENCY_LIMIT = "concurrency_limit"
    CIRCUIT_BREAKER = "circuit_breaker"
    RATE_LIMIT = "rate_limit"


@dataclass(frozen=True, kw_only=True)
class Isolate(Action):
    """Limit a service: a concurrency limit, a circuit breaker (open/closed), or a rate limit (req/s)."""

    name: ClassVar[str] = "isolate"
    kind: ClassVar[ActionKind] = ActionKind.ISOLATION
    layer: ClassVar[Layer] = Layer.APPLICATION

    mechanism: IsolationMechanism
    limit: float = 0.0
    enabled: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "mechanism", IsolationMechanism(self.mechanism))
        if self.limit < 0:
            raise ValueError("Isolate.limit must be >= 0")

    @property
    def knob(self) -> str:
        return f"isolation:{self.mechanism.value}"


class RemediationOperation(StrEnum):
    RESTART = "restart"
    ROLLBACK = "rollback"
    DRAIN = "drain"


@dataclass(frozen=True, kw_only=True)
class Remediate(Action):
    """Restart a replica (or all), roll a service back to a version, or drain a replica or node."""

    name: ClassVar[str] = "remediate"
    kind: ClassVar[ActionKind] = ActionKind.REMEDIATION
    layer: ClassVar[Layer] = Layer.PLATFORM
    disruptive: ClassVar[bool] = True

    operation: RemediationOperation
    replica: str = ""
    version: str = ""

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "operation", RemediationOperation(self.operation))

    @property
    def knob(self) -> str:
        return "lifecycle"


# "" leaves the choice to the substrate; the others are PipeLive's methods (live and its baselines).
RECONFIGURE_METHODS = frozenset({"", "live", "live_no_resize", "stop_and_copy", "stop_and_redeploy"})


@dataclass(frozen=True, kw_only=True)
class ReconfigurePipeline(Action):
    """Give each pipeline stage of a serving pipeline a number of layers (and optionally a device)."""

    name: ClassVar[str] = "reconfigure_pipeline"
    kind: ClassVar[ActionKind] = ActionKind.RECONFIGURATION
    layer: ClassVar[Layer] = Layer.MODEL_SERVING
    disruptive: ClassVar[bool] = True

    layers_per_stage: tuple[int, ...]
    devices: tuple[str, ...] = ()
    # How the substrate carries the change out (PipeLive's `Reconfigure` methods); "" is its default, live.
    method: str = ""

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "layers_per_stage", tuple(self.layers_per_stage))
        object.__setattr__(self, "devices", tuple(self.devices))
        if self.method not in RECONFIGURE_METHODS:
            raise ValueError(
                f"ReconfigurePipeline.method must be one of {sorted(RECONFIGURE_METHODS)}, "
                f"got {self.method!r}"
            )
        if not self.layers_per_stage or any(count < 1 for count in self.layers_per_stage):
            raise ValueError("ReconfigurePipeline.layers_per_stage must give every stage at least one layer")
        if self.devices and len(self.devices) != len(self.layers_per_stage):
            raise ValueError("ReconfigurePipeline.devices must name one device per stage")


# What a controller returns from `decide`: proposals are actions not yet decided on.
Proposal = Action


def action_from_dict(values: Mapping[str, Any]) -> Action:
    """Rebuild an action from `Action.to_dict()` (the decision store and the API use this form)."""
    values = dict(values)
    name = values.pop("action", None)
    cls = ACTION_TYPES.get(str(name))
    if cls is None:
        raise ValueError(f"unknown action {name!r}; known: {sorted(ACTION_TYPES)}")
    return cls(**values)
