"""Tests of the Knative-style `kpa` autoscaler on hand-built views."""

from __future__ import annotations

import asyncio

from controllers.kpa import KnativeAutoscaler
from controlplane import Inventory, Scale, ServiceInventory, TelemetryView
from telemetry import WindowSummary
from telemetry.snapshot import GraphSnapshot, NodeSnapshot

TICK = 2.0


def view_at(
    now: float, concurrency: float, replicas: int, *, requests: int | None = None, **inventory: int
) -> TelemetryView:
    requests = (1 if concurrency > 0 else 0) if requests is None else requests
    stats = WindowSummary(
        window_seconds=10.0,
        requests=requests,
        errors=0,
        request_rate=requests / 10.0,
        error_rate=0.0,
        p50_ms=10.0,
        p95_ms=20.0,
        p99_ms=30.0,
        mean_ms=10.0,
        concurrency=concurrency,
    )
    node = NodeSnapshot("api", "service", "", stats, requests, 0, now)
    snapshot = GraphSnapshot(now, 10.0, nodes=(node,), edges=(), spans_accepted=0, spans_rejected=0)
    service = ServiceInventory("api", replicas=replicas, **inventory)
    return TelemetryView(int(now / TICK), now, snapshot, Inventory(services={"api": service}))


def decide(controller: KnativeAutoscaler, view: TelemetryView) -> Scale | None:
    proposals = asyncio.run(controller.decide(view))
    assert len(proposals) <= 1
    return proposals[0] if proposals else None  # type: ignore[return-value]


def feed(controller: KnativeAutoscaler, start: float, end: float, concurrency: float, replicas: int, **inv):
    """Ticks from start (inclusive) to end (exclusive) at a steady concurrency; returns the last proposal."""
    last = None
    now = start
    while now < end:
        last = decide(controller, view_at(now, concurrency, replicas, **inv))
        now += TICK
    return last


def test_defaults_are_knatives() -> None:
    controller = KnativeAutoscaler()
    assert controller.target_per_pod == 70.0
    assert controller.panic_window_seconds == 6.0
    assert controller.params.max_scale_up_rate == 1000.0
    assert controller.params.max_scale_down_rate == 2.0
    assert controller.params.scale_to_zero_grace_seconds == 30.0
    assert KnativeAutoscaler.taxonomy.as_dict()["strategy"] == "rule"


def test_stable_mode_scales_to_concurrency_over_target() -> None:
    controller = KnativeAutoscaler()
    proposal = decide(controller, view_at(0.0, 130.0, replicas=1))  # 130 / 70 -> 2 pods, below panic
    assert proposal is not None and proposal.replicas == 2
    assert proposal.evidence["mode"] == "stable"
    assert not controller.panicking("api")
    assert decide(controller, view_at(2.0, 130.0, replicas=2)) is None


def test_burst_enters_panic_and_uses_the_panic_window() -> None:
    controller = KnativeAutoscaler()
    assert feed(controller, 0.0, 60.0, 70.0, replicas=1) is None  # exactly on target
    proposal = decide(controller, view_at(60.0, 700.0, replicas=1))
    # Stable window: (30 x 70 + 700) / 31 ~ 90 -> 2 pods; panic window (6 s): (700 + 70 + 70) / 3 = 280
    # -> 4 pods, and 280 per pod is 4x the target, over the 200 % threshold.
    assert controller.panicking("api")
    assert proposal is not None and proposal.replicas == 4
    assert proposal.evidence["mode"] == "panic"
    assert proposal.evidence["desired_stable_pods"] == 2


def test_panic_never_scales_down_and_ends_after_a_stable_window() -> None:
    controller = KnativeAutoscaler()
    feed(controller, 0.0, 60.0, 70.0, replicas=1)
    assert decide(controller, view_at(60.0, 700.0, replicas=1)).replicas == 4
    # Traffic falls to nothing right after the burst: still in panic for a stable window, so no scale-down.
    now = 62.0
    while now < 120.0:
        assert decide(controller, view_at(now, 0.0, replicas=4)) is None
        assert controller.panicking("api")
        now += TICK
    proposal = decide(controller, view_at(120.0, 0.0, replicas=4))  # 60 s since the threshold was last hit
    assert not controller.panicking("api")
    assert proposal is not None and proposal.evidence["mode"] == "stable"
    assert proposal.replicas == 2  # the stable window is empty now, but at most halved per decision


