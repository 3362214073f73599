"""Tests of the `hpa` controller: its pure core case by case against Kubernetes, then the controller on views.

Each core case names what it checks and where Kubernetes says so: the "Horizontal Pod Autoscaling" concept
page (docs) or a function of `pkg/controller/podautoscaler` (source).
"""

from __future__ import annotations

import asyncio

import pytest

from controllers.hpa import HorizontalPodAutoscaler
from controllers.hpa_core import (
    Behavior,
    HpaSpec,
    HpaState,
    MetricReading,
    MetricResult,
    MetricSourceType,
    MetricSpec,
    Pod,
    PodMetric,
    PodPhase,
    PolicyType,
    Recommendation,
    ScaleEvent,
    ScalingPolicy,
    ScalingRules,
    SelectPolicy,
    TargetType,
    apply_behavior_rate,
    apply_legacy_rules,
    behavior_with_defaults,
    combine_metric_results,
    compute_replicas_for_metric,
    default_scale_down_rules,
    default_scale_up_rules,
    group_pods,
    per_pod_value_replicas,
    plain_metric_replicas,
    reconcile,
    resource_utilization_replicas,
    scale_down_limit,
    scale_up_limit,
    stabilize_legacy,
    stabilize_with_behaviors,
    store_scale_event,
    usage_ratio_replicas,
)
from controlplane import Inventory, Scale, ServiceInventory, TelemetryView
from telemetry import WindowSummary
from telemetry.snapshot import GraphSnapshot, NodeSnapshot

NOW = 10_000.0
DEFAULT = behavior_with_defaults(Behavior())


def cpu_pod(
    name: str, *, ready: bool | None = True, start: float | None = 0.0, transition: float = 0.0
) -> Pod:
    return Pod(name, ready=ready, start_time=start, ready_transition_time=transition, requests={"cpu": 1.0})


def samples(**values: float) -> dict[str, PodMetric]:
    return {name: PodMetric(value, NOW, 30.0) for name, value in values.items()}


def running(*names: str) -> list[Pod]:
    return [Pod(name) for name in names]


def pods_metric(target: float) -> MetricSpec:
    return MetricSpec(MetricSourceType.PODS, "qps", TargetType.AVERAGE_VALUE, target)


# --- the ratio and the tolerance ---------------------------------------------------------------------------


def test_ratio_doubles_and_halves() -> None:
    # docs: "if the current metric value is 200m, and the desired value is 100m, the number of replicas will
    # be doubled ... if the current value is instead 50m, you'll halve the number of replicas".
    assert plain_metric_replicas(2, 0.1, "", running("a", "b"), samples(a=0.2, b=0.2), NOW)[0] == 4
    pods = running("a", "b", "c", "d")
    assert plain_metric_replicas(4, 0.1, "", pods, samples(a=0.05, b=0.05, c=0.05, d=0.05), NOW)[0] == 2


def test_within_tolerance_keeps_current() -> None:
    # docs: "The control plane skips any scaling action if the ratio is sufficiently close to 1.0 (within a
    # globally-configurable tolerance, 0.1 by default)".
    pods = running("a", "b", "c", "d")
    assert plain_metric_replicas(4, 1.0, "", pods, samples(a=1.05, b=1.05, c=1.05, d=1.05), NOW)[0] == 4
    # Just outside: 1.15 -> ceil(1.15 * 4) = 5.
    assert plain_metric_replicas(4, 1.0, "", pods, samples(a=1.15, b=1.15, c=1.15, d=1.15), NOW)[0] == 5


def test_tolerance_bound_is_inclusive() -> None:
    # source: Tolerances.isWithin is (1 - down) <= ratio <= (1 + up), so a ratio of exactly 1.1 stays.
    pods = running("a", "b")
    assert plain_metric_replicas(2, 1.0, "", pods, samples(a=1.1, b=1.1), NOW)[0] == 2
    assert plain_metric_replicas(2, 1.0, "", pods, samples(a=0.9, b=0.9), NOW)[0] == 2


