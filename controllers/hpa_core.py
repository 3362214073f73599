"""Pure core of the `hpa` controller: the Kubernetes HorizontalPodAutoscaler (autoscaling/v2) over plain data.

Implemented from the Kubernetes documentation ("Horizontal Pod Autoscaling": algorithm details, scaling
policies, stabilization window) and from reading `pkg/controller/podautoscaler` (`replica_calculator.go`,
`horizontal.go`, `metrics/utilization.go`); no code is copied. Every function here depends only on its
arguments: the pods, the metric specs and what the metrics APIs returned for them, the recommendation history
and scale events of one HPA object, and `now` in seconds. Comments name the Go function each piece mirrors
so that a case can be checked against the source.

Where the source does integer arithmetic on milli-units (utilization percent, per-pod averages) the values
given here as floats are converted to milli-units first, as `resource.Quantity.MilliValue` does (rounding up).
Not modelled: per-container requests and pod-level resources, the pod ownership filter, and the
`HPAScaleToZero` feature gate beyond what `getUsageRatioReplicaCount` does for zero current replicas.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum

# The legacy rate limit used when an HPA sets no `behavior` (horizontal.go: scaleUpLimitFactor/Minimum).
SCALE_UP_LIMIT_FACTOR = 2.0
SCALE_UP_LIMIT_MINIMUM = 4


class PodPhase(StrEnum):
    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


class MetricSourceType(StrEnum):
    RESOURCE = "Resource"
    PODS = "Pods"
    OBJECT = "Object"
    EXTERNAL = "External"


class TargetType(StrEnum):
    UTILIZATION = "Utilization"
    VALUE = "Value"
    AVERAGE_VALUE = "AverageValue"


class PolicyType(StrEnum):
    PODS = "Pods"
    PERCENT = "Percent"


class SelectPolicy(StrEnum):
    MAX = "Max"
    MIN = "Min"
    DISABLED = "Disabled"


class MetricError(Exception):
    """A metric that cannot give a replica count this sync (no data, no pods, no requests)."""


@dataclass(frozen=True, slots=True)
class Pod:
    """What the HPA reads from one pod's status."""

    name: str
    phase: PodPhase = PodPhase.RUNNING
    # Status of the pod's Ready condition; None when the kubelet has not reported one yet.
    ready: bool | None = True
    # status.startTime; None when the pod has not been started by a kubelet.
    start_time: float | None = 0.0
    # lastTransitionTime of the Ready condition.
    ready_transition_time: float = 0.0
    # Resource name -> request (cores for "cpu"); a utilization target needs a request on every pod.
    requests: Mapping[str, float] = field(default_factory=dict)
    deleting: bool = False


@dataclass(frozen=True, slots=True)
class PodMetric:
    """One pod's sample from the resource or custom metrics API."""

    value: float
    timestamp: float = 0.0
    window: float = 30.0


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """One entry of `spec.metrics`: a source type, a metric name and a target."""

    type: MetricSourceType
    name: str
    target_type: TargetType
    # Percent of request for Utilization; the metric's own unit for Value and AverageValue.
    target: float

    def __post_init__(self) -> None:
        allowed = {
            MetricSourceType.RESOURCE: (TargetType.UTILIZATION, TargetType.AVERAGE_VALUE),
            MetricSourceType.PODS: (TargetType.AVERAGE_VALUE,),
            MetricSourceType.OBJECT: (TargetType.VALUE, TargetType.AVERAGE_VALUE),
            MetricSourceType.EXTERNAL: (TargetType.VALUE, TargetType.AVERAGE_VALUE),
        }
        object.__setattr__(self, "type", MetricSourceType(self.type))
        object.__setattr__(self, "target_type", TargetType(self.target_type))
        if self.target_type not in allowed[self.type]:
            raise ValueError(f"{self.type} metric {self.name!r} cannot have a {self.target_type} target")
        if self.target <= 0:
            raise ValueError(f"metric {self.name!r}: target must be positive")


@dataclass(frozen=True, slots=True)
class MetricReading:
    """What the metrics APIs returned for one spec.

    `pods` for Resource and Pods metrics (pod name -> sample), `value` for an Object metric, `values` for an
    External metric (one value per matching series; the HPA sums them).
    """

    pods: Mapping[str, PodMetric] = field(default_factory=dict)
    value: float = 0.0
    values: tuple[float, ...] = ()


