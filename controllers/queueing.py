"""`queueing`: an SLO-aware autoscaler that models each service as an M/M/c queue.

Written against the public API only. Per entry operation (a key of `view.critical_paths`, or the one set in
the parameters), every tick:

1. **Path.** The slowest sampled critical path of the entry operation gives the services a request waits
   for, in order (a service met twice counts twice). Without sampled paths the heaviest path of the
   dependency graph from the entry service is used (node weight: the service's window mean latency).
2. **Model per service.** Arrival rate lambda = `request_rate` of the window. Service time S: the service's
   own time, i.e. its span time minus the time it waits for its children, taken as the mean critical-path
   self time (`PathStep.self_ms`) when sampled paths cover the service, else as `mean_ms` minus the mean
   latency of its outgoing calls weighted by calls per request (edge rate / service rate); floored at
   `min_service_time_ms`. A span also covers the time the request queued inside the service, so (with
   `spans_include_queueing`) S is the service time for which the model's own mean response time at the
   current replica count equals that observed time. mu = 1 / S per replica.
3. **Forecast.** lambda_f = max(lambda, linear trend of lambda over the last `trend_ticks` ticks projected
   `trend_horizon_seconds` ahead) x (1 + `headroom`).
4. **Latency of one hop** at c replicas: the q-quantile (q = `slo_quantile`) of the M/M/c FCFS response
   time T = S + W, with offered load a = lambda_f / mu and C = C(c, a) the Erlang C probability of waiting.
   W is 0 with probability 1 - C and otherwise exponential with rate delta = c mu - lambda_f, so
       P(T > t) = (1 - C) e^(-mu t) + C (delta e^(-mu t) - mu e^(-delta t)) / (delta - mu)
   (with the Erlang-2 limit e^(-mu t) (1 + mu t) inside when delta = mu), solved for t. The mean is
   E[T] = S + C / (c mu - lambda_f). A path's latency is the sum of its hops' quantiles: conservative,
   since the quantile of a sum of independent delays is usually below the sum of their quantiles.
5. **Budget split (Parslo / Erms spirit).** Starting from the current replica counts (raised to the least
   stable count), while the path's predicted latency exceeds the SLO, add one replica to the service whose
   extra replica cuts the path latency most, within `max_replicas`. Each service's latency budget is its
   predicted latency at the chosen count plus a share of the remaining slack proportional to it.
6. **Scale down.** If the path is predicted to stay below `scale_down_fraction` x SLO (hysteresis against
   flapping), replicas are removed one at a time from the service where that costs the least latency, never
   from a service just raised, never below `min_replicas`, as long as the path stays below that fraction.

A service on several paths gets the largest count any path asks for. Services with fewer than
`min_requests` requests in the window keep their count (too little evidence) but still count on the path.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
from scipy.optimize import brentq

from controlplane import (
    Action,
    ActionKind,
    Controller,
    ControlLocus,
    Dynamics,
    Evidence,
    Objective,
    Scale,
    Strategy,
    Taxonomy,
    Telemetry,
    TelemetryView,
)

_INFINITE = math.inf
# A replica that buys less path latency than this is not worth adding, even below the SLO.
_MIN_GAIN_MS = 0.01


# --- M/M/c formulas ---------------------------------------------------------------------------------


def erlang_b(servers: int, offered_load: float) -> float:
    """Erlang B blocking probability B(c, a) by the stable recursion B(k) = a B(k-1) / (k + a B(k-1))."""
    if servers < 0 or offered_load < 0:
        raise ValueError("servers and offered load must be >= 0")
    blocking = 1.0
    for k in range(1, servers + 1):
        blocking = offered_load * blocking / (k + offered_load * blocking)
    return blocking


def erlang_c(servers: int, offered_load: float) -> float:
    """Erlang C probability that an arrival waits, C(c, a); 1.0 when the queue is unstable (a >= c)."""
    if servers <= 0 or offered_load >= servers:
        return 1.0
    if offered_load <= 0:
        return 0.0
    blocking = erlang_b(servers, offered_load)
    return servers * blocking / (servers - offered_load * (1.0 - blocking))


def mmc_mean_wait(arrival_rate: float, service_rate: float, servers: int) -> float:
    """Mean time in queue E[W] = C(c, a) / (c mu - lambda), in the unit of 1 / rate; inf when unstable."""
    if servers <= 0 or arrival_rate >= servers * service_rate:
        return _INFINITE
    if arrival_rate <= 0:
        return 0.0
    return erlang_c(servers, arrival_rate / service_rate) / (servers * service_rate - arrival_rate)


def mmc_mean_response(arrival_rate: float, service_rate: float, servers: int) -> float:
    """Mean response time E[T] = 1 / mu + E[W]."""
    return 1.0 / service_rate + mmc_mean_wait(arrival_rate, service_rate, servers)


def mmc_response_tail(arrival_rate: float, service_rate: float, servers: int, t: float) -> float:
    """P(T > t) for the M/M/c FCFS response time T = S + W (see the module docstring)."""
    if servers <= 0 or arrival_rate >= servers * service_rate:
        return 1.0
    mu = service_rate
    wait = erlang_c(servers, arrival_rate / mu) if arrival_rate > 0 else 0.0
    delta = servers * mu - arrival_rate
    no_wait = math.exp(-mu * t)
    if abs(delta - mu) <= 1e-9 * mu:
        waited = math.exp(-mu * t) * (1.0 + mu * t)
    else:
        waited = (delta * math.exp(-mu * t) - mu * math.exp(-delta * t)) / (delta - mu)
    return (1.0 - wait) * no_wait + wait * waited


def mmc_response_quantile(arrival_rate: float, service_rate: float, servers: int, quantile: float) -> float:
    """The `quantile` of the M/M/c response time (in the unit of 1 / rate); inf when unstable."""
    if not 0.0 < quantile < 1.0:
        raise ValueError("quantile must be in (0, 1)")
    if servers <= 0 or arrival_rate >= servers * service_rate:
        return _INFINITE
    tail = 1.0 - quantile
    high = 1.0 / service_rate
    while mmc_response_tail(arrival_rate, service_rate, servers, high) > tail:
        high *= 2.0
    return float(
        brentq(
            lambda t: mmc_response_tail(arrival_rate, service_rate, servers, t) - tail,
            0.0,
            high,
            xtol=1e-12,
            rtol=1e-10,
        )
    )


def service_time_from_response(arrival_rate: float, response_time: float, servers: int) -> float:
    """The service time S whose M/M/c mean response time at `servers` equals `response_time`.

    E[T] grows with S from 0 towards infinity as the load approaches saturation (S -> c / lambda), so the
    root is unique; it is found by bisection.
    """
    if arrival_rate <= 0 or servers <= 0:
        return response_time
    high = min(response_time, servers / arrival_rate * (1.0 - 1e-12))
    low = 0.0
    for _ in range(100):
        middle = (low + high) / 2.0
        if mmc_mean_response(arrival_rate, 1.0 / middle, servers) > response_time:
            high = middle
        else:
            low = middle
    return (low + high) / 2.0


# --- The controller -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ServiceModel:
    """One service's fitted M/M/c model: what a prediction needs."""

    name: str
    arrival_rate: float  # lambda, requests/s observed
    forecast_rate: float  # lambda_f, with trend and headroom
    service_time_s: float  # S
    replicas: int
    min_replicas: int
    max_replicas: int
    adjustable: bool  # enough evidence to change its count

    @property
    def least_stable(self) -> int:
        """The least replica count at which the forecast load is below saturation."""
        return math.floor(self.forecast_rate * self.service_time_s) + 1

    def latency_ms(self, replicas: int, quantile: float) -> float:
        return 1000.0 * mmc_response_quantile(
            self.forecast_rate, 1.0 / self.service_time_s, replicas, quantile
        )