def test_panic_keeps_scaling_up_with_the_burst() -> None:
    controller = KnativeAutoscaler()
    feed(controller, 0.0, 60.0, 70.0, replicas=1)
    assert decide(controller, view_at(60.0, 700.0, replicas=1)).replicas == 4
    proposal = decide(controller, view_at(62.0, 2100.0, replicas=4))  # (2100 + 700 + 70) / 3 -> 14 pods
    assert proposal is not None and proposal.replicas == 14


def test_scale_up_rate_limit() -> None:
    controller = KnativeAutoscaler(KnativeAutoscaler.Parameters(max_scale_up_rate=2.0))
    proposal = decide(controller, view_at(0.0, 700.0, replicas=2))  # wants 10, may go to ceil(2 x 2)
    assert proposal is not None and proposal.replicas == 4
    assert proposal.evidence["max_scale_up"] == 4


def test_default_scale_up_rate_allows_large_steps_and_max_replicas_bounds_it() -> None:
    controller = KnativeAutoscaler()
    proposal = decide(controller, view_at(0.0, 70.0 * 50, replicas=1, max_replicas=30))
    assert proposal is not None and proposal.replicas == 30


def test_scale_down_rate_limit() -> None:
    controller = KnativeAutoscaler()
    proposal = decide(controller, view_at(0.0, 70.0, replicas=10))  # wants 1, may only halve
    assert proposal is not None and proposal.replicas == 5
    assert proposal.evidence["max_scale_down"] == 5


def test_scale_down_uses_ready_replicas() -> None:
    controller = KnativeAutoscaler()
    proposal = decide(controller, view_at(0.0, 70.0, replicas=10, ready_replicas=4))
    assert proposal is not None and proposal.replicas == 2


def test_scale_to_zero_after_stable_window_and_grace_period() -> None:
    controller = KnativeAutoscaler()
    assert decide(controller, view_at(0.0, 10.0, replicas=1, min_replicas=0)) is None
    # The t=0 sample leaves the stable window at t=60: desired becomes zero, the grace period starts.
    for now in range(2, 90, 2):
        assert decide(controller, view_at(float(now), 0.0, replicas=1, min_replicas=0)) is None
    proposal = decide(controller, view_at(90.0, 0.0, replicas=1, min_replicas=0))
    assert proposal is not None and proposal.replicas == 0
    assert "scale to zero" in proposal.reason


def test_traffic_during_grace_period_cancels_scale_to_zero() -> None:
    controller = KnativeAutoscaler()
    decide(controller, view_at(0.0, 10.0, replicas=1, min_replicas=0))
    feed(controller, 2.0, 80.0, 0.0, replicas=1, min_replicas=0)
    assert decide(controller, view_at(80.0, 5.0, replicas=1, min_replicas=0)) is None
    assert feed(controller, 82.0, 100.0, 0.0, replicas=1, min_replicas=0) is None


def test_min_replicas_prevents_scale_to_zero() -> None:
    controller = KnativeAutoscaler()
    decide(controller, view_at(0.0, 10.0, replicas=1))  # inventory default min_replicas=1
    assert feed(controller, 2.0, 200.0, 0.0, replicas=1) is None


def test_activation_from_zero_on_first_request() -> None:
    controller = KnativeAutoscaler()
    assert feed(controller, 0.0, 100.0, 0.0, replicas=0, min_replicas=0) is None
    proposal = decide(controller, view_at(100.0, 0.0, replicas=0, requests=1, min_replicas=0))
    assert proposal is not None and proposal.replicas == 1
    assert proposal.evidence["activated"] is True


def test_activation_with_a_burst_goes_straight_to_the_needed_count() -> None:
    controller = KnativeAutoscaler()
    proposal = decide(controller, view_at(0.0, 350.0, replicas=0, requests=100, min_replicas=0))
    assert proposal is not None and proposal.replicas == 5
