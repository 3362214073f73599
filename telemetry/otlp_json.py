"""The OTLP/JSON encoding of trace export requests and responses (the OTLP specification's JSON mapping).

OTLP/JSON is the protobuf JSON mapping with two differences, handled here before protobuf's own parser
runs: trace and span ids are hex strings (case-insensitive) instead of base64, and enums may be integers
or names (protobuf accepts both already). Unknown fields are ignored, as the specification requires. An id
that is not valid hex is decoded as one zero byte, a length no id has, so the span is rejected on its own
by the model's validation and the rest of the request is kept (empty would not do: an empty parent id means
a root span).
"""

from __future__ import annotations

import base64
import json
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

_INVALID_ID = b"\x00"
_ID_FIELDS = ("traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id")


class MalformedRequest(ValueError):
    """The body could not be decoded at all (as opposed to individual invalid spans)."""


def parse_trace_request(body: bytes) -> ExportTraceServiceRequest:
    """Decode an OTLP/JSON `ExportTraceServiceRequest`; raises MalformedRequest when it is not one."""
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise MalformedRequest(f"body is not valid JSON: {error}") from None
    if not isinstance(document, dict):
        raise MalformedRequest("body must be a JSON object holding resourceSpans")
    unknown_signal = {
        "resourceLogs",
        "resourceMetrics",
        "resource_logs",
        "resource_metrics",
    } & document.keys()
    if unknown_signal and not ({"resourceSpans", "resource_spans"} & document.keys()):
        raise MalformedRequest(f"this endpoint takes traces, got {sorted(unknown_signal)[0]}")
    for resource_spans in _items(document, "resourceSpans", "resource_spans"):
        for scope_spans in _items(resource_spans, "scopeSpans", "scope_spans"):
            for span in _items(scope_spans, "spans"):
                _hex_ids_to_base64(span)
                for link in _items(span, "links"):
                    _hex_ids_to_base64(link)
    request = ExportTraceServiceRequest()
    try:
        json_format.ParseDict(document, request, ignore_unknown_fields=True)
    except (json_format.ParseError, TypeError, ValueError) as error:
        raise MalformedRequest(f"body is not an OTLP ExportTraceServiceRequest: {error}") from None
    return request


def message_to_json(message: Message) -> bytes:
    """Encode a response message (ExportTraceServiceResponse, google.rpc.Status) as OTLP/JSON."""
    return json.dumps(json_format.MessageToDict(message), separators=(",", ":")).encode()


def _items(parent: Any, *keys: str) -> list:
    if not isinstance(parent, dict):
        return []
    for key in keys:
        value = parent.get(key)
        if isinstance(value, list):
            return value
    return []


def _hex_ids_to_base64(element: Any) -> None:
    if not isinstance(element, dict):
        return
    for key in _ID_FIELDS:
        value = element.get(key)
        if isinstance(value, str):
            try:
                raw = bytes.fromhex(value)
            except ValueError:
                # Invalid hex: a length no id has, so the model rejects this one span as having an invalid
                # id (b"" would turn an invalid parentSpanId into a root span and accept it).
                raw = _INVALID_ID
            element[key] = base64.b64encode(raw).decode()


__all__ = ["MalformedRequest", "message_to_json", "parse_trace_request"]
