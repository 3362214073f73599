"""Tests of the M/M/c formulas and the SLO-aware `queueing` autoscaler on hand-built views."""

from __future__ import annotations

import asyncio
import math
from fractions import Fraction

import numpy as np
import pytest

from controllers.queueing import (
    QueueingAutoscaler,
    erlang_c,
    mmc_mean_response,
    mmc_mean_wait,
    mmc_response_quantile,
    mmc_response_tail,
    service_time_from_response,
)
from controlplane import Inventory, Scale, ServiceInventory, TelemetryView
from telemetry import WindowSummary
from telemetry.critical_path import CriticalPath, PathStep
from telemetry.snapshot import EdgeSnapshot, GraphSnapshot, NodeSnapshot

WINDOW = 30.0


def textbook_erlang_c(c: int, a: float) -> float:
    """C(c, a) = (a^c / c!) (c / (c - a)) / (sum_{k<c} a^k / k! + (a^c / c!) (c / (c - a))), exactly."""
    a = Fraction(a)
    top = a**c / math.factorial(c) * c / (c - a)
    return float(top / (sum(a**k / math.factorial(k) for k in range(c)) + top))


# --- formulas -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("c", "a"), [(1, 0.5), (2, 1.0), (3, 2.4), (5, 4.5), (10, 7.0), (20, 15.0)])
def test_erlang_c_matches_the_textbook_formula(c: int, a: float) -> None:
    assert erlang_c(c, a) == pytest.approx(textbook_erlang_c(c, a), rel=1e-12)


def test_erlang_c_known_values_and_edges() -> None:
    assert erlang_c(1, 0.7) == pytest.approx(0.7)  # M/M/1: P(wait) = rho
    assert erlang_c(2, 1.0) == pytest.approx(1 / 3)
    assert erlang_c(3, 3.0) == 1.0 and erlang_c(3, 4.0) == 1.0  # saturated
    assert erlang_c(4, 0.0) == 0.0
    assert erlang_c(200, 180.0) == pytest.approx(textbook_erlang_c(200, 180.0), rel=1e-9)


def test_mm1_response_time_formulas() -> None:
    lam, mu = 8.0, 10.0
    assert mmc_mean_response(lam, mu, 1) == pytest.approx(1 / (mu - lam))
    assert mmc_mean_wait(lam, mu, 1) == pytest.approx(lam / mu / (mu - lam))
    for q in (0.5, 0.95, 0.99):  # the M/M/1 response time is exponential with rate mu - lambda
        assert mmc_response_quantile(lam, mu, 1, q) == pytest.approx(-math.log(1 - q) / (mu - lam), rel=1e-8)
    assert mmc_response_quantile(10.0, 10.0, 1, 0.95) == math.inf
    assert mmc_mean_response(10.0, 10.0, 1) == math.inf


def test_mmc_mean_response_is_service_plus_erlang_c_wait() -> None:
    lam, mu, c = 40.0, 10.0, 5
    expected = 1 / mu + textbook_erlang_c(c, lam / mu) / (c * mu - lam)
    assert mmc_mean_response(lam, mu, c) == pytest.approx(expected)


@pytest.mark.parametrize(("lam", "mu", "c"), [(40.0, 10.0, 5), (15.0, 10.0, 2), (5.0, 10.0, 3)])
def test_mmc_response_quantile_matches_sampling(lam: float, mu: float, c: int) -> None:
    rng = np.random.default_rng(7)
    n = 400_000
    wait_prob = erlang_c(c, lam / mu)
    samples = rng.exponential(1 / mu, n) + (rng.random(n) < wait_prob) * rng.exponential(
        1 / (c * mu - lam), n
    )
    for q in (0.95, 0.99):
        assert mmc_response_quantile(lam, mu, c, q) == pytest.approx(np.quantile(samples, q), rel=0.02)
    assert mmc_mean_response(lam, mu, c) == pytest.approx(samples.mean(), rel=0.01)


