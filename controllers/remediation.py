"""`remediation`: detect anomalous services, localize the root cause on the dependency graph, act on it.

Detect: each service's window (p99 latency, error rate, request rate) is scored against that service's own
recent history with a robust z-score (median and MAD), and an IsolationForest fitted on the pooled,
per-service normalised history confirms that the point is an outlier of the joint distribution.

Localize (in the spirit of MicroRCA): the anomalous services and the calls between them form a subgraph; a
personalized PageRank whose personalization is the anomaly score walks from symptoms towards causes, with
each call weighted by the callee's anomaly score and by how closely the callee's latency tracked the
caller's over the history. The top-ranked service is the suspected root cause.

Act on the top cause: roll back if its version changed shortly before the anomaly, drain a node if most of
the anomalous services run on it, restart otherwise, and isolate it if an earlier restart did not help.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import networkx as nx
import numpy as np
from sklearn.ensemble import IsolationForest

from controlplane import (
    Action,
    ActionKind,
    Controller,
    ControlLocus,
    Dynamics,
    Isolate,
    IsolationMechanism,
    Objective,
    Remediate,
    RemediationOperation,
    Strategy,
    Taxonomy,
    Telemetry,
    TelemetryView,
)

# Scales the MAD to a standard deviation for normally distributed data.
_MAD_TO_SIGMA = 1.4826
# A service whose callers made at least this many calls to it in the window, of which it reports serving
# less than this fraction, has gone silent: it is judged by its callers' calls to it.
SILENT_SERVICE_MIN_CALLS = 20
SILENT_SERVED_FRACTION = 0.5


@dataclass(frozen=True)
class _Score:
    """One service's anomaly assessment for the current tick."""

    z_latency: float
    z_errors: float
    z_rate: float
    outlier: bool  # IsolationForest verdict

    @property
    def z(self) -> float:
        # Only rising latency and errors are symptoms; a rate change in either direction is.
        return max(self.z_latency, self.z_errors, 0.5 * abs(self.z_rate), 0.0)


