"""Decisions: what the coordinator made of one proposal, and why; the unit the decision store keeps."""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from controlplane.actions import Action, action_from_dict
from controlplane.taxonomy import Taxonomy


class DecisionStatus(StrEnum):
    APPLIED = "applied"
    """Carried out by the actuator."""
    SHADOW = "shadow"
    """Decided and recorded, never applied (shadow mode)."""
    REJECTED = "rejected"
    """Refused by a guardrail or a conflict rule."""
    SUPERSEDED = "superseded"
    """Lost a conflict to another proposal of the same round."""
    FAILED = "failed"
    """Accepted, but the actuator could not carry it out."""


@dataclass(frozen=True, slots=True)
class Decision:
    """One proposal's fate: status, why, who proposed it (with its taxonomy), and the actuator's outcome."""

    controller: str
    taxonomy: Taxonomy
    action: Action
    status: DecisionStatus
    why: str
    tick: int = 0
    created_at: float = field(default_factory=time.time)
    outcome: str = ""
    id: int = 0  # assigned by the decision store, increasing

    @property
    def service(self) -> str:
        return self.action.target

    def with_outcome(self, status: DecisionStatus, outcome: str) -> Decision:
        return replace(self, status=status, outcome=outcome)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "tick": self.tick,
            "created_at": self.created_at,
            "controller": self.controller,
            "taxonomy": self.taxonomy.as_dict(),
            "action": self.action.to_dict(),
            "status": self.status.value,
            "why": self.why,
            "outcome": self.outcome,
        }

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Decision:
        return cls(
            id=int(values["id"]),
            tick=int(values["tick"]),
            created_at=float(values["created_at"]),
            controller=str(values["controller"]),
            taxonomy=Taxonomy.from_dict(values["taxonomy"]),
            action=action_from_dict(values["action"]),
            status=DecisionStatus(values["status"]),
            why=str(values["why"]),
            outcome=str(values.get("outcome", "")),
        )