def test_response_tail_is_continuous_where_the_two_rates_meet() -> None:
    # c mu - lambda == mu when lambda = (c - 1) mu: the Erlang-2 limit.
    at = mmc_response_tail(10.0, 10.0, 2, 0.2)
    near = mmc_response_tail(10.0 - 1e-6, 10.0, 2, 0.2)
    assert at == pytest.approx(near, rel=1e-5)
    assert mmc_response_tail(10.0, 10.0, 2, 0.0) == pytest.approx(1.0)


def test_service_time_inversion_round_trips() -> None:
    lam, c, service = 30.0, 4, 0.1
    response = mmc_mean_response(lam, 1 / service, c)
    assert service_time_from_response(lam, response, c) == pytest.approx(service, rel=1e-6)


# --- views ----------------------------------------------------------------------------------------


def summary(rate: float, mean_ms: float) -> WindowSummary:
    return WindowSummary(
        window_seconds=WINDOW,
        requests=int(rate * WINDOW),
        errors=0,
        request_rate=rate,
        error_rate=0.0,
        p50_ms=mean_ms,
        p95_ms=3 * mean_ms,
        p99_ms=5 * mean_ms,
        mean_ms=mean_ms,
        concurrency=rate * mean_ms / 1000.0,
    )


def make_view(
    services: dict[str, tuple[float, float, ServiceInventory]],
    *,
    self_ms: dict[str, float] | None = None,
    edges: tuple[tuple[str, str, float, float], ...] = (),
    now: float = 100.0,
    tick: int = 10,
) -> TelemetryView:
    """services: name -> (rate, mean_ms, inventory) along one path in insertion order; edges: (src, dst,
    rate, mean_ms). With `self_ms`, a sampled critical path of the first service's "GET /" covers them."""
    nodes = tuple(
        NodeSnapshot(name, "service", "", summary(rate, mean), int(rate * WINDOW), 0, now)
        for name, (rate, mean, _) in sorted(services.items())
    )
    edge_snapshots = tuple(
        EdgeSnapshot(src, dst, summary(rate, mean), int(rate * WINDOW), 0, now)
        for src, dst, rate, mean in edges
    )
    critical = {}
    if self_ms:
        names = list(services)
        steps = tuple(
            PathStep(name, "GET /" if i == 0 else "op", 0.0, self_ms[name]) for i, name in enumerate(names)
        )
        path = CriticalPath("t1", names[0], "GET /", sum(self_ms.values()), steps, now)
        critical = {(names[0], "GET /"): (path,)}
    snapshot = GraphSnapshot(now, WINDOW, nodes, edge_snapshots, 0, 0, critical_paths=critical)
    inventory = Inventory(services={name: inv for name, (_, _, inv) in services.items()})
    return TelemetryView(tick, now, snapshot, inventory)


def params(**overrides) -> QueueingAutoscaler.Parameters:
    base = {"headroom": 0.0, "trend_ticks": 0, "spans_include_queueing": False}
    return QueueingAutoscaler.Parameters(**{**base, **overrides})


def decide(controller: QueueingAutoscaler, view: TelemetryView) -> dict[str, Scale]:
    return {p.target: p for p in asyncio.run(controller.decide(view))}  # type: ignore[misc]


def path_latency_ms(
    counts: dict[str, int], lam: dict[str, float], service_ms: dict[str, float], q: float
) -> float:
    return sum(1000 * mmc_response_quantile(lam[s], 1000 / service_ms[s], counts[s], q) for s in counts)


def two_hop_view(a_replicas: int = 1, b_replicas: int = 1, **inv) -> TelemetryView:
    return make_view(
        {
            "frontend": (50.0, 10.0, ServiceInventory("frontend", replicas=a_replicas, **inv)),
            "backend": (50.0, 30.0, ServiceInventory("backend", replicas=b_replicas, **inv)),
        },
        self_ms={"frontend": 5.0, "backend": 15.0},
    )


# --- the controller -------------------------------------------------------------------------------


def test_taxonomy_is_honest() -> None:
    taxonomy = QueueingAutoscaler.taxonomy.as_dict()
    assert taxonomy["locus"] == "centralized" and taxonomy["strategy"] == "model_based"
    assert taxonomy["dynamics"] == ["request_path", "workload"]
    assert taxonomy["evidence"] == ["simulation"]


