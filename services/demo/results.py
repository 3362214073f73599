"""What one benchmark run measured, second by second, and the scores `controlplane bench` reports.

Both fidelities (the simulator and the live processes) record the same things through `RunRecorder`: every
request's end-to-end latency and outcome as the client saw it (the ground truth, not the control plane's
estimate), and each second's replicas and applied decisions. `score` turns that into the comparison table:

* `slo_violation_fraction`: share of scored seconds whose end-to-end p99 is above the SLO; a failed request
  counts as infinitely slow, and a second with arrivals but no completed request is a violation;
* `p50_ms`, `p99_ms`: over every successful request of the scored part;
* `cost_replica_seconds`: replicas running or starting, summed over seconds;
* `actions`: decisions the actuator applied;
* `time_to_mitigate_s`: per injected event, seconds from the event until the SLO holds again for
  `STABLE_SECONDS` in a row (0 if it never broke); an event never mitigated counts as the rest of the run.
  The run's figure is the mean over its events (None without events).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

STABLE_SECONDS = 10


@dataclass(slots=True)
class Second:
    """One second of a run."""

    second: int
    latencies_ms: list[float] = field(default_factory=list)
    failed: int = 0
    replicas: int = 0
    ready_replicas: int = 0
    decisions: int = 0

    @property
    def requests(self) -> int:
        return len(self.latencies_ms) + self.failed

    def p99_ms(self) -> float:
        """p99 with failures as infinitely slow; NaN for a second with no request."""
        return _percentile_with_failures(self.latencies_ms, self.failed, 0.99)


def _percentile_with_failures(latencies_ms: list[float], failed: int, quantile: float) -> float:
    total = len(latencies_ms) + failed
    if total == 0:
        return math.nan
    rank = max(1, math.ceil(quantile * total))  # nearest rank, failures sorted last
    if rank > len(latencies_ms):
        return math.inf
    return sorted(latencies_ms)[rank - 1]


class RunRecorder:
    """Collects a run's seconds; `record_request` and `record_second` may come in any order per second."""

    def __init__(self, duration_seconds: float) -> None:
        self.seconds = [Second(index) for index in range(int(math.ceil(duration_seconds)))]

    def record_request(self, completed_at: float, latency_ms: float, ok: bool) -> None:
        index = min(int(completed_at), len(self.seconds) - 1)
        if ok:
            self.seconds[index].latencies_ms.append(latency_ms)
        else:
            self.seconds[index].failed += 1

    def record_second(self, second: int, replicas: int, ready_replicas: int, decisions: int) -> None:
        if 0 <= second < len(self.seconds):
            entry = self.seconds[second]
            entry.replicas, entry.ready_replicas, entry.decisions = replicas, ready_replicas, decisions


@dataclass(frozen=True, slots=True)
class RunScore:
    scenario: str
    controllers: str
    seed: int
    slo_violation_fraction: float
    p50_ms: float
    p99_ms: float
    cost_replica_seconds: float
    actions: int
    time_to_mitigate_s: float | None
    error_fraction: float
    requests: int
    mitigation_s: tuple[float | None, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        values = asdict(self)
        values["mitigation_s"] = list(self.mitigation_s)
        return values


def p99_series(seconds: list[Second]) -> list[float]:
    """Each second's end-to-end p99 (inf when requests failed beyond 1%, NaN without requests)."""
    return [second.p99_ms() for second in seconds]


def score(
    recorder: RunRecorder,
    scenario: str,
    controllers: str,
    seed: int,
    slo_p99_ms: float,
    event_times: list[float],
    warmup_seconds: float,
    actions: int,
) -> RunScore:
    """The comparison-table row of one run (see the module docstring)."""
    scored = [second for second in recorder.seconds if second.second >= warmup_seconds]
    violated = [_violates(second, slo_p99_ms) for second in scored]
    latencies = [latency for second in scored for latency in second.latencies_ms]
    failed = sum(second.failed for second in scored)
    total = len(latencies) + failed
    mitigation = tuple(_time_to_mitigate(recorder.seconds, at, slo_p99_ms) for at in event_times)
    return RunScore(
        scenario=scenario,
        controllers=controllers,
        seed=seed,
        slo_violation_fraction=round(sum(violated) / len(violated), 4) if violated else 0.0,
        p50_ms=round(_percentile_with_failures(latencies, 0, 0.5), 3) if latencies else math.nan,
        p99_ms=round(_percentile_with_failures(latencies, 0, 0.99), 3) if latencies else math.nan,
        cost_replica_seconds=float(sum(second.replicas for second in scored)),
        actions=actions,
        time_to_mitigate_s=round(sum(mitigation) / len(mitigation), 1) if mitigation else None,
        error_fraction=round(failed / total, 4) if total else 0.0,
        requests=total,
        mitigation_s=mitigation,
    )


def _violates(second: Second, slo_p99_ms: float) -> bool:
    p99 = second.p99_ms()
    return not math.isnan(p99) and p99 > slo_p99_ms


def _time_to_mitigate(seconds: list[Second], at: float, slo_p99_ms: float) -> float:
    start = int(at)
    run = 0
    for second in seconds[start:]:
        run = 0 if _violates(second, slo_p99_ms) else run + 1
        if run >= STABLE_SECONDS:
            return float(max(0, second.second - STABLE_SECONDS + 1 - start))
    return float(len(seconds) - start)  # never mitigated: the rest of the run