class QueueingAutoscaler(Controller):
    """Give the services on each entry operation's critical path the fewest replicas meeting a latency SLO."""

    name = "queueing"
    description = (
        "SLO-aware M/M/c autoscaler: splits an end-to-end latency SLO over the critical path greedily."
    )
    # One controller reads the whole call graph and decides for all services of a path together
    # (centralized), predicting the effect of a replica with a queueing model (model-based). It models
    # workload changes (trend, headroom) and the request paths through the graph; it reads traces only.
    # It has been evaluated on hand-built views and the simulated substrate only: simulation.
    taxonomy = Taxonomy.of(
        ControlLocus.CENTRALIZED,
        Strategy.MODEL_BASED,
        dynamics=[Dynamics.WORKLOAD, Dynamics.REQUEST_PATH],
        evidence=[Evidence.SIMULATION],
        objectives=[Objective.LATENCY_SLO, Objective.COST],
        telemetry=[Telemetry.TRACES],
        actions=[ActionKind.AUTOSCALING],
    )
    period_seconds = 15.0
    time_budget_seconds = 2.0

    @dataclass(frozen=True)
    class Parameters:
        """Settings from `[controllers.queueing.params]`."""

        # The end-to-end objective: the `slo_quantile` of an entry operation's latency below `slo_ms`.
        slo_ms: float = 300.0
        slo_quantile: float = 0.95
        # Which entry operation the SLO is for; empty: every entry operation with sampled critical paths.
        entry_service: str = ""
        entry_operation: str = ""
        # Extra arrival rate planned for on top of the forecast (0.2: 20 % more).
        headroom: float = 0.2
        # Linear trend of the rate over this many ticks, projected this far ahead (0 ticks: no trend).
        trend_ticks: int = 6
        trend_horizon_seconds: float = 30.0
        # Scale down only while the path stays below this fraction of the SLO (hysteresis).
        scale_down_fraction: float = 0.7
        # Floor of a fitted service time.
        min_service_time_ms: float = 0.5
        # Remove the model's own queueing from observed self times (spans cover in-process queueing).
        spans_include_queueing: bool = True
        # Below this many requests in the window a service's count is left alone.
        min_requests: int = 20

    def __init__(self, params: Parameters | None = None) -> None:
        super().__init__(params)
        self._rates: dict[str, deque[tuple[float, float]]] = {}

    async def decide(self, view: TelemetryView) -> list[Action]:
        self._remember_rates(view)
        paths = self._paths(view)
        if not paths:
            return []
        models = self._models(view, {step for path in paths.values() for step in path})
        wanted: dict[str, int] = {}
        budgets: dict[str, float] = {}
        path_of: dict[str, str] = {}
        predicted_path: dict[str, float] = {}
        for entry, path in paths.items():
            counts, budget, total = plan_path(
                path, models, self.params.slo_ms, self.params.slo_quantile, self.params.scale_down_fraction
            )
            for service, count in counts.items():
                if count > wanted.get(service, -1):
                    wanted[service] = count
                    budgets[service] = budget[service]
                    path_of[service] = entry
                    predicted_path[service] = total
        proposals: list[Action] = []
        quantile = self.params.slo_quantile
        for service in sorted(wanted):
            model = models[service]
            count = wanted[service]
            if count == model.replicas:
                continue
            now_ms = model.latency_ms(model.replicas, quantile)
            then_ms = model.latency_ms(count, quantile)
            direction = "up" if count > model.replicas else "down"
            proposals.append(
                Scale(
                    target=service,
                    replicas=count,
                    reason=(
                        f"M/M/c: scale {direction} to {count} so that p{quantile * 100:g} of {service}"
                        f" ({then_ms:.1f} ms at {model.forecast_rate:.1f} req/s forecast) fits its"
                        f" {budgets[service]:.1f} ms share of the {self.params.slo_ms:g} ms SLO"
                        f" of {path_of[service]}"
                    ),
                    evidence={
                        "entry": path_of[service],
                        "arrival_rate": model.arrival_rate,
                        "forecast_rate": model.forecast_rate,
                        "service_time_ms": model.service_time_s * 1000.0,
                        "current_replicas": model.replicas,
                        "predicted_ms_current": _evidence(now_ms),
                        "predicted_ms": _evidence(then_ms),
                        "budget_ms": _evidence(budgets[service]),
                        "predicted_path_ms": _evidence(predicted_path[service]),
                        "slo_ms": self.params.slo_ms,
                        "slo_quantile": quantile,
                    },
                )
            )
        return proposals

    # --- inputs ------------------------------------------------------------------------------------

    def _remember_rates(self, view: TelemetryView) -> None:
        keep = max(self.params.trend_ticks, 1)
        for service in view.services:
            stats = view.stats(service)
            history = self._rates.setdefault(service, deque(maxlen=keep))
            history.append((view.now, stats.request_rate if stats is not None else 0.0))

    def forecast_rate(self, service: str, rate: float) -> float:
        """The arrival rate to plan for: the trend's projection if higher, plus headroom."""
        params = self.params
        planned = rate
        history = self._rates.get(service, ())
        if params.trend_ticks >= 2 and len(history) >= 2:
            times = np.array([at for at, _ in history])
            rates = np.array([value for _, value in history])
            if np.ptp(times) > 0:
                slope, intercept = np.polyfit(times - times[-1], rates, 1)
                planned = max(planned, float(intercept + slope * params.trend_horizon_seconds))
        return planned * (1.0 + params.headroom)

    def _paths(self, view: TelemetryView) -> dict[str, tuple[str, ...]]:
        """Per entry operation ("service/operation"), the services of its critical path in order."""
        params = self.params
        paths: dict[str, tuple[str, ...]] = {}
        for (service, operation), sampled in view.critical_paths.items():
            if params.entry_service and service != params.entry_service:
                continue
            if params.entry_operation and operation != params.entry_operation:
                continue
            if sampled and sampled[0].steps:
                paths[f"{service}/{operation}"] = tuple(step.service for step in sampled[0].steps)
        if paths:
            return paths
        entries = [params.entry_service] if params.entry_service else _roots(view)
        for entry in entries:
            if entry in view.graph:
                paths[f"{entry}/{params.entry_operation or '*'}"] = heaviest_path(view, entry)
        return paths

    def _models(self, view: TelemetryView, services: Iterable[str]) -> dict[str, ServiceModel]:
        params = self.params
        self_times = _critical_path_self_ms(view)
        outgoing: dict[str, list] = {}
        for edge in view.edges():
            outgoing.setdefault(edge.source, []).append(edge)
        models: dict[str, ServiceModel] = {}
        for service in services:
            stats = view.stats(service)
            inventory = view.inventory.services.get(service)
            rate = stats.request_rate if stats is not None else 0.0
            if service in self_times:
                own_ms = self_times[service]
            elif stats is not None:
                children_ms = sum(
                    edge.stats.mean_ms * (edge.stats.request_rate / rate if rate > 0 else 0.0)
                    for edge in outgoing.get(service, ())
                )
                own_ms = stats.mean_ms - children_ms
            else:
                own_ms = 0.0
            own_s = max(own_ms, params.min_service_time_ms) / 1000.0
            replicas = inventory.replicas if inventory is not None else 0
            if params.spans_include_queueing and rate > 0 and replicas > 0:
                own_s = max(
                    service_time_from_response(rate, own_s, replicas), params.min_service_time_ms / 1000
                )
            adjustable = (
                inventory is not None
                and stats is not None
                and stats.requests >= params.min_requests
                and view.service(service) is not None
                and view.service(service).kind == "service"
            )
            models[service] = ServiceModel(
                name=service,
                arrival_rate=rate,
                forecast_rate=self.forecast_rate(service, rate),
                service_time_s=own_s,
                replicas=replicas,
                min_replicas=inventory.min_replicas if inventory is not None else replicas,
                max_replicas=inventory.max_replicas if inventory is not None else replicas,
                adjustable=adjustable,
            )
        return models


