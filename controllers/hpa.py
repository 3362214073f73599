"""`hpa`: the Kubernetes HorizontalPodAutoscaler (autoscaling/v2), one HPA object per service.

The algorithm lives in `controllers.hpa_core` as pure functions over plain data; this module feeds it from
the `TelemetryView` each tick and keeps, per service, what the Kubernetes controller keeps per HPA object
between syncs: the recommendation history (stabilization windows) and the scale events (policy periods).

Traces carry no per-pod CPU, so each service's pods are modelled from the inventory: `ready_replicas`
running, ready pods, and the rest pending (not yet started, so without metrics). The metric is one of:

* `concurrency` (default): a Pods metric, in-flight requests per pod, with an AverageValue target. The
  window's Little's-law concurrency (request rate x mean latency) is spread evenly over the ready pods.
* `cpu`: a Resource metric with a Utilization target. Per-pod CPU usage is *approximated* as the pod's
  share of that concurrency in cores, i.e. it assumes every in-flight request keeps one core busy. That
  overstates usage for requests that wait on I/O or on downstream calls and understates it for
  multi-threaded work; it is a proxy, not a measurement. It needs `cpu_request` in the inventory.

Scale events are recorded when a scale is proposed, as the Kubernetes controller records them when it
updates the scale subresource; a proposal the coordinator rejects is still counted against the policies.
"""

from __future__ import annotations

from dataclasses import dataclass

from controllers.hpa_core import (
    Behavior,
    ControllerConfig,
    HpaSpec,
    HpaState,
    MetricReading,
    MetricSourceType,
    MetricSpec,
    Pod,
    PodMetric,
    PodPhase,
    PolicyType,
    ScalingPolicy,
    ScalingRules,
    SelectPolicy,
    TargetType,
    reconcile,
)
from controlplane import (
    Action,
    ActionKind,
    Controller,
    ControlLocus,
    Dynamics,
    Evidence,
    Objective,
    Scale,
    ServiceInventory,
    Strategy,
    Taxonomy,
    Telemetry,
    TelemetryView,
    WindowSummary,
)

METRICS = ("concurrency", "cpu")


