"""Critical paths of sampled traces: the path rule, the slowest-per-entry sampler, sampling in the model."""

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from telemetry import ModelConfig, TelemetryModel
from telemetry.critical_path import TraceSampler, critical_path

MS = 1_000_000


def _span(service: str, name: str, span_id: int, parent: int, start_ms: int, end_ms: int):
    return (
        service,
        name,
        bytes([span_id]) * 8,
        bytes([parent]) * 8 if parent else b"",
        start_ms * MS,
        end_ms * MS,
    )


def test_the_path_follows_the_last_finishing_child_with_self_times() -> None:
    spans = [
        _span("gateway", "GET /", 1, 0, 0, 100),
        _span("auth", "check", 2, 1, 10, 40),
        _span("orders", "list", 3, 1, 20, 90),
        _span("db", "select", 4, 3, 30, 80),
        _span("cache", "get", 5, 3, 22, 28),
    ]
    path = critical_path(b"\x01" * 16, spans, seen_at=5.0)
    assert path is not None
    assert (path.entry_service, path.entry_operation, path.duration_ms) == ("gateway", "GET /", 100.0)
    assert [(step.service, step.duration_ms, step.self_ms) for step in path.steps] == [
        ("gateway", 100.0, 30.0),
        ("orders", 70.0, 20.0),
        ("db", 50.0, 50.0),
    ]


def test_sampler_keeps_the_slowest_per_entry_operation_within_the_window() -> None:
    sampler = TraceSampler(sample_per_256=256, quiet_seconds=1.0, window_seconds=10.0, keep=2)
    for index, duration in enumerate([30, 90, 10, 60]):
        trace_id = bytes([index + 1]) * 16
        sampler.add(trace_id, _span("gateway", "GET /", 1, 0, 0, duration), now=0.0)
    sampler.expire(now=0.5)
    assert sampler.slowest() == {}  # not quiet yet
    sampler.expire(now=1.0)
    kept = sampler.slowest()[("gateway", "GET /")]
    assert [path.duration_ms for path in kept] == [90.0, 60.0]
    sampler.expire(now=20.0)
    assert sampler.slowest() == {}


def test_the_model_samples_whole_traces_by_trace_id() -> None:
    model = TelemetryModel(ModelConfig(trace_sample_per_256=128), clock=lambda: 100.0)
    request = ExportTraceServiceRequest()
    for service, span_id, parent, start, end, kind in (
        ("web", 1, 0, 0, 50, 2),
        ("web", 2, 1, 5, 45, 3),
        ("api", 3, 2, 10, 40, 2),
    ):
        for trace_byte in (0x10, 0xF0):  # one trace sampled (0x10 < 128), one not
            resource = request.resource_spans.add()
            resource.resource.attributes.add(key="service.name").value.string_value = service
            resource.scope_spans.add().spans.add(
                trace_id=bytes([trace_byte]) * 16,
                span_id=bytes([span_id]) * 8,
                parent_span_id=bytes([parent]) * 8 if parent else b"",
                name=f"op{span_id}",
                kind=kind,
                start_time_unix_nano=start * MS,
                end_time_unix_nano=end * MS,
            )
    model.ingest(request)
    model.flush()
    paths = model.snapshot().critical_paths
    assert list(paths) == [("web", "op1")]
    (path,) = paths[("web", "op1")]
    assert path.trace_id == "10" * 16
    assert [step.service for step in path.steps] == ["web", "web", "api"]
