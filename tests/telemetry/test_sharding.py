"""Shards that each aggregate part of the traffic (split by trace id) merge into the model of all of it."""

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from bench.tracegen import TraceGenerator, layered_topology
from telemetry import ModelConfig, TelemetryModel, WindowSummary


def _split_by_trace(request: ExportTraceServiceRequest, shards: int) -> list[ExportTraceServiceRequest]:
    parts = [ExportTraceServiceRequest() for _ in range(shards)]
    for resource_spans in request.resource_spans:
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                part = parts[span.trace_id[-1] % shards]
                target = part.resource_spans.add()
                target.resource.CopyFrom(resource_spans.resource)
                target.scope_spans.add().spans.append(span)
    return parts


def test_merged_shards_equal_one_model_of_everything() -> None:
    generator = TraceGenerator(
        layered_topology(service_count=22, depth=5, seed=11), seed=11, error_ratio=0.05
    )
    config = ModelConfig(bucket_seconds=1.0, window_seconds=30.0)
    clock = {"now": 1_000.0}
    whole = TelemetryModel(config, clock=lambda: clock["now"])
    shards = [TelemetryModel(config, clock=lambda: clock["now"]) for _ in range(3)]
    for step in range(12):
        clock["now"] = 1_000.0 + step * 0.7
        request = generator.request(min_traces=15)
        whole.ingest(request)
        for shard, part in zip(shards, _split_by_trace(request, 3), strict=True):
            shard.ingest(part)
    for model in (whole, *shards):
        model.flush()
    merged = shards[0].aggregates
    for shard in shards[1:]:
        merged.merge(shard.aggregates)
    expected = whole.snapshot()
    got = TelemetryModel(config, clock=lambda: clock["now"])
    got.aggregates = merged
    got.spans_accepted = sum(shard.spans_accepted for shard in shards)
    snapshot = got.snapshot()
    assert snapshot.spans_accepted == expected.spans_accepted
    assert len(expected.edges) > 20
    assert [node.name for node in snapshot.nodes] == [node.name for node in expected.nodes]
    assert [(e.source, e.target) for e in snapshot.edges] == [(e.source, e.target) for e in expected.edges]
    for got_edge, expected_edge in zip(snapshot.edges, expected.edges, strict=True):
        _assert_same(got_edge.stats, expected_edge.stats)
        assert (got_edge.calls_total, got_edge.errors_total) == (
            expected_edge.calls_total,
            expected_edge.errors_total,
        )
    pairs = list(zip(snapshot.nodes, expected.nodes, strict=True))
    for node_a, node_b in zip(snapshot.nodes, expected.nodes, strict=True):
        pairs += list(zip(node_a.operations, node_b.operations, strict=True))
    for got_item, expected_item in pairs:
        _assert_same(got_item.stats, expected_item.stats)
        assert got_item.requests_total == expected_item.requests_total
        assert got_item.errors_total == expected_item.errors_total


def _assert_same(got: WindowSummary, expected: WindowSummary) -> None:
    # Counts and sketch quantiles merge exactly; float sums differ only by summation order.
    assert (got.requests, got.errors, got.p50_ms, got.p95_ms, got.p99_ms) == (
        expected.requests,
        expected.errors,
        expected.p50_ms,
        expected.p95_ms,
        expected.p99_ms,
    )
    assert got.mean_ms == pytest.approx(expected.mean_ms, rel=1e-9)
    assert got.concurrency == pytest.approx(expected.concurrency, rel=1e-9)
    assert got.request_rate == pytest.approx(expected.request_rate, rel=1e-9)
