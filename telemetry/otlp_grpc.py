"""OTLP/gRPC trace receiver: `opentelemetry.proto.collector.trace.v1.TraceService/Export`.

Registered as a generic handler that receives the raw request bytes, so that the ingest queue can bound
itself in bytes and decoding happens once, in the ingest worker. Request size is limited by the server's
`grpc.max_receive_message_length` (gRPC answers RESOURCE_EXHAUSTED past it).
"""

from __future__ import annotations

import grpc

from telemetry.ingest import Encoding, Ingestor, Overloaded
from telemetry.otlp_json import MalformedRequest
from telemetry.otlp_status import TRACE_SERVICE, UNAVAILABLE, error_status, export_response

_STATUS_DETAILS_KEY = "grpc-status-details-bin"


def trace_service_handler(ingestor: Ingestor) -> grpc.GenericRpcHandler:
    """The TraceService handler to add to a `grpc.aio` server."""

    async def export(body: bytes, context: grpc.aio.ServicerContext) -> bytes:
        try:
            result = await ingestor.submit(body, Encoding.PROTOBUF)
        except MalformedRequest as error:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
        except Overloaded as error:
            status = error_status(UNAVAILABLE, str(error), error.retry_after_seconds)
            await context.abort(
                grpc.StatusCode.UNAVAILABLE,
                str(error),
                trailing_metadata=((_STATUS_DETAILS_KEY, status.SerializeToString()),),
            )
        return export_response(result).SerializeToString()

    handler = grpc.unary_unary_rpc_method_handler(export)  # bytes in, bytes out
    return grpc.method_handlers_generic_handler(TRACE_SERVICE, {"Export": handler})