def test_resource_utilization_is_truncated_to_an_integer_percent() -> None:
    # source: GetResourceUtilizationRatio computes int((usage * 100) / requests): 1000m of 3000m is 33%,
    # not 33.3%; 33/30 = 1.1 is within tolerance, whereas 33.3/30 = 1.11 would have scaled to 4.
    pods = [cpu_pod("a"), cpu_pod("b"), cpu_pod("c")]
    replicas, utilization = resource_utilization_replicas(
        3, 30, "cpu", pods, samples(a=0.4, b=0.3, c=0.3), NOW
    )
    assert (replicas, utilization) == (3, 33)


def test_resource_utilization_is_a_ratio_of_sums() -> None:
    # docs: utilization is averaged across pods as total usage over total requests (source: sums).
    pods = [cpu_pod("a"), cpu_pod("b"), Pod("c", requests={"cpu": 2.0})]
    _, utilization = resource_utilization_replicas(3, 50, "cpu", pods, samples(a=1.0, b=1.0, c=0.0), NOW)
    assert utilization == 50


# --- missing metrics, unready and not-yet-started pods ---------------------------------------------------


def test_missing_metrics_count_as_full_request_on_scale_down() -> None:
    # docs: "if the new ratio reverses the scale direction ... missing pods ... assume those pods were
    # consuming 100% of the desired value in case of a scale down". Naively ceil(0.2 * 5) = 1; with the
    # missing pod at 100% of its request: 1500m / 6000m = 25% -> 0.5 * 6 = 3.
    pods = [cpu_pod(name) for name in "abcdef"]
    metrics = samples(a=0.1, b=0.1, c=0.1, d=0.1, e=0.1)
    assert resource_utilization_replicas(6, 50, "cpu", pods, metrics, NOW)[0] == 3


def test_missing_metrics_count_as_target_for_plain_metrics_on_scale_down() -> None:
    # source: calcPlainMetricReplicas treats missing pods as using exactly the target on a scale-down:
    # (3 * 0.2 + 1.0) / 4 = 0.4 -> ceil(0.4 * 4) = 2, not ceil(0.2 * 3) = 1.
    pods = running("a", "b", "c", "d")
    assert plain_metric_replicas(4, 1.0, "", pods, samples(a=0.2, b=0.2, c=0.2), NOW)[0] == 2


def test_missing_metrics_count_as_zero_on_scale_up_and_a_flip_keeps_current() -> None:
    # docs: missing pods count as "0% of the desired value in case of a scale up"; source: if the recomputed
    # ratio reverses the direction, keep the current replicas. 120% on one pod of four, three missing:
    # 1200m / 4000m = 30%, a scale-down, so 4 stays (naively ceil(1.2 * 1) = 2 would scale down).
    pods = [cpu_pod(name) for name in "abcd"]
    assert resource_utilization_replicas(4, 100, "cpu", pods, samples(a=1.2), NOW)[0] == 4


def test_unready_cpu_pods_count_as_zero_on_scale_up() -> None:
    # docs: "if any not-yet-ready pods were present, and the workload would have scaled up ... assume that
    # the not-yet-ready pods were consuming 0% of the desired metric". Two ready pods at 100% of request,
    # two unready (within the initialization period): 2000m / 4000m = 50%, 50/40 -> ceil(1.25 * 4) = 5.
    pods = [
        cpu_pod("a"),
        cpu_pod("b"),
        cpu_pod("c", ready=False, start=NOW - 60, transition=NOW - 60),
        cpu_pod("d", ready=False, start=NOW - 60, transition=NOW - 60),
    ]
    assert resource_utilization_replicas(4, 40, "cpu", pods, samples(a=1.0, b=1.0, c=1.0, d=1.0), NOW)[0] == 5


def test_unready_cpu_pods_are_ignored_on_scale_down() -> None:
    # source: unready pods are removed from the metrics and only filled in on a scale-up; on a scale-down
    # the ready pods alone decide: 10% / 50% -> ceil(0.2 * 2) = 1.
    pods = [
        cpu_pod("a"),
        cpu_pod("b"),
        cpu_pod("c", ready=False, start=NOW - 60, transition=NOW - 60),
        cpu_pod("d", ready=False, start=NOW - 60, transition=NOW - 60),
    ]
    assert resource_utilization_replicas(4, 50, "cpu", pods, samples(a=0.1, b=0.1, c=0.9, d=0.9), NOW)[0] == 1