class HorizontalPodAutoscaler(Controller):
    """Propose `Scale` for every service whose HPA computes a replica count different from the current one."""

    name = "hpa"
    description = (
        "Kubernetes HPA (autoscaling/v2): ratio to a per-replica target with 10% tolerance, behavior "
        "policies and stabilization windows, over trace-derived concurrency or a CPU proxy."
    )
    # A threshold-and-ratio rule; it holds utilization at a target, which trades replicas (cost) for
    # headroom (throughput) and reads no latency. Its input is an aggregated per-pod metric, derived here
    # from traces. The evidence is the Kubernetes HPA's own: it runs in production everywhere.
    taxonomy = Taxonomy.of(
        ControlLocus.CENTRALIZED,
        Strategy.RULE,
        dynamics=[Dynamics.WORKLOAD],
        evidence=[Evidence.PRODUCTION],
        objectives=[Objective.COST, Objective.THROUGHPUT],
        telemetry=[Telemetry.METRICS, Telemetry.TRACES],
        actions=[ActionKind.AUTOSCALING],
    )
    # The HPA sync period (--horizontal-pod-autoscaler-sync-period).
    period_seconds = 15.0
    time_budget_seconds = 1.0

    @dataclass(frozen=True)
    class Parameters:
        """Settings from `[controllers.hpa.params]`; the behavior defaults are Kubernetes' own."""

        # Services to autoscale; empty means every service in the inventory.
        services: tuple[str, ...] = ()
        # "concurrency" (Pods metric, AverageValue) or "cpu" (Resource metric, Utilization; a proxy).
        metric: str = "concurrency"
        target_concurrency_per_replica: float = 1.0
        target_cpu_utilization: int = 80
        tolerance: float = 0.1
        # False: no `behavior`, the legacy path (300 s downscale stabilization, scale up at most 2x or 4).
        behavior: bool = True
        scale_up_stabilization_seconds: int = 0
        scale_up_pods: int = 4
        scale_up_percent: int = 100
        scale_up_period_seconds: int = 15
        scale_up_select_policy: str = "Max"
        scale_down_stabilization_seconds: int = 300
        # 0 leaves out the Pods policy (the Kubernetes default scales down by Percent only).
        scale_down_pods: int = 0
        scale_down_percent: int = 100
        scale_down_period_seconds: int = 15
        scale_down_select_policy: str = "Max"
        cpu_initialization_period_seconds: float = 300.0
        initial_readiness_delay_seconds: float = 30.0

    def __init__(self, params: Parameters | None = None) -> None:
        super().__init__(params)
        p = self.params
        if p.metric not in METRICS:
            raise ValueError(f"controller hpa: metric must be one of {METRICS}, got {p.metric!r}")
        self._config = ControllerConfig(
            tolerance=p.tolerance,
            cpu_initialization_period=p.cpu_initialization_period_seconds,
            delay_of_initial_readiness_status=p.initial_readiness_delay_seconds,
            downscale_stabilization_window=float(p.scale_down_stabilization_seconds),
        )
        self._behavior = self._build_behavior() if p.behavior else None
        self._spec = (
            MetricSpec(
                MetricSourceType.PODS,
                "concurrency",
                TargetType.AVERAGE_VALUE,
                p.target_concurrency_per_replica,
            )
            if p.metric == "concurrency"
            else MetricSpec(
                MetricSourceType.RESOURCE, "cpu", TargetType.UTILIZATION, p.target_cpu_utilization
            )
        )
        # Per service, as the Kubernetes controller keeps per HPA object.
        self._states: dict[str, HpaState] = {}

    def _build_behavior(self) -> Behavior:
        p = self.params
        up = [ScalingPolicy(PolicyType.PERCENT, p.scale_up_percent, p.scale_up_period_seconds)]
        if p.scale_up_pods > 0:
            up.insert(0, ScalingPolicy(PolicyType.PODS, p.scale_up_pods, p.scale_up_period_seconds))
        down = [ScalingPolicy(PolicyType.PERCENT, p.scale_down_percent, p.scale_down_period_seconds)]
        if p.scale_down_pods > 0:
            down.append(ScalingPolicy(PolicyType.PODS, p.scale_down_pods, p.scale_down_period_seconds))
        return Behavior(
            scale_up=ScalingRules(
                policies=tuple(up),
                select_policy=SelectPolicy(p.scale_up_select_policy),
                stabilization_window_seconds=p.scale_up_stabilization_seconds,
            ),
            scale_down=ScalingRules(
                policies=tuple(down),
                select_policy=SelectPolicy(p.scale_down_select_policy),
                stabilization_window_seconds=p.scale_down_stabilization_seconds,
            ),
        )

    def state(self, service: str) -> HpaState:
        """The recommendation history and scale events kept for one service."""
        return self._states.get(service, HpaState())

    async def decide(self, view: TelemetryView) -> list[Action]:
        inventory = view.inventory.services
        wanted = tuple(self.params.services) or tuple(sorted(inventory))
        # An HPA whose target is gone is deleted, and its history with it.
        for gone in set(self._states) - set(inventory):
            del self._states[gone]
        proposals: list[Action] = []
        for service in wanted:
            known = inventory.get(service)
            if known is None:
                continue
            proposal = self._decide_service(known, view.stats(service), view.now)
            if proposal is not None:
                proposals.append(proposal)
        return proposals

    def _decide_service(
        self, known: ServiceInventory, stats: WindowSummary | None, now: float
    ) -> Scale | None:
        pods, reading = model_pods(known, stats, now)
        hpa = HpaSpec(
            max_replicas=known.max_replicas,
            min_replicas=known.min_replicas,
            metrics=(self._spec,),
            behavior=self._behavior,
        )
        result = reconcile(hpa, known.replicas, [reading], pods, self.state(known.name), now, self._config)
        self._states[known.name] = result.state
        if not result.rescale:
            return None
        evidence: dict[str, float | int | str | bool] = {
            "metric": self._spec.name,
            "metric_type": self._spec.type.value,
            "target": self._spec.target,
            "current_replicas": known.replicas,
            "ready_replicas": len([pod for pod in pods if pod.phase == PodPhase.RUNNING]),
            "recommended_replicas": result.recommended_replicas,
            "stabilized_replicas": result.stabilized_replicas,
            "desired": result.desired_replicas,
            "min_replicas": known.min_replicas,
            "max_replicas": known.max_replicas,
            "legacy_limits": self._behavior is None,
        }
        current = result.metrics.results[0].current if result.metrics else None
        if current is not None:
            evidence["current"] = current
            evidence["ratio"] = current / self._spec.target
        if stats is not None:
            evidence["concurrency"] = stats.concurrency
            evidence["request_rate"] = stats.request_rate
        measured = (
            f"{self._spec.name} {current:g} vs target {self._spec.target:g}; " if current is not None else ""
        )
        return Scale(
            target=known.name,
            replicas=result.desired_replicas,
            reason=f"hpa: {measured}{result.reason}: {known.replicas} -> {result.desired_replicas} replicas",
            evidence=evidence,
        )


def model_pods(
    known: ServiceInventory, stats: WindowSummary | None, now: float
) -> tuple[list[Pod], MetricReading | None]:
    """The service's pods as the HPA would list them, and the metric reading for them.

    Ready replicas are running pods started long enough ago that CPU readiness rules do not hold them
    back (their start times are unknown); the other replicas are pending. The window's concurrency is
    shared evenly by the ready pods; without a window there is no reading, as with a failed metrics API.
    """
    ready = (
        known.replicas if known.ready_replicas is None else max(0, min(known.ready_replicas, known.replicas))
    )
    requests = {"cpu": known.cpu_request} if known.cpu_request > 0 else {}
    long_ago = now - 86_400.0
    pods = [
        Pod(
            name=f"{known.name}-{index}",
            phase=PodPhase.RUNNING if index < ready else PodPhase.PENDING,
            ready=index < ready,
            start_time=long_ago if index < ready else None,
            ready_transition_time=long_ago,
            requests=requests,
        )
        for index in range(known.replicas)
    ]
    if stats is None:
        return pods, None
    per_pod = stats.concurrency / ready if ready else 0.0
    # In the cpu mode the same per-pod number is read as cores (the proxy described above).
    samples = {pod.name: PodMetric(per_pod, now, stats.window_seconds) for pod in pods[:ready]}
    return pods, MetricReading(pods=samples)