@dataclass(frozen=True, slots=True)
class ControllerConfig:
    """The kube-controller-manager flags the algorithm depends on, with their defaults."""

    tolerance: float = 0.1
    cpu_initialization_period: float = 300.0
    delay_of_initial_readiness_status: float = 30.0
    downscale_stabilization_window: float = 300.0


@dataclass(frozen=True, slots=True)
class Tolerances:
    scale_down: float = 0.1
    scale_up: float = 0.1

    def within(self, ratio: float) -> bool:
        """Too close to 1.0 to act on (replica_calculator.go `Tolerances.isWithin`)."""
        return (1.0 - self.scale_down) <= ratio <= (1.0 + self.scale_up)


@dataclass(frozen=True, slots=True)
class ScalingPolicy:
    type: PolicyType
    value: int
    period_seconds: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "type", PolicyType(self.type))
        if self.value <= 0 or self.period_seconds <= 0:
            raise ValueError("a scaling policy needs a positive value and period")


@dataclass(frozen=True, slots=True)
class ScalingRules:
    """`behavior.scaleUp` or `behavior.scaleDown`; None fields take the API defaults."""

    policies: tuple[ScalingPolicy, ...] | None = None
    select_policy: SelectPolicy | None = None
    stabilization_window_seconds: int | None = None
    # The per-direction tolerance of HPAConfigurableTolerance (1.33+); None uses the controller's.
    tolerance: float | None = None


@dataclass(frozen=True, slots=True)
class Behavior:
    scale_up: ScalingRules | None = None
    scale_down: ScalingRules | None = None


def default_scale_up_rules() -> ScalingRules:
    """API default: no stabilization, add max(4 pods, 100%) every 15 s."""
    return ScalingRules(
        policies=(ScalingPolicy(PolicyType.PODS, 4, 15), ScalingPolicy(PolicyType.PERCENT, 100, 15)),
        select_policy=SelectPolicy.MAX,
        stabilization_window_seconds=0,
    )


def default_scale_down_rules() -> ScalingRules:
    """API default: remove up to 100% every 15 s; the stabilization window is left to the controller."""
    return ScalingRules(
        policies=(ScalingPolicy(PolicyType.PERCENT, 100, 15),),
        select_policy=SelectPolicy.MAX,
        stabilization_window_seconds=None,
    )


def _fill_rules(rules: ScalingRules | None, defaults: ScalingRules) -> ScalingRules:
    if rules is None:
        return defaults
    return ScalingRules(
        policies=rules.policies if rules.policies is not None else defaults.policies,
        select_policy=SelectPolicy(rules.select_policy) if rules.select_policy else defaults.select_policy,
        stabilization_window_seconds=(
            rules.stabilization_window_seconds
            if rules.stabilization_window_seconds is not None
            else defaults.stabilization_window_seconds
        ),
        tolerance=rules.tolerance,
    )


def behavior_with_defaults(behavior: Behavior, config: ControllerConfig = ControllerConfig()) -> Behavior:
    """Fill unset fields as API defaulting does, then the scale-down window from the controller flag.

    (v2 `SetDefaults_HorizontalPodAutoscalerBehavior`; horizontal.go `maybeInitScaleDownStabilizationWindow`.)
    """
    up = _fill_rules(behavior.scale_up, default_scale_up_rules())
    down = _fill_rules(behavior.scale_down, default_scale_down_rules())
    if down.stabilization_window_seconds is None:
        down = replace(down, stabilization_window_seconds=int(config.downscale_stabilization_window))
    return Behavior(scale_up=up, scale_down=down)


@dataclass(frozen=True, slots=True)
class HpaSpec:
    """The parts of a HorizontalPodAutoscaler spec the algorithm reads."""

    max_replicas: int
    min_replicas: int = 1
    # An empty list defaults to CPU at 80% utilization, as the v2 API does.
    metrics: tuple[MetricSpec, ...] = ()
    # None: the legacy path (downscale stabilization flag plus the 2x/4-pod scale-up limit).
    behavior: Behavior | None = None

    def effective_metrics(self) -> tuple[MetricSpec, ...]:
        if self.metrics:
            return self.metrics
        return (MetricSpec(MetricSourceType.RESOURCE, "cpu", TargetType.UTILIZATION, 80),)