def test_not_yet_started_pods_count_as_zero_on_scale_up_for_any_metric() -> None:
    # source groupPods: Pending pods are unready whatever the metric. Two running pods at 1.2, two pending:
    # (2.4 + 0) / 4 = 0.6 reverses the direction, so 4 stays (naively ceil(1.2 * 2) = 3).
    pods = [*running("a", "b"), Pod("c", phase=PodPhase.PENDING), Pod("d", phase=PodPhase.PENDING)]
    assert plain_metric_replicas(4, 1.0, "", pods, samples(a=1.2, b=1.2), NOW)[0] == 4


def test_cpu_readiness_within_the_initialization_period() -> None:
    # docs: within --horizontal-pod-autoscaler-cpu-initialization-period (5 min) a pod is unready unless it
    # is ready and a full metric window was collected since it became ready.
    start = NOW - 100
    pods = [
        cpu_pod("fresh", start=start, transition=NOW - 10),  # ready 10 s ago, window 30 s: not yet
        cpu_pod("settled", start=start, transition=NOW - 40),
        cpu_pod("unready", ready=False, start=start, transition=start),
        cpu_pod("no-condition", ready=None, start=start),
        cpu_pod("not-started", start=None),
    ]
    groups = group_pods(pods, samples(**{pod.name: 0.5 for pod in pods}), "cpu", NOW)
    assert groups.ready_count == 1
    assert groups.unready == {"fresh", "unready", "no-condition", "not-started"}


def test_cpu_readiness_after_the_initialization_period() -> None:
    # docs/source: afterwards only a pod that is unready and has never been ready (its Ready condition last
    # changed within --horizontal-pod-autoscaler-initial-readiness-delay, 30 s, of its start) is left out.
    start = NOW - 1000
    pods = [
        cpu_pod("never-ready", ready=False, start=start, transition=start + 10),
        cpu_pod("was-ready", ready=False, start=start, transition=NOW - 500),
    ]
    groups = group_pods(pods, samples(**{"never-ready": 0.5, "was-ready": 0.5}), "cpu", NOW)
    assert groups.unready == {"never-ready"}
    assert groups.ready_count == 1


def test_readiness_matters_only_for_cpu() -> None:
    # source groupPods: the Ready condition is consulted only for the cpu resource.
    pods = [Pod("a", ready=False), Pod("b", ready=None)]
    assert group_pods(pods, samples(a=1.0, b=1.0), "", NOW).ready_count == 2
    assert group_pods(pods, samples(a=1.0, b=1.0), "memory", NOW).ready_count == 2


def test_deleted_and_failed_pods_are_set_aside() -> None:
    # docs: "pods with a deletion timestamp set ... and failed pods are discarded"; they are not filled in
    # on a scale-up either: ceil(2.0 * 2) = 4, not 6.
    pods = [*running("a", "b"), Pod("c", phase=PodPhase.FAILED), Pod("d", deleting=True)]
    groups = group_pods(pods, samples(a=2.0, b=2.0, c=2.0, d=2.0), "", NOW)
    assert groups.ignored == {"c", "d"}
    assert plain_metric_replicas(4, 1.0, "", pods, samples(a=2.0, b=2.0, c=2.0, d=2.0), NOW)[0] == 4


# --- metric source types -----------------------------------------------------------------------------------


def test_object_value_multiplies_by_ready_pods() -> None:
    # source GetObjectMetricReplicas/getUsageRatioReplicaCount: ratio of value to target times ready pods.
    spec = MetricSpec(MetricSourceType.OBJECT, "requests", TargetType.VALUE, 100)
    pods = [*running("a", "b"), Pod("c", ready=False)]
    result = compute_replicas_for_metric(spec, MetricReading(value=300), pods, 3, 3, NOW)
    assert result.replicas == 6


