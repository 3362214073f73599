"""`kpa`: a Knative-style (KPA) concurrency autoscaler with a stable and a panic window.

Written against the public API only, after the Knative Serving autoscaler's documented behaviour (no code
copied). Per service, every tick:

* the observed concurrency (`view.stats(name).concurrency`, requests in flight by Little's law over the
  telemetry window) is appended to the controller's own time series;
* the stable-window average (default 60 s) and the panic-window average (default 10 % of it, 6 s) of that
  series are divided by the target concurrency per pod (container concurrency 100 x target utilization 0.7
  = 70) and rounded up: the desired pod counts in stable and in panic mode;
* both counts are limited per decision to `[floor(ready / max_scale_down_rate), ceil(ready *
  max_scale_up_rate)]` (defaults 2 and 1000), with `ready` the ready pods (at least 1);
* panic mode starts when the panic-window concurrency per ready pod reaches the panic threshold (200 % of
  the target) and ends once a whole stable window has passed without the threshold being reached again; in
  panic the panic-window count is used and the service is never scaled down;
* a service whose stable-window average is zero (no request for a whole stable window) is scaled to zero
  once that has held for the grace period (default 30 s), as Knative keeps the last pod for
  `scale-to-zero-grace-period`; the floor is the inventory's `min_replicas`, so only services that allow
  zero replicas are ever scaled to zero;
* a service at zero replicas that sees a request is activated: scaled to at least one replica.

Differences from Knative: the concurrency comes from traces (already averaged over the telemetry window,
which smooths the panic window by that much) rather than from queue-proxy metrics scraped every second;
samples are taken once per tick (`period_seconds`, 2 s as Knative's decider), and a window average is the
plain mean of the samples that fall inside it (the newest is always inside).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

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
)


@dataclass
class _ServiceState:
    """What the autoscaler remembers about one service between ticks."""

    samples: deque[tuple[float, float]] = field(default_factory=deque)  # (time, concurrency)
    panic_since: float | None = None  # last time the panic threshold was reached while in panic mode
    max_panic_pods: int = 0
    zero_since: float | None = None  # when the desired count first became zero

    def record(self, now: float, concurrency: float, keep_seconds: float) -> None:
        self.samples.append((now, concurrency))
        while self.samples and self.samples[0][0] <= now - keep_seconds:
            self.samples.popleft()

    def average(self, now: float, window_seconds: float) -> float:
        inside = [value for at, value in self.samples if at > now - window_seconds]
        return sum(inside) / len(inside) if inside else 0.0

    @property
    def panicking(self) -> bool:
        return self.panic_since is not None


class KnativeAutoscaler(Controller):
    """Scale each service to keep its average concurrency per pod at a target, Knative KPA style."""

    name = "kpa"
    description = (
        "Knative-style concurrency autoscaler: stable and panic windows, scale-rate limits, scale to zero."
    )
    # Locus: Knative runs one autoscaler process, but it keeps one independent decider per revision that
    # reads only that revision's own concurrency; this controller likewise decides for every service alone
    # from the service's own signal, with no view of the call graph, so it is decentralized in the survey's
    # sense. Telemetry: it reads concurrency derived from traces (Knative reads queue-proxy metrics).
    # Evidence: the algorithm is Knative's, run in production; this reimplementation has only unit tests.
    taxonomy = Taxonomy.of(
        ControlLocus.DECENTRALIZED,
        Strategy.RULE,
        dynamics=[Dynamics.WORKLOAD],
        evidence=[Evidence.PRODUCTION],
        objectives=[Objective.LATENCY_SLO, Objective.COST],
        telemetry=[Telemetry.TRACES],
        actions=[ActionKind.AUTOSCALING],
    )
    period_seconds = 2.0
    time_budget_seconds = 1.0

    @dataclass(frozen=True)
    class Parameters:
        """Settings from `[controllers.kpa.params]`; defaults are Knative's."""

        # Requests one pod may serve at once, and the fraction of it to aim for (target 100 x 0.7 = 70).
        container_concurrency: float = 100.0
        target_utilization: float = 0.7
        stable_window_seconds: float = 60.0
        # The panic window as a percentage of the stable window (10 % of 60 s = 6 s).
        panic_window_percentage: float = 10.0
        # Panic when the panic-window concurrency per ready pod reaches this percentage of the target.
        panic_threshold_percentage: float = 200.0
        # Per decision, at most ceil(ready x up rate) and at least floor(ready / down rate) pods.
        max_scale_up_rate: float = 1000.0
        max_scale_down_rate: float = 2.0
        enable_scale_to_zero: bool = True
        # How long the desired count must have been zero before the last pod is removed.
        scale_to_zero_grace_seconds: float = 30.0

    def __init__(self, params: Parameters | None = None) -> None:
        super().__init__(params)
        self._state: dict[str, _ServiceState] = {}

    @property
    def target_per_pod(self) -> float:
        """The concurrency per pod the autoscaler aims for."""
        return self.params.container_concurrency * self.params.target_utilization

    @property
    def panic_window_seconds(self) -> float:
        return self.params.stable_window_seconds * self.params.panic_window_percentage / 100.0

    def panicking(self, service: str) -> bool:
        """Whether the service is in panic mode (for inspection and tests)."""
        state = self._state.get(service)
        return state is not None and state.panicking

    async def decide(self, view: TelemetryView) -> list[Action]:
        services = view.inventory.services
        for gone in set(self._state) - set(services):
            del self._state[gone]
        proposals: list[Action] = []
        for name in sorted(services):
            action = self._decide_service(view, name, services[name])
            if action is not None:
                proposals.append(action)
        return proposals

    def _decide_service(self, view: TelemetryView, name: str, inventory: ServiceInventory) -> Scale | None:
        params = self.params
        now = view.now
        stats = view.stats(name)
        concurrency = max(stats.concurrency, 0.0) if stats is not None else 0.0
        requests = stats.requests if stats is not None else 0
        state = self._state.setdefault(name, _ServiceState())
        state.record(now, concurrency, params.stable_window_seconds)

        target = self.target_per_pod
        current = inventory.replicas
        ready = inventory.ready_replicas if inventory.ready_replicas is not None else current
        ready_count = max(1, ready)
        stable_average = state.average(now, params.stable_window_seconds)
        panic_average = state.average(now, self.panic_window_seconds)
        max_up = math.ceil(params.max_scale_up_rate * ready_count)
        max_down = math.floor(ready_count / params.max_scale_down_rate)
        stable_pods = min(max(math.ceil(stable_average / target), max_down), max_up)
        panic_pods = min(max(math.ceil(panic_average / target), max_down), max_up)

        over_threshold = panic_average / (target * ready_count) >= params.panic_threshold_percentage / 100.0
        if over_threshold:
            if not state.panicking:
                state.max_panic_pods = max(current, ready)
            state.panic_since = now
        elif state.panicking and now - state.panic_since >= params.stable_window_seconds:
            state.panic_since = None
            state.max_panic_pods = 0

        if state.panicking:
            desired = max(panic_pods, state.max_panic_pods)  # never scale down in panic
            state.max_panic_pods = desired
            mode = "panic"
        else:
            desired = stable_pods
            mode = "stable"

        activated = current == 0 and (requests > 0 or concurrency > 0)
        if activated:
            desired = max(desired, 1)
        if desired == 0:
            if state.zero_since is None:
                state.zero_since = now
            if current > 0 and now - state.zero_since < params.scale_to_zero_grace_seconds:
                desired = 1  # keep the last pod through the grace period
        else:
            state.zero_since = None

        floor = inventory.min_replicas if params.enable_scale_to_zero else max(1, inventory.min_replicas)
        desired = min(max(desired, floor), inventory.max_replicas)
        if desired == current:
            return None
        if activated:
            reason = f"activation: {requests} request(s) reached {name} at zero replicas"
        elif desired == 0:
            reason = (
                f"no traffic for the {params.stable_window_seconds:g} s stable window"
                f" and the {params.scale_to_zero_grace_seconds:g} s grace period: scale to zero"
            )
        else:
            window = params.stable_window_seconds if mode == "stable" else self.panic_window_seconds
            average = stable_average if mode == "stable" else panic_average
            reason = (
                f"{mode} mode: mean concurrency {average:.1f} over {window:g} s"
                f" at a target of {target:g} per pod wants {desired} replica(s), has {current}"
            )
        return Scale(
            target=name,
            replicas=desired,
            reason=reason,
            evidence={
                "mode": mode,
                "observed_concurrency": concurrency,
                "stable_concurrency": stable_average,
                "panic_concurrency": panic_average,
                "target_per_pod": target,
                "ready_pods": ready,
                "current_replicas": current,
                "desired_stable_pods": stable_pods,
                "desired_panic_pods": panic_pods,
                "max_scale_up": max_up,
                "max_scale_down": max_down,
                "activated": activated,
            },
        )