@dataclass(frozen=True, slots=True)
class Recommendation:
    replicas: int
    timestamp: float


@dataclass(frozen=True, slots=True)
class ScaleEvent:
    change: int
    timestamp: float
    outdated: bool = False


@dataclass(frozen=True, slots=True)
class HpaState:
    """What the controller keeps per HPA object between syncs."""

    recommendations: tuple[Recommendation, ...] = ()
    scale_up_events: tuple[ScaleEvent, ...] = ()
    scale_down_events: tuple[ScaleEvent, ...] = ()


# ---------------------------------------------------------------------------------------------------------
# replica_calculator.go


def milli(value: float) -> int:
    """A quantity in milli-units, rounded up as `Quantity.MilliValue` does (tolerating float noise)."""
    return math.ceil(round(value * 1000.0, 6))


@dataclass(frozen=True, slots=True)
class PodGroups:
    ready_count: int
    unready: frozenset[str]
    missing: frozenset[str]
    ignored: frozenset[str]


def group_pods(
    pods: Sequence[Pod],
    metrics: Mapping[str, PodMetric],
    resource: str,
    now: float,
    config: ControllerConfig = ControllerConfig(),
) -> PodGroups:
    """Sort pods into ready (counted), unready, missing-metrics and ignored (`groupPods`).

    Deleted and failed pods are ignored; pending pods are unready for every metric. Only for CPU are
    running pods also judged by readiness: within the initialization period a pod counts only once it is
    ready and a full metric window has passed since it became ready; after it, only a pod that is unready
    and has never been ready (its Ready condition last changed within the initial-readiness delay of its
    start) is left out.
    """
    ready_count = 0
    unready: set[str] = set()
    missing: set[str] = set()
    ignored: set[str] = set()
    for pod in pods:
        if pod.deleting or pod.phase == PodPhase.FAILED:
            ignored.add(pod.name)
            continue
        if pod.phase == PodPhase.PENDING:
            unready.add(pod.name)
            continue
        metric = metrics.get(pod.name)
        if metric is None:
            missing.add(pod.name)
            continue
        if resource == "cpu":
            if pod.ready is None or pod.start_time is None:
                is_unready = True
            elif pod.start_time + config.cpu_initialization_period > now:
                is_unready = (not pod.ready) or metric.timestamp < pod.ready_transition_time + metric.window
            else:
                is_unready = (not pod.ready) and (
                    pod.start_time + config.delay_of_initial_readiness_status > pod.ready_transition_time
                )
            if is_unready:
                unready.add(pod.name)
                continue
        ready_count += 1
    return PodGroups(ready_count, frozenset(unready), frozenset(missing), frozenset(ignored))


def resource_utilization_ratio(
    usage_milli: Mapping[str, int], requests_milli: Mapping[str, int], target_percent: float
) -> tuple[float, int]:
    """Ratio of the truncated integer utilization percent to the target (`GetResourceUtilizationRatio`).

    A ratio of sums over the pods that have both a sample and a request, not a mean of per-pod ratios.
    """
    used = sum(value for name, value in usage_milli.items() if name in requests_milli)
    requested = sum(requests_milli[name] for name in usage_milli if name in requests_milli)
    if requested == 0:
        raise MetricError("no metrics returned matched known pods")
    utilization = (used * 100) // requested
    return utilization / target_percent, utilization


def plain_usage_ratio(usage_milli: Mapping[str, int], target_milli: int) -> tuple[float, int]:
    """Ratio of the truncated per-pod mean to the target (`GetMetricUsageRatio`)."""
    average = sum(usage_milli.values()) // len(usage_milli)
    return average / target_milli, average


def _direction_flip(old: float, new: float) -> bool:
    return (old < 1.0 and new > 1.0) or (old > 1.0 and new < 1.0)