def plan_path(
    path: tuple[str, ...],
    models: Mapping[str, ServiceModel],
    slo_ms: float,
    quantile: float,
    scale_down_fraction: float,
) -> tuple[dict[str, int], dict[str, float], float]:
    """Replica counts for the adjustable services of `path`, their latency budgets, and the path latency.

    Greedy: from the current counts (raised to the least stable count), add the replica that cuts the
    path's predicted latency most until it meets `slo_ms`; then, if the path is below `scale_down_fraction`
    x `slo_ms`, remove the replicas that cost the least latency while it stays below that fraction.
    """
    multiplicity: dict[str, int] = {}
    for service in path:
        multiplicity[service] = multiplicity.get(service, 0) + 1
    adjustable = [service for service in multiplicity if models[service].adjustable]
    counts = {service: models[service].replicas for service in multiplicity}
    for service in adjustable:
        model = models[service]
        counts[service] = min(
            max(counts[service], model.least_stable, model.min_replicas), model.max_replicas
        )
    cache: dict[tuple[str, int], float] = {}

    def hop(service: str, count: int) -> float:
        key = (service, count)
        if key not in cache:
            model = models[service]
            if count <= 0 and model.forecast_rate <= 0:
                cache[key] = 0.0  # nothing runs and nothing arrives: the hop is not on the path now
            else:
                cache[key] = model.latency_ms(count, quantile)
        return cache[key]

    # A hop that cannot be changed and is predicted unstable (e.g. too few requests to adjust it) says
    # nothing the plan can act on; it is left out of the sum rather than making every plan infinite.
    ignored = {
        service
        for service in multiplicity
        if service not in adjustable and not math.isfinite(hop(service, counts[service]))
    }

    def total() -> float:
        return sum(
            multiplicity[service] * hop(service, counts[service])
            for service in multiplicity
            if service not in ignored
        )

    raised: set[str] = set()
    while total() > slo_ms:
        best, best_gain = None, 0.0
        for service in adjustable:
            if counts[service] >= models[service].max_replicas:
                continue
            before, after = hop(service, counts[service]), hop(service, counts[service] + 1)
            gain = multiplicity[service] * (before - after) if math.isfinite(before) else _INFINITE
            if gain > best_gain:
                best, best_gain = service, gain
        if best is None or best_gain < _MIN_GAIN_MS:
            break  # the SLO cannot be met (max_replicas, or fixed hops): keep what helped
        counts[best] += 1
        raised.add(best)

    ceiling = scale_down_fraction * slo_ms
    while total() <= ceiling:
        best, best_cost = None, _INFINITE
        for service in adjustable:
            model = models[service]
            smaller = counts[service] - 1
            if service in raised or smaller < max(model.min_replicas, model.least_stable, 0):
                continue
            cost = multiplicity[service] * (hop(service, smaller) - hop(service, counts[service]))
            if cost < best_cost:
                best, best_cost = service, cost
        if best is None or total() + best_cost > ceiling:
            break
        counts[best] -= 1

    path_ms = total()
    slack = max(slo_ms - path_ms, 0.0)
    budgets = {}
    for service in multiplicity:
        latency = hop(service, counts[service]) if service not in ignored else _INFINITE
        share = latency / path_ms if path_ms > 0 and math.isfinite(path_ms) else 0.0
        budgets[service] = latency + slack * share / multiplicity[service]
    return {service: counts[service] for service in adjustable}, budgets, path_ms