def test_greedy_gives_replicas_where_they_cut_latency_most_and_meets_the_slo() -> None:
    # frontend: 50 req/s x 5 ms (rho 0.25); backend: 50 req/s x 15 ms (rho 0.75), both one replica.
    controller = QueueingAutoscaler(params(slo_ms=120.0))
    before = path_latency_ms(
        {"frontend": 1, "backend": 1}, {"frontend": 50, "backend": 50}, {"frontend": 5, "backend": 15}, 0.95
    )
    assert before > 120.0
    proposals = decide(controller, two_hop_view())
    assert "frontend" not in proposals  # its extra replica would buy little
    backend = proposals["backend"]
    assert backend.replicas >= 2
    counts = {"frontend": 1, "backend": backend.replicas}
    after = path_latency_ms(counts, {"frontend": 50, "backend": 50}, {"frontend": 5, "backend": 15}, 0.95)
    assert after <= 120.0
    assert backend.evidence["predicted_path_ms"] == pytest.approx(after)
    assert backend.evidence["predicted_ms"] <= backend.evidence["budget_ms"]
    assert backend.evidence["service_time_ms"] == pytest.approx(15.0)
    assert backend.evidence["arrival_rate"] == 50.0
    # Minimal: one replica fewer would miss the SLO.
    assert (
        path_latency_ms(
            {**counts, "backend": backend.replicas - 1},
            {"frontend": 50, "backend": 50},
            {"frontend": 5, "backend": 15},
            0.95,
        )
        > 120.0
    )


def test_tighter_slo_spreads_replicas_over_both_services() -> None:
    controller = QueueingAutoscaler(params(slo_ms=65.0))
    proposals = decide(controller, two_hop_view())
    assert proposals["frontend"].replicas >= 2  # the backend's replicas alone stop paying off
    assert proposals["backend"].replicas > proposals["frontend"].replicas
    counts = {"frontend": 1, "backend": 1} | {name: p.replicas for name, p in proposals.items()}
    assert (
        path_latency_ms(counts, {"frontend": 50, "backend": 50}, {"frontend": 5, "backend": 15}, 0.95) <= 65.0
    )


def test_no_proposal_when_the_slo_is_met_without_much_slack() -> None:
    controller = QueueingAutoscaler(params(slo_ms=120.0))
    assert decide(controller, two_hop_view(a_replicas=1, b_replicas=2)) == {}


def test_headroom_plans_for_more_arrivals() -> None:
    plain = decide(QueueingAutoscaler(params(slo_ms=120.0)), two_hop_view())["backend"]
    roomy = decide(QueueingAutoscaler(params(slo_ms=120.0, headroom=1.0)), two_hop_view())["backend"]
    assert roomy.evidence["forecast_rate"] == pytest.approx(100.0)
    assert roomy.evidence["arrival_rate"] == pytest.approx(50.0)
    assert roomy.replicas > plain.replicas
    after = path_latency_ms(
        {"frontend": 1, "backend": roomy.replicas},
        {"frontend": 100, "backend": 100},
        {"frontend": 5, "backend": 15},
        0.95,
    )
    assert after <= 120.0


def test_trend_raises_the_forecast() -> None:
    controller = QueueingAutoscaler(params(slo_ms=1000.0, trend_ticks=4, trend_horizon_seconds=30.0))
    for tick, rate in enumerate((20.0, 30.0, 40.0, 50.0)):
        view = make_view(
            {"api": (rate, 5.0, ServiceInventory("api", replicas=1))},
            self_ms={"api": 5.0},
            now=15.0 * tick,
            tick=tick,
        )
        asyncio.run(controller.decide(view))
    # 10 req/s more every 15 s: 30 s ahead is 70 req/s.
    assert controller.forecast_rate("api", 50.0) == pytest.approx(70.0)


