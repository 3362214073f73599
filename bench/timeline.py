"""What every simulated run shares: the real control loop on simulated time, and the scenario's events.

`simulated_control_loop` builds the `ControlLoop` a run ticks (controllers from a `[controllers]` table, a
real decision store, default guardrails, the simulator's clock). `EventTimeline` injects a scenario's events
when their second comes and undoes the ones with a duration when it ends.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from controlplane import Actuator, ControllerRegistry, default_registry
from controlplane.engine.controllers_config import load_controllers
from controlplane.engine.guardrails import GuardrailConfig
from controlplane.engine.runtime import ControlLoop
from controlplane.engine.store import DecisionStore
from services.demo.scenario import Event
from telemetry import TelemetryModel

Undo = Callable[[], None]


def simulated_control_loop(
    model: TelemetryModel,
    controllers: Mapping[str, Mapping[str, Any]],
    registry: ControllerRegistry | None,
    actuator: Actuator,
    store: DecisionStore,
    tick_seconds: float,
    clock: Callable[[], float],
) -> ControlLoop:
    """The real control loop on simulated time (`registry` None: the installed controllers)."""
    if registry is None:
        registry = default_registry
        registry.discover()
    return ControlLoop(
        model,
        load_controllers(dict(controllers), registry),
        actuator,
        store,
        GuardrailConfig(),
        tick_seconds=tick_seconds,
        clock=clock,
    )


class EventTimeline:
    """A scenario's events in time order; `advance(second)` applies the due ones and the due undos."""

    def __init__(self, events: Iterable[Event], apply: Callable[[Event], Undo | None]) -> None:
        self._events = list(events)
        self._apply = apply
        self._undo: list[tuple[float, int, Undo]] = []

    def advance(self, second: int) -> None:
        events, undo = self._events, self._undo
        while events and events[0].at <= second:
            event = events.pop(0)
            revert = self._apply(event)
            if revert is not None and event.duration is not None:
                heapq.heappush(undo, (event.at + event.duration, len(undo), revert))
        while undo and undo[0][0] <= second:
            heapq.heappop(undo)[2]()
