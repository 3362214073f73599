"""Hierarchical control: the bounds the plane sets for a node's own controllers, and the check against them.

The plane publishes a node's `NodeBounds` (retained); the agent hands them to the coordinator of its local
control loop (`Coordinator.bounds`), which refuses a local proposal outside them before guardrails are
even asked, with a why naming the bound. Until the first bounds arrive, every local proposal is refused:
a node the plane has not yet spoken to acts on nothing by itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from agents.wire import MalformedPayload
from controlplane import (
    ACTION_TYPES,
    Action,
    Inventory,
    Scale,
)
from protos.controlplane.v1 import agent_pb2 as apb


@dataclass(frozen=True, slots=True)
class Bounds:
    """What a node's local controllers may do: which actions, and how many replicas."""

    allowed_actions: frozenset[str] = frozenset()
    max_replicas: Mapping[str, int] = field(default_factory=dict)  # per service
    max_replicas_default: int = 0
    max_total_replicas: int = 0  # 0: no limit
    version: int = 0

    def __post_init__(self) -> None:
        unknown = set(self.allowed_actions) - set(ACTION_TYPES)
        if unknown:
            raise ValueError(
                f"bounds name unknown action(s) {sorted(unknown)}; known: {sorted(ACTION_TYPES)}"
            )
        numbers = [self.max_replicas_default, self.max_total_replicas, *self.max_replicas.values()]
        if any(value < 0 for value in numbers):
            raise ValueError("replica bounds must be >= 0")

    def refuses(self, action: Action, inventory: Inventory) -> str:
        """Why `action` is outside these bounds, or "" if it is within them."""
        if action.name not in self.allowed_actions:
            allowed = ", ".join(sorted(self.allowed_actions)) or "none"
            return (
                f"outside the bounds set by the plane: {action.name} is not allowed on this node "
                f"(allowed: {allowed})"
            )
        if isinstance(action, Scale):
            limit = self.max_replicas.get(action.target, self.max_replicas_default)
            if action.replicas > limit:
                return (
                    f"outside the bounds set by the plane: {action.replicas} replicas of {action.target} "
                    f"asked, at most {limit} allowed on this node"
                )
            if self.max_total_replicas:
                others = sum(
                    service.replicas for name, service in inventory.services.items() if name != action.target
                )
                if others + action.replicas > self.max_total_replicas:
                    return (
                        f"outside the bounds set by the plane: {others + action.replicas} replicas on this "
                        f"node asked, at most {self.max_total_replicas} allowed"
                    )
        return ""


class NoBoundsYet:
    """The bounds of an agent the plane has not spoken to: nothing is allowed."""

    version = -1

    def refuses(self, action: Action, inventory: Inventory) -> str:
        return "outside the bounds set by the plane: no bounds received from the plane yet"


def bounds_pb(node: str, bounds: Bounds) -> apb.NodeBounds:
    return apb.NodeBounds(
        node=node,
        version=bounds.version,
        allowed_actions=sorted(bounds.allowed_actions),
        max_replicas=dict(bounds.max_replicas),
        max_replicas_default=bounds.max_replicas_default,
        max_total_replicas=bounds.max_total_replicas,
    )


def bounds_from_pb(message: apb.NodeBounds) -> Bounds:
    try:
        return Bounds(
            allowed_actions=frozenset(message.allowed_actions),
            max_replicas=dict(message.max_replicas),
            max_replicas_default=message.max_replicas_default,
            max_total_replicas=message.max_total_replicas,
            version=message.version,
        )
    except ValueError as error:
        raise MalformedPayload(f"invalid bounds: {error}") from None