def test_object_average_value_divides_by_target() -> None:
    # source GetObjectPerPodMetricReplicas: ceil(total / target), tolerance judged on the current replicas.
    spec = MetricSpec(MetricSourceType.OBJECT, "requests", TargetType.AVERAGE_VALUE, 100)
    assert compute_replicas_for_metric(spec, MetricReading(value=1000), [], 4, 4, NOW).replicas == 10
    assert compute_replicas_for_metric(spec, MetricReading(value=420), [], 4, 4, NOW).replicas == 4


def test_external_value_sums_series() -> None:
    # source GetExternalMetricReplicas: the values of all matching series are summed: 50 / 10 * 2 ready.
    spec = MetricSpec(MetricSourceType.EXTERNAL, "queue", TargetType.VALUE, 10)
    result = compute_replicas_for_metric(spec, MetricReading(values=(30, 20)), running("a", "b"), 2, 2, NOW)
    assert (result.replicas, result.current) == (10, 50)


def test_external_average_value() -> None:
    # source GetExternalPerPodMetricReplicas: 50 / (10 * 3) = 1.67 -> ceil(50 / 10) = 5; 17 per pod.
    assert per_pod_value_replicas(3, 50, 10) == (5, 16.667)
    spec = MetricSpec(MetricSourceType.EXTERNAL, "queue", TargetType.AVERAGE_VALUE, 10)
    assert compute_replicas_for_metric(spec, MetricReading(values=(30, 20)), [], 3, 3, NOW).replicas == 5


def test_value_target_scales_from_zero() -> None:
    # source getUsageRatioReplicaCount: with zero current replicas, ceil(ratio), no tolerance, no pods.
    assert usage_ratio_replicas(0, 2.5, []) == 3
    assert usage_ratio_replicas(0, 0.0, []) == 0


def test_metric_spec_rejects_invalid_targets() -> None:
    # docs (API): Pods metrics take AverageValue only; Utilization only for Resource metrics.
    with pytest.raises(ValueError):
        MetricSpec(MetricSourceType.PODS, "qps", TargetType.VALUE, 1)
    with pytest.raises(ValueError):
        MetricSpec(MetricSourceType.EXTERNAL, "queue", TargetType.UTILIZATION, 50)


def test_default_metric_is_cpu_at_80_percent() -> None:
    # docs (autoscaling/v2 defaults): with no metrics, CPU at 80% average utilization.
    (spec,) = HpaSpec(max_replicas=10).effective_metrics()
    assert (spec.type, spec.name, spec.target_type, spec.target) == ("Resource", "cpu", "Utilization", 80)


# --- several metrics and failing metrics -------------------------------------------------------------------


def _result(replicas: int | None) -> MetricResult:
    return MetricResult(pods_metric(1.0), replicas, None, "" if replicas is not None else "no data")


def test_multiple_metrics_take_the_maximum() -> None:
    # docs: "the HorizontalPodAutoscaler will calculate proposed replica counts for each metric, and then
    # choose the one with the highest replica count".
    assert combine_metric_results([_result(3), _result(7), _result(5)], 4).replicas == 7


def test_failing_metric_never_blocks_a_scale_up() -> None:
    # docs: "If any of these metrics cannot be converted ... and the other metrics suggest a scale up, then
    # scaling will still occur" (source computeReplicasForMetrics).
    outcome = combine_metric_results([_result(None), _result(6)], 4)
    assert outcome.replicas == 6 and "1 invalid out of 2" in outcome.error


def test_failing_metric_blocks_a_scale_down() -> None:
    # docs: "the HPA does not scale down if any metric is not available" (source: replicas < specReplicas).
    assert combine_metric_results([_result(None), _result(2)], 4).replicas is None
    # Neither when all fail; but a proposal equal to the current count is not blocked.
    assert combine_metric_results([_result(None), _result(None)], 4).replicas is None
    assert combine_metric_results([_result(None), _result(4)], 4).replicas == 4


def test_blocked_sync_changes_nothing() -> None:
    # source reconcileAutoscaler: on a metrics error it returns before stabilization; no history recorded.
    hpa = HpaSpec(max_replicas=10, metrics=(pods_metric(1.0),), behavior=Behavior())
    result = reconcile(hpa, 4, [None], running("a", "b", "c", "d"), HpaState(), NOW)
    assert (result.rescale, result.desired_replicas, result.state) == (False, 4, HpaState())


