"""Sliding windows: counts, rates, Little's law, incremental sums, merging, retention and versions."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from telemetry.windows import WindowedStats


def _stats(now: float = 0.0) -> WindowedStats:
    return WindowedStats(bucket_seconds=1.0, bucket_count=10, relative_accuracy=0.01, now=now)


def test_window_counts_rates_errors_and_littles_law() -> None:
    stats = _stats(now=100.0)
    for second in range(100, 110):
        for _ in range(5):
            stats.record(second + 0.5, latency_ms=200.0, error=False)
        stats.record(second + 0.5, latency_ms=200.0, error=True)
    # The window is whole buckets ending with the current one: at 109.999 it spans 100..109.999.
    summary = stats.summary(now=109.999, window_seconds=10.0)
    assert summary.requests == 60
    assert summary.errors == 10
    assert summary.request_rate == pytest.approx(6.0, rel=1e-3)
    assert summary.error_rate == pytest.approx(10 / 60)
    assert summary.p50_ms == pytest.approx(200.0, rel=0.01)
    # 6 requests/s each taking 0.2 s: 1.2 in flight on average.
    assert summary.concurrency == pytest.approx(1.2, rel=1e-3)
    assert (stats.requests_total, stats.errors_total) == (60, 10)


def test_old_buckets_leave_the_window_but_totals_remain() -> None:
    stats = _stats()
    stats.record(0.5, 10.0, False)
    stats.record(30.5, 10.0, True)
    summary = stats.summary(now=31.0, window_seconds=10.0)
    assert summary.requests == 1
    assert summary.errors == 1
    assert stats.requests_total == 2
    assert len(stats.buckets) == 1  # the ring dropped the bucket 30 s back


def test_a_shorter_window_sees_only_recent_buckets() -> None:
    stats = _stats()
    for second in range(10):
        stats.record(second + 0.1, latency_ms=float(second + 1), error=False)
    assert stats.summary(now=9.5, window_seconds=3.0).requests == 3
    assert stats.summary(now=9.5, window_seconds=10.0).requests == 10


def test_warm_up_rate_uses_observed_time_not_the_whole_window() -> None:
    stats = _stats(now=50.0)
    for _ in range(20):
        stats.record(50.0, 1.0, False)
    summary = stats.summary(now=52.0, window_seconds=10.0)
    assert summary.request_rate == pytest.approx(10.0)


def test_merging_shards_bucket_by_bucket_equals_the_union() -> None:
    left, right, union = _stats(), _stats(), _stats()
    for index in range(200):
        now = index * 0.05
        target = left if index % 3 else right
        target.record(now, latency_ms=index % 17 + 0.5, error=index % 11 == 0)
        union.record(now, latency_ms=index % 17 + 0.5, error=index % 11 == 0)
    left.merge(right)
    merged, expected = left.summary(10.0, 10.0), union.summary(10.0, 10.0)
    assert merged == expected
    assert left.requests_total == union.requests_total == 200
    with pytest.raises(ValueError):
        left.merge(WindowedStats(2.0, 10, 0.01, 0.0))


def test_retention_forgets_silent_services_and_edges_and_caps_operations() -> None:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    from telemetry import ModelConfig, TelemetryModel
    from telemetry.aggregates import OTHER_OPERATION

    clock = {"now": 100.0}
    config = ModelConfig(window_seconds=10.0, retention_seconds=30.0, max_operations_per_service=5)
    model = TelemetryModel(config, clock=lambda: clock["now"])

    def export(service: str, span_names: list[str], parent_service: str | None = None) -> None:
        request = ExportTraceServiceRequest()
        for index, name in enumerate(span_names):
            trace_id = bytes([len(service), index + 1]) + bytes(14)
            if parent_service:
                parent = request.resource_spans.add()
                parent.resource.attributes.add(key="service.name").value.string_value = parent_service
                parent.scope_spans.add().spans.add(
                    trace_id=trace_id,
                    span_id=b"p" * 8,
                    name="call",
                    kind=3,
                    start_time_unix_nano=1,
                    end_time_unix_nano=5,
                )
            resource = request.resource_spans.add()
            resource.resource.attributes.add(key="service.name").value.string_value = service
            resource.scope_spans.add().spans.add(
                trace_id=trace_id,
                span_id=b"s" * 8,
                parent_span_id=b"p" * 8 if parent_service else b"",
                name=name,
                kind=2,
                start_time_unix_nano=1,
                end_time_unix_nano=2_000_000,
            )
        assert model.ingest(request).rejected_spans == 0

    export("users", [f"GET /users/{user}" for user in range(50)], parent_service="web")
    snapshot = model.snapshot()
    users = snapshot.node("users")
    assert users.requests_total == 50  # every request counted, whatever the operation cap
    names = [operation.operation for operation in users.operations]
    assert len(names) == 6 and OTHER_OPERATION in names
    assert next(op for op in users.operations if op.operation == OTHER_OPERATION).requests_total == 45
    assert snapshot.edge("web", "users").calls_total == 50

    clock["now"] = 120.0
    export("orders", ["GET /orders"])
    model.expire()
    assert {node.name for node in model.snapshot().nodes} == {"web", "users", "orders"}
    clock["now"] = 140.0  # users and web silent for 40 s > 30 s retention; orders seen 20 s ago
    model.expire()
    snapshot = model.snapshot()
    assert {node.name for node in snapshot.nodes} == {"orders"}
    assert snapshot.edges == ()


def test_linker_memory_is_capped_under_overload() -> None:
    from telemetry.linker import DependencyLinker

    linker = DependencyLinker(ttl_seconds=3600.0, max_spans=1000, now=0.0)
    for index in range(20_000):
        key = index.to_bytes(24, "big")
        linker.add(key, None, ("svc", 3, 1.0, False, 1), ("db", "redis"))
    assert linker.spans_held <= 1000
    assert linker.early_rotations >= 19
    # Client spans pushed out early still count as calls to the external node, none lost.
    assert (
        len(linker.take_calls()) + sum(len(g.unanswered) for g in (linker._current, linker._previous))
        == 20_000
    )


@settings(max_examples=80, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.floats(min_value=0.0, max_value=4.0),  # time step
            st.floats(min_value=0.0, max_value=5_000.0),  # latency
            st.booleans(),  # error
            st.booleans(),  # take a summary after this one
        ),
        min_size=1,
        max_size=120,
    )
)
def test_the_incremental_full_window_equals_adding_up_its_buckets(steps) -> None:
    import math

    from telemetry.sketch import LatencySketch

    stats = WindowedStats(bucket_seconds=1.0, bucket_count=10, relative_accuracy=0.01, now=0.0)
    now = 0.0
    history: list[tuple[float, float, bool]] = []
    for step, latency, error, look in steps:
        now += step
        stats.record(now, latency, error)
        history.append((now, latency, error))
        if look:
            oldest = math.floor(now) - 9
            inside = [(latency, error) for at, latency, error in history if math.floor(at) >= oldest]
            reference = LatencySketch(0.01)
            for value, _ in inside:
                reference.add(value)
            window, _ = stats.window(now, 10.0)
            assert window.count == len(inside)
            assert window.errors == sum(error for _, error in inside)
            assert window.sketch.bins == reference.bins
            assert window.sketch.zero_count == reference.zero_count
            assert window.latency_ms_sum == pytest.approx(reference.total, rel=1e-9, abs=1e-6)


def test_service_version_from_resource_attributes_and_when_it_changed() -> None:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    from telemetry import TelemetryModel

    clock = {"now": 10.0}
    model = TelemetryModel(clock=lambda: clock["now"])

    def export(version: str) -> None:
        request = ExportTraceServiceRequest()
        resource = request.resource_spans.add()
        resource.resource.attributes.add(key="service.version").value.string_value = version
        resource.resource.attributes.add(key="service.name").value.string_value = "api"
        resource.scope_spans.add().spans.add(
            trace_id=b"\x01" * 16,
            span_id=b"\x02" * 8,
            name="GET /",
            kind=2,
            start_time_unix_nano=1,
            end_time_unix_nano=5,
        )
        model.ingest(request)

    export("1.4.0")
    clock["now"] = 20.0
    export("1.4.0")
    node = model.snapshot().node("api")
    assert (node.version, node.version_since) == ("1.4.0", 10.0)
    clock["now"] = 30.0
    export("1.5.0")
    node = model.snapshot().node("api")
    assert (node.version, node.version_since) == ("1.5.0", 30.0)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.floats(min_value=0.0, max_value=3.0), st.floats(min_value=0.0, max_value=900.0), st.booleans()
        ),
        min_size=1,
        max_size=80,
    ),
    st.floats(min_value=0.0, max_value=3.0),
)
def test_complete_summary_counts_exactly_the_complete_buckets(steps, look_after: float) -> None:
    import math

    stats = WindowedStats(bucket_seconds=1.0, bucket_count=10, relative_accuracy=0.01, now=0.0)
    now, history = 0.0, []
    for step, latency, error in steps:
        now += step
        stats.record(now, latency, error)
        history.append((now, latency, error))
    now += look_after
    current = math.floor(now)
    inside = [(latency, error) for at, latency, error in history if current - 10 < math.floor(at) < current]
    summary = stats.complete_summary(now)
    assert summary.requests == len(inside)
    assert summary.errors == sum(error for _, error in inside)
    assert summary is stats.complete_summary(now)  # kept until the next bucket opens
    if inside:
        exact = sorted(latency for latency, _ in inside)[math.floor(0.95 * (len(inside) - 1))]
        assert abs(summary.p95_ms - exact) <= 0.01 * exact + 1e-6
