"""`ControllerRunner`: runs a controller's `decide` so that a misbehaving controller cannot stall the caller.

The caller's event loop also serves OTLP ingest and the gRPC API, so a controller that raises, overruns its
`time_budget_seconds`, or blocks (a synchronous sleep, a pure-Python loop inside `async def decide`) must not
delay it. Each runner therefore owns one daemon worker thread with its own long-lived event loop; `decide`
runs there, and the caller waits for the outcome with `asyncio.wait` on a wrapped future, bounded by the
time budget.

Faults. `run_once` never raises for a controller's fault; it returns no proposals and records the fault:

* `decide` raised (the exception is the `last_error`);
* `decide` exceeded its time budget. The call is abandoned: an `await`-ing decide is cancelled and frees
  the worker within milliseconds, but Python cannot kill a thread, so a decide that blocks keeps its
  worker until it returns by itself. Until then the runner is `busy`, and a call while busy does not
  start another decide: it returns [] and counts the fault "previous decide still running". A stuck
  controller thus holds at most one thread, never a growing pile of them;
* `decide` returned something other than a list of `Action` instances.

After `quarantine_after` consecutive faults (default 3) the runner is quarantined: `run_once` returns []
without calling `decide` until an operator calls `reenable()`. `set_mode()` re-enables too, because
choosing a mode for a controller is the same operator decision to let it run again. DISABLED runners
never call `decide`; SHADOW runners do, and their proposals are marked shadow by the coordinator.

Why threads, not processes. A process per controller could be killed on overrun, but:

* controllers are stateful objects (cool-down history, learned models) that the framework reads and
  re-configures in place; in another process each would need an IPC proxy;
* each tick's `TelemetryView` would have to be pickled across: an `Inventory.frozen()` holds
  `MappingProxyType`s, which cannot be pickled, and the networkx `graph` is a cached_property that is
  pickled (doubling the size) once any controller has touched it;
* controllers registered with `@controller` in a script or a test are not importable in a spawned
  child, and fork is unsafe next to gRPC's threads; each child would also re-import grpc and networkx.

The price of threads is that a CPU-spinning decide shares the GIL with the caller; CPython hands the GIL
back every `sys.getswitchinterval()` (5 ms), which keeps the caller's loop responsive, but a C extension
call that holds the GIL for seconds would stall it; only a process could contain that. A stuck worker
also keeps burning its CPU until it returns; quarantine stops new calls, and the thread is a daemon so it
never blocks interpreter exit.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import inspect
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from controlplane.actions import Action
from controlplane.controller import Controller, Mode
from controlplane.view import TelemetryView

log = logging.getLogger(__name__)

# An awaiting decide acknowledges cancellation within one worker-loop iteration; waiting this long for it
# after a timeout spares the next call a spurious "previous decide still running".
CANCEL_GRACE_SECONDS = 0.05

STILL_RUNNING = "previous decide still running"


@dataclass(frozen=True, slots=True)
class RunnerStatus:
    """A snapshot of one runner's state, for the API and the CLI."""

    name: str
    mode: Mode
    healthy: bool
    faults_total: int
    consecutive_faults: int
    quarantined: bool
    last_error: str
    last_duration_seconds: float | None
    last_run_at: float | None
    runs_total: int
    # True while a decide (possibly an abandoned one) still occupies the worker thread.
    busy: bool = False


@dataclass(frozen=True, slots=True)
class _Outcome:
    """How one decide ended in the worker thread."""

    value: Any = None
    error: BaseException | None = None
    cancelled: bool = False


