"""`InMemoryActuator`: an inventory kept in memory and changed as actions say.

What tests and dry runs act on, and what `controlplane serve` drives when its configuration names no
substrate (its decisions then change nothing real, which the server says at start). It can be told to fail
on some targets or to be slow, to exercise the control loop's failure paths.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from controlplane import (
    Action,
    Actuator,
    ActuatorContext,
    Inventory,
    Isolate,
    Outcome,
    PipelineInventory,
    Place,
    ReconfigurePipeline,
    Remediate,
    Route,
    Scale,
    ServiceInventory,
    settings_from_table,
)


class InMemoryActuator(Actuator):
    """Keeps an `Inventory` in memory and changes it as actions say; can be told to fail or be slow."""

    name = "memory"
    description = "an inventory kept in memory (tests, dry runs); changes nothing real"

    def __init__(self, inventory: Inventory | None = None, delay_seconds: float = 0.0) -> None:
        self.state = inventory or Inventory()
        self.applied: list[Action] = []
        self.fail_targets: set[str] = set()
        self.delay_seconds = delay_seconds
        self.isolation: dict[tuple[str, str], Isolate] = {}

    @dataclass(frozen=True)
    class Settings:
        """Its configuration table: how long each action takes (to exercise slow substrates)."""

        delay_seconds: float = 0.0

    @classmethod
    def from_config(cls, params: Mapping[str, Any], context: ActuatorContext) -> InMemoryActuator:
        settings = settings_from_table(cls.Settings, params, "actuator memory")
        return cls(delay_seconds=settings.delay_seconds)

    async def inventory(self) -> Inventory:
        return self.state.frozen()

    async def apply(self, action: Action) -> Outcome:
        if self.delay_seconds:
            await asyncio.sleep(self.delay_seconds)
        if action.target in self.fail_targets:
            return Outcome(False, f"{action.target} refused the change (told to fail)")
        outcome = await super().apply(action)
        if outcome.ok:
            self.applied.append(action)
        return outcome

    async def apply_scale(self, action: Scale) -> Outcome:
        services = dict(self.state.services)
        known = services.get(action.target) or ServiceInventory(action.target, replicas=0)
        services[action.target] = replace(known, replicas=action.replicas, ready_replicas=action.replicas)
        self.state = replace(self.state, services=services)
        return Outcome(True, f"{action.target} now has {action.replicas} replicas")

    async def apply_place(self, action: Place) -> Outcome:
        state = self.state
        replica = action.replica or f"{action.target}-{len(state.placements)}"
        self.state = replace(
            state,
            placements={**state.placements, replica: action.node},
            replica_services={**state.replica_services, replica: action.target},
        )
        return Outcome(True, f"{replica} placed on {action.node}")

    async def apply_route(self, action: Route) -> Outcome:
        self.state = replace(self.state, routing={**self.state.routing, action.target: dict(action.weights)})
        return Outcome(True, f"{action.target} routing set")

    async def apply_isolate(self, action: Isolate) -> Outcome:
        self.isolation[action.target, action.mechanism.value] = action
        return Outcome(True, f"{action.mechanism.value} on {action.target} set")

    async def apply_remediate(self, action: Remediate) -> Outcome:
        return Outcome(True, f"{action.operation.value} of {action.replica or action.target} done")

    async def apply_reconfigure_pipeline(self, action: ReconfigurePipeline) -> Outcome:
        pipeline = PipelineInventory(action.target, action.layers_per_stage, action.devices)
        self.state = replace(self.state, pipelines={**self.state.pipelines, action.target: pipeline})
        return Outcome(True, f"{action.target} stages now {list(action.layers_per_stage)}")
