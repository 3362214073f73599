"""What the live processes cost the machine: resident memory and CPU time, read from /proc (Linux).

Used by the runner to report a run's cost and by the docs' measurements; on a system without /proc the
figures are zero rather than an error, since they describe the run and do not decide anything.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def rss_mb(pid: int) -> float:
    """Resident set size of one process in MiB (0 if it is gone or /proc is missing)."""
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return 0.0


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time one process has used so far (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # After the command name: state is field 3, utime 14 and stime 15 (1-based), so 11 and 12 here.
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def total_memory_mb() -> float:
    """The machine's memory in MiB (0 if unknown)."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return 0.0


@dataclass(frozen=True, slots=True)
class LiveCosts:
    """A run's cost: child processes, their memory and CPU, and how long replica processes took to start."""

    processes: int
    rss_mb_total: float
    rss_mb_per_replica: float
    cpu_seconds_children: float
    cpu_seconds_runner: float
    wall_seconds: float
    process_start_seconds_median: float | None
    process_start_seconds_max: float | None

    @property
    def cpu_cores_used(self) -> float:
        """Mean cores busy over the run, children and runner (control plane, load generator) together."""
        if self.wall_seconds <= 0:
            return 0.0
        return (self.cpu_seconds_children + self.cpu_seconds_runner) / self.wall_seconds


def memory_of(pids: Iterable[int]) -> float:
    return sum(rss_mb(pid) for pid in pids)


def cpu_of(pids: Iterable[int]) -> float:
    return sum(cpu_seconds(pid) for pid in pids)