# --- behavior: scaling policies ----------------------------------------------------------------------------


def test_default_behavior() -> None:
    # docs "Default Behavior": scale up max(100%, 4 pods) per 15 s, no window; scale down 100% per 15 s,
    # window 300 s (the controller's --horizontal-pod-autoscaler-downscale-stabilization).
    assert DEFAULT.scale_up == default_scale_up_rules()
    assert DEFAULT.scale_down.policies == default_scale_down_rules().policies
    assert DEFAULT.scale_down.stabilization_window_seconds == 300
    assert DEFAULT.scale_down.select_policy == SelectPolicy.MAX


def test_default_scale_up_limit_is_the_larger_of_4_pods_and_100_percent() -> None:
    # docs: "the pods will be doubled every 15 seconds or 4 pods added, whichever is more" (Max).
    assert scale_up_limit(2, (), (), DEFAULT.scale_up, NOW) == 6
    assert scale_up_limit(10, (), (), DEFAULT.scale_up, NOW) == 20


def test_select_policy_min_on_scale_up() -> None:
    # docs: selectPolicy Min picks the policy allowing the smallest change.
    rules = ScalingRules(DEFAULT.scale_up.policies, SelectPolicy.MIN, 0)
    assert scale_up_limit(10, (), (), rules, NOW) == 14


def test_percent_scale_up_rounds_up() -> None:
    # source calculateScaleUpLimitWithScalingRules: ceil, so a small percentage still adds a pod.
    rules = ScalingRules((ScalingPolicy(PolicyType.PERCENT, 10, 60),), SelectPolicy.MAX, 0)
    assert scale_up_limit(3, (), (), rules, NOW) == 4


def test_scale_up_period_start_arithmetic() -> None:
    # source getReplicasChangePerPeriod: the limit counts from the replicas at the start of the period,
    # current minus pods added in it. 4 pods per 60 s, +4 thirty seconds ago at 6 replicas: start 2, limit 6.
    rules = ScalingRules((ScalingPolicy(PolicyType.PODS, 4, 60),), SelectPolicy.MAX, 0)
    behavior = Behavior(rules, DEFAULT.scale_down)
    recent = (ScaleEvent(4, NOW - 30),)
    assert apply_behavior_rate(20, 6, 1, 100, recent, (), behavior, NOW) == (6, "ScaleUpLimit")
    # An event outside the period (strictly older than now - 60) no longer counts.
    assert apply_behavior_rate(20, 6, 1, 100, (ScaleEvent(4, NOW - 60),), (), behavior, NOW)[0] == 10


def test_scale_up_period_start_adds_back_removed_pods() -> None:
    # source: period start = current - added + removed; 2 removed 5 s ago at 4 replicas: start 6, +2 -> 8.
    rules = ScalingRules((ScalingPolicy(PolicyType.PODS, 2, 15),), SelectPolicy.MAX, 0)
    assert scale_up_limit(4, (), (ScaleEvent(2, NOW - 5),), rules, NOW) == 8


def test_scale_down_percent_truncates() -> None:
    # source calculateScaleDownLimitWithBehaviors: int(10 * (1 - 0.25)) = 7.
    rules = ScalingRules((ScalingPolicy(PolicyType.PERCENT, 25, 15),), SelectPolicy.MAX, 300)
    assert scale_down_limit(10, (), (), rules, NOW) == 7


def test_scale_down_period_start_arithmetic() -> None:
    # docs example: 50% per 60 s; 5 removed 10 s ago from 10: the period started at 10, so 5 is the floor.
    rules = ScalingRules((ScalingPolicy(PolicyType.PERCENT, 50, 60),), SelectPolicy.MAX, 0)
    behavior = Behavior(DEFAULT.scale_up, rules)
    assert apply_behavior_rate(1, 5, 1, 100, (), (ScaleEvent(5, NOW - 10),), behavior, NOW) == (
        5,
        "ScaleDownLimit",
    )