def _evidence(value: float) -> float | str:
    """A latency for the evidence: a saturated queue's infinite latency is written "inf"."""
    return value if math.isfinite(value) else "inf"


def heaviest_path(view: TelemetryView, entry: str) -> tuple[str, ...]:
    """The path from `entry` through the call graph with the largest sum of window mean latencies."""
    graph = view.graph
    memo: dict[str, tuple[float, tuple[str, ...]]] = {}

    def walk(node: str, visiting: frozenset[str]) -> tuple[float, tuple[str, ...]]:
        if node in memo:
            return memo[node]
        stats = view.stats(node)
        weight = stats.mean_ms if stats is not None else 0.0
        best: tuple[float, tuple[str, ...]] = (0.0, ())
        for child in graph.successors(node):
            if child in visiting:
                continue  # a cycle: stop here
            candidate = walk(child, visiting | {node})
            if candidate[0] > best[0] or not best[1]:
                best = candidate
        result = (weight + best[0], (node, *best[1]))
        memo[node] = result
        return result

    return walk(entry, frozenset())[1]


def _roots(view: TelemetryView) -> list[str]:
    """Services no other service calls, with traffic: the entry points of the graph."""
    called = {edge.target for edge in view.edges() if edge.source != edge.target}
    return [
        service
        for service in view.services
        if service not in called and (stats := view.stats(service)) is not None and stats.requests > 0
    ]


def _critical_path_self_ms(view: TelemetryView) -> dict[str, float]:
    """Per service, the mean self time of its steps over all sampled critical paths."""
    sums: dict[str, list[float]] = {}
    for sampled in view.critical_paths.values():
        for path in sampled:
            for step in path.steps:
                sums.setdefault(step.service, []).append(step.self_ms)
    return {service: sum(values) / len(values) for service, values in sums.items() if values}
