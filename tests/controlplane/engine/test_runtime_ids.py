"""The control loop numbers a tick's decisions before applying them: the actuator sees the stored ids."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from actuators.memory import InMemoryActuator
from controlplane import Controller, ControllerRegistry, Outcome, Scale, Taxonomy, TelemetryView
from controlplane.decisions import Decision, DecisionStatus
from controlplane.engine.controllers_config import load_controllers
from controlplane.engine.runtime import ControlLoop
from controlplane.engine.store import DecisionStore
from telemetry import TelemetryModel


class _Scaler(Controller):
    name = "scaler"
    taxonomy = Taxonomy.of("centralized", "rule", actions=["autoscaling"])

    async def decide(self, view: TelemetryView) -> list:
        return [Scale(target=name, replicas=2) for name in ("api", "db", "web")]


class _Recording(InMemoryActuator):
    def __init__(self) -> None:
        super().__init__()
        self.seen: list[int] = []

    async def apply_decision(self, decision: Decision) -> Outcome:
        self.seen.append(decision.id)
        return await super().apply_decision(decision)


class _Broken(InMemoryActuator):
    async def apply_decision(self, decision: Decision) -> Outcome:
        raise asyncio.CancelledError  # the tick is cancelled halfway (shutdown)


def _loop(actuator: InMemoryActuator, store: DecisionStore) -> ControlLoop:
    registry = ControllerRegistry()
    registry.register(_Scaler)
    return ControlLoop(TelemetryModel(), load_controllers({"scaler": {}}, registry), actuator, store)


def test_the_actuator_gets_each_decision_with_the_id_it_is_stored_under(tmp_path: Path) -> None:
    store = DecisionStore(tmp_path / "decisions.db")
    actuator = _Recording()
    loop = _loop(actuator, store)
    stored = asyncio.run(loop.tick())
    asyncio.run(loop.stop())
    assert [d.status for d in stored] == [DecisionStatus.APPLIED] * 3
    assert actuator.seen == [d.id for d in stored] == [1, 2, 3]
    assert [d.id for d in store.after(0)] == [1, 2, 3]


def test_a_tick_cancelled_while_applying_gives_its_ids_up_and_watchers_are_not_held(tmp_path: Path) -> None:
    store = DecisionStore(tmp_path / "decisions.db")
    loop = _loop(_Broken(), store)

    async def tick() -> None:
        with contextlib.suppress(asyncio.CancelledError):
            await loop.tick()
        await loop.stop()

    asyncio.run(tick())
    assert store.after(0) == [] and store.last_id() == 3  # reserved, never stored, never handed out again
    (later,) = store.append(
        [Decision("x", _Scaler.taxonomy, Scale(target="api", replicas=1), DecisionStatus.SHADOW, "")]
    )
    assert later.id == 4 and [d.id for d in store.after(0)] == [4]
