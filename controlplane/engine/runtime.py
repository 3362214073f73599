"""The control loop: each tick, snapshot the view, run the due controllers, coordinate, actuate, store.

One tick: the actuator reports the inventory; the model gives a graph snapshot; together they are the
`TelemetryView`. Every controller whose period has come runs against it in its own `ControllerRunner` (off
the event loop, with a time budget), the coordinator turns all proposals into one plan, the actuator
applies the plan's actions in layer order, and every decision (applied, shadow, rejected, superseded,
failed) is written to the decision store in one transaction before the tick ends. The decisions' ids are
reserved before anything is applied, so each action reaches the actuator with its decision's id. Watchers
of the decision stream are woken then.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

from controlplane.actuator import Actuator, Outcome
from controlplane.controller import Mode
from controlplane.decisions import Decision
from controlplane.engine.controllers_config import ConfiguredController
from controlplane.engine.coordinator import Coordinator, Submitted
from controlplane.engine.guardrails import GuardrailConfig, Guardrails
from controlplane.engine.metrics import ControllerHealth, ControlPlaneMetrics
from controlplane.engine.runner import ControllerRunner, RunnerStatus
from controlplane.engine.store import DecisionStore
from controlplane.view import TelemetryView
from telemetry import TelemetryModel

log = logging.getLogger(__name__)


@dataclass
class ManagedController:
    """A configured controller, the runner that isolates it, and whether an operator promoted it."""

    configured: ConfiguredController
    runner: ControllerRunner
    origin: str = "code"
    promoted: bool = False

    @property
    def name(self) -> str:
        return self.configured.cls.name


class ControlLoop:
    """Runs the controllers against the model and records what was decided."""

    def __init__(
        self,
        model: TelemetryModel,
        controllers: list[ConfiguredController],
        actuator: Actuator,
        store: DecisionStore,
        guardrails: GuardrailConfig | None = None,
        tick_seconds: float = 1.0,
        metrics: ControlPlaneMetrics | None = None,
        clock: Callable[[], float] = time.time,
        origins: Mapping[str, str] | None = None,
        quarantine_after: int = 3,
    ) -> None:
        self.model = model
        self.actuator = actuator
        self.store = store
        self.guardrails = Guardrails(guardrails or GuardrailConfig())
        self.coordinator = Coordinator(self.guardrails)
        self.tick_seconds = tick_seconds
        self.metrics = metrics
        self.clock = clock
        self.controllers: dict[str, ManagedController] = {}
        for configured in controllers:
            name = configured.cls.name
            runner = configured.runner(quarantine_after=quarantine_after)
            self.controllers[name] = ManagedController(
                configured, runner, (origins or {}).get(name, "code"), promoted=configured.promoted
            )
        self.tick_count = 0
        self.decided = asyncio.Condition()
        self._task: asyncio.Task | None = None

    async def tick(self) -> list[Decision]:
        """One round; returns the decisions as stored (with ids)."""
        started = time.perf_counter()
        now = self.clock()
        self.tick_count += 1
        inventory = await self.actuator.inventory()
        # Complete buckets only: whole intervals, shared summaries, at most one bucket old.
        view = TelemetryView(
            self.tick_count, now, self.model.snapshot(now=now, complete_buckets=True), inventory
        )
        due = [
            managed
            for managed in self.controllers.values()
            if managed.runner.mode is not Mode.DISABLED and managed.runner.due(now)
        ]
        results = await asyncio.gather(*(managed.runner.run_once(view) for managed in due))
        submitted = []
        for managed, proposals in zip(due, results, strict=True):
            status = managed.runner.status()
            if self.metrics is not None and status.last_duration_seconds is not None:
                self.metrics.tick_seconds.labels(managed.name).observe(status.last_duration_seconds)
            for action in proposals:
                submitted.append(
                    Submitted(
                        controller=managed.name,
                        taxonomy=managed.configured.cls.taxonomy,
                        priority=managed.configured.priority,
                        mode=managed.runner.mode,
                        action=action,
                        promoted=managed.promoted,
                        ready=managed.configured.instance.ready_to_apply,
                    )
                )
        plan = self.coordinator.plan(submitted, view, now, self.tick_count)
        if not plan.decisions:
            stored: list[Decision] = []
        else:
            # Ids first, so that each action travels with its decision's id (its idempotency key).
            first = await asyncio.to_thread(self.store.reserve_ids, len(plan.decisions))
            numbered = {
                id(decision): replace(decision, id=first + index)
                for index, decision in enumerate(plan.decisions)
            }
            try:
                outcomes: dict[int, Decision] = {}
                for decision in plan.to_apply:
                    applying = numbered[id(decision)]
                    outcomes[id(decision)] = self.coordinator.settle(
                        applying, await self._apply(applying), now
                    )
                final = [outcomes.get(id(decision), numbered[id(decision)]) for decision in plan.decisions]
                stored = await asyncio.to_thread(self.store.append, final)
            except BaseException:
                self.store.release_reservation(first)
                raise
        if self.metrics is not None:
            for decision in stored:
                self.metrics.decisions.labels(decision.status.value).inc()
            self.metrics.loop_tick_seconds.observe(time.perf_counter() - started)
        if stored:
            async with self.decided:
                self.decided.notify_all()
        return stored

    async def record_decisions(self, decisions: Sequence[Decision]) -> list[Decision]:
        """Store decisions made outside this loop's ticks (a node agent's own controllers') and wake the
        decision stream's watchers; returns them as stored (with ids)."""
        stored = await asyncio.to_thread(self.store.append, list(decisions))
        if self.metrics is not None:
            for decision in stored:
                self.metrics.decisions.labels(decision.status.value).inc()
        if stored:
            async with self.decided:
                self.decided.notify_all()
        return stored

    async def _apply(self, decision: Decision) -> Outcome:
        try:
            return await self.actuator.apply_decision(decision)
        except Exception as error:  # an actuator bug fails this action, not the loop
            log.exception("actuator %s failed on %s", self.actuator.name, decision.action.describe())
            return Outcome(False, f"actuator error: {type(error).__name__}: {error}")

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for managed in self.controllers.values():
            managed.runner.close()

    async def _run(self) -> None:
        while True:
            started = time.monotonic()
            try:
                await self.tick()
            except Exception:  # a failed tick is logged; the next one starts on time
                log.exception("control loop tick failed")
            await asyncio.sleep(max(0.0, self.tick_seconds - (time.monotonic() - started)))

    def status(self, name: str) -> RunnerStatus:
        return self._managed(name).runner.status()

    def set_mode(self, name: str, mode: Mode, promote: bool = False) -> ManagedController:
        """Operator action: change mode (re-enabling a quarantined controller), optionally promote it."""
        managed = self._managed(name)
        managed.runner.set_mode(mode)
        if promote:
            managed.promoted = True
        return managed

    def _managed(self, name: str) -> ManagedController:
        try:
            return self.controllers[name]
        except KeyError:
            raise KeyError(f"no controller named {name!r}; running: {sorted(self.controllers)}") from None

    def health(self) -> list[ControllerHealth]:
        return [
            ControllerHealth(name, status.faults_total, status.quarantined, status.mode.value)
            for name, status in ((name, self.status(name)) for name in sorted(self.controllers))
        ]