class ControllerRunner:
    """Runs one controller instance's `decide` in its own worker thread, with a time budget and quarantine."""

    def __init__(
        self,
        controller: Controller,
        *,
        mode: Mode | str = Mode.ACTIVE,
        quarantine_after: int = 3,
    ) -> None:
        if quarantine_after < 1:
            raise ValueError("quarantine_after must be at least 1")
        self.controller = controller
        self.quarantine_after = quarantine_after
        self._mode = Mode(mode)
        self._quarantined = False
        self._faults_total = 0
        self._consecutive_faults = 0
        self._runs_total = 0
        self._last_error = ""
        self._last_duration: float | None = None
        self._last_run_at: float | None = None
        self._closed = False
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # Set by the worker when the current decide ends, however it ends; pending means busy.
        self._finished: concurrent.futures.Future[_Outcome] | None = None
        self._task: asyncio.Task[Any] | None = None  # touched only on the worker thread

    @property
    def name(self) -> str:
        return self.controller.name

    @property
    def mode(self) -> Mode:
        return self._mode

    @property
    def quarantined(self) -> bool:
        return self._quarantined

    @property
    def busy(self) -> bool:
        """Whether a decide, possibly an abandoned one, still occupies the worker thread."""
        finished = self._finished
        thread = self._thread
        return finished is not None and not finished.done() and thread is not None and thread.is_alive()

    def status(self) -> RunnerStatus:
        """A frozen snapshot of the runner's state."""
        return RunnerStatus(
            name=self.name,
            mode=self._mode,
            healthy=not self._quarantined and self._consecutive_faults == 0,
            faults_total=self._faults_total,
            consecutive_faults=self._consecutive_faults,
            quarantined=self._quarantined,
            last_error=self._last_error,
            last_duration_seconds=self._last_duration,
            last_run_at=self._last_run_at,
            runs_total=self._runs_total,
            busy=self.busy,
        )

    def set_mode(self, mode: Mode | str) -> None:
        """Set ACTIVE, SHADOW or DISABLED; this also lifts a quarantine (see the module docstring)."""
        self._mode = Mode(mode)
        self.reenable()

    def reenable(self) -> None:
        """Lift a quarantine and forget the consecutive faults (an operator action)."""
        self._quarantined = False
        self._consecutive_faults = 0

    def due(self, now: float) -> bool:
        """Whether it may run and `period_seconds` have passed since the last run, on the views' clock."""
        if self._mode is Mode.DISABLED or self._quarantined or self._closed:
            return False
        if self._last_run_at is None:
            return True
        return now - self._last_run_at >= self.controller.period_seconds

    async def run_once(self, view: TelemetryView) -> list[Action]:
        """Run decide once and return its proposals; [] when disabled, quarantined or on a fault."""
        if self._closed:
            raise RuntimeError(f"runner of controller {self.name} is closed")
        if self._mode is Mode.DISABLED or self._quarantined:
            return []
        self._runs_total += 1
        # A run happens at the time of the view it reads, so `due` compares times of one clock: the loop's.
        self._last_run_at = view.now
        if self.busy:
            self._last_duration = 0.0
            self._fault(STILL_RUNNING)
            return []

        budget = self.controller.time_budget_seconds
        started = time.monotonic()
        finished: concurrent.futures.Future[_Outcome] = concurrent.futures.Future()
        self._finished = finished
        loop = self._worker_loop()
        loop.call_soon_threadsafe(self._start, view, finished)
        waiter = asyncio.wrap_future(finished)
        try:
            # asyncio.wait, unlike wait_for, never cancels the waiter: that future must stay pending
            # until the worker really finishes, since it is what `busy` reads.
            done, _ = await asyncio.wait({waiter}, timeout=budget)
            if not done:
                self._cancel_in_worker(loop)
                await asyncio.wait({waiter}, timeout=CANCEL_GRACE_SECONDS)
        except asyncio.CancelledError:
            # The caller is shutting down; that is not the controller's fault.
            self._cancel_in_worker(loop)
            raise
        self._last_duration = time.monotonic() - started
        if not done:
            self._fault(f"decide exceeded its time budget of {budget:g} s")
            return []
        outcome = waiter.result()
        if outcome.error is not None:
            error = outcome.error
            log.warning("controller %s: decide raised", self.name, exc_info=error)
            self._fault(f"decide raised {type(error).__name__}: {error}")
            return []
        if outcome.cancelled:
            self._fault("decide was cancelled")
            return []
        problem = _not_proposals(outcome.value)
        if problem:
            self._fault(problem)
            return []
        self._consecutive_faults = 0
        self._last_error = ""
        return list(outcome.value)

    async def wait_idle(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for an abandoned decide to end; True if the worker is free."""
        finished = self._finished
        if finished is not None and self.busy:
            await asyncio.wait({asyncio.wrap_future(finished)}, timeout=timeout)
        return not self.busy

    def close(self, timeout: float = 1.0) -> None:
        """Stop the worker thread; wait up to `timeout` for it, unless a decide is stuck in it (abandoned)."""
        self._closed = True
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        stuck = self.busy
        if not loop.is_closed():
            try:
                loop.call_soon_threadsafe(self._cancel_current)
                loop.call_soon_threadsafe(loop.stop)
            except RuntimeError:  # the worker already closed its loop
                pass
        if not stuck:
            thread.join(timeout)

    # --- internals -------------------------------------------------------------------------------------

    def _fault(self, message: str) -> None:
        self._faults_total += 1
        self._consecutive_faults += 1
        self._last_error = message
        if self._consecutive_faults >= self.quarantine_after and not self._quarantined:
            self._quarantined = True
            log.error(
                "controller %s quarantined after %d consecutive faults; last: %s",
                self.name,
                self._consecutive_faults,
                message,
            )
        else:
            log.warning("controller %s fault: %s", self.name, message)

    def _worker_loop(self) -> asyncio.AbstractEventLoop:
        if self._thread is not None and self._thread.is_alive() and self._loop is not None:
            return self._loop
        loop = asyncio.new_event_loop()
        thread = threading.Thread(
            target=self._serve, args=(loop,), name=f"controller:{self.name}", daemon=True
        )
        self._loop, self._thread = loop, thread
        thread.start()
        return loop

    def _serve(self, loop: asyncio.AbstractEventLoop) -> None:
        """The worker thread: run the loop until close(), then cancel what is left and close it."""
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
            leftovers = asyncio.all_tasks(loop)
            for task in leftovers:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*leftovers, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()

    def _start(self, view: TelemetryView, finished: concurrent.futures.Future[_Outcome]) -> None:
        """On the worker loop: start decide as a task that reports to `finished` when it ends."""
        loop = asyncio.get_running_loop()
        task = loop.create_task(self._decide(view), name=f"{self.name}.decide")
        self._task = task
        # A done callback runs even for a task cancelled before its first step, so `finished` always ends.
        task.add_done_callback(lambda done: _report(finished, done))

    async def _decide(self, view: TelemetryView) -> Any:
        try:
            result = self.controller.decide(view)
            # Tolerate a plain `def decide`: its result is checked like any other.
            if inspect.isawaitable(result):
                result = await result
            return result
        except (KeyboardInterrupt, SystemExit) as error:
            # Left alone these would escape the task and end the worker loop, leaving `busy` forever.
            raise RuntimeError(f"decide raised {type(error).__name__}") from error

    def _cancel_in_worker(self, loop: asyncio.AbstractEventLoop) -> None:
        with contextlib.suppress(RuntimeError):  # the worker loop is already closed
            loop.call_soon_threadsafe(self._cancel_current)

    def _cancel_current(self) -> None:
        task = self._task
        if task is not None and not task.done():
            task.cancel()


def _report(finished: concurrent.futures.Future[_Outcome], task: asyncio.Task[Any]) -> None:
    if task.cancelled():
        outcome = _Outcome(cancelled=True)
    elif task.exception() is not None:
        outcome = _Outcome(error=task.exception())
    else:
        outcome = _Outcome(value=task.result())
    # Nothing cancels `finished` today; if something ever does, the worker must not die of it.
    with contextlib.suppress(concurrent.futures.InvalidStateError):
        finished.set_result(outcome)


def _not_proposals(value: Any) -> str:
    """Why `value` is not a list of actions, or "" if it is one."""
    if not isinstance(value, list):
        shown = "None" if value is None else type(value).__name__
        return f"decide returned {shown}, not a list of actions"
    for item in value:
        if not isinstance(item, Action):
            return f"decide returned a list holding {type(item).__name__}, not a list of actions"
    return ""
