"""OTLP/HTTP trace receiver: `POST /v1/traces` with protobuf or JSON bodies (gzip handled by aiohttp).

Answers follow the OTLP/HTTP specification: 200 with an `ExportTraceServiceResponse` (partial success
included) in the request's encoding; 400 for an undecodable body, 413 past the size limit, 415 for an
unknown content type, 503 with Retry-After when ingest is behind; error bodies are a `google.rpc.Status`.
"""

from __future__ import annotations

import math

from aiohttp import web
from google.protobuf.message import Message

from telemetry.ingest import Encoding, Ingestor, Overloaded
from telemetry.otlp_json import MalformedRequest, message_to_json
from telemetry.otlp_status import (
    INVALID_ARGUMENT,
    RESOURCE_EXHAUSTED,
    UNAVAILABLE,
    error_status,
    export_response,
)

TRACES_PATH = "/v1/traces"
PROTOBUF = "application/x-protobuf"
JSON = "application/json"
DEFAULT_MAX_REQUEST_BYTES = 64 * 1024 * 1024


def _reply(
    message: Message, encoding: Encoding, status: int = 200, headers: dict | None = None
) -> web.Response:
    if encoding is Encoding.JSON:
        return web.Response(body=message_to_json(message), status=status, content_type=JSON, headers=headers)
    return web.Response(
        body=message.SerializeToString(), status=status, content_type=PROTOBUF, headers=headers
    )


def trace_receiver_app(
    ingestor: Ingestor, max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
) -> web.Application:
    """The aiohttp application serving `POST /v1/traces`."""

    async def export(request: web.Request) -> web.Response:
        content_type = request.content_type
        if content_type == PROTOBUF:
            encoding = Encoding.PROTOBUF
        elif content_type == JSON:
            encoding = Encoding.JSON
        else:
            message = f"unsupported Content-Type {content_type!r}; use {PROTOBUF} or {JSON}"
            return _reply(error_status(INVALID_ARGUMENT, message), Encoding.JSON, status=415)
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            message = f"request body exceeds the limit of {max_request_bytes} bytes"
            return _reply(error_status(RESOURCE_EXHAUSTED, message), encoding, status=413)
        except web.HTTPException as error:
            return _reply(error_status(INVALID_ARGUMENT, error.text or error.reason), encoding, status=400)
        except web.RequestPayloadError as error:  # e.g. a body that is not valid gzip
            message = f"cannot read the body: {error}"
            response = _reply(error_status(INVALID_ARGUMENT, message), encoding, status=400)
            # The rest of the body cannot be read, so aiohttp drops the connection after this answer:
            # say so (Connection: close), or a keep-alive client's next request is reset.
            response.force_close()
            return response
        try:
            result = await ingestor.submit(body, encoding)
        except MalformedRequest as error:
            return _reply(error_status(INVALID_ARGUMENT, str(error)), encoding, status=400)
        except Overloaded as error:
            retry_after = str(max(1, math.ceil(error.retry_after_seconds)))
            status = error_status(UNAVAILABLE, str(error), error.retry_after_seconds)
            return _reply(status, encoding, status=503, headers={"Retry-After": retry_after})
        return _reply(export_response(result), encoding)

    app = web.Application(client_max_size=max_request_bytes)
    app.router.add_post(TRACES_PATH, export)
    return app
