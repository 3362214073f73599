"""Encoding of OTLP export outcomes shared by the gRPC and HTTP receivers.

Both transports answer with the same `ExportTraceServiceResponse` (with `partial_success` when spans were
rejected) and, on failure, a `google.rpc.Status`, carrying `RetryInfo` when the client should retry later.
"""

from __future__ import annotations

from google.protobuf.duration_pb2 import Duration
from google.rpc import code_pb2, error_details_pb2, status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from telemetry.model import IngestResult

TRACE_SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"
EXPORT_METHOD = f"/{TRACE_SERVICE}/Export"


def export_response(result: IngestResult) -> ExportTraceServiceResponse:
    """The success answer; `partial_success` is set only when something was rejected or capped: OTLP lets a
    server send a warning in `error_message` with `rejected_spans` 0 (names cut, weights capped, ...)."""
    response = ExportTraceServiceResponse()
    message = result.error_message
    if message:
        response.partial_success.rejected_spans = result.rejected_spans
        response.partial_success.error_message = message
    return response


def error_status(code: int, message: str, retry_after_seconds: float | None = None) -> status_pb2.Status:
    """A google.rpc.Status for a failed export, with RetryInfo when a retry later may succeed."""
    status = status_pb2.Status(code=code, message=message)
    if retry_after_seconds is not None:
        delay = Duration()
        delay.FromNanoseconds(int(retry_after_seconds * 1e9))
        status.details.add().Pack(error_details_pb2.RetryInfo(retry_delay=delay))
    return status


INVALID_ARGUMENT = code_pb2.INVALID_ARGUMENT
UNAVAILABLE = code_pb2.UNAVAILABLE
RESOURCE_EXHAUSTED = code_pb2.RESOURCE_EXHAUSTED
INTERNAL = code_pb2.INTERNAL
