"""Starting, health-checking and stopping the child processes (replicas and the router), with no orphans.

Three layers make sure nothing outlives a run: the owner stops its children (SIGTERM, then SIGKILL after a
grace period) in a `finally`; an `atexit` hook kills whatever a crashed owner left; and each child asks
Linux to be sent SIGTERM when its parent dies (`services.live.lifecycle.die_with_parent`), which covers
an owner killed with SIGKILL.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from aiohttp import ClientError, ClientSession, ClientTimeout

from services.live.protocol import HEALTH_PATH

REPO = Path(__file__).resolve().parents[2]
HEALTH_POLL_SECONDS = 0.05
STOP_GRACE_SECONDS = 6.0  # a replica itself gives requests in progress 5 s

_LIVE: dict[int, subprocess.Popen] = {}


def _kill_leftovers() -> None:
    for process in list(_LIVE.values()):
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=2)
    _LIVE.clear()


atexit.register(_kill_leftovers)


def child_environment() -> dict[str, str]:
    """The parent's environment without OTEL_* (they would redirect or reconfigure the children's SDK)."""
    environment = {key: value for key, value in os.environ.items() if not key.startswith("OTEL_")}
    path = environment.get("PYTHONPATH")
    environment["PYTHONPATH"] = str(REPO) if not path else f"{REPO}{os.pathsep}{path}"
    return environment


def start_module(module: str, arguments: Sequence[str], log_path: Path | None = None) -> subprocess.Popen:
    """Start `python -m module arguments...`; its stderr goes to `log_path` (or nowhere)."""
    log = open(log_path, "ab") if log_path is not None else subprocess.DEVNULL  # noqa: SIM115
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", module, *arguments, "--parent-pid", str(os.getpid())],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log,
            env=child_environment(),
            cwd=REPO,
        )
    finally:
        if log_path is not None:
            log.close()  # the child has its own copy of the descriptor
    _LIVE[process.pid] = process
    return process


@dataclass(frozen=True, slots=True)
class Startup:
    """How long a started process took: to answer HTTP at all, and to answer its health check with 200."""

    answering_seconds: float
    ready_seconds: float


async def wait_until_healthy(
    process: subprocess.Popen,
    port: int,
    session: ClientSession,
    timeout_seconds: float = 60.0,
    started: float | None = None,
) -> Startup | None:
    """Poll `GET /healthz` on `port` until it answers 200; None if the process exits or time runs out.

    Times count from `started` (a `time.monotonic()` reading taken before the process was launched), or from
    the call when it is not given.
    """
    started = time.monotonic() if started is None else started
    answering: float | None = None
    url = f"http://127.0.0.1:{port}{HEALTH_PATH}"
    while time.monotonic() - started < timeout_seconds:
        if process.poll() is not None:
            return None
        with contextlib.suppress(TimeoutError, ClientError):
            async with session.get(url, timeout=ClientTimeout(total=1.0)) as reply:
                now = time.monotonic() - started
                answering = now if answering is None else answering
                if reply.status == 200:
                    return Startup(answering, now)
        await asyncio.sleep(HEALTH_POLL_SECONDS)
    return None


def kill(process: subprocess.Popen) -> None:
    """SIGKILL: a crash, with no chance to finish requests or flush spans."""
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(signal.SIGKILL)


async def stop(process: subprocess.Popen, grace_seconds: float = STOP_GRACE_SECONDS) -> None:
    """SIGTERM, wait up to `grace_seconds`, then SIGKILL; returns once the process is reaped."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.terminate()
        deadline = time.monotonic() + grace_seconds
        while process.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if process.poll() is None:
            kill(process)
            await asyncio.to_thread(process.wait)
    _LIVE.pop(process.pid, None)


def forget_if_exited(process: subprocess.Popen) -> bool:
    """True (and stop tracking it) when the process has exited; reaps it."""
    if process.poll() is None:
        return False
    _LIVE.pop(process.pid, None)
    return True