class DetectLocalizeAct(Controller):
    """Detect anomalies per service, rank root causes with personalized PageRank, remediate the top one."""

    name = "remediation"
    description = (
        "Robust z-score + IsolationForest anomaly detection, MicroRCA-style personalized PageRank root-cause"
        " localization, then rollback / drain / restart / isolate of the top-ranked cause."
    )
    taxonomy = Taxonomy.of(
        ControlLocus.CENTRALIZED,
        Strategy.HYBRID,
        dynamics=[Dynamics.FAILURE, Dynamics.INTERFERENCE],
        objectives=[Objective.AVAILABILITY, Objective.LATENCY_SLO],
        telemetry=[Telemetry.TRACES, Telemetry.EVENTS],
        actions=[ActionKind.REMEDIATION, ActionKind.ISOLATION],
    )
    period_seconds = 15.0
    time_budget_seconds = 2.0

    @dataclass(frozen=True)
    class Parameters:
        """Settings from `[controllers.remediation.params]`."""

        # Ticks of each service's history kept as its baseline.
        history_ticks: int = 60
        # No detection before a service has this many baseline windows.
        min_history: int = 10
        # Robust z-score above which a service is a candidate anomaly (IsolationForest must agree).
        z_threshold: float = 4.0
        # Above this z-score a service is anomalous whatever IsolationForest says.
        z_certain: float = 8.0
        # Below this many requests in a window its statistics are noise.
        min_requests: int = 10
        # Refit the IsolationForest every this many ticks.
        refit_every: int = 10
        # Trees in the IsolationForest; fitting and scoring cost grow with it.
        forest_trees: int = 50
        # PageRank damping: the chance the walk follows a call rather than jumping back to a symptom.
        damping: float = 0.85
        # A version change at most this many ticks before the anomaly makes rollback the remedy.
        version_change_ticks: int = 10
        # A node is drained when at least this fraction of its services, and two or more, are anomalous.
        drain_fraction: float = 0.6
        # If the same cause is still anomalous this many ticks after a restart, isolate it instead.
        escalate_after_ticks: int = 3
        # Ranked candidates reported in the evidence.
        report_top: int = 5

    def __init__(self, params: object | None = None) -> None:
        super().__init__(params)
        size = self.params.history_ticks
        # Baseline windows per service: (log p99, error rate, log rate), anomalous windows excluded.
        self._baseline: dict[str, deque[tuple[float, float, float]]] = {}
        # Recent log-latency per service per tick, anomalies included, for caller/callee correlation.
        self._latency: dict[str, deque[tuple[int, float]]] = {}
        self._history_size = size
        # (tick, version) changes per service.
        self._versions: dict[str, list[tuple[int, str]]] = {}
        self._restarted: dict[str, int] = {}
        self._forest: IsolationForest | None = None
        self._forest_tick = -(10**9)
        # Consecutive anomalous ticks per service: a shift that persists becomes the new normal.
        self._anomalous_streak: dict[str, int] = {}

    @property
    def versions(self) -> dict[str, list[tuple[int, str]]]:
        """Version history per service as (tick first seen, version)."""
        return {name: list(changes) for name, changes in self._versions.items()}

    async def decide(self, view: TelemetryView) -> list[Action]:
        self._track_versions(view)
        current = self._current_features(view)
        for service, features in current.items():
            self._latency.setdefault(service, deque(maxlen=self._history_size)).append(
                (view.tick, features[0])
            )
        self._maybe_refit(view.tick)
        scores = self._score_all(current)
        anomalous = {
            service: score.z
            for service, score in scores.items()
            if score is not None
            and (score.z >= self.params.z_certain or (score.z >= self.params.z_threshold and score.outlier))
        }
        for service, features in current.items():
            if service in anomalous:
                self._anomalous_streak[service] = self._anomalous_streak.get(service, 0) + 1
                if self._anomalous_streak[service] <= self._history_size // 2:
                    continue  # keep the fault out of the baseline it is judged against
            else:
                self._anomalous_streak.pop(service, None)
            self._baseline.setdefault(service, deque(maxlen=self._history_size)).append(features)
        if not anomalous:
            return []
        ranking = self.rank(view, anomalous)
        cause_score = scores.get(ranking[0][0])
        if cause_score is not None and not self._remediable(cause_score):
            return []
        return [self._act(view, ranking, anomalous, scores)]

    def _remediable(self, score: _Score) -> bool:
        """Whether what is wrong with the top-ranked cause is something a restart, drain or rollback fixes.

        A change of request rate alone (latency and errors as usual) is a change of load: restarting a
        service does not bring its traffic back. More requests than usual without more errors is a surge,
        the autoscalers' business: restarting or draining the busiest service would only take capacity away.
        """
        threshold = self.params.z_threshold
        if score.z_errors >= threshold:
            return True
        return score.z_latency >= threshold and score.z_rate < threshold

    # Detection

    @staticmethod
    def _current_features(view: TelemetryView) -> dict[str, tuple[float, float, float]]:
        """(log1p p99, error rate, log1p rate) per service from its own spans.

        A service that has gone silent (crashed, unreachable: its callers' calls to it far outnumber the
        requests it reports serving) is judged as its callers see it instead, through their calls to it;
        otherwise the one service that is down would be the one service missing from the analysis.
        """
        inbound: dict[str, list] = {}
        for edge in view.edges():
            if edge.stats.requests > 0:
                inbound.setdefault(edge.target, []).append(edge.stats)
        features = {}
        for service in view.services:
            stats = view.stats(service)
            served = stats.requests if stats is not None else 0
            calls = inbound.get(service, ())
            called = sum(edge.requests for edge in calls)
            if called >= SILENT_SERVICE_MIN_CALLS and served < SILENT_SERVED_FRACTION * called:
                features[service] = (
                    float(np.log1p(max(max(edge.p99_ms for edge in calls), 0.0))),
                    sum(edge.errors for edge in calls) / called,
                    float(np.log1p(sum(edge.request_rate for edge in calls))),
                )
                continue
            if stats is None or served <= 0:
                continue
            features[service] = (
                float(np.log1p(max(stats.p99_ms, 0.0))),
                float(stats.error_rate),
                float(np.log1p(max(stats.request_rate, 0.0))),
            )
        return features

    def _robust(self, service: str) -> tuple[np.ndarray, np.ndarray] | None:
        history = self._baseline.get(service)
        if history is None or len(history) < self.params.min_history:
            return None
        data = np.asarray(history)
        median = np.median(data, axis=0)
        mad = np.median(np.abs(data - median), axis=0) * _MAD_TO_SIGMA
        # Floors keep a steady history from turning jitter into a huge z-score: a 5% latency or rate change,
        # or two points of error rate, is one unit at most.
        scale = np.maximum(mad, np.array([0.05, 0.02, 0.05]))
        return median, scale

    def _score_all(self, current: dict[str, tuple[float, float, float]]) -> dict[str, _Score | None]:
        scores: dict[str, _Score | None] = {}
        rows: dict[str, np.ndarray] = {}
        for service, features in current.items():
            robust = self._robust(service)
            if robust is None:
                scores[service] = None
                continue
            median, scale = robust
            rows[service] = (np.asarray(features) - median) / scale
        verdicts = dict.fromkeys(rows, True)
        if rows and self._forest is not None:
            # One batched call: the forest's per-call overhead dominates when scoring one row at a time.
            decision = self._forest.decision_function(np.vstack(list(rows.values())))
            verdicts = {service: bool(value < 0) for service, value in zip(rows, decision, strict=True)}
        for service, z in rows.items():
            scores[service] = _Score(float(z[0]), float(z[1]), float(z[2]), verdicts[service])
        return scores

    def _maybe_refit(self, tick: int) -> None:
        if tick - self._forest_tick < self.params.refit_every:
            return
        rows = []
        for service, history in self._baseline.items():
            robust = self._robust(service)
            if robust is not None:
                median, scale = robust
                rows.append((np.asarray(history) - median) / scale)
        if not rows:
            return
        data = np.vstack(rows)
        # Pooled over services after per-service normalisation: one forest, refit rarely, keeps it cheap.
        # A 1% contamination makes it a confirmation of rare joint outliers, not a second noisy alarm.
        self._forest = IsolationForest(
            n_estimators=self.params.forest_trees, contamination=0.01, random_state=0
        ).fit(data)
        self._forest_tick = tick

    # Localization

    def _correlation(self, caller: str, callee: str) -> float:
        left = dict(self._latency.get(caller, ()))
        right = dict(self._latency.get(callee, ()))
        ticks = sorted(left.keys() & right.keys())
        if len(ticks) < 3:
            return 0.0
        a = np.array([left[t] for t in ticks])
        b = np.array([right[t] for t in ticks])
        if a.std() == 0 or b.std() == 0:
            return 0.0
        return float(abs(np.corrcoef(a, b)[0, 1]))

    def rank(self, view: TelemetryView, anomalous: dict[str, float]) -> list[tuple[str, float]]:
        """Root-cause candidates among `anomalous` (service -> anomaly score), best first, with scores."""
        top = max(anomalous.values())
        norm = {service: score / top for service, score in anomalous.items()}
        walk = nx.DiGraph()
        walk.add_nodes_from(anomalous)
        for caller, callee in view.graph.edges:
            if caller in anomalous and callee in anomalous and caller != callee:
                # Anomalies travel from callee to caller; the walk goes the reverse way, from a symptom to
                # the callee that may have caused it. A small floor keeps weakly correlated calls walkable.
                weight = norm[callee] * max(self._correlation(caller, callee), 0.05)
                walk.add_edge(caller, callee, weight=weight)
                # A weak way back, as in MicroRCA, so a mistaken step is not a trap.
                back = 0.1 * norm[caller] * max(self._correlation(caller, callee), 0.05)
                if not walk.has_edge(callee, caller):
                    walk.add_edge(callee, caller, weight=back)
        for service, score in norm.items():
            # A self-loop as strong as the node's own anomaly: without it a cause with no anomalous callee
            # would send all its mass back up its one weak back edge (PageRank normalises out-weights).
            walk.add_edge(service, service, weight=score)
        scores = nx.pagerank(walk, alpha=self.params.damping, personalization=norm, weight="weight")
        return sorted(scores.items(), key=lambda item: (-item[1], item[0]))

    # Acting

    def _track_versions(self, view: TelemetryView) -> None:
        # The `service.version` resource attribute of the service's own spans says which version is really
        # serving; the inventory's version is the fallback for services that do not set it.
        versions = {
            service: known.version for service, known in view.inventory.services.items() if known.version
        }
        for service in view.services:
            node = view.service(service)
            if node is not None and node.version:
                versions[service] = node.version
        for service, version in versions.items():
            changes = self._versions.setdefault(service, [])
            if not changes or changes[-1][1] != version:
                changes.append((view.tick, version))

    def _recent_rollback(self, service: str, tick: int) -> str | None:
        """The version to return to, if the service's version changed recently."""
        changes = self._versions.get(service, [])
        if len(changes) < 2:
            return None  # the first version seen is not a change
        changed_at, _ = changes[-1]
        if tick - changed_at > self.params.version_change_ticks:
            return None
        return changes[-2][1]

    def _shared_node(self, view: TelemetryView, anomalous: dict[str, float], cause: str) -> str | None:
        """A node hosting the cause on which most services, two or more, are anomalous."""
        inventory = view.inventory
        if len(inventory.nodes) < 2 and len(set(inventory.placements.values())) < 2:
            return None  # nowhere to drain to
        services_on: dict[str, set[str]] = {}
        for replica, node in inventory.placements.items():
            service = inventory.replica_services.get(replica)
            if service:
                services_on.setdefault(node, set()).add(service)
        best = None
        for node, services in sorted(services_on.items()):
            hit = services & anomalous.keys()
            crowded = len(hit) >= 2 and len(hit) / len(services) >= self.params.drain_fraction
            if cause in hit and crowded and (best is None or len(hit) > best[1]):
                best = (node, len(hit))
        return best[0] if best else None

    def _act(
        self,
        view: TelemetryView,
        ranking: list[tuple[str, float]],
        anomalous: dict[str, float],
        scores: dict[str, _Score | None],
    ) -> Action:
        cause, cause_score = ranking[0]
        score = scores[cause]
        evidence: dict[str, float | int | str | bool] = {
            f"rank_{index}": f"{service}:{value:.3f}"
            for index, (service, value) in enumerate(ranking[: self.params.report_top], start=1)
        }
        evidence.update(
            {
                "anomalous_services": len(anomalous),
                "cause": cause,
                "cause_rank_score": round(cause_score, 4),
                "cause_z": round(anomalous[cause], 2),
                "cause_z_latency": round(score.z_latency, 2) if score else 0.0,
                "cause_z_errors": round(score.z_errors, 2) if score else 0.0,
                "cause_isolation_forest_outlier": bool(score.outlier) if score else False,
            }
        )
        previous = self._recent_rollback(cause, view.tick)
        if previous is not None:
            current = self._versions[cause][-1][1]
            evidence.update({"from_version": current, "to_version": previous})
            return Remediate(
                target=cause,
                operation=RemediationOperation.ROLLBACK,
                version=previous,
                reason=f"{cause} is the top-ranked root cause and changed version {current} shortly before",
                evidence=evidence,
            )
        node = self._shared_node(view, anomalous, cause)
        if node is not None:
            inventory = view.inventory
            replica = next(
                (
                    r
                    for r, n in sorted(inventory.placements.items())
                    if n == node and inventory.replica_services.get(r) == cause
                ),
                "",
            )
            evidence["node"] = node
            # Remediate names a service and a replica, not a node: drain the cause's replica on the node,
            # and the node in the evidence tells the actuator (and the operator) which node is suspect.
            return Remediate(
                target=cause,
                operation=RemediationOperation.DRAIN,
                replica=replica,
                reason=f"most anomalous services, {cause} first, share node {node}",
                evidence=evidence,
            )
        restarted = self._restarted.get(cause)
        if restarted is not None and 0 < view.tick - restarted <= 4 * self.params.escalate_after_ticks:
            if view.tick - restarted >= self.params.escalate_after_ticks:
                errors = score is not None and score.z_errors >= score.z_latency
                mechanism = (
                    IsolationMechanism.CIRCUIT_BREAKER if errors else IsolationMechanism.CONCURRENCY_LIMIT
                )
                stats = view.stats(cause)
                # Cap concurrency at about what the service sustained in its window, so queues stop growing.
                limit = 0.0 if errors or stats is None else max(1.0, round(stats.concurrency))
                evidence["restarted_at_tick"] = restarted
                return Isolate(
                    target=cause,
                    mechanism=mechanism,
                    limit=limit,
                    reason=f"{cause} is still the top-ranked root cause after a restart",
                    evidence=evidence,
                )
        else:
            self._restarted[cause] = view.tick
        return Remediate(
            target=cause,
            operation=RemediationOperation.RESTART,
            reason=f"{cause} is the top-ranked root cause of {len(anomalous)} anomalous service(s)",
            evidence=evidence,
        )