def _recompute(
    current_replicas: int,
    usage: dict[str, int],
    groups: PodGroups,
    ratio: float,
    fill_missing_on_scale_down: Mapping[str, int],
    tolerances: Tolerances,
    ratio_of: Callable[[Mapping[str, int]], float],
) -> int:
    """The second pass shared by the resource and plain calculations, once pods were missing or unready.

    Missing pods count as the target (plain) or 100% of request (utilization) on a scale-down and as 0 on a
    scale-up; unready pods count as 0 only on a scale-up. If the new ratio is within tolerance, or reverses
    the direction, or the wider pod count reverses it, the current replicas stay.
    """
    if groups.missing:
        if ratio < 1.0:
            for name in groups.missing:
                usage[name] = fill_missing_on_scale_down[name]
        elif ratio > 1.0:
            for name in groups.missing:
                usage[name] = 0
    scale_up_with_unready = bool(groups.unready) and ratio > 1.0
    if scale_up_with_unready:
        for name in groups.unready:
            usage[name] = 0
    new_ratio = ratio_of(usage)
    if tolerances.within(new_ratio) or _direction_flip(ratio, new_ratio):
        return current_replicas
    new_replicas = math.ceil(new_ratio * len(usage))
    if (new_ratio < 1.0 and new_replicas > current_replicas) or (
        new_ratio > 1.0 and new_replicas < current_replicas
    ):
        return current_replicas
    return new_replicas


def resource_utilization_replicas(
    current_replicas: int,
    target_percent: float,
    resource: str,
    pods: Sequence[Pod],
    metrics: Mapping[str, PodMetric],
    now: float,
    tolerances: Tolerances = Tolerances(),
    config: ControllerConfig = ControllerConfig(),
) -> tuple[int, int]:
    """Replicas for a Resource metric with a Utilization target; returns (replicas, utilization %).

    Mirrors `GetResourceReplicas`.
    """
    if not pods:
        raise MetricError("no pods returned by selector while calculating replica count")
    groups = group_pods(pods, metrics, resource, now, config)
    usage = {
        name: milli(sample.value)
        for name, sample in metrics.items()
        if name not in groups.ignored and name not in groups.unready
    }
    if not usage:
        raise MetricError("did not receive metrics for targeted pods (pods might be unready)")
    requests: dict[str, int] = {}
    for pod in pods:
        if resource not in pod.requests:
            raise MetricError(f"missing request for {resource}")
        requests[pod.name] = milli(pod.requests[resource])
    ratio, utilization = resource_utilization_ratio(usage, requests, target_percent)
    if not (groups.unready and ratio > 1.0) and not groups.missing:
        if tolerances.within(ratio):
            return current_replicas, utilization
        return math.ceil(ratio * groups.ready_count), utilization
    replicas = _recompute(
        current_replicas,
        usage,
        groups,
        ratio,
        requests,
        tolerances,
        lambda values: resource_utilization_ratio(values, requests, target_percent)[0],
    )
    return replicas, utilization


def plain_metric_replicas(
    current_replicas: int,
    target: float,
    resource: str,
    pods: Sequence[Pod],
    metrics: Mapping[str, PodMetric],
    now: float,
    tolerances: Tolerances = Tolerances(),
    config: ControllerConfig = ControllerConfig(),
) -> tuple[int, float]:
    """Replicas for a per-pod average target (Pods metrics, Resource AverageValue); returns (replicas, mean).

    Mirrors `calcPlainMetricReplicas`; `resource` is "" for Pods metrics, so readiness matters only for CPU.
    """
    if not pods:
        raise MetricError("no pods returned by selector while calculating replica count")
    groups = group_pods(pods, metrics, resource, now, config)
    usage = {
        name: milli(sample.value)
        for name, sample in metrics.items()
        if name not in groups.ignored and name not in groups.unready
    }
    if not usage:
        raise MetricError("did not receive metrics for targeted pods (pods might be unready)")
    target_milli = milli(target)
    ratio, average = plain_usage_ratio(usage, target_milli)
    if not (groups.unready and ratio > 1.0) and not groups.missing:
        if tolerances.within(ratio):
            return current_replicas, average / 1000.0
        return math.ceil(ratio * groups.ready_count), average / 1000.0
    replicas = _recompute(
        current_replicas,
        usage,
        groups,
        ratio,
        {name: target_milli for name in groups.missing},
        tolerances,
        lambda values: plain_usage_ratio(values, target_milli)[0],
    )
    return replicas, average / 1000.0


