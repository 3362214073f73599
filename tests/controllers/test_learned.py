"""Tests of the `learned` autoscaler on synthetic telemetry from an M/M/1-like latency curve."""

from __future__ import annotations

import asyncio
import math

import numpy as np

from controllers.learned import LearnedAutoscaler
from controlplane import Inventory, Scale, ServiceInventory, Strategy, TelemetryView
from telemetry import WindowSummary
from telemetry.snapshot import EdgeSnapshot, GraphSnapshot, NodeSnapshot

WINDOW = 15.0
SERVICE_RATE = 100.0  # requests per second one replica serves
SLO_MS = 150.0


def mm1_p99_ms(rate: float, replicas: int) -> float:
    """p99 response time of M/M/1 per replica: the exponential sojourn time's 99th percentile."""
    return 1000.0 * math.log(100.0) / (SERVICE_RATE - rate / replicas)


def summary(rate: float, p99: float) -> WindowSummary:
    requests = int(rate * WINDOW)
    return WindowSummary(
        window_seconds=WINDOW,
        requests=requests,
        errors=0,
        request_rate=rate,
        error_rate=0.0,
        p50_ms=p99 * math.log(2) / math.log(100),
        p95_ms=p99 * math.log(20) / math.log(100),
        p99_ms=p99,
        mean_ms=p99 / math.log(100),
        concurrency=rate * p99 / 1000.0,
    )


def view(tick: int, rate: float, replicas: int, p99: float) -> TelemetryView:
    db = summary(rate, 4.0)
    nodes = (
        NodeSnapshot("api", "service", "", summary(rate, p99), int(rate * WINDOW), 0, float(tick)),
        NodeSnapshot("db", "service", "", db, db.requests, 0, float(tick)),
    )
    edges = (EdgeSnapshot("api", "db", db, db.requests, 0, float(tick)),)
    inventory = Inventory(
        services={
            "api": ServiceInventory(name="api", replicas=replicas, max_replicas=20),
            # The database has no inventory entry: the autoscaler leaves alone what it cannot scale.
        }
    )
    return TelemetryView(
        tick, tick * WINDOW, GraphSnapshot(float(tick), WINDOW, nodes, edges, 0, 0), inventory
    )


def training_view(tick: int, rng: np.random.Generator, top_load: float = 0.92) -> TelemetryView:
    """A random rate on a random replica count whose utilisation stays at or below `top_load`."""
    rate = float(rng.uniform(50.0, 450.0))
    lowest = math.ceil(rate / (top_load * SERVICE_RATE))
    replicas = int(rng.integers(lowest, lowest + 5))
    p99 = mm1_p99_ms(rate, replicas) * float(rng.lognormal(0.0, 0.03))
    return view(tick, rate, replicas, p99)


def run(controller: LearnedAutoscaler, telemetry: TelemetryView) -> list:
    return asyncio.run(controller.decide(telemetry))


def trained(ticks: int = 120, top_load: float = 0.92) -> tuple[LearnedAutoscaler, list[bool]]:
    controller = LearnedAutoscaler(LearnedAutoscaler.Parameters(slo_p99_ms=SLO_MS))
    rng = np.random.default_rng(7)
    readiness = []
    for tick in range(ticks):
        run(controller, training_view(tick, rng, top_load))
        readiness.append(controller.ready)
        assert controller.ready_to_apply == controller.ready  # what keeps its decisions in shadow until then
    return controller, readiness


def test_taxonomy_is_learning() -> None:
    LearnedAutoscaler.validate_class()
    assert LearnedAutoscaler.name == "learned"
    assert LearnedAutoscaler.taxonomy.strategy is Strategy.LEARNING
    assert LearnedAutoscaler.taxonomy.learning


def test_live_error_drops_until_ready() -> None:
    controller, readiness = trained()
    assert not readiness[0], "no model, no live predictions: not ready"
    assert readiness[-1], f"live MAPE {controller.live_mape} never fell below the threshold"
    first_ready = readiness.index(True)
    assert first_ready >= controller.params.min_samples + controller.params.min_predictions - 1
    assert controller.live_mape is not None and controller.live_mape < controller.params.ready_mape
    assert controller.service_mape("api") == controller.live_mape


def test_picks_cheapest_replica_count_meeting_the_slo() -> None:
    controller, _ = trained()
    # At 300 req/s: 4 replicas give ~184 ms, 5 give ~115 ms, so 5 is the cheapest under 150 ms.
    for replicas in (4, 9):
        [action] = run(controller, view(1000 + replicas, 300.0, replicas, mm1_p99_ms(300.0, replicas)))
        assert isinstance(action, Scale)
        assert action.target == "api"
        assert action.replicas == 5, action.evidence
        assert action.evidence["predicted_p99_ms"] * (1 + action.evidence["margin"]) <= SLO_MS
        assert action.evidence["ready"] is True
        assert 0.0 <= action.evidence["live_mape"] < controller.params.ready_mape
    assert run(controller, view(2000, 300.0, 5, mm1_p99_ms(300.0, 5))) == [], "already at the cheapest count"


def test_does_not_trust_the_model_beyond_the_load_it_has_seen() -> None:
    controller, _ = trained(ticks=60, top_load=0.4)
    # 1200 req/s on 6 replicas: even 16 replicas would carry more per replica than ever seen (40 req/s),
    # so no prediction is trusted and the SLO violation gets a careful step up by one.
    [action] = run(controller, view(500, 1200.0, 6, 2_000.0))
    assert isinstance(action, Scale)
    assert action.replicas == 7
    assert action.evidence["predicted_p99_ms"] == -1.0
