"""The control plane's own Prometheus metrics, served on its HTTP port at `/metrics` (prometheus-client).

Counters that the ingest path already keeps (spans accepted and rejected, queue depth, controller faults)
are read when Prometheus scrapes, by a custom collector, so the hot path pays nothing for them. What only
the control loop sees (tick durations per controller, decisions by status) is recorded as it happens.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass(frozen=True, slots=True)
class ControllerHealth:
    """What the collector reports per controller."""

    name: str
    faults_total: int
    quarantined: bool
    mode: str


class _StateCollector(Collector):
    def __init__(self, metrics: ControlPlaneMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        state = self.metrics
        spans = CounterMetricFamily(
            "controlplane_spans", "Spans received by the OTLP receivers", labels=["result"]
        )
        accepted, rejected = state.span_counts()
        spans.add_metric(["accepted"], accepted)
        spans.add_metric(["rejected"], rejected)
        yield spans
        queue_bytes = GaugeMetricFamily("controlplane_ingest_queue_bytes", "Request bytes waiting for ingest")
        queue_bytes.add_metric([], state.queue_bytes())
        yield queue_bytes
        refused = CounterMetricFamily(
            "controlplane_ingest_refused_requests", "Export requests refused because ingest was behind"
        )
        refused.add_metric([], state.refused_requests())
        yield refused
        faults = CounterMetricFamily(
            "controlplane_controller_faults", "Controller faults", labels=["controller"]
        )
        quarantined = GaugeMetricFamily(
            "controlplane_controller_quarantined",
            "1 while a controller is quarantined",
            labels=["controller"],
        )
        for health in state.controller_health():
            faults.add_metric([health.name], health.faults_total)
            quarantined.add_metric([health.name], 1.0 if health.quarantined else 0.0)
        yield faults
        yield quarantined
        capped = CounterMetricFamily(
            "controlplane_model_capped",
            "Observations a model cap cut or folded into an overflow node (docs/limits.md)",
            labels=["what"],
        )
        for what, count in sorted(state.caps_counts().items()):
            capped.add_metric([what], count)
        yield capped


class ControlPlaneMetrics:
    """One registry per server (tests run several servers in one process)."""

    def __init__(
        self,
        span_counts: Callable[[], tuple[int, int]],
        queue_bytes: Callable[[], int],
        refused_requests: Callable[[], int],
        controller_health: Callable[[], list[ControllerHealth]] = list,
        caps_counts: Callable[[], Mapping[str, int]] = dict,
    ) -> None:
        self.caps_counts = caps_counts
        self.span_counts = span_counts
        self.queue_bytes = queue_bytes
        self.refused_requests = refused_requests
        self.controller_health = controller_health
        # No auto-describe: collecting at registration would read server state before it exists.
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_StateCollector(self))
        self.tick_seconds = Histogram(
            "controlplane_controller_decide_seconds",
            "Time a controller's decide took, per run",
            ["controller"],
            registry=self.registry,
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
        )
        self.loop_tick_seconds = Histogram(
            "controlplane_tick_seconds",
            "Time from view snapshot to stored decisions, per control-loop tick",
            registry=self.registry,
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
        )
        self.decisions = Counter(
            "controlplane_decisions", "Decisions made, by status", ["status"], registry=self.registry
        )

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
