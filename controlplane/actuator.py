"""The actuator API: what a driver of one substrate implements, and what the plane lends it.

An `Actuator` carries actions out on one substrate (the simulator, local processes, node agents over MQTT,
the PipeLive service, ...) and reports the inventory it owns. `apply` dispatches on the action's type to
`apply_<action name>` (`apply_scale`, `apply_place`, ...); each of those refuses by default, with a reason,
so an actuator overrides the ones its substrate can do and answers every other action with a refusal.
A new action type is one `Action` subclass (`controlplane.actions`), one refusing method here, and one
method in each actuator that can carry it out.

`apply` must be idempotent: applying the same action twice leaves the same state. Failures are reported in
the `Outcome` rather than raised where possible (the control loop turns a raise into a failed decision).

Actuators register like controllers, under the `controlplane.actuators` entry points, and are built from a
configuration table with `from_config(params, context)` (`controlplane serve` builds node agents' `mqtt`
actuator from its `[mqtt]` table, else the in-memory one). The `ActuatorContext` is
all the plane lends: a way to hand pre-aggregated telemetry to its Ingestor and a way to have decisions made
elsewhere (a node agent's own) recorded by the control loop. An actuator never writes the telemetry model
or the decision store itself.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from controlplane.actions import Action, Isolate, Place, ReconfigurePipeline, Remediate, Route, Scale
from controlplane.decisions import Decision
from controlplane.view import Inventory
from protos.controlplane.v1.agent_pb2 import TelemetryReport


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the actuator reports back: success, and a human-readable account of what it did (or why not)."""

    ok: bool
    detail: str = ""


async def _record_nowhere(decisions: Sequence[Decision]) -> None:
    raise RuntimeError(
        "this actuator was given no way to record decisions (ActuatorContext.record_decisions)"
    )


def _report_nowhere(report: TelemetryReport) -> None:
    raise RuntimeError("this actuator was given no telemetry intake (ActuatorContext.submit_report)")


@dataclass(frozen=True, slots=True)
class ActuatorContext:
    """What the plane lends an actuator it builds: narrow ports into its Ingestor and its control loop.

    `submit_report` merges a node's pre-aggregated `TelemetryReport` into the plane's model (raises
    `telemetry.reports.MalformedReport`, a ValueError, for one that cannot merge); `record_decisions` has the
    control loop store decisions made elsewhere and wake the API's watchers; `state_dir` is where the
    actuator may keep files.
    """

    submit_report: Callable[[TelemetryReport], None] = _report_nowhere
    record_decisions: Callable[[Sequence[Decision]], Awaitable[None]] = _record_nowhere
    state_dir: Path = Path(".")


class Actuator(ABC):
    """One substrate the control plane can change."""

    # The name it registers under (`controlplane.actuators` entry point) and the configuration uses.
    name: ClassVar[str] = "actuator"
    description: ClassVar[str] = ""

    @classmethod
    def from_config(cls, params: Mapping[str, Any], context: ActuatorContext) -> Actuator:
        """Build this actuator from its configuration table; ValueError naming a wrong key or value."""
        raise ValueError(
            f"actuator {cls.name!r} cannot be built from a configuration file; it is made in code "
            f"({cls.__module__}.{cls.__qualname__})"
        )

    @classmethod  # noqa: B027 - an optional hook
    def check_config(cls, params: Mapping[str, Any]) -> None:
        """Check a configuration table without connecting to anything (when the file is read); ValueError
        naming what is wrong. By default nothing is checked before `from_config` runs."""

    async def start(self) -> None:  # noqa: B027 - an optional hook
        """Connect to the substrate; `controlplane serve` calls this once before the first tick."""

    async def stop(self) -> None:  # noqa: B027 - an optional hook
        """Let go of the substrate: close connections and tasks. What the substrate runs keeps running,
        except processes the actuator started as its own children (those stop with it)."""

    @abstractmethod
    async def inventory(self) -> Inventory:
        """What the substrate runs now."""

    async def apply(self, action: Action) -> Outcome:
        """Carry `action` out through the method for its type, `apply_<action.name>`."""
        handler = getattr(self, f"apply_{action.name}", None)
        if handler is None:
            return self.refuse(action)
        return await handler(action)

    async def apply_decision(self, decision: Decision) -> Outcome:
        """Carry out a decision's action; what the control loop calls.

        The decision already has its id in the decision store (reserved before anything is applied). An
        actuator that delivers over an at-least-once channel uses it as the idempotency key (the MQTT
        actuator does); the others need only the action, which is what this default passes on.
        """
        return await self.apply(decision.action)

    def refuse(self, action: Action, why: str = "") -> Outcome:
        """The answer to an action this substrate cannot carry out, with the reason."""
        return Outcome(False, why or f"the {self.name} actuator does not carry out {action.name} actions")

    async def apply_scale(self, action: Scale) -> Outcome:
        return self.refuse(action)

    async def apply_place(self, action: Place) -> Outcome:
        return self.refuse(action)

    async def apply_route(self, action: Route) -> Outcome:
        return self.refuse(action)

    async def apply_isolate(self, action: Isolate) -> Outcome:
        return self.refuse(action)

    async def apply_remediate(self, action: Remediate) -> Outcome:
        return self.refuse(action)

    async def apply_reconfigure_pipeline(self, action: ReconfigurePipeline) -> Outcome:
        return self.refuse(action)
