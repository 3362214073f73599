"""`isolation`: adaptive bulkheads (concurrency limits) and circuit breakers in front of struggling callees.

A callee that is saturated makes its callers queue on it, and a callee that fails makes them retry into it;
either way the trouble climbs the call graph. For every service that is the callee of at least one edge this
controller keeps, across ticks:

* a **gradient concurrency limit** in the manner of Netflix's concurrency-limits `GradientLimit`:
  `gradient = clamp(rtt_noload / rtt, min_gradient, 1)`, `new = limit * gradient + sqrt(limit)` (the square
  root is the queue allowed to build), smoothed as `limit = (1 - smoothing) * limit + smoothing * new`.
  `rtt` is the callee's window mean latency and `rtt_noload` the lowest mean latency seen so far, which
  drifts up slowly so that a permanent change of the service is eventually accepted as its new baseline.
  As in the library, the limit does not grow while the callee uses less than half of it. The limit is
  proposed (`Isolate(concurrency_limit, limit=N)`) once the callee is saturated (`rtt` above
  `saturation_ratio * rtt_noload`), re-proposed when its whole-number value changes, and lifted
  (`enabled=False`) after the callee has been unsaturated for `release_after_ticks` ticks.
* a **circuit breaker**: opened (`enabled=True`) when the callee's window error rate reaches
  `open_error_rate` on at least `min_requests` requests, closed (`enabled=False`) after `close_after_ticks`
  consecutive ticks below `close_error_rate`. While a breaker is open the callee sees only the substrate's
  half-open probes; a window with fewer than `min_requests` requests is no evidence either way.

The callee's numbers come from its own service window; a callee that is not instrumented (a database, an
external API) is judged from the sum of the edges into it, which is what its callers observe.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from controlplane import (
    Action,
    ActionKind,
    Controller,
    ControlLocus,
    Dynamics,
    Isolate,
    IsolationMechanism,
    Objective,
    Strategy,
    Taxonomy,
    Telemetry,
    TelemetryView,
)


@dataclass
class _CalleeState:
    """What the controller remembers about one callee between ticks."""

    limit: float
    rtt_noload_ms: float
    limit_proposed: int | None = None
    unsaturated_ticks: int = 0
    breaker_open: bool = False
    healthy_ticks: int = 0


@dataclass(frozen=True, slots=True)
class _CalleeWindow:
    requests: int
    errors: int
    error_rate: float
    mean_ms: float
    concurrency: float
    callers: tuple[str, ...] = field(default_factory=tuple)


class AdaptiveBulkheads(Controller):
    """Gradient concurrency limits and circuit breakers on callees that are saturated or failing."""

    name = "isolation"
    description = (
        "Bulkheads against cascades: a gradient-based adaptive concurrency limit on saturated callees and a"
        " circuit breaker on failing ones, released as they recover."
    )
    # A feedback law (the gradient limit) plus threshold rules with hysteresis for the breaker, from trace
    # windows only; not yet evaluated on any testbed, so no evidence is claimed.
    taxonomy = Taxonomy.of(
        ControlLocus.CENTRALIZED,
        Strategy.CONTROL_THEORETIC,
        dynamics=[Dynamics.WORKLOAD, Dynamics.FAILURE],
        objectives=[Objective.AVAILABILITY, Objective.LATENCY_SLO],
        telemetry=[Telemetry.TRACES],
        actions=[ActionKind.ISOLATION],
    )
    period_seconds = 10.0
    time_budget_seconds = 1.0

    @dataclass(frozen=True)
    class Parameters:
        """Settings from `[controllers.isolation.params]`."""

        # Limit a callee starts from when it has no in-flight estimate yet.
        initial_limit: float = 20.0
        min_limit: float = 1.0
        max_limit: float = 1000.0
        # Weight of the newest gradient estimate (the library's `smoothing`).
        smoothing: float = 0.2
        # The gradient never cuts the limit by more than this factor in one step.
        min_gradient: float = 0.5
        # Per-tick relative upward drift of the no-load latency, so a lasting change becomes the baseline.
        noload_drift: float = 0.01
        # A callee is saturated when its latency exceeds this multiple of its no-load latency.
        saturation_ratio: float = 1.5
        release_after_ticks: int = 3
        open_error_rate: float = 0.5
        close_error_rate: float = 0.05
        close_after_ticks: int = 2
        # Below this many requests in the window, rates are noise, not evidence.
        min_requests: int = 20

    def __init__(self, params: object | None = None) -> None:
        super().__init__(params)
        self._state: dict[str, _CalleeState] = {}

    async def decide(self, view: TelemetryView) -> list[Action]:
        proposals: list[Action] = []
        for callee, window in sorted(_callee_windows(view).items()):
            if window.requests < self.params.min_requests:
                continue
            state = self._state.get(callee)
            if state is None:
                start = window.concurrency * 2 if window.concurrency > 0 else self.params.initial_limit
                state = _CalleeState(limit=self._clamp(start), rtt_noload_ms=window.mean_ms)
                self._state[callee] = state
            proposals.extend(self._bulkhead(callee, window, state))
            proposals.extend(self._breaker(callee, window, state))
        return proposals

    def _clamp(self, limit: float) -> float:
        return min(self.params.max_limit, max(self.params.min_limit, limit))

    def _bulkhead(self, callee: str, window: _CalleeWindow, state: _CalleeState) -> list[Action]:
        p = self.params
        rtt = window.mean_ms
        if rtt <= 0:
            return []
        state.rtt_noload_ms = min(rtt, state.rtt_noload_ms * (1 + p.noload_drift))
        gradient = max(p.min_gradient, min(1.0, state.rtt_noload_ms / rtt))
        queue = math.sqrt(state.limit)
        new_limit = state.limit * gradient + queue
        # An application-limited callee says nothing about how much more it could take.
        if new_limit > state.limit and window.concurrency < state.limit / 2:
            new_limit = state.limit
        state.limit = self._clamp((1 - p.smoothing) * state.limit + p.smoothing * new_limit)
        saturated = rtt > p.saturation_ratio * state.rtt_noload_ms
        state.unsaturated_ticks = 0 if saturated else state.unsaturated_ticks + 1
        evidence = {
            "rtt_ms": rtt,
            "rtt_noload_ms": state.rtt_noload_ms,
            "gradient": gradient,
            "queue_size": queue,
            "limit": state.limit,
            "concurrency": window.concurrency,
            "callers": ",".join(window.callers),
        }
        limit = max(1, round(state.limit))
        if saturated and limit != state.limit_proposed:
            state.limit_proposed = limit
            return [
                Isolate(
                    target=callee,
                    mechanism=IsolationMechanism.CONCURRENCY_LIMIT,
                    limit=float(limit),
                    reason=(
                        f"latency {rtt:.1f} ms is {rtt / state.rtt_noload_ms:.2f}x the no-load"
                        f" {state.rtt_noload_ms:.1f} ms; gradient {gradient:.2f} sets the concurrency limit"
                        f" to {limit}"
                    ),
                    evidence=evidence,
                )
            ]
        if state.limit_proposed is not None and state.unsaturated_ticks >= p.release_after_ticks:
            state.limit_proposed = None
            return [
                Isolate(
                    target=callee,
                    mechanism=IsolationMechanism.CONCURRENCY_LIMIT,
                    enabled=False,
                    reason=(
                        f"latency {rtt:.1f} ms has stayed within {p.saturation_ratio:g}x the no-load latency"
                        f" for {state.unsaturated_ticks} ticks; lifting the concurrency limit"
                    ),
                    evidence=evidence,
                )
            ]
        return []

    def _breaker(self, callee: str, window: _CalleeWindow, state: _CalleeState) -> list[Action]:
        p = self.params
        evidence = {
            "error_rate": window.error_rate,
            "requests": window.requests,
            "errors": window.errors,
            "callers": ",".join(window.callers),
        }
        if not state.breaker_open:
            if window.error_rate < p.open_error_rate:
                return []
            state.breaker_open = True
            state.healthy_ticks = 0
            return [
                Isolate(
                    target=callee,
                    mechanism=IsolationMechanism.CIRCUIT_BREAKER,
                    enabled=True,
                    reason=(
                        f"error rate {window.error_rate:.0%} on {window.requests} requests reaches"
                        f" {p.open_error_rate:.0%}; opening the breaker so callers fail fast"
                    ),
                    evidence={**evidence, "open_error_rate": p.open_error_rate},
                )
            ]
        state.healthy_ticks = state.healthy_ticks + 1 if window.error_rate < p.close_error_rate else 0
        if state.healthy_ticks < p.close_after_ticks:
            return []
        state.breaker_open = False
        return [
            Isolate(
                target=callee,
                mechanism=IsolationMechanism.CIRCUIT_BREAKER,
                enabled=False,
                reason=(
                    f"error rate below {p.close_error_rate:.0%} for {state.healthy_ticks} ticks"
                    f" (now {window.error_rate:.0%}); closing the breaker"
                ),
                evidence={
                    **evidence,
                    "close_error_rate": p.close_error_rate,
                    "healthy_ticks": state.healthy_ticks,
                },
            )
        ]


def _callee_windows(view: TelemetryView) -> dict[str, _CalleeWindow]:
    """Every callee of an edge: its own window if it is instrumented, else the sum of its inbound edges."""
    inbound: dict[str, list] = {}
    for edge in view.edges():
        if edge.source != edge.target:
            inbound.setdefault(edge.target, []).append(edge)
    windows: dict[str, _CalleeWindow] = {}
    for callee, edges in inbound.items():
        callers = tuple(sorted(edge.source for edge in edges))
        stats = view.stats(callee)
        if stats is not None and stats.requests > 0:
            windows[callee] = _CalleeWindow(
                stats.requests, stats.errors, stats.error_rate, stats.mean_ms, stats.concurrency, callers
            )
            continue
        requests = sum(edge.stats.requests for edge in edges)
        errors = sum(edge.stats.errors for edge in edges)
        if requests == 0:
            continue
        mean_ms = sum(edge.stats.mean_ms * edge.stats.requests for edge in edges) / requests
        concurrency = sum(edge.stats.concurrency for edge in edges)
        windows[callee] = _CalleeWindow(requests, errors, errors / requests, mean_ms, concurrency, callers)
    return windows
