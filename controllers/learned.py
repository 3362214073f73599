"""`learned`: a supervised-learning autoscaler that learns each service's p99 latency from its history.

In the spirit of Sinan and FIRM: each tick the controller records, per service, the load per replica and
interference signals (the slowest callee's latency and error rate, and how crowded the service's nodes
are) together with the p99 latency it then observed, and fits a gradient-boosted regression per service,
refit every few ticks on a bounded history. It picks the cheapest replica count whose predicted p99, with
a confidence margin, meets the SLO, and never trusts the model beyond the load per replica it has seen.

Safe learning control: before a window's latency is used for training, the model predicts it, and the
rolling mean absolute percentage error (MAPE) of those live predictions is tracked. `ready` turns true
when that error is below a threshold. The taxonomy says learning, so the framework runs the controller in
shadow mode (decisions recorded, never applied) until an operator promotes it; the live error is in every
decision's evidence so the operator can judge.

Concurrency is deliberately not a model input: by Little's law it is the request rate times the latency,
so it would leak the target, and a what-if for another replica count would have to guess it.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np
from sklearn.ensemble import HistGradientBoostingRegressor

from controlplane import (
    Action,
    ActionKind,
    Controller,
    ControlLocus,
    Dynamics,
    Objective,
    Scale,
    Strategy,
    Taxonomy,
    Telemetry,
    TelemetryView,
)

FEATURES = ("rate_per_replica", "callee_p99_ms", "callee_error_rate", "colocated_per_replica")
# Latency rises with load, slower callees and crowded nodes; callee errors may cut it short, so no sign.
_MONOTONIC = [1, 1, 0, 1]


@dataclass
class _ServiceModel:
    """Samples, the fitted regressor and the live prediction error of one service."""

    features: deque[tuple[float, ...]]
    latency: deque[float]
    errors: deque[float]
    model: HistGradientBoostingRegressor | None = None
    samples_at_fit: int = 0
    added: int = 0  # samples ever added, so refits count new samples even once the history is full
    # The highest load per replica among the samples the current model was fitted on.
    fitted_rate_per_replica: float = 0.0

    @property
    def mape(self) -> float | None:
        return float(np.mean(self.errors)) if self.errors else None


class LearnedAutoscaler(Controller):
    """Scale each service to the fewest replicas whose learned p99 prediction meets the SLO."""

    name = "learned"
    description = (
        "Learns per-service p99 latency from load per replica and interference signals (gradient boosting),"
        " scales to the cheapest replica count predicted to meet the SLO; shadow until its live error is low."
    )
    taxonomy = Taxonomy.of(
        ControlLocus.CENTRALIZED,
        Strategy.LEARNING,
        dynamics=[Dynamics.WORKLOAD, Dynamics.INTERFERENCE],
        objectives=[Objective.LATENCY_SLO, Objective.COST],
        telemetry=[Telemetry.TRACES],
        actions=[ActionKind.AUTOSCALING],
    )
    period_seconds = 15.0
    time_budget_seconds = 2.0

    @dataclass(frozen=True)
    class Parameters:
        """Settings from `[controllers.learned.params]`."""

        # The p99 latency every service should stay under.
        slo_p99_ms: float = 200.0
        # Predicted p99 is inflated by this fraction (plus the live error) before comparing with the SLO.
        margin: float = 0.1
        # `ready` once the rolling live MAPE is below this.
        ready_mape: float = 0.15
        # Live predictions the rolling MAPE is taken over, and how many it needs before it counts.
        error_window: int = 20
        min_predictions: int = 10
        # Samples kept per service, samples needed before the first fit, new samples between refits.
        history: int = 400
        min_samples: int = 20
        refit_every: int = 10
        # Below this many requests in a window its p99 is noise.
        min_requests: int = 20
        # How far beyond the highest load per replica seen the model is trusted.
        extrapolation: float = 0.05
        # Largest scale-up considered in one step.
        max_step_up: int = 10
        # Models refit in one tick at most; the stalest go first, so a large application fits its budget.
        max_refits_per_tick: int = 5

    def __init__(self, params: object | None = None) -> None:
        super().__init__(params)
        self._services: dict[str, _ServiceModel] = {}

    @property
    def ready_to_apply(self) -> bool:
        """Its proposals stay in shadow (even once promoted) until the live error is below the threshold."""
        return self.ready

    @property
    def ready(self) -> bool:
        """True when the pooled rolling live MAPE over enough predictions is below the threshold."""
        mape, count = self._pooled_error()
        return count >= self.params.min_predictions and mape is not None and mape < self.params.ready_mape

    @property
    def live_mape(self) -> float | None:
        """The pooled rolling mean absolute percentage error of live predictions, if any were made."""
        return self._pooled_error()[0]

    def service_mape(self, service: str) -> float | None:
        state = self._services.get(service)
        return state.mape if state else None

    def _pooled_error(self) -> tuple[float | None, int]:
        errors = [error for state in self._services.values() for error in state.errors]
        return (float(np.mean(errors)) if errors else None), len(errors)

    async def decide(self, view: TelemetryView) -> list[Action]:
        proposals: list[Action] = []
        observed: dict[str, tuple[np.ndarray, float]] = {}
        for service in view.services:
            stats = view.stats(service)
            replicas = view.inventory.replicas_of(service)
            if stats is None or replicas <= 0 or stats.requests < self.params.min_requests:
                continue
            row = self._features(view, service, replicas)
            observed[service] = (row, stats.p99_ms)
            state = self._state(service)
            if state.model is not None and stats.p99_ms > 0:
                # Predict before the model sees this window: the honest, out-of-sample live error.
                predicted = self._predict(state, row.reshape(1, -1))[0]
                state.errors.append(abs(predicted - stats.p99_ms) / stats.p99_ms)
            if stats.p99_ms > 0:
                state.features.append(tuple(row))
                state.latency.append(stats.p99_ms)
                state.added += 1
        due = [state for state in self._services.values() if self._refit_due(state)]
        due.sort(key=lambda state: state.samples_at_fit - state.added)
        for state in due[: self.params.max_refits_per_tick]:
            self._refit(state)
        for service, (row, p99) in observed.items():
            proposal = self._propose(view, service, row, p99)
            if proposal is not None:
                proposals.append(proposal)
        return proposals

    def _state(self, service: str) -> _ServiceModel:
        state = self._services.get(service)
        if state is None:
            size = self.params.history
            state = _ServiceModel(
                deque(maxlen=size), deque(maxlen=size), deque(maxlen=self.params.error_window)
            )
            self._services[service] = state
        return state

    @staticmethod
    def _features(view: TelemetryView, service: str, replicas: int) -> np.ndarray:
        stats = view.stats(service)
        assert stats is not None
        callee_p99 = 0.0
        callee_errors = 0.0
        for edge in view.edges():
            if edge.source == service and edge.target != service and edge.stats.requests > 0:
                callee_p99 = max(callee_p99, edge.stats.p99_ms)
                callee_errors = max(callee_errors, edge.stats.error_rate)
        inventory = view.inventory
        placements = inventory.placements.items()
        owner = inventory.replica_services
        own_nodes = {node for replica, node in placements if owner.get(replica) == service}
        # Replicas of other services sharing this service's nodes: a cheap proxy for contention.
        neighbours = sum(
            1
            for replica, node in inventory.placements.items()
            if node in own_nodes and owner.get(replica) != service
        )
        return np.array(
            [stats.request_rate / replicas, callee_p99, callee_errors, neighbours / replicas], dtype=float
        )

    def _refit_due(self, state: _ServiceModel) -> bool:
        if len(state.latency) < self.params.min_samples:
            return False
        return state.model is None or state.added - state.samples_at_fit >= self.params.refit_every

    def _refit(self, state: _ServiceModel) -> None:
        features = np.asarray(state.features)
        # Log latency: queueing delay grows steeply near saturation, and relative error is what matters.
        target = np.log(np.asarray(state.latency))
        state.model = HistGradientBoostingRegressor(
            max_iter=80,
            max_depth=3,
            learning_rate=0.15,
            min_samples_leaf=5,
            monotonic_cst=_MONOTONIC,
            random_state=0,  # fits repeat exactly (seeded benchmark runs)
        ).fit(features, target)
        state.samples_at_fit = state.added
        state.fitted_rate_per_replica = float(features[:, 0].max())

    @staticmethod
    def _predict(state: _ServiceModel, rows: np.ndarray) -> np.ndarray:
        assert state.model is not None
        return np.exp(state.model.predict(rows))

    def _propose(self, view: TelemetryView, service: str, row: np.ndarray, p99: float) -> Action | None:
        state = self._services[service]
        if state.model is None:
            return None
        inventory = view.inventory.services[service]
        current = inventory.replicas
        rate = row[0] * current
        highest = min(inventory.max_replicas, current + self.params.max_step_up)
        candidates = np.arange(max(inventory.min_replicas, 1), max(highest, current) + 1)
        rows = np.repeat(row.reshape(1, -1), len(candidates), axis=0)
        rows[:, 0] = rate / candidates
        # The neighbours are fixed; spread over more replicas each sees fewer.
        rows[:, 3] = row[3] * current / candidates
        predicted = self._predict(state, rows)
        service_mape = state.mape if state.mape is not None else 1.0
        inflation = 1.0 + self.params.margin + service_mape
        trusted = rows[:, 0] <= state.fitted_rate_per_replica * (1.0 + self.params.extrapolation)
        meets = trusted & (predicted * inflation <= self.params.slo_p99_ms)
        live_mape = self.live_mape
        evidence: dict[str, float | int | str | bool] = {
            "slo_p99_ms": self.params.slo_p99_ms,
            "observed_p99_ms": round(p99, 2),
            "request_rate": round(rate, 3),
            "current_replicas": current,
            "margin": round(inflation - 1.0, 4),
            "service_mape": round(service_mape, 4),
            "live_mape": round(live_mape, 4) if live_mape is not None else -1.0,
            "ready": self.ready,
            "samples": len(state.latency),
        }
        if meets.any():
            index = int(np.argmax(meets))
            target = int(candidates[index])
            if target == current:
                return None
            evidence["predicted_p99_ms"] = round(float(predicted[index]), 2)
            if current in candidates:
                evidence["predicted_p99_ms_current"] = round(float(predicted[candidates == current][0]), 2)
            return Scale(
                target=service,
                replicas=target,
                reason=(
                    f"{target} replicas is the fewest predicted to keep p99 ({predicted[index]:.0f} ms,"
                    f" +{inflation - 1.0:.0%} margin) under the {self.params.slo_p99_ms:g} ms SLO"
                ),
                evidence=evidence,
            )
        if p99 > self.params.slo_p99_ms and current < highest:
            # No count is predicted safe within what the model has seen: step up by one and learn from it.
            evidence["predicted_p99_ms"] = -1.0
            return Scale(
                target=service,
                replicas=current + 1,
                reason=(
                    f"p99 {p99:.0f} ms exceeds the {self.params.slo_p99_ms:g} ms SLO and no replica count is"
                    " predicted to meet it within the observed load range; stepping up by one"
                ),
                evidence=evidence,
            )
        return None