def test_select_policy_on_scale_down() -> None:
    # docs: Max (default) allows the largest change, i.e. the fewest replicas; Min the smallest change.
    policies = (ScalingPolicy(PolicyType.PODS, 1, 60), ScalingPolicy(PolicyType.PERCENT, 50, 60))
    assert scale_down_limit(10, (), (), ScalingRules(policies, SelectPolicy.MAX, 0), NOW) == 5
    assert scale_down_limit(10, (), (), ScalingRules(policies, SelectPolicy.MIN, 0), NOW) == 9


def test_select_policy_disabled() -> None:
    # docs: "selectPolicy: Disabled" turns scaling in that direction off.
    off = ScalingRules(DEFAULT.scale_down.policies, SelectPolicy.DISABLED, 0)
    assert apply_behavior_rate(1, 10, 1, 100, (), (), Behavior(DEFAULT.scale_up, off), NOW)[0] == 10
    off_up = ScalingRules(DEFAULT.scale_up.policies, SelectPolicy.DISABLED, 0)
    assert apply_behavior_rate(20, 3, 1, 100, (), (), Behavior(off_up, DEFAULT.scale_down), NOW)[0] == 3


def test_min_and_max_replicas() -> None:
    # source convertDesiredReplicasWithBehaviorRate: clamp to maxReplicas upward and minReplicas downward.
    assert apply_behavior_rate(50, 5, 1, 10, (), (), DEFAULT, NOW) == (10, "TooManyReplicas")
    assert apply_behavior_rate(0, 5, 2, 10, (), (), DEFAULT, NOW) == (2, "TooFewReplicas")


def test_current_outside_min_max_is_corrected_without_metrics() -> None:
    # source reconcileAutoscaler: above max -> max, below min -> min, before any metric is read.
    hpa = HpaSpec(max_replicas=10, min_replicas=3, metrics=(pods_metric(1.0),), behavior=Behavior())
    assert reconcile(hpa, 12, [None], [], HpaState(), NOW).desired_replicas == 10
    assert reconcile(hpa, 1, [None], [], HpaState(), NOW).desired_replicas == 3
    # A target scaled to zero by hand has autoscaling disabled.
    assert reconcile(hpa, 0, [None], [], HpaState(), NOW).rescale is False


# --- stabilization windows ---------------------------------------------------------------------------------


def test_scale_down_stabilization_takes_the_highest_recommendation() -> None:
    # docs: "the highest recommendation from within the window is used" when scaling down.
    history = (Recommendation(8, NOW - 100), Recommendation(2, NOW - 400))
    assert stabilize_with_behaviors(3, 6, history, 0, 300, NOW)[0] == 6
    assert stabilize_with_behaviors(2, 6, (Recommendation(4, NOW - 100),), 0, 300, NOW)[0] == 4


def test_scale_up_stabilization_takes_the_lowest_recommendation() -> None:
    # docs: a scale-up window uses the lowest recommendation in it.
    assert stabilize_with_behaviors(10, 2, (Recommendation(3, NOW - 30),), 60, 300, NOW)[0] == 3
    # Default up window 0: the new recommendation applies at once.
    assert stabilize_with_behaviors(10, 2, (Recommendation(3, NOW - 30),), 0, 300, NOW)[0] == 10


def test_stabilization_records_the_raw_recommendation_reusing_old_slots() -> None:
    # source: the unstabilized recommendation is stored, replacing one older than both windows.
    history = (Recommendation(7, NOW - 1000), Recommendation(5, NOW - 10))
    _, updated = stabilize_with_behaviors(3, 5, history, 0, 300, NOW)
    assert updated == (Recommendation(3, NOW), Recommendation(5, NOW - 10))


def test_scale_events_reuse_outdated_slots() -> None:
    # source storeScaleEvent: events older than the longest policy period are marked outdated and reused.
    state = HpaState(scale_up_events=(ScaleEvent(4, NOW - 100), ScaleEvent(2, NOW - 5)))
    updated = store_scale_event(state, DEFAULT, 6, 9, NOW)
    assert updated.scale_up_events == (ScaleEvent(3, NOW), ScaleEvent(2, NOW - 5))
    assert store_scale_event(state, None, 6, 9, NOW) == state  # no behavior: nothing would read it


# --- the legacy path (no behavior) -------------------------------------------------------------------------


