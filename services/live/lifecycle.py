"""Process hygiene shared by the child processes: die with the parent, stop cleanly on SIGTERM.

A benchmark that leaves thirty Python processes behind when it is interrupted is worse than one that
fails, so every child asks Linux to kill it when the process that started it exits (`PR_SET_PDEATHSIG`),
including a parent killed with SIGKILL, which no clean-up code in the parent can handle.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1


def die_with_parent(expected_parent: int | None = None) -> None:
    """Get SIGTERM when the parent exits; exit at once if it already has (Linux only, else a no-op)."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if expected_parent is not None and os.getppid() != expected_parent:
        sys.exit(0)  # the parent was gone before the signal was armed


def stop_event_on_signals() -> asyncio.Event:
    """An event set by SIGTERM or SIGINT, for the running loop's main coroutine to wait on."""
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signum, stopping.set)
    return stopping
