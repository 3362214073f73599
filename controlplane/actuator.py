"""Actuators carry actions out on one substrate and report its inventory; `InMemoryActuator` for tests.

Later issues add the simulator, local processes, MQTT node agents, Kubernetes and the PipeLive service,
each an `Actuator`. `apply` must be idempotent: applying the same action twice leaves the same state.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from dataclasses import dataclass, replace

from controlplane.actions import Action, Isolate, Place, ReconfigurePipeline, Remediate, Route, Scale
from controlplane.decisions import Decision
from controlplane.view import Inventory, PipelineInventory, ServiceInventory


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the actuator reports back: success, and a human-readable account of what it did."""

    ok: bool
    detail: str = ""


class Actuator(ABC):
    """One substrate the control plane can change."""

    name: str = "actuator"

    @abstractmethod
    async def apply(self, action: Action) -> Outcome:
        """Carry out `action`; report failure in the Outcome rather than raising where possible."""

    @abstractmethod
    async def inventory(self) -> Inventory:
        """What the substrate runs now."""

    async def apply_decision(self, decision: Decision) -> Outcome:
        """Carry out a decision's action; what the control loop calls.

        The decision already has its id in the decision store (reserved before anything is applied). An
        actuator that delivers over an at-least-once channel uses it as the idempotency key (the MQTT
        actuator does); the others need only the action, which is what this default passes on.
        """
        return await self.apply(decision.action)


class InMemoryActuator(Actuator):
    """Keeps an `Inventory` in memory and changes it as actions say; can be told to fail or be slow."""

    name = "memory"

    def __init__(self, inventory: Inventory | None = None, delay_seconds: float = 0.0) -> None:
        self.state = inventory or Inventory()
        self.applied: list[Action] = []
        self.fail_targets: set[str] = set()
        self.delay_seconds = delay_seconds
        self.isolation: dict[tuple[str, str], Isolate] = {}

    async def inventory(self) -> Inventory:
        return self.state.frozen()

    async def apply(self, action: Action) -> Outcome:
        if self.delay_seconds:
            await asyncio.sleep(self.delay_seconds)
        if action.target in self.fail_targets:
            return Outcome(False, f"{action.target} refused the change (told to fail)")
        self.applied.append(action)
        state = self.state
        services = dict(state.services)
        if isinstance(action, Scale):
            known = services.get(action.target) or ServiceInventory(action.target, replicas=0)
            services[action.target] = replace(known, replicas=action.replicas, ready_replicas=action.replicas)
            self.state = replace(state, services=services)
            return Outcome(True, f"{action.target} now has {action.replicas} replicas")
        if isinstance(action, Place):
            replica = action.replica or f"{action.target}-{len(state.placements)}"
            self.state = replace(
                state,
                placements={**state.placements, replica: action.node},
                replica_services={**state.replica_services, replica: action.target},
            )
            return Outcome(True, f"{replica} placed on {action.node}")
        if isinstance(action, Route):
            self.state = replace(state, routing={**state.routing, action.target: dict(action.weights)})
            return Outcome(True, f"{action.target} routing set")
        if isinstance(action, Isolate):
            self.isolation[action.target, action.mechanism.value] = action
            return Outcome(True, f"{action.mechanism.value} on {action.target} set")
        if isinstance(action, Remediate):
            return Outcome(True, f"{action.operation.value} of {action.replica or action.target} done")
        if isinstance(action, ReconfigurePipeline):
            pipeline = PipelineInventory(action.target, action.layers_per_stage, action.devices)
            self.state = replace(state, pipelines={**state.pipelines, action.target: pipeline})
            return Outcome(True, f"{action.target} stages now {list(action.layers_per_stage)}")
        return Outcome(False, f"the in-memory actuator cannot apply {action.name}")
