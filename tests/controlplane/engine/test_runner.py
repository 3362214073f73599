"""ControllerRunner with real threads: faults, time budgets, quarantine, and a caller loop that keeps up."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from controlplane import Action, Controller, Mode, Scale, Taxonomy, TelemetryView
from controlplane.engine.runner import STILL_RUNNING, ControllerRunner
from telemetry import GraphSnapshot

BUDGET = 0.2
PROPOSAL = Scale(target="api", replicas=2, reason="well-behaved")


def _view(now: float = 0.0) -> TelemetryView:
    snapshot = GraphSnapshot(
        taken_at=now, window_seconds=10.0, nodes=(), edges=(), spans_accepted=0, spans_rejected=0
    )
    return TelemetryView(tick=1, now=now, graph_snapshot=snapshot)


class Scripted(Controller):
    """Misbehaves in a way chosen by the subclass until the test sets `behave`."""

    name = "scripted"
    taxonomy = Taxonomy.of("centralized", "rule")
    time_budget_seconds = BUDGET

    def __init__(self) -> None:
        super().__init__()
        self.behave = False
        self.calls = 0

    async def decide(self, view: TelemetryView) -> list[Action]:
        self.calls += 1
        if self.behave:
            return [PROPOSAL]
        return await self.misbehave()

    async def misbehave(self) -> Any:
        return [PROPOSAL]


class Raising(Scripted):
    name = "raising"

    async def misbehave(self) -> Any:
        raise RuntimeError("boom")


class Hanging(Scripted):
    name = "hanging"

    async def misbehave(self) -> Any:
        time.sleep(5)  # blocks the worker's loop: the call can only be abandoned
        return []


class Spinning(Scripted):
    name = "spinning"

    async def misbehave(self) -> Any:
        end = time.monotonic() + 2.0
        while time.monotonic() < end:
            pass
        return []


class AsyncSleeping(Scripted):
    name = "async-sleeping"

    async def misbehave(self) -> Any:
        await asyncio.sleep(5)
        return []


class BadReturn(Scripted):
    name = "bad-return"

    async def misbehave(self) -> Any:
        return {"api": 2}


class Ticker:
    """Measures the caller loop's responsiveness: the largest gap between 10 ms sleeps."""

    def __init__(self) -> None:
        self.max_gap = 0.0
        self.ticks = 0
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Ticker:
        self._task = asyncio.create_task(self._run())
        await asyncio.sleep(0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._task is not None
        await self._task

    async def _run(self) -> None:
        last = time.monotonic()
        while not self._stop.is_set():
            await asyncio.sleep(0.01)
            now = time.monotonic()
            self.max_gap = max(self.max_gap, now - last)
            self.ticks += 1
            last = now


MISBEHAVING = [
    # controller, fault of the first call, fault of the next calls, seconds until the worker is free
    pytest.param(Raising, "decide raised RuntimeError: boom", "RuntimeError: boom", id="raising"),
    pytest.param(Hanging, "time budget of 0.2 s", STILL_RUNNING, id="hanging-sleep"),
    pytest.param(Spinning, "time budget of 0.2 s", STILL_RUNNING, id="cpu-spinning"),
    pytest.param(AsyncSleeping, "time budget of 0.2 s", "time budget of 0.2 s", id="async-sleeping"),
    pytest.param(BadReturn, "decide returned dict, not a list of actions", "returned dict", id="bad-return"),
]


@pytest.mark.parametrize(("kind", "first_fault", "later_fault"), MISBEHAVING)
def test_misbehaving_controller_is_contained_quarantined_and_reenabled(
    kind: type[Scripted], first_fault: str, later_fault: str
) -> None:
    controller = kind()
    runner = ControllerRunner(controller, quarantine_after=3)
    view = _view()

    async def scenario() -> tuple[Ticker, float]:
        async with Ticker() as ticker:
            begun = started = time.monotonic()
            assert await runner.run_once(view) == []
            # Bounded by the budget (plus the cancellation grace), never by the controller.
            assert time.monotonic() - started < BUDGET + 0.3
            status = runner.status()
            assert first_fault in status.last_error
            assert (status.faults_total, status.consecutive_faults, status.runs_total) == (1, 1, 1)
            assert not status.healthy and not status.quarantined

            for _ in range(2):
                assert await runner.run_once(view) == []
            status = runner.status()
            assert later_fault in status.last_error
            assert status.quarantined and status.consecutive_faults == 3 and status.faults_total == 3

            # Quarantined: decide is not called and the call is not even counted as a run.
            calls = controller.calls
            assert await runner.run_once(view) == []
            assert controller.calls == calls and runner.status().runs_total == 3
            assert not runner.due(1e9)

            controller.behave = True
            assert await runner.wait_idle(timeout=6.0)
            runner.reenable()
            assert await runner.run_once(view) == [PROPOSAL]
            status = runner.status()
            assert status.healthy and not status.quarantined and status.consecutive_faults == 0
            assert status.faults_total == 3 and status.last_error == ""
        return ticker, time.monotonic() - begun

    try:
        ticker, elapsed = asyncio.run(scenario())
    finally:
        runner.close()
    # The ticker woke up all along (at least every 20 ms), not just before and after the misbehaviour.
    assert ticker.ticks >= elapsed / 0.02
    assert ticker.max_gap < 0.1, f"caller loop stalled for {ticker.max_gap * 1000:.0f} ms"


def test_well_behaved_controller_returns_its_proposals() -> None:
    controller = Scripted()
    runner = ControllerRunner(controller, mode="shadow")
    try:
        proposals = asyncio.run(runner.run_once(_view()))
        assert proposals == [PROPOSAL]
        status = runner.status()
        assert status.name == "scripted" and status.mode is Mode.SHADOW
        assert status.healthy and status.runs_total == 1 and status.faults_total == 0
        assert status.last_duration_seconds is not None and status.last_duration_seconds < BUDGET
        assert status.last_run_at is not None and not status.busy
        # The worker thread and its loop are reused from call to call.
        assert asyncio.run(runner.run_once(_view())) == [PROPOSAL]
        assert [t.name for t in threading.enumerate()].count("controller:scripted") == 1
    finally:
        runner.close()
    assert "controller:scripted" not in [t.name for t in threading.enumerate()]


def test_a_list_holding_something_else_is_a_fault() -> None:
    class Strings(Scripted):
        name = "strings"

        async def misbehave(self) -> Any:
            return ["scale api to 2"]

    runner = ControllerRunner(Strings())
    try:
        assert asyncio.run(runner.run_once(_view())) == []
        assert runner.status().last_error == "decide returned a list holding str, not a list of actions"
    finally:
        runner.close()


def test_disabled_runner_never_calls_decide_and_set_mode_lifts_quarantine() -> None:
    controller = Raising()
    runner = ControllerRunner(controller, mode=Mode.DISABLED, quarantine_after=2)
    view = _view()

    async def scenario() -> None:
        assert await runner.run_once(view) == []
        assert controller.calls == 0 and runner.status().runs_total == 0 and not runner.due(1e9)

        runner.set_mode(Mode.ACTIVE)
        await runner.run_once(view)
        await runner.run_once(view)
        assert runner.quarantined and controller.calls == 2

        controller.behave = True
        runner.set_mode("shadow")
        assert runner.mode is Mode.SHADOW and not runner.quarantined
        assert await runner.run_once(view) == [PROPOSAL]

    try:
        asyncio.run(scenario())
    finally:
        runner.close()


def test_due_follows_the_period_on_the_clock_of_the_views() -> None:
    controller = Scripted()
    controller.period_seconds = 10.0
    runner = ControllerRunner(controller)
    try:
        assert runner.due(1000.0)
        asyncio.run(runner.run_once(_view(now=1000.0)))
        assert runner.status().last_run_at == 1000.0
        assert not runner.due(1005.0)
        assert runner.due(1010.0)
        runner.set_mode(Mode.DISABLED)
        assert not runner.due(1010.0)
    finally:
        runner.close()


def test_close_does_not_wait_for_a_stuck_worker_which_then_ends_on_its_own() -> None:
    class Sleeper(Scripted):
        name = "sleeper"
        time_budget_seconds = 0.1

        async def misbehave(self) -> Any:
            time.sleep(1.0)
            return []

    runner = ControllerRunner(Sleeper())
    assert asyncio.run(runner.run_once(_view())) == []
    assert runner.busy
    (thread,) = [t for t in threading.enumerate() if t.name == "controller:sleeper"]
    assert thread.daemon

    started = time.monotonic()
    runner.close()
    assert time.monotonic() - started < 0.1
    assert thread.is_alive()
    thread.join(3.0)
    assert not thread.is_alive()
    with pytest.raises(RuntimeError, match="closed"):
        asyncio.run(runner.run_once(_view()))


def test_quarantine_threshold_must_be_positive() -> None:
    with pytest.raises(ValueError):
        ControllerRunner(Scripted(), quarantine_after=0)


def test_the_ticker_does_catch_a_stall_of_the_caller_loop() -> None:
    """Control for the responsiveness assertions: blocking on the caller loop itself is measured as a gap."""

    async def scenario() -> Ticker:
        async with Ticker() as ticker:
            await asyncio.sleep(0.05)
            time.sleep(0.3)
            await asyncio.sleep(0.05)
        return ticker

    assert asyncio.run(scenario()).max_gap >= 0.3