def test_scales_down_when_far_below_the_slo_but_not_below_min_replicas() -> None:
    controller = QueueingAutoscaler(params(slo_ms=120.0))
    view = make_view(
        {
            "frontend": (50.0, 5.0, ServiceInventory("frontend", replicas=10, min_replicas=3)),
            "backend": (50.0, 15.0, ServiceInventory("backend", replicas=10)),
        },
        self_ms={"frontend": 5.0, "backend": 15.0},
    )
    proposals = decide(controller, view)
    assert proposals["frontend"].replicas == 3
    backend = proposals["backend"].replicas
    assert 1 <= backend < 10
    counts = {"frontend": 3, "backend": backend}
    lam, service = {"frontend": 50, "backend": 50}, {"frontend": 5, "backend": 15}
    assert path_latency_ms(counts, lam, service, 0.95) <= 0.7 * 120.0  # keeps the hysteresis margin
    assert path_latency_ms({**counts, "backend": backend - 1}, lam, service, 0.95) > 0.7 * 120.0


def test_scale_down_is_stable_once_reached() -> None:
    controller = QueueingAutoscaler(params(slo_ms=120.0))
    first = decide(controller, two_hop_view(a_replicas=10, b_replicas=10))
    counts = {"frontend": 10, "backend": 10} | {name: p.replicas for name, p in first.items()}
    assert decide(controller, two_hop_view(a_replicas=counts["frontend"], b_replicas=counts["backend"])) == {}


def test_max_replicas_is_respected_when_the_slo_cannot_be_met() -> None:
    controller = QueueingAutoscaler(params(slo_ms=40.0))  # below the backend's own p95 service time
    proposals = decide(controller, two_hop_view(max_replicas=3))
    assert all(p.replicas <= 3 for p in proposals.values())
    assert proposals["backend"].replicas == 3


def test_unstable_service_is_raised_at_least_to_a_stable_count() -> None:
    controller = QueueingAutoscaler(params(slo_ms=10_000.0))
    view = make_view({"api": (300.0, 20.0, ServiceInventory("api", replicas=2))}, self_ms={"api": 20.0})
    assert decide(controller, view)["api"].replicas >= 7  # load 6 Erlangs


def test_service_time_from_mean_minus_children_without_sampled_paths() -> None:
    controller = QueueingAutoscaler(params(slo_ms=10.0))
    view = make_view(
        {
            "frontend": (50.0, 40.0, ServiceInventory("frontend", replicas=1)),
            "backend": (100.0, 12.0, ServiceInventory("backend", replicas=1)),
        },
        # frontend calls backend twice per request, 15 ms each: 40 - 2 x 15 = 10 ms of its own.
        edges=(("frontend", "backend", 100.0, 15.0),),
    )
    proposals = decide(controller, view)
    assert proposals["frontend"].evidence["service_time_ms"] == pytest.approx(10.0)
    assert proposals["frontend"].evidence["entry"] == "frontend/*"


def test_observed_queueing_is_removed_from_the_service_time() -> None:
    # An observed 25 ms at 30 req/s on one replica is 10 ms of service plus M/M/1 queueing.
    response_ms = 1000 * mmc_mean_response(30.0, 100.0, 1)
    controller = QueueingAutoscaler(params(slo_ms=1.0, spans_include_queueing=True))
    view = make_view(
        {"api": (30.0, response_ms, ServiceInventory("api", replicas=1, max_replicas=2))},
        self_ms={"api": response_ms},
    )
    assert decide(controller, view)["api"].evidence["service_time_ms"] == pytest.approx(10.0, rel=1e-4)


def test_little_traffic_changes_nothing() -> None:
    controller = QueueingAutoscaler(params(slo_ms=1.0, min_requests=100))
    view = make_view({"api": (1.0, 50.0, ServiceInventory("api", replicas=4))}, self_ms={"api": 50.0})
    assert decide(controller, view) == {}


def test_saturated_at_max_replicas_goes_to_the_max_and_says_so() -> None:
    controller = QueueingAutoscaler(params(slo_ms=300.0))
    view = make_view(
        {"api": (300.0, 20.0, ServiceInventory("api", replicas=2, max_replicas=4))}, self_ms={"api": 20.0}
    )
    proposal = decide(controller, view)["api"]
    assert proposal.replicas == 4
    assert proposal.evidence["predicted_ms"] == "inf"
