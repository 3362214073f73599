"""`error-budget-isolator`: arm a circuit breaker in front of a service whose window error rate is too high.

Written against the public API only (`from controlplane import ...`), as any third-party controller is.
Callers of a service that fails most of its requests gain nothing from waiting on it; a circuit breaker
makes them fail fast and lets the service recover. The breaker's own logic (trip, half-open, close) belongs
to the substrate; this controller only decides where one should be armed.
"""

from __future__ import annotations

from dataclasses import dataclass

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


class ErrorBudgetIsolator(Controller):
    """Propose `Isolate(circuit_breaker)` for every service whose error rate exceeds a threshold."""

    name = "error-budget-isolator"
    description = "Arms a circuit breaker in front of services whose window error rate exceeds a threshold."
    # A threshold rule on trace-derived error rates; it has not been evaluated anywhere yet, so it claims
    # no evidence.
    taxonomy = Taxonomy.of(
        ControlLocus.CENTRALIZED,
        Strategy.RULE,
        dynamics=[Dynamics.FAILURE],
        objectives=[Objective.AVAILABILITY],
        telemetry=[Telemetry.TRACES],
        actions=[ActionKind.ISOLATION],
    )
    period_seconds = 15.0
    time_budget_seconds = 1.0

    @dataclass(frozen=True)
    class Parameters:
        """Settings from `[controllers.error-budget-isolator.params]`."""

        # Fraction of failed requests in the window above which the breaker is armed.
        error_rate_threshold: float = 0.2
        # Below this many requests in the window an error rate is noise, not evidence.
        min_requests: int = 20

    async def decide(self, view: TelemetryView) -> list[Action]:
        threshold = self.params.error_rate_threshold
        proposals: list[Action] = []
        for service in view.services:
            stats = view.stats(service)
            if stats is None or stats.requests < self.params.min_requests:
                continue
            if stats.error_rate > threshold:
                proposals.append(
                    Isolate(
                        target=service,
                        mechanism=IsolationMechanism.CIRCUIT_BREAKER,
                        reason=(
                            f"error rate {stats.error_rate:.0%} over the last {stats.window_seconds:g} s"
                            f" exceeds {threshold:.0%}"
                        ),
                        evidence={
                            "error_rate": stats.error_rate,
                            "requests": stats.requests,
                            "errors": stats.errors,
                            "error_rate_threshold": threshold,
                        },
                    )
                )
        return proposals