def test_legacy_scale_up_limit() -> None:
    # source convertDesiredReplicasWithRules: at most max(2 * current, 4), then maxReplicas.
    assert apply_legacy_rules(20, 3, 1, 100) == (6, "ScaleUpLimit")
    assert apply_legacy_rules(20, 1, 1, 100) == (4, "ScaleUpLimit")
    assert apply_legacy_rules(20, 3, 1, 5) == (5, "TooManyReplicas")
    assert apply_legacy_rules(0, 3, 2, 5) == (2, "TooFewReplicas")


def test_legacy_downscale_stabilization() -> None:
    # source stabilizeRecommendation: the highest recommendation within the 300 s downscale window.
    history = (Recommendation(8, NOW - 100), Recommendation(9, NOW - 301))
    assert stabilize_legacy(2, history, 300, NOW)[0] == 8
    hpa = HpaSpec(max_replicas=20, metrics=(pods_metric(1.0),))
    pods = running("a", "b", "c", "d", "e", "f", "g", "h")
    reading = MetricReading(pods=samples(**{pod.name: 0.2 for pod in pods}))
    state = HpaState(recommendations=(Recommendation(8, NOW - 100),))
    result = reconcile(hpa, 8, [reading], pods, state, NOW)
    assert (result.recommended_replicas, result.rescale) == (2, False)


# --- one HPA over several syncs ----------------------------------------------------------------------------


def test_reconcile_rate_limits_scale_up_across_syncs() -> None:
    # docs + source: 2 pods at 5x target recommend 10, the default policy allows max(2 + 4, 4) = 6; within
    # the 15 s period the next sync may add nothing more; after it, max(6 + 4, 12) = 12.
    hpa = HpaSpec(max_replicas=50, metrics=(pods_metric(1.0),), behavior=Behavior())

    def sync(replicas: int, value: float, now: float, state: HpaState):
        pods = running(*(f"p{i}" for i in range(replicas)))
        reading = MetricReading(pods={pod.name: PodMetric(value, now) for pod in pods})
        return reconcile(hpa, replicas, [reading], pods, state, now)

    first = sync(2, 5.0, NOW, HpaState())
    assert (first.recommended_replicas, first.desired_replicas) == (10, 6)
    assert first.state.scale_up_events == (ScaleEvent(4, NOW),)
    second = sync(6, 2.0, NOW + 5, first.state)
    assert (second.recommended_replicas, second.rescale) == (12, False)
    third = sync(6, 2.0, NOW + 16, second.state)
    assert third.desired_replicas == 12


# --- the controller over TelemetryViews --------------------------------------------------------------------


def window(concurrency: float, rate: float = 100.0) -> WindowSummary:
    return WindowSummary(
        window_seconds=30.0,
        requests=int(rate * 30),
        errors=0,
        request_rate=rate,
        error_rate=0.0,
        p50_ms=10.0,
        p95_ms=20.0,
        p99_ms=30.0,
        mean_ms=concurrency / rate * 1000.0,
        concurrency=concurrency,
    )


def make_view(
    now: float, services: dict[str, ServiceInventory], stats: dict[str, WindowSummary], tick: int = 0
) -> TelemetryView:
    nodes = tuple(
        NodeSnapshot(name, "service", "", summary, summary.requests, 0, now)
        for name, summary in stats.items()
    )
    snapshot = GraphSnapshot(
        taken_at=now, window_seconds=30.0, nodes=nodes, edges=(), spans_accepted=0, spans_rejected=0
    )
    return TelemetryView(tick, now, snapshot, Inventory(services=services))


def decide(controller: HorizontalPodAutoscaler, view: TelemetryView) -> list:
    return asyncio.run(controller.decide(view))


def test_controller_declares_itself() -> None:
    HorizontalPodAutoscaler.validate_class()
    assert HorizontalPodAutoscaler.name == "hpa"
    assert HorizontalPodAutoscaler.period_seconds == 15.0
    assert HorizontalPodAutoscaler.taxonomy.as_dict()["actions"] == ["autoscaling"]
    with pytest.raises(ValueError):
        HorizontalPodAutoscaler(HorizontalPodAutoscaler.build_parameters({"metric": "memory"}))