def ready_pod_count(pods: Sequence[Pod]) -> int:
    """Running pods whose Ready condition is true (`getReadyPodsCount`)."""
    if not pods:
        raise MetricError("no pods returned by selector while calculating replica count")
    return sum(1 for pod in pods if pod.phase == PodPhase.RUNNING and pod.ready is True)


def usage_ratio_replicas(
    current_replicas: int, ratio: float, pods: Sequence[Pod], tolerances: Tolerances = Tolerances()
) -> int:
    """Replicas for a whole-value target (Object/External Value): ratio times ready pods.

    With zero current replicas the tolerance and pod count are skipped so a target can scale from zero
    (`getUsageRatioReplicaCount`).
    """
    if current_replicas == 0:
        return math.ceil(ratio)
    if tolerances.within(ratio):
        return current_replicas
    return math.ceil(ratio * ready_pod_count(pods))


def per_pod_value_replicas(
    status_replicas: int, total: float, target_per_pod: float, tolerances: Tolerances = Tolerances()
) -> tuple[int, float]:
    """Replicas for an AverageValue target on an Object or External metric; returns (replicas, per pod).

    The total is divided by the target, with the tolerance judged against the current replica count
    (`GetObjectPerPodMetricReplicas`, `GetExternalPerPodMetricReplicas`).
    """
    total_milli = milli(total)
    target_milli = milli(target_per_pod)
    if status_replicas == 0:
        raise MetricError("an AverageValue target needs at least one current replica")
    ratio = total_milli / (target_milli * status_replicas)
    replicas = status_replicas
    if not tolerances.within(ratio):
        replicas = math.ceil(total_milli / target_milli)
    return replicas, math.ceil(total_milli / status_replicas) / 1000.0


@dataclass(frozen=True, slots=True)
class MetricResult:
    """One metric's proposal, or the error that kept it from making one."""

    spec: MetricSpec
    replicas: int | None
    current: float | None
    error: str = ""


def compute_replicas_for_metric(
    spec: MetricSpec,
    reading: MetricReading | None,
    pods: Sequence[Pod],
    spec_replicas: int,
    status_replicas: int,
    now: float,
    tolerances: Tolerances = Tolerances(),
    config: ControllerConfig = ControllerConfig(),
) -> MetricResult:
    """One metric's replica proposal (`computeReplicasForMetric`); `reading` None means the API failed."""
    try:
        if reading is None:
            raise MetricError(f"unable to get metric {spec.name}")
        if spec.type == MetricSourceType.RESOURCE and spec.target_type == TargetType.UTILIZATION:
            replicas, current = resource_utilization_replicas(
                spec_replicas, spec.target, spec.name, pods, reading.pods, now, tolerances, config
            )
            return MetricResult(spec, replicas, float(current))
        if spec.type in (MetricSourceType.RESOURCE, MetricSourceType.PODS):
            resource = spec.name if spec.type == MetricSourceType.RESOURCE else ""
            replicas, mean = plain_metric_replicas(
                spec_replicas, spec.target, resource, pods, reading.pods, now, tolerances, config
            )
            return MetricResult(spec, replicas, mean)
        total = reading.value if spec.type == MetricSourceType.OBJECT else sum(reading.values)
        if spec.target_type == TargetType.VALUE:
            ratio = milli(total) / milli(spec.target)
            return MetricResult(spec, usage_ratio_replicas(spec_replicas, ratio, pods, tolerances), total)
        replicas, per_pod = per_pod_value_replicas(status_replicas, total, spec.target, tolerances)
        return MetricResult(spec, replicas, per_pod)
    except MetricError as error:
        return MetricResult(spec, None, None, str(error))


@dataclass(frozen=True, slots=True)
class MetricsOutcome:
    """The combined proposal; `replicas` is None when failing metrics block this sync."""

    replicas: int | None
    metric: str
    results: tuple[MetricResult, ...]
    error: str = ""


