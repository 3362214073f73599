"""Sampled traces still give the right rates: spans carrying an OpenTelemetry `ot=th:` threshold count by
their adjusted count (telemetry/sampling.py).

The sampled side is made by the real OpenTelemetry SDK: a consistent probability sampler (a `Sampler` that
keeps a trace when the 56 low bits of its id reach the rejection threshold and writes `ot=th:` into the
tracestate, as the specification's samplers do) on a `TracerProvider`, encoded by the SDK's OTLP encoder.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import pytest
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult
from opentelemetry.trace import SpanKind, Status, StatusCode, TraceState

from telemetry import ModelConfig, TelemetryModel
from telemetry.sampling import MAX_THRESHOLD, adjusted_count, span_weight, threshold_for

NOW = 1_700_000_000.0
TRACES = 6000
ERROR_EVERY = 10  # one request in ten fails at the backend


class ConsistentProbabilitySampler(Sampler):
    """Keeps a trace when its randomness (56 low bits of the id) reaches the threshold; children follow."""

    def __init__(self, probability: float) -> None:
        self.th = threshold_for(probability)
        self.threshold = int(self.th.ljust(14, "0"), 16)

    def should_sample(  # the SDK's Sampler signature
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: object = None,
        links: object = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        parent = trace.get_current_span(parent_context).get_span_context()
        if parent.is_valid:
            decision = Decision.RECORD_AND_SAMPLE if parent.trace_flags.sampled else Decision.DROP
            return SamplingResult(decision, None, parent.trace_state)
        if trace_id & (MAX_THRESHOLD - 1) < self.threshold:
            return SamplingResult(Decision.DROP)
        return SamplingResult(Decision.RECORD_AND_SAMPLE, None, TraceState([("ot", f"th:{self.th}")]))

    def get_description(self) -> str:
        return f"ConsistentProbabilitySampler({self.th})"


class Collected(SpanExporter):
    def __init__(self) -> None:
        self.spans: list[ReadableSpan] = []

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.spans.extend(spans)
        return SpanExportResult.SUCCESS


class SeededIds(RandomIdGenerator):
    """Random ids from a seeded generator, so both runs see the same traces."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def generate_span_id(self) -> int:
        return self.rng.getrandbits(64) or 1

    def generate_trace_id(self) -> int:
        return self.rng.getrandbits(128) or 1


def traced_model(probability: float) -> TelemetryModel:
    """`TRACES` requests frontend -> backend through the SDK, sampled at `probability`, into a fresh model."""
    collected = Collected()
    providers = {}
    for service in ("frontend", "backend"):
        provider = TracerProvider(
            resource=Resource.create({"service.name": service}),
            sampler=ConsistentProbabilitySampler(probability),
            id_generator=SeededIds(7 if service == "frontend" else 8),
        )
        provider.add_span_processor(SimpleSpanProcessor(collected))
        providers[service] = provider.get_tracer("test")
    latencies = random.Random(3)
    for index in range(TRACES):
        start = 1_000_000_000 * index
        with providers["frontend"].start_as_current_span(
            "GET /home", kind=SpanKind.SERVER, start_time=start, end_on_exit=False
        ) as root:
            with providers["backend"].start_as_current_span(
                "GET /data", kind=SpanKind.SERVER, start_time=start, end_on_exit=False
            ) as child:
                if index % ERROR_EVERY == 0:
                    child.set_status(Status(StatusCode.ERROR))
                child.end(end_time=start + int(latencies.lognormvariate(2.0, 0.5) * 1e6))
            root.end(end_time=start + 50_000_000)
    model = TelemetryModel(ModelConfig(window_seconds=60.0, link_ttl_seconds=600.0), clock=lambda: NOW)
    model.ingest(encode_spans(collected.spans), now=NOW)
    model.flush(now=NOW)
    return model


@pytest.fixture(scope="module")
def full_snapshot():
    return traced_model(1.0).snapshot(now=NOW + 0.5)


@pytest.mark.parametrize("probability", [0.1, 0.3])
def test_sampled_rates_match_unsampled(full_snapshot, probability: float) -> None:
    sampled = traced_model(probability).snapshot(now=NOW + 0.5)
    for name in ("frontend", "backend"):
        full, seen = full_snapshot.node(name), sampled.node(name)
        assert full.requests_total == TRACES
        # Binomial noise of a 10% sample of 6000: sd ~ 3%; 15% is five of them.
        assert seen.requests_total == pytest.approx(TRACES, rel=0.15)
    edge_full = full_snapshot.edge("frontend", "backend")
    edge_seen = sampled.edge("frontend", "backend")
    assert edge_full.calls_total == TRACES
    assert edge_seen.calls_total == pytest.approx(TRACES, rel=0.15)
    assert edge_seen.errors_total == pytest.approx(TRACES / ERROR_EVERY, rel=0.5)
    # Latency quantiles need no weights: a uniform sample keeps the distribution.
    full_p50 = full_snapshot.node("backend").stats.p50_ms
    assert sampled.node("backend").stats.p50_ms == pytest.approx(full_p50, rel=0.1)


def test_unsampled_spans_without_threshold_count_once() -> None:
    model = traced_model(1.0)
    # th:0 is "keep everything": an adjusted count of exactly one.
    assert threshold_for(1.0) == "0"
    assert model.snapshot(now=NOW + 0.5).node("backend").requests_total == TRACES


@pytest.mark.parametrize("probability", [1.0, 0.5, 0.25, 0.1, 0.3, 1 / 3, 0.01])
def test_threshold_round_trip(probability: float) -> None:
    assert adjusted_count(f"ot=th:{threshold_for(probability)}") == pytest.approx(1 / probability, rel=1e-9)
    assert adjusted_count(f"vendor=x,ot=rv:abcdef01234567;th:{threshold_for(probability)}") == pytest.approx(
        1 / probability, rel=1e-9
    )


@pytest.mark.parametrize(
    "trace_state",
    ["", "vendor=x", "ot=th:", "ot=th:zz", "ot=th:123456789abcdef0", "ot=rv:12", "not a header,,"],
)
def test_malformed_or_absent_thresholds_count_once(trace_state: str) -> None:
    assert adjusted_count(trace_state) == 1.0


def test_fractional_counts_round_without_bias() -> None:
    rng = random.Random(5)
    weights = [span_weight(10 / 3, rng.getrandbits(64).to_bytes(8, "big")) for _ in range(30_000)]
    assert set(weights) == {3, 4}
    assert sum(weights) / len(weights) == pytest.approx(10 / 3, rel=0.01)
    assert span_weight(10 / 3, b"\x00" * 8) == span_weight(10 / 3, b"\x00" * 8)
    assert span_weight(10.000000000000002, b"\xff" * 8) == 10