def test_controller_scales_up_on_concurrency_within_policy() -> None:
    # 8 in flight over 2 replicas at a target of 1 per replica recommends 8; default policy allows 6.
    services = {"api": ServiceInventory("api", replicas=2)}
    (proposal,) = decide(HorizontalPodAutoscaler(), make_view(NOW, services, {"api": window(8.0)}))
    assert isinstance(proposal, Scale) and (proposal.target, proposal.replicas) == ("api", 6)
    evidence = proposal.evidence
    assert evidence["metric"] == "concurrency" and evidence["current"] == 4.0 and evidence["ratio"] == 4.0
    assert (evidence["recommended_replicas"], evidence["desired"], evidence["current_replicas"]) == (8, 6, 2)


def test_controller_is_quiet_within_tolerance_and_without_data() -> None:
    services = {"api": ServiceInventory("api", replicas=4), "db": ServiceInventory("db", replicas=2)}
    # api: 4.2 in flight over 4 = 1.05 per replica; db: no window at all (a failed metric).
    assert decide(HorizontalPodAutoscaler(), make_view(NOW, services, {"api": window(4.2)})) == []


def test_controller_holds_scale_down_for_the_stabilization_window() -> None:
    controller = HorizontalPodAutoscaler()
    services = {"api": ServiceInventory("api", replicas=4)}
    assert decide(controller, make_view(NOW, services, {"api": window(4.0)})) == []
    # Load drops: the recommendation of 1 is held at 4 by the 300 s window ...
    assert decide(controller, make_view(NOW + 15, services, {"api": window(1.0)})) == []
    # ... until the recommendation of 4 has left it.
    (proposal,) = decide(controller, make_view(NOW + 320, services, {"api": window(1.0)}))
    assert proposal.replicas == 1 and "below target" in proposal.reason


def test_controller_cpu_proxy_mode() -> None:
    # 2 in flight over 2 pods of 0.5 cores: 1 core each = 200% vs 80% -> ceil(2.5 * 2) = 5 (limit 6).
    params = HorizontalPodAutoscaler.build_parameters({"metric": "cpu"})
    services = {"api": ServiceInventory("api", replicas=2, cpu_request=0.5)}
    (proposal,) = decide(HorizontalPodAutoscaler(params), make_view(NOW, services, {"api": window(2.0)}))
    assert proposal.replicas == 5 and proposal.evidence["current"] == 200.0
    # Without a CPU request there is no utilization, so no proposal.
    bare = {"api": ServiceInventory("api", replicas=2)}
    assert decide(HorizontalPodAutoscaler(params), make_view(NOW, bare, {"api": window(2.0)})) == []


def test_controller_counts_pending_replicas_as_zero_on_scale_up() -> None:
    # 4 replicas, 2 ready: 2.4 in flight is 1.2 per ready pod, but with the 2 pending at 0 it is 0.6, a
    # reversal, so nothing changes.
    services = {"api": ServiceInventory("api", replicas=4, ready_replicas=2)}
    assert decide(HorizontalPodAutoscaler(), make_view(NOW, services, {"api": window(2.4)})) == []


def test_controller_legacy_mode_and_service_selection() -> None:
    params = HorizontalPodAutoscaler.build_parameters({"behavior": False, "services": ["api"]})
    services = {
        "api": ServiceInventory("api", replicas=3, max_replicas=100),
        "web": ServiceInventory("web", replicas=1),
    }
    view = make_view(NOW, services, {"api": window(30.0), "web": window(30.0)})
    (proposal,) = decide(HorizontalPodAutoscaler(params), view)
    assert (proposal.target, proposal.replicas) == ("api", 6)  # legacy limit max(2 * 3, 4)
    assert proposal.evidence["legacy_limits"] is True


def test_controller_forgets_services_that_are_gone() -> None:
    controller = HorizontalPodAutoscaler()
    services = {"api": ServiceInventory("api", replicas=2)}
    decide(controller, make_view(NOW, services, {"api": window(8.0)}))
    assert controller.state("api").scale_up_events
    decide(controller, make_view(NOW + 15, {}, {}))
    assert controller.state("api") == HpaState()