def combine_metric_results(results: Sequence[MetricResult], spec_replicas: int) -> MetricsOutcome:
    """The largest proposal wins; failures block only when every metric failed or the rest would scale down.

    A failing metric therefore never blocks a scale-up (`computeReplicasForMetrics`).
    """
    replicas = 0
    metric = ""
    invalid = [result for result in results if result.replicas is None]
    for result in results:
        if result.replicas is not None and (replicas == 0 or result.replicas > replicas):
            replicas = result.replicas
            metric = result.spec.name
    error = ""
    if invalid:
        counts = f"{len(invalid)} invalid out of {len(results)}"
        error = f"invalid metrics ({counts}), first error is: {invalid[0].error}"
    if invalid and (len(invalid) >= len(results) or replicas < spec_replicas):
        return MetricsOutcome(None, "", tuple(results), error)
    return MetricsOutcome(replicas, metric, tuple(results), error)


# ---------------------------------------------------------------------------------------------------------
# horizontal.go: stabilization and rate limits


def stabilize_with_behaviors(
    desired: int,
    current: int,
    recommendations: Sequence[Recommendation],
    up_window: float,
    down_window: float,
    now: float,
) -> tuple[int, tuple[Recommendation, ...]]:
    """Hold the recommendation between the window's bounds; returns it and the updated history.

    A scale-up goes only as high as the lowest recommendation in the up window and a scale-down only as
    low as the highest in the down window; the unstabilized recommendation is recorded, reusing a slot
    older than both windows (`stabilizeRecommendationWithBehaviors`).
    """
    up_cutoff = now - up_window
    down_cutoff = now - down_window
    up_bound = desired
    down_bound = desired
    old_index = None
    for index, rec in enumerate(recommendations):
        if rec.timestamp > up_cutoff:
            up_bound = min(up_bound, rec.replicas)
        if rec.timestamp > down_cutoff:
            down_bound = max(down_bound, rec.replicas)
        if rec.timestamp < up_cutoff and rec.timestamp < down_cutoff:
            old_index = index
    recommendation = max(current, up_bound)
    recommendation = min(recommendation, down_bound)
    return recommendation, _record(recommendations, old_index, Recommendation(desired, now))


def stabilize_legacy(
    desired: int, recommendations: Sequence[Recommendation], window: float, now: float
) -> tuple[int, tuple[Recommendation, ...]]:
    """Without `behavior`: the highest recommendation of the downscale window (`stabilizeRecommendation`)."""
    cutoff = now - window
    highest = desired
    old_index = None
    for index, rec in enumerate(recommendations):
        if rec.timestamp < cutoff:
            old_index = index
        elif rec.replicas > highest:
            highest = rec.replicas
    return highest, _record(recommendations, old_index, Recommendation(desired, now))


def _record(history: Sequence, old_index: int | None, item: object) -> tuple:
    items = list(history)
    if old_index is None:
        items.append(item)
    else:
        items[old_index] = item
    return tuple(items)


def replicas_change_per_period(period_seconds: float, events: Sequence[ScaleEvent], now: float) -> int:
    """Replicas added (or removed) by events newer than the period (`getReplicasChangePerPeriod`)."""
    cutoff = now - period_seconds
    return sum(event.change for event in events if event.timestamp > cutoff)


def scale_up_limit(
    current: int,
    up_events: Sequence[ScaleEvent],
    down_events: Sequence[ScaleEvent],
    rules: ScalingRules,
    now: float,
) -> int:
    """The most replicas the scale-up policies allow now (`calculateScaleUpLimitWithScalingRules`).

    Each policy counts from the replicas at the start of its period (current, minus what was added, plus
    what was removed, within the period); Max picks the largest result, Min the smallest.
    """
    if rules.select_policy == SelectPolicy.DISABLED:
        return current
    proposals = []
    for policy in rules.policies or ():
        added = replicas_change_per_period(policy.period_seconds, up_events, now)
        removed = replicas_change_per_period(policy.period_seconds, down_events, now)
        period_start = current - added + removed
        if policy.type == PolicyType.PODS:
            proposals.append(period_start + policy.value)
        else:
            # Rounded up so that a small percentage still adds a pod.
            proposals.append(math.ceil(period_start * (1 + policy.value / 100)))
    if not proposals:
        return current
    return min(proposals) if rules.select_policy == SelectPolicy.MIN else max(proposals)


