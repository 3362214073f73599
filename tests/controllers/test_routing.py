"""Tests of `controllers.routing.OutlierAwareRouting` on hand-built views."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import pytest

from controllers.routing import OutlierAwareRouting
from controlplane import Inventory, Route, TelemetryView
from telemetry import GraphSnapshot, NodeSnapshot, WindowSummary


def _window(mean_ms: float, requests: int = 100, errors: int = 0) -> WindowSummary:
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
        concurrency=1.0,
    )


def _view(now: float, windows: Mapping[str, WindowSummary], weights: Mapping[str, float]) -> TelemetryView:
    nodes = tuple(NodeSnapshot(name, "service", "", stats, 100, 0, now) for name, stats in windows.items())
    snapshot = GraphSnapshot(now, 10.0, nodes=nodes, edges=(), spans_accepted=0, spans_rejected=0)
    return TelemetryView(int(now), now, snapshot, Inventory(routing={"api": dict(weights)}))


def _route(controller: OutlierAwareRouting, view: TelemetryView) -> Route | None:
    proposals = asyncio.run(controller.decide(view))
    assert len(proposals) <= 1
    for proposal in proposals:
        assert isinstance(proposal, Route) and proposal.reason and proposal.evidence
    return proposals[0] if proposals else None  # type: ignore[return-value]


def test_weights_favour_the_fast_destination() -> None:
    controller = OutlierAwareRouting()
    route = _route(
        controller, _view(0.0, {"api-v1": _window(20.0), "api-v2": _window(50.0)}, {"v1": 50, "v2": 50})
    )
    assert route is not None and route.target == "api"
    # Scores 1/20 and 1/50 give v1 5/7 of the traffic; smoothing 0.5 moves halfway from 50/50.
    expected_v1 = 0.5 * 0.5 + 0.5 * (5 / 7)
    assert route.weights["v1"] == pytest.approx(100 * expected_v1, abs=1e-4)
    assert route.weights["v2"] == pytest.approx(100 * (1 - expected_v1), abs=1e-4)


def test_errors_lower_a_destination_weight_and_steady_weights_are_not_reproposed() -> None:
    controller = OutlierAwareRouting()
    windows = {"api-v1": _window(20.0), "api-v2": _window(20.0, errors=20)}
    route = _route(controller, _view(0.0, windows, {"v1": 0.5, "v2": 0.5}))
    assert route is not None and route.weights["v1"] > route.weights["v2"] > 0
    steady = OutlierAwareRouting()
    assert (
        _route(steady, _view(0.0, {"api-v1": _window(20.0), "api-v2": _window(20.0)}, {"v1": 1, "v2": 1}))
        is None
    )


def test_ejection_after_consecutive_errors_across_windows() -> None:
    controller = OutlierAwareRouting()
    weights = {"v1": 1.0, "v2": 1.0, "v3": 1.0}
    healthy = _window(20.0)
    # 3 failures in a failing window: not yet the 5 consecutive errors that eject.
    first = _route(
        controller, _view(0.0, {"api-v1": healthy, "api-v2": healthy, "api-v3": _window(20.0, 4, 3)}, weights)
    )
    assert first is None or first.weights["v3"] > 0
    # Three more in the next failing window: 6 consecutive, ejected.
    second = _route(
        controller,
        _view(10.0, {"api-v1": healthy, "api-v2": healthy, "api-v3": _window(20.0, 4, 3)}, weights),
    )
    assert second is not None and second.weights["v3"] == 0
    assert second.weights["v1"] == pytest.approx(second.weights["v2"]) and second.weights["v1"] > 0
    assert second.evidence["v3.ejected"] is True and "consecutive errors" in second.reason


def test_a_healthy_window_resets_the_consecutive_count() -> None:
    controller = OutlierAwareRouting()
    weights = {"v1": 1.0, "v2": 1.0}
    _route(controller, _view(0.0, {"api-v1": _window(20.0), "api-v2": _window(20.0, 4, 3)}, weights))
    _route(controller, _view(10.0, {"api-v1": _window(20.0), "api-v2": _window(20.0, 100, 1)}, weights))
    route = _route(controller, _view(20.0, {"api-v1": _window(20.0), "api-v2": _window(20.0, 4, 3)}, weights))
    assert route is None or route.weights["v2"] > 0


def test_max_ejection_percent_is_respected() -> None:
    controller = OutlierAwareRouting()  # 50%: at most 2 of 4
    windows = {
        "api-a": _window(20.0),
        "api-b": _window(20.0, 100, 90),
        "api-c": _window(20.0, 100, 70),
        "api-d": _window(20.0, 100, 80),
    }
    route = _route(controller, _view(0.0, windows, {"a": 1, "b": 1, "c": 1, "d": 1}))
    assert route is not None
    ejected = sorted(dest for dest, weight in route.weights.items() if weight == 0)
    assert ejected == ["b", "d"]  # the two worst; c stays in service
    assert "max ejection percent" in route.reason


def test_latency_outlier_is_ejected_but_never_every_destination() -> None:
    controller = OutlierAwareRouting()
    route = _route(
        controller, _view(0.0, {"api-v1": _window(10.0), "api-v2": _window(80.0)}, {"v1": 1, "v2": 1})
    )
    assert route is not None and route.weights == {"v1": 2.0, "v2": 0.0}  # total weight kept
    assert "latency outlier" in route.reason
    both_failing = OutlierAwareRouting()
    windows = {"api-v1": _window(10.0, 100, 100), "api-v2": _window(10.0, 100, 100)}
    route = _route(both_failing, _view(0.0, windows, {"v1": 1, "v2": 1}))
    assert route is not None and sum(1 for weight in route.weights.values() if weight == 0) == 1


def test_gradual_restore_after_base_ejection_time_and_longer_second_ejection() -> None:
    controller = OutlierAwareRouting()
    base = controller.params.base_ejection_seconds
    healthy = {"api-v1": _window(20.0), "api-v2": _window(20.0)}
    route = _route(
        controller, _view(0.0, {"api-v1": _window(20.0), "api-v2": _window(20.0, 10, 10)}, {"v1": 1, "v2": 1})
    )
    assert route is not None and route.weights["v2"] == 0
    weights = dict(route.weights)
    # Still inside the base ejection time: stays out (nothing changes, so nothing is proposed).
    assert _route(controller, _view(base - 1, healthy, weights)) is None
    # After it, v2 comes back a step at a time.
    shares = []
    now = base
    for _ in range(controller.params.restore_steps):
        route = _route(controller, _view(now, healthy, weights))
        assert route is not None
        weights = dict(route.weights)
        shares.append(weights["v2"] / sum(weights.values()))
        now += 10.0
    assert 0 < shares[0] < shares[1] < shares[2] < shares[3] < 0.5
    # First restored tick: score scaled by 1/4, so v2's target share is 0.2 and half of that is taken.
    assert shares[0] == pytest.approx(0.1)
    # Failing again: ejected for twice the base time.
    route = _route(
        controller, _view(now, {"api-v1": _window(20.0), "api-v2": _window(20.0, 10, 10)}, weights)
    )
    assert route is not None and route.weights["v2"] == 0
    assert f"ejected for {2 * base:g} s" in route.reason


def test_destinations_without_their_own_window_get_no_proposal() -> None:
    controller = OutlierAwareRouting()
    nodes = (NodeSnapshot("api", "service", "", _window(20.0), 100, 0, 0.0),)
    snapshot = GraphSnapshot(0.0, 10.0, nodes=nodes, edges=(), spans_accepted=0, spans_rejected=0)
    view = TelemetryView(0, 0.0, snapshot, Inventory(routing={"api": {"api-7f9c": 1.0, "api-b2d1": 1.0}}))
    assert asyncio.run(controller.decide(view)) == []


def test_a_destination_kept_dark_by_the_operator_stays_dark() -> None:
    controller = OutlierAwareRouting()
    windows = {"api-v1": _window(50.0), "api-v2": _window(20.0), "api-v3": _window(10.0, requests=0)}
    route = _route(controller, _view(0.0, windows, {"v1": 50, "v2": 50, "v3": 0}))
    assert route is not None and route.weights["v3"] == 0 and route.weights["v2"] > route.weights["v1"]
