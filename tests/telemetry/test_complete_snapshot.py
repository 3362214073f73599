"""The control loop's complete-bucket snapshot: one per bucket, rebuilt when the layout changes, and
built ahead of time by the ingest path so that a tick finds it ready."""

from __future__ import annotations

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from telemetry import ModelConfig, TelemetryModel
from telemetry.snapshot import build_snapshot

MS = 1_000_000


class _Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _export(model: TelemetryModel, service: str, latencies_ms: list[int], seed: int) -> None:
    request = ExportTraceServiceRequest()
    resource = request.resource_spans.add()
    resource.resource.attributes.add(key="service.name").value.string_value = service
    scope = resource.scope_spans.add()
    for index, latency in enumerate(latencies_ms):
        scope.spans.add(
            trace_id=bytes([seed, index + 1]) + b"\x01" * 14,
            span_id=bytes([seed, index + 1]) + b"\x02" * 6,
            name="GET /" if index % 2 else "POST /",
            kind=2,
            start_time_unix_nano=1,
            end_time_unix_nano=1 + latency * MS,
        )
    model.ingest(request)


def _fresh(model: TelemetryModel, now: float):
    """What the complete snapshot must equal: built from scratch at `now`."""
    return build_snapshot(
        model.aggregates,
        now,
        model.config.window_seconds,
        model.spans_accepted,
        model.spans_rejected,
        complete_buckets=True,
    )


def _stats_by_node(snapshot) -> dict[str, tuple]:
    return {node.name: node.stats.as_tuple() for node in snapshot.nodes}


def test_one_snapshot_serves_a_bucket_and_equals_one_built_from_scratch() -> None:
    clock = _Clock(100.0)
    model = TelemetryModel(ModelConfig(window_seconds=10.0), clock=clock)
    _export(model, "api", [5, 10, 20, 40], seed=1)
    clock.now = 101.2
    _export(model, "api", [7, 9], seed=2)
    first = model.complete_snapshot()
    assert _stats_by_node(first) == _stats_by_node(_fresh(model, clock.now))
    assert first.node("api").stats.requests == 4  # bucket 100 only: 101 is still filling

    clock.now = 101.8
    _export(model, "api", [3], seed=3)  # same bucket, known service and operations: layout unchanged
    assert model.complete_snapshot() is first

    clock.now = 102.1  # bucket 101 closes
    second = model.complete_snapshot()
    assert second is not first
    assert second.node("api").stats.requests == 7
    assert _stats_by_node(second) == _stats_by_node(_fresh(model, clock.now))


def test_a_new_service_or_version_in_the_bucket_rebuilds_the_snapshot() -> None:
    clock = _Clock(200.0)
    model = TelemetryModel(ModelConfig(window_seconds=10.0), clock=clock)
    _export(model, "api", [5, 6], seed=1)
    clock.now = 201.1
    first = model.complete_snapshot()
    assert [node.name for node in first.nodes] == ["api"]
    _export(model, "users", [4], seed=2)  # a node appears in the middle of bucket 201
    second = model.complete_snapshot()
    assert second is not first
    assert [node.name for node in second.nodes] == ["api", "users"]
    assert second.node("users").stats.requests == 0  # seen, but no complete bucket yet


def test_prepare_builds_once_per_bucket_only_after_someone_asked() -> None:
    clock = _Clock(300.0)
    model = TelemetryModel(ModelConfig(window_seconds=10.0), clock=clock)
    _export(model, "api", [5, 6, 7], seed=1)
    clock.now = 301.0
    assert model.prepare_complete_snapshot() is False  # no control loop has asked: nothing is built
    asked = model.complete_snapshot()
    assert model.prepare_complete_snapshot() is False  # still valid
    _export(model, "api", [8], seed=2)
    clock.now = 302.0
    assert model.prepare_complete_snapshot() is True
    prepared = model.complete_snapshot()
    assert prepared is not asked
    assert prepared.node("api").stats.requests == 4
    # Prepared means ready: quantiles, index and graph are already worked out.
    assert prepared.node("api").stats._quantiles is not None
    assert "graph" in vars(prepared) and "by_name" in vars(prepared)
    assert set(prepared.graph.nodes) == {"api"}
    assert model.snapshot(complete_buckets=True) is prepared
    assert model.prepare_complete_snapshot() is False
    # A new series in the same bucket: not rebuilt ahead again (a sender adding one with every request
    # must not make every request rebuild the view); the tick that asks gets it rebuilt once.
    _export(model, "billing", [9], seed=3)
    assert model.prepare_complete_snapshot() is False
    rebuilt = model.complete_snapshot()
    assert rebuilt is not prepared and "billing" in rebuilt.by_name
    clock.now = 303.0
    assert model.prepare_complete_snapshot() is True  # the next bucket is built ahead as before