def scale_down_limit(
    current: int,
    up_events: Sequence[ScaleEvent],
    down_events: Sequence[ScaleEvent],
    rules: ScalingRules,
    now: float,
) -> int:
    """The fewest replicas the scale-down policies allow now (`calculateScaleDownLimitWithBehaviors`).

    Max (the largest change) picks the lowest result, Min the highest; Percent truncates.
    """
    if rules.select_policy == SelectPolicy.DISABLED:
        return current
    proposals = []
    for policy in rules.policies or ():
        added = replicas_change_per_period(policy.period_seconds, up_events, now)
        removed = replicas_change_per_period(policy.period_seconds, down_events, now)
        period_start = current - added + removed
        if policy.type == PolicyType.PODS:
            proposals.append(period_start - policy.value)
        else:
            proposals.append(int(period_start * (1 - policy.value / 100)))
    if not proposals:
        return current
    return max(proposals) if rules.select_policy == SelectPolicy.MIN else min(proposals)


def apply_behavior_rate(
    desired: int,
    current: int,
    min_replicas: int,
    max_replicas: int,
    up_events: Sequence[ScaleEvent],
    down_events: Sequence[ScaleEvent],
    behavior: Behavior,
    now: float,
) -> tuple[int, str]:
    """Clamp to the policies' limit and to min/max, in the scaling direction only.

    Returns (replicas, reason) (`convertDesiredReplicasWithBehaviorRate`).
    """
    assert behavior.scale_up is not None and behavior.scale_down is not None
    if desired > current:
        limit = max(scale_up_limit(current, up_events, down_events, behavior.scale_up, now), current)
        if max_replicas > limit:
            allowed, reason = limit, "ScaleUpLimit"
        else:
            allowed, reason = max_replicas, "TooManyReplicas"
        if desired > allowed:
            return allowed, reason
    elif desired < current:
        limit = min(scale_down_limit(current, up_events, down_events, behavior.scale_down, now), current)
        if min_replicas < limit:
            allowed, reason = limit, "ScaleDownLimit"
        else:
            allowed, reason = min_replicas, "TooFewReplicas"
        if desired < allowed:
            return allowed, reason
    return desired, "DesiredWithinRange"


def legacy_scale_up_limit(current: int) -> int:
    """Without `behavior`: at most double, and at least 4 (`calculateScaleUpLimit`)."""
    return int(max(SCALE_UP_LIMIT_FACTOR * current, SCALE_UP_LIMIT_MINIMUM))


def apply_legacy_rules(desired: int, current: int, min_replicas: int, max_replicas: int) -> tuple[int, str]:
    """Clamp to min, and to the lower of max and the legacy limit (`convertDesiredReplicasWithRules`)."""
    limit = legacy_scale_up_limit(current)
    if max_replicas > limit:
        allowed, reason = limit, "ScaleUpLimit"
    else:
        allowed, reason = max_replicas, "TooManyReplicas"
    if desired < min_replicas:
        return min_replicas, "TooFewReplicas"
    if desired > allowed:
        return allowed, reason
    return desired, "DesiredWithinRange"


def _longest_period(rules: ScalingRules) -> int:
    return max((policy.period_seconds for policy in rules.policies or ()), default=0)


def store_scale_event(
    state: HpaState, behavior: Behavior | None, previous: int, new: int, now: float
) -> HpaState:
    """Record a rescale, reusing a slot older than the direction's longest policy period (`storeScaleEvent`).

    Without `behavior` nothing is recorded, as nothing would read it.
    """
    if behavior is None or new == previous:
        return state
    up = new > previous
    rules = behavior.scale_up if up else behavior.scale_down
    assert rules is not None
    events = state.scale_up_events if up else state.scale_down_events
    cutoff = now - _longest_period(rules)
    marked = [replace(event, outdated=True) if event.timestamp < cutoff else event for event in events]
    old_index = None
    for index, event in enumerate(marked):
        if event.outdated:
            old_index = index
    updated = _record(marked, old_index, ScaleEvent(abs(new - previous), now))
    if up:
        return replace(state, scale_up_events=updated)
    return replace(state, scale_down_events=updated)


# ---------------------------------------------------------------------------------------------------------
# One sync of one HPA (`reconcileAutoscaler`)


