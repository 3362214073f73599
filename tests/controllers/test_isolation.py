"""Tests of `controllers.isolation.AdaptiveBulkheads` on hand-built views."""

from __future__ import annotations

import asyncio
import math

from controllers.isolation import AdaptiveBulkheads
from controlplane import Isolate, IsolationMechanism, TelemetryView
from telemetry import EdgeSnapshot, GraphSnapshot, NodeSnapshot, WindowSummary


def _window(mean_ms: float, concurrency: float = 5.0, requests: int = 100, errors: int = 0) -> WindowSummary:
    return WindowSummary(
        window_seconds=10.0,
        requests=requests,
        errors=errors,
        request_rate=requests / 10.0,
        error_rate=errors / requests if requests else 0.0,
        p50_ms=mean_ms,
        p95_ms=2 * mean_ms,
        p99_ms=3 * mean_ms,
        mean_ms=mean_ms,
        concurrency=concurrency,
    )


def _view(tick: int, callee: WindowSummary, caller: str = "web", name: str = "db") -> TelemetryView:
    nodes = (
        NodeSnapshot(caller, "service", "", _window(50.0), 1000, 0, float(tick)),
        NodeSnapshot(name, "service", "", callee, 1000, 0, float(tick)),
    )
    edges = (EdgeSnapshot(caller, name, callee, 1000, 0, float(tick)),)
    snapshot = GraphSnapshot(float(tick), 10.0, nodes=nodes, edges=edges, spans_accepted=0, spans_rejected=0)
    return TelemetryView(tick, float(tick), snapshot)


def _decide(controller: AdaptiveBulkheads, view: TelemetryView) -> list[Isolate]:
    proposals = asyncio.run(controller.decide(view))
    assert all(isinstance(p, Isolate) and p.reason and p.evidence for p in proposals)
    return proposals  # type: ignore[return-value]


def _limits(proposals: list[Isolate]) -> list[Isolate]:
    return [p for p in proposals if p.mechanism is IsolationMechanism.CONCURRENCY_LIMIT]


def test_limit_follows_the_gradient_and_is_lifted_after_recovery() -> None:
    controller = AdaptiveBulkheads()
    params = controller.params

    def step(limit: float, noload: float, rtt: float) -> tuple[float, float]:
        noload = min(rtt, noload * (1 + params.noload_drift))
        gradient = max(params.min_gradient, min(1.0, noload / rtt))
        new = limit * gradient + math.sqrt(limit)
        return (1 - params.smoothing) * limit + params.smoothing * new, noload

    # An unsaturated callee: the limit is tracked but not proposed.
    assert _decide(controller, _view(0, _window(10.0, concurrency=10.0))) == []
    limit, noload = step(20.0, 10.0, 10.0)  # starts at twice the in-flight requests

    # Latency quadruples: the gradient (floored at 0.5) cuts the limit and the limit is proposed.
    proposals = _limits(_decide(controller, _view(1, _window(40.0, concurrency=30.0))))
    limit, noload = step(limit, noload, 40.0)
    assert len(proposals) == 1 and proposals[0].target == "db"
    assert proposals[0].enabled and proposals[0].limit == round(limit)
    assert proposals[0].evidence["gradient"] == 0.5
    assert "web" in str(proposals[0].evidence["callers"])

    # Still saturated: the limit keeps shrinking and is re-proposed when its whole value changes.
    first = previous = limit
    for tick in range(2, 6):
        proposals = _limits(_decide(controller, _view(tick, _window(40.0, concurrency=30.0))))
        limit, noload = step(limit, noload, 40.0)
        if round(limit) != round(previous):
            assert [p.limit for p in proposals] == [round(limit)]
        previous = limit
    assert limit < first - 3

    # Recovered for `release_after_ticks` ticks: the limit is lifted.
    lifted = []
    for tick in range(6, 6 + params.release_after_ticks):
        lifted += _limits(_decide(controller, _view(tick, _window(10.0, concurrency=5.0))))
    assert len(lifted) == 1 and lifted[0].enabled is False


def test_breaker_opens_on_a_failing_callee_and_closes_after_recovery() -> None:
    controller = AdaptiveBulkheads()

    def breakers(tick: int, errors: int, requests: int = 100) -> list[Isolate]:
        view = _view(tick, _window(10.0, requests=requests, errors=errors))
        return [p for p in _decide(controller, view) if p.mechanism is IsolationMechanism.CIRCUIT_BREAKER]

    assert breakers(0, errors=10) == []  # 10% errors: below the opening threshold
    opened = breakers(1, errors=60)
    assert len(opened) == 1 and opened[0].enabled is True and opened[0].evidence["error_rate"] == 0.6
    assert breakers(2, errors=70) == []  # already open: no repeat
    assert breakers(3, errors=0, requests=5) == []  # too few half-open probes to be evidence
    assert breakers(4, errors=0) == []  # one healthy tick is not enough
    closed = breakers(5, errors=1)
    assert len(closed) == 1 and closed[0].enabled is False and closed[0].target == "db"
    assert breakers(6, errors=0) == []


def test_uninstrumented_callee_is_judged_from_its_inbound_edges() -> None:
    controller = AdaptiveBulkheads()
    edge_window = _window(10.0, errors=80)
    nodes = (NodeSnapshot("web", "service", "", _window(50.0), 100, 0, 0.0),)
    edges = (EdgeSnapshot("web", "payments-api", edge_window, 100, 80, 0.0),)
    snapshot = GraphSnapshot(0.0, 10.0, nodes=nodes, edges=edges, spans_accepted=0, spans_rejected=0)
    proposals = _decide(controller, TelemetryView(0, 0.0, snapshot))
    assert [(p.target, p.mechanism, p.enabled) for p in proposals] == [
        ("payments-api", IsolationMechanism.CIRCUIT_BREAKER, True)
    ]
