"""`routing`: latency- and error-aware weighted routing with outlier ejection and gradual restore.

For every service whose routing table (`inventory.routing[service]`) names two or more destinations, the
controller sets weights in the spirit of Envoy's load balancing and outlier detection:

* **Weights.** Each destination scores `(1 - error_rate) ** error_exponent / mean_ms`: fast and healthy
  destinations get more traffic, much as least-request favours hosts that answer quickly. The new split
  moves `smoothing` of the way from the current split to the scored one, so weights do not swing; every
  destination that is not ejected keeps at least `min_weight_fraction` so its health stays observable. A
  destination whose current weight is 0 and that this controller is not restoring (a version an operator
  keeps dark) stays at 0: choosing to release a version is not this controller's call.
* **Ejection.** A destination is ejected (weight 0) on consecutive errors or as a latency outlier (mean
  latency above `latency_outlier_ratio` times the median of the other destinations), for
  `base_ejection_seconds * times_ejected` (capped at `max_ejection_seconds`), as Envoy's
  `base_ejection_time` does. At most `max_ejection_percent` of the destinations are ejected at once, and
  never all of them.
* **Restore.** When its ejection time is over a destination comes back gradually: its score is scaled by
  `step / restore_steps` for `restore_steps` ticks (like Envoy's slow start). Failing again while restoring
  ejects it again, for longer; each fully healthy tick afterwards forgives one past ejection.

**What per-destination evidence exists.** The view holds per-service windows, not per-destination ones. A
destination has its own evidence only when the trace model names a service after it: the destination
itself (`routing["api"] = {"api-v1": ..., "api-v2": ...}`) or `<service>-<destination>`
(`routing["api"] = {"v1": ..., "v2": ...}` with services `api-v1`, `api-v2`). Destinations without such a
service (replicas, usually) cannot be told apart from the service's aggregate window, so they are never
ejected and score as the mean of the destinations that can; a service none of whose destinations has its
own window gets no proposal at all.

**Consecutive errors from windows.** Envoy counts consecutive 5xx responses one by one; a window only has
counts. A window whose error rate reaches `failing_error_rate` adds its errors to a running count, and any
window below it resets the count; the destination is ejected when the count reaches `consecutive_errors`.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from controlplane import (
    Action,
    ActionKind,
    Controller,
    ControlLocus,
    Dynamics,
    Objective,
    Route,
    Strategy,
    Taxonomy,
    Telemetry,
    TelemetryView,
)


@dataclass
class _DestinationState:
    """What the controller remembers about one destination of one service between ticks."""

    consecutive_errors: int = 0
    times_ejected: int = 0
    ejected_until: float | None = None
    # 0 = fully restored; otherwise the number of restore steps taken so far.
    restore_step: int = 0


class OutlierAwareRouting(Controller):
    """Weights from latency and errors, Envoy-style outlier ejection, gradual restore."""

    name = "routing"
    description = (
        "Latency- and error-aware weighted routing between versions or replicas, with outlier ejection"
        " (consecutive errors, latency outliers, max ejection percent) and gradual restore."
    )
    # Rules (ejection thresholds) and a smoothed proportional weighting, on trace windows; no evaluation
    # behind it yet, so no evidence is claimed.
    taxonomy = Taxonomy.of(
        ControlLocus.CENTRALIZED,
        Strategy.RULE,
        dynamics=[Dynamics.FAILURE, Dynamics.INTERFERENCE, Dynamics.WORKLOAD],
        objectives=[Objective.LATENCY_SLO, Objective.AVAILABILITY],
        telemetry=[Telemetry.TRACES],
        actions=[ActionKind.ROUTING],
    )
    period_seconds = 10.0
    time_budget_seconds = 1.0

    @dataclass(frozen=True)
    class Parameters:
        """Settings from `[controllers.routing.params]`."""

        consecutive_errors: int = 5
        # A window at or above this error rate counts as a run of failures (see the module docstring).
        failing_error_rate: float = 0.5
        latency_outlier_ratio: float = 3.0
        base_ejection_seconds: float = 30.0
        max_ejection_seconds: float = 300.0
        max_ejection_percent: float = 50.0
        restore_steps: int = 4
        # Fraction of the way from the current split to the scored split taken in one tick.
        smoothing: float = 0.5
        error_exponent: float = 2.0
        min_weight_fraction: float = 0.02
        # Weight changes smaller than this (as a fraction of traffic) are not worth proposing.
        min_change: float = 0.02
        # Latencies below this are treated as this, so a near-idle destination does not take everything.
        latency_floor_ms: float = 1.0
        # Below this many requests in the window, a destination's latency is noise, not evidence.
        min_requests: int = 10

    def __init__(self, params: object | None = None) -> None:
        super().__init__(params)
        self._state: dict[tuple[str, str], _DestinationState] = {}

    async def decide(self, view: TelemetryView) -> list[Action]:
        proposals: list[Action] = []
        for service, weights in sorted(view.inventory.routing.items()):
            if len(weights) < 2:
                continue
            proposal = self._route(view, service, weights)
            if proposal is not None:
                proposals.append(proposal)
        return proposals

    def _route(self, view: TelemetryView, service: str, current: Mapping[str, float]) -> Route | None:
        p = self.params
        known = {dest: _destination_stats(view, service, dest) for dest in current}
        observed = {dest: stats for dest, stats in known.items() if stats is not None}
        if not observed:
            return None
        states = {dest: self._state.setdefault((service, dest), _DestinationState()) for dest in current}
        events: list[str] = []

        # Expired ejections start their gradual restore.
        for dest, state in states.items():
            if state.ejected_until is not None and view.now >= state.ejected_until:
                state.ejected_until = None
                state.restore_step = 1
                events.append(f"{dest} restored gradually after ejection #{state.times_ejected}")

        outliers: dict[str, str] = {}
        for dest, stats in observed.items():
            state = states[dest]
            if state.ejected_until is not None or stats.requests == 0:
                continue
            if stats.error_rate >= p.failing_error_rate:
                state.consecutive_errors += stats.errors
            else:
                state.consecutive_errors = 0
            if state.consecutive_errors >= p.consecutive_errors:
                outliers[dest] = f"{state.consecutive_errors} consecutive errors"
                continue
            others = [
                other.mean_ms
                for name, other in observed.items()
                if name != dest and other.requests >= p.min_requests and states[name].ejected_until is None
            ]
            if stats.requests >= p.min_requests and others:
                median = statistics.median(others)
                if median > 0 and stats.mean_ms > p.latency_outlier_ratio * median:
                    outliers[dest] = f"latency outlier ({stats.mean_ms:.1f} ms vs median {median:.1f} ms)"

        # Envoy's cap: never more than max_ejection_percent ejected at once, and never every destination.
        allowed = min(len(current) - 1, math.floor(len(current) * p.max_ejection_percent / 100))
        ejected = sum(1 for state in states.values() if state.ejected_until is not None)
        # Worst first, so the cap keeps the least bad destinations in service.
        for dest in sorted(outliers, key=lambda name: (-observed[name].error_rate, -observed[name].mean_ms)):
            if ejected >= allowed:
                events.append(f"{dest} not ejected ({outliers[dest]}): max ejection percent reached")
                continue
            state = states[dest]
            state.times_ejected += 1
            duration = min(p.max_ejection_seconds, p.base_ejection_seconds * state.times_ejected)
            state.ejected_until = view.now + duration
            state.restore_step = 0
            state.consecutive_errors = 0
            ejected += 1
            events.append(f"{dest} ejected for {duration:g} s: {outliers[dest]}")

        scores = self._scores(observed, states, current)
        if scores is None:
            return None
        total_current = sum(current.values())
        scale = total_current if total_current > 0 else 1.0
        current_frac = {
            dest: (weight / total_current if total_current > 0 else 0.0) for dest, weight in current.items()
        }
        score_sum = sum(scores.values())
        target = {dest: score / score_sum for dest, score in scores.items()}
        new_frac = {}
        for dest in current:
            if dest not in scores:
                new_frac[dest] = 0.0
                continue
            blended = (1 - p.smoothing) * current_frac[dest] + p.smoothing * target[dest]
            new_frac[dest] = max(p.min_weight_fraction, blended)
        norm = sum(new_frac.values())
        new_frac = {dest: value / norm for dest, value in new_frac.items()}

        # Restoring destinations advance one step per tick; fully healthy ones slowly earn back trust.
        for dest, state in states.items():
            if state.ejected_until is not None:
                continue
            if state.restore_step:
                state.restore_step = 0 if state.restore_step >= p.restore_steps else state.restore_step + 1
            elif state.times_ejected and dest not in outliers:
                state.times_ejected -= 1

        change = max(abs(new_frac[dest] - current_frac[dest]) for dest in current)
        if change < p.min_change and not events:
            return None
        weights = {dest: round(value * scale, 6) for dest, value in new_frac.items()}
        evidence: dict[str, float | int | str | bool] = {"max_weight_change": round(change, 6)}
        for dest, stats in observed.items():
            evidence[f"{dest}.mean_ms"] = stats.mean_ms
            evidence[f"{dest}.error_rate"] = stats.error_rate
            evidence[f"{dest}.requests"] = stats.requests
        for dest, state in states.items():
            evidence[f"{dest}.ejected"] = state.ejected_until is not None
            evidence[f"{dest}.times_ejected"] = state.times_ejected
        unobserved = sorted(set(current) - set(observed))
        if unobserved:
            evidence["without_own_window"] = ",".join(unobserved)
        summary = ", ".join(f"{dest} {new_frac[dest]:.0%}" for dest in current)
        reason = f"weights from latency and errors: {summary}"
        if events:
            reason += "; " + "; ".join(events)
        return Route(target=service, weights=weights, reason=reason, evidence=evidence)

    def _scores(
        self,
        observed: Mapping[str, Any],
        states: Mapping[str, _DestinationState],
        current: Mapping[str, float],
    ) -> dict[str, float] | None:
        """Score per destination not ejected; None if every destination is ejected (cannot happen by cap)."""
        p = self.params
        raw: dict[str, float] = {}
        for dest, stats in observed.items():
            if states[dest].ejected_until is not None:
                continue
            latency = max(p.latency_floor_ms, stats.mean_ms) if stats.requests else None
            if latency is None:
                continue
            # Floored so that destinations left in service after ejection still share the traffic.
            health = max(1e-3, (1 - stats.error_rate) ** p.error_exponent)
            raw[dest] = health / latency
        neutral = statistics.fmean(raw.values()) if raw else 1.0
        scores: dict[str, float] = {}
        for dest in current:
            state = states[dest]
            if state.ejected_until is not None:
                continue
            # A destination an operator set to 0 (a dark version) stays dark unless it is ours to restore.
            if current[dest] <= 0 and not state.restore_step:
                continue
            score = raw.get(dest, neutral)
            if state.restore_step:
                score *= state.restore_step / p.restore_steps
            scores[dest] = score
        if not scores or sum(scores.values()) <= 0:
            return None
        return scores


def _destination_stats(view: TelemetryView, service: str, destination: str) -> Any:
    """The window of the service named after `destination`, if the trace model has one."""
    for name in (destination, f"{service}-{destination}"):
        if name != service:
            stats = view.stats(name)
            if stats is not None:
                return stats
    return None