@dataclass(frozen=True, slots=True)
class Reconciliation:
    """The outcome of one sync: the replicas to set, why, and the state to keep for the next sync."""

    desired_replicas: int
    rescale: bool
    reason: str
    state: HpaState
    metrics: MetricsOutcome | None = None
    # The metrics' proposal before stabilization and limits (0 when metrics were not consulted).
    recommended_replicas: int = 0
    stabilized_replicas: int = 0


def tolerances_for(behavior: Behavior | None, config: ControllerConfig) -> Tolerances:
    """Per-direction tolerances from `behavior` where set, else the controller flag."""
    down = up = config.tolerance
    if behavior is not None:
        if behavior.scale_down is not None and behavior.scale_down.tolerance is not None:
            down = behavior.scale_down.tolerance
        if behavior.scale_up is not None and behavior.scale_up.tolerance is not None:
            up = behavior.scale_up.tolerance
    return Tolerances(scale_down=down, scale_up=up)


def reconcile(
    hpa: HpaSpec,
    spec_replicas: int,
    readings: Sequence[MetricReading | None],
    pods: Sequence[Pod],
    state: HpaState,
    now: float,
    config: ControllerConfig = ControllerConfig(),
    status_replicas: int | None = None,
) -> Reconciliation:
    """One sync of one HPA: metrics, then stabilization and rate limits, then the scale event record.

    `readings` line up with `hpa.effective_metrics()`; None marks a metric the API failed to return.
    """
    status = spec_replicas if status_replicas is None else status_replicas
    min_replicas = hpa.min_replicas
    if spec_replicas == 0 and min_replicas != 0:
        return Reconciliation(
            0, False, "scaling is disabled since the replica count of the target is zero", state
        )
    if spec_replicas > hpa.max_replicas:
        desired, reason, outcome = hpa.max_replicas, "current number of replicas above max replicas", None
        recommended = stabilized = 0
    elif spec_replicas < min_replicas:
        desired, reason, outcome = min_replicas, "current number of replicas below min replicas", None
        recommended = stabilized = 0
    else:
        specs = hpa.effective_metrics()
        if len(readings) != len(specs):
            raise ValueError(f"{len(specs)} metric specs but {len(readings)} readings")
        behavior = behavior_with_defaults(hpa.behavior, config) if hpa.behavior is not None else None
        tolerances = tolerances_for(behavior, config)
        results = [
            compute_replicas_for_metric(spec, reading, pods, spec_replicas, status, now, tolerances, config)
            for spec, reading in zip(specs, readings, strict=True)
        ]
        outcome = combine_metric_results(results, spec_replicas)
        if outcome.replicas is None:
            return Reconciliation(spec_replicas, False, outcome.error, state, outcome)
        recommended = outcome.replicas
        if behavior is None:
            stabilized, history = stabilize_legacy(
                recommended, state.recommendations, config.downscale_stabilization_window, now
            )
            desired, reason = apply_legacy_rules(stabilized, spec_replicas, min_replicas, hpa.max_replicas)
        else:
            assert behavior.scale_up is not None and behavior.scale_down is not None
            stabilized, history = stabilize_with_behaviors(
                recommended,
                spec_replicas,
                state.recommendations,
                float(behavior.scale_up.stabilization_window_seconds or 0),
                float(behavior.scale_down.stabilization_window_seconds or 0),
                now,
            )
            desired, reason = apply_behavior_rate(
                stabilized,
                spec_replicas,
                min_replicas,
                hpa.max_replicas,
                state.scale_up_events,
                state.scale_down_events,
                behavior,
                now,
            )
        state = replace(state, recommendations=history)
        limit = reason
        # The rescale reasons the Kubernetes controller gives, with the limit that shaped the result.
        if desired > spec_replicas:
            reason = f"{outcome.metric} above target ({limit})"
        elif desired < spec_replicas:
            reason = f"all metrics below target ({limit})"
    rescale = desired != spec_replicas
    if rescale:
        behavior_for_events = behavior_with_defaults(hpa.behavior, config) if hpa.behavior else None
        state = store_scale_event(state, behavior_for_events, spec_replicas, desired, now)
    return Reconciliation(desired, rescale, reason, state, outcome, recommended, stabilized)
