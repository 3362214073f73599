"""The OpenTelemetry SDK set up the way a real service sets it up: one TracerProvider per process.

Each replica process has a Resource naming its service, version and instance, and a BatchSpanProcessor
that exports over OTLP/gRPC to the control plane. The schedule delay is short (250 ms rather than the SDK's
5 s) so that a change in the application reaches the control plane's one-second buckets promptly.
Context crosses process boundaries as W3C `traceparent`/`tracestate` headers, with the SDK's own
propagator (no auto-instrumentation package is needed for one server route and one client call).
"""

from __future__ import annotations

from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

EXPORT_DELAY_MS = 250

# Explicitly W3C trace context: the global propagator could be changed by OTEL_PROPAGATORS.
PROPAGATOR = TraceContextTextMapPropagator()


def tracer_provider(
    service: str, version: str, instance: str, otlp_endpoint: str, export_delay_ms: int = EXPORT_DELAY_MS
) -> TracerProvider:
    """A provider exporting every span (no sampling) to `otlp_endpoint` ('host:port', plaintext gRPC)."""
    resource = Resource.create(
        {"service.name": service, "service.version": version, "service.instance.id": instance}
    )
    provider = TracerProvider(resource=resource, sampler=ALWAYS_ON)
    exporter = OTLPSpanExporter(endpoint=otlp_endpoint, insecure=True, timeout=5)
    provider.add_span_processor(
        BatchSpanProcessor(exporter, schedule_delay_millis=export_delay_ms, max_export_batch_size=512)
    )
    return provider
