"""Every bad input the OTLP receivers must survive, each answered with the status the OTLP specification asks
for, and each followed by a good request that the same server still accepts.

Requests are built by hand (raw bytes over gRPC, urllib over HTTP) so that the server sees exactly the bytes
under test; no client library gets a chance to fix or refuse them first.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import itertools
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
import requests
from google.protobuf import json_format
from google.rpc import code_pb2, error_details_pb2, status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from protos.controlplane.v1 import controlplane_pb2 as pb
from protos.controlplane.v1 import controlplane_pb2_grpc as pb_grpc
from tests.support import SHARED_DATA, RunningServer, running_server

EXPORT_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
PROTOBUF = "application/x-protobuf"
JSON = "application/json"
MIB = 1024 * 1024
EXAMPLES = SHARED_DATA / "otlp-examples"

_ids = itertools.count(1)


# ---------------------------------------------------------------------------------------------------------
# Building requests


def new_trace_id() -> bytes:
    return next(_ids).to_bytes(16, "big")


def new_span_id() -> bytes:
    return next(_ids).to_bytes(8, "big")


def make_span(
    name: str,
    *,
    trace_id: bytes | None = None,
    span_id: bytes | None = None,
    parent_span_id: bytes = b"",
    kind: int = Span.SPAN_KIND_SERVER,
    start: int = 1_700_000_000_000_000_000,
    duration_ns: int = 5_000_000,
    attributes: dict[str, str] | None = None,
) -> Span:
    return Span(
        trace_id=new_trace_id() if trace_id is None else trace_id,
        span_id=new_span_id() if span_id is None else span_id,
        parent_span_id=parent_span_id,
        name=name,
        kind=kind,
        start_time_unix_nano=start,
        end_time_unix_nano=start + duration_ns,
        attributes=[KeyValue(key=k, value=AnyValue(string_value=v)) for k, v in (attributes or {}).items()],
    )


def make_request(service: str, spans: list[Span]) -> ExportTraceServiceRequest:
    resource = Resource(attributes=[KeyValue(key="service.name", value=AnyValue(string_value=service))])
    return ExportTraceServiceRequest(
        resource_spans=[ResourceSpans(resource=resource, scope_spans=[ScopeSpans(spans=spans)])]
    )


def padded_request(service: str, spans: int, bytes_per_span: int) -> ExportTraceServiceRequest:
    """Valid spans carrying a large attribute that the model skips (it reads only the keys it knows)."""
    padding = "x" * bytes_per_span
    return make_request(
        service, [make_span(f"big {i}", attributes={"padding": padding}) for i in range(spans)]
    )


def good_request(service: str) -> ExportTraceServiceRequest:
    """A valid trace: a server span and an internal child."""
    trace_id, root_id = new_trace_id(), new_span_id()
    return make_request(
        service,
        [
            make_span("GET /ok", trace_id=trace_id, span_id=root_id),
            make_span("work", trace_id=trace_id, parent_span_id=root_id, kind=Span.SPAN_KIND_INTERNAL),
        ],
    )


def to_otlp_json(request: ExportTraceServiceRequest) -> dict[str, Any]:
    """The OTLP/JSON form: the protobuf JSON mapping, but with trace and span ids as hex strings."""
    document = json_format.MessageToDict(request)
    for resource_spans in document.get("resourceSpans", []):
        for scope_spans in resource_spans.get("scopeSpans", []):
            for span in scope_spans.get("spans", []):
                for key in ("traceId", "spanId", "parentSpanId"):
                    if key in span:
                        span[key] = base64.b64decode(span[key]).hex()
    return document


# ---------------------------------------------------------------------------------------------------------
# Talking to the server


def export_callable(channel: grpc.Channel) -> grpc.UnaryUnaryMultiCallable:
    """TraceService/Export taking raw request bytes, so undecodable bodies reach the server as they are."""
    return channel.unary_unary(EXPORT_METHOD, response_deserializer=ExportTraceServiceResponse.FromString)


def grpc_export(srv: RunningServer, body: bytes | ExportTraceServiceRequest, **channel_args: Any) -> Any:
    if not isinstance(body, bytes):
        body = body.SerializeToString()
    with grpc.insecure_channel(srv.grpc_target, **channel_args) as channel:
        return export_callable(channel)(body, timeout=10)


def grpc_error(srv: RunningServer, body: bytes | ExportTraceServiceRequest) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        grpc_export(srv, body)
    return caught.value


@dataclass
class HttpAnswer:
    status: int
    headers: Any
    body: bytes

    @property
    def content_type(self) -> str:
        return self.headers.get("Content-Type", "").split(";")[0].strip()

    def rpc_status(self) -> status_pb2.Status:
        """The google.rpc.Status an OTLP/HTTP error body must be, in the request's encoding."""
        if self.content_type == JSON:
            return json_format.Parse(self.body, status_pb2.Status())
        assert self.content_type == PROTOBUF, self.content_type
        return status_pb2.Status.FromString(self.body)

    def export_response(self) -> ExportTraceServiceResponse:
        if self.content_type == JSON:
            return json_format.Parse(self.body or b"{}", ExportTraceServiceResponse())
        assert self.content_type == PROTOBUF, self.content_type
        return ExportTraceServiceResponse.FromString(self.body)


def http_post(url: str, body: bytes, content_type: str = PROTOBUF, **headers: str) -> HttpAnswer:
    request = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": content_type})
    for name, value in headers.items():
        request.add_header(name.replace("_", "-"), value)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return HttpAnswer(response.status, response.headers, response.read())
    except urllib.error.HTTPError as error:
        with error:
            return HttpAnswer(error.code, error.headers, error.read())


def http_export(
    srv: RunningServer, request: ExportTraceServiceRequest, encoding: str = PROTOBUF
) -> HttpAnswer:
    if encoding == JSON:
        return http_post(srv.http_url, json.dumps(to_otlp_json(request)).encode(), JSON)
    return http_post(srv.http_url, request.SerializeToString(), PROTOBUF)


def graph(srv: RunningServer) -> pb.GetGraphResponse:
    with grpc.insecure_channel(srv.api_target) as channel:
        return pb_grpc.ControlPlaneStub(channel).GetGraph(pb.GetGraphRequest(), timeout=10)


def node(srv: RunningServer, name: str) -> pb.Node | None:
    return next((n for n in graph(srv).nodes if n.name == name), None)


def assert_still_serving(srv: RunningServer, tag: str = "after") -> None:
    """A good request over gRPC and over both HTTP encodings is accepted in full and reaches the graph."""
    before = graph(srv).spans_accepted
    response = grpc_export(srv, good_request(f"{tag}-grpc"))
    assert not response.HasField("partial_success")
    for encoding, name in ((PROTOBUF, f"{tag}-http-protobuf"), (JSON, f"{tag}-http-json")):
        answer = http_export(srv, good_request(name), encoding)
        assert answer.status == 200, answer
        assert answer.content_type == encoding
        assert not answer.export_response().HasField("partial_success")
    snapshot = graph(srv)
    assert snapshot.spans_accepted == before + 6
    names = {n.name for n in snapshot.nodes}
    assert {f"{tag}-grpc", f"{tag}-http-protobuf", f"{tag}-http-json"} <= names


# ---------------------------------------------------------------------------------------------------------
# Undecodable bodies


UNDECODABLE = {
    "garbage": b"this is not a protobuf message \xff\xfe",
    "truncated-field": b"\x0a\x05abc",  # resource_spans announces 5 bytes, 3 follow
    "bad-tag": b"\xff\xff\xff\xff",
    "truncated-request": good_request("x").SerializeToString()[:-3],
}


@pytest.mark.parametrize("body", UNDECODABLE.values(), ids=UNDECODABLE.keys())
def test_grpc_undecodable_request_is_invalid_argument(body: bytes) -> None:
    with running_server() as srv:
        error = grpc_error(srv, body)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "protobuf" in error.details()
        assert graph(srv).spans_accepted == 0
        assert_still_serving(srv)


@pytest.mark.parametrize("body", UNDECODABLE.values(), ids=UNDECODABLE.keys())
def test_http_undecodable_protobuf_is_400_with_status(body: bytes) -> None:
    with running_server() as srv:
        answer = http_post(srv.http_url, body, PROTOBUF)
        assert answer.status == 400
        assert answer.content_type == PROTOBUF
        status = answer.rpc_status()
        assert status.code == code_pb2.INVALID_ARGUMENT
        assert status.message
        assert_still_serving(srv)


BAD_JSON = {
    "not-json": b"{resourceSpans: [",
    "not-utf8": b'{"resourceSpans": "\xff\xfe"}',
    "array": b"[]",
    "string": b'"resourceSpans"',
    "wrong-type": b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"name": 7, "kind": "NO_SUCH_KIND"}]}]}]}',
    "id-not-a-string": b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": 12}]}]}]}',
}


@pytest.mark.parametrize("body", BAD_JSON.values(), ids=BAD_JSON.keys())
def test_http_garbage_json_is_400_with_json_status(body: bytes) -> None:
    with running_server() as srv:
        answer = http_post(srv.http_url, body, JSON)
        assert answer.status == 400
        assert answer.content_type == JSON
        document = json.loads(answer.body)
        assert document["code"] == code_pb2.INVALID_ARGUMENT
        assert answer.rpc_status().message
        assert_still_serving(srv)


@pytest.mark.parametrize("example", ["logs.json", "events.json", "metrics.json"])
def test_http_other_signals_posted_to_traces_are_400(example: str) -> None:
    with running_server() as srv:
        answer = http_post(srv.http_url, (EXAMPLES / example).read_bytes(), JSON)
        assert answer.status == 400
        status = answer.rpc_status()
        assert status.code == code_pb2.INVALID_ARGUMENT
        assert "traces" in status.message
        assert graph(srv).spans_accepted == 0
        assert_still_serving(srv)


def test_http_example_trace_is_accepted() -> None:
    # The counterpart of the test above: the specification's own trace example is a good request.
    with running_server() as srv:
        answer = http_post(srv.http_url, (EXAMPLES / "trace.json").read_bytes(), JSON)
        assert answer.status == 200
        assert not answer.export_response().HasField("partial_success")
        assert node(srv, "my.service") is not None
        answer = http_post(srv.http_url, (EXAMPLES / "trace.protobuf-bin").read_bytes(), PROTOBUF)
        assert answer.status == 200
        assert graph(srv).spans_accepted == 2
        assert_still_serving(srv)


@pytest.mark.parametrize("content_type", ["text/plain", "application/protobuf", "application/grpc", ""])
def test_http_unsupported_content_type_is_415(content_type: str) -> None:
    with running_server() as srv:
        answer = http_post(srv.http_url, good_request("never").SerializeToString(), content_type)
        assert answer.status == 415
        status = answer.rpc_status()
        assert status.code == code_pb2.INVALID_ARGUMENT
        assert PROTOBUF in status.message
        assert node(srv, "never") is None
        assert_still_serving(srv)


# ---------------------------------------------------------------------------------------------------------
# Invalid spans: rejected one by one, the rest of the request kept


def mixed_request(service: str) -> tuple[ExportTraceServiceRequest, int, int]:
    """Two valid spans and one span of each kind of invalid one; returns (request, valid, invalid)."""
    trace_id, root_id = new_trace_id(), new_span_id()
    later = 1_700_000_001_000_000_000
    spans = [
        make_span("valid root", trace_id=trace_id, span_id=root_id),
        make_span("valid child", trace_id=trace_id, parent_span_id=root_id, kind=Span.SPAN_KIND_INTERNAL),
        make_span("short trace id", trace_id=bytes(range(1, 16))),
        make_span("long trace id", trace_id=bytes(range(1, 18))),
        make_span("zero trace id", trace_id=bytes(16)),
        make_span("missing trace id", trace_id=b""),
        make_span("short span id", span_id=b"\x01\x02\x03"),
        make_span("zero span id", span_id=bytes(8)),
        make_span("bad parent id", trace_id=trace_id, parent_span_id=b"\x01\x02"),
        make_span("zero parent id", trace_id=trace_id, parent_span_id=bytes(8)),
        make_span("ends before it starts", start=later, duration_ns=-1),
    ]
    return make_request(service, spans), 2, len(spans) - 2


def assert_partial_success(response: ExportTraceServiceResponse, rejected: int) -> None:
    assert response.HasField("partial_success")
    assert response.partial_success.rejected_spans == rejected
    message = response.partial_success.error_message
    assert message.startswith(f"rejected {rejected} span(s)")
    assert "invalid trace_id" in message


def assert_valid_spans_kept(srv: RunningServer, service: str, valid: int, invalid: int) -> None:
    snapshot = graph(srv)
    assert (snapshot.spans_accepted, snapshot.spans_rejected) == (valid, invalid)
    (entry,) = [n for n in snapshot.nodes if n.name == service]
    assert entry.kind == pb.NODE_KIND_SERVICE
    assert entry.requests_total == 1  # the valid root span; the valid child is an internal span


def test_grpc_invalid_spans_are_rejected_individually() -> None:
    with running_server() as srv:
        request, valid, invalid = mixed_request("mixed-grpc")
        assert_partial_success(grpc_export(srv, request), invalid)
        assert_valid_spans_kept(srv, "mixed-grpc", valid, invalid)
        assert_still_serving(srv)


def test_http_protobuf_invalid_spans_are_rejected_individually() -> None:
    with running_server() as srv:
        request, valid, invalid = mixed_request("mixed-http")
        answer = http_export(srv, request, PROTOBUF)
        assert answer.status == 200
        assert answer.content_type == PROTOBUF
        assert_partial_success(answer.export_response(), invalid)
        assert_valid_spans_kept(srv, "mixed-http", valid, invalid)
        assert_still_serving(srv)


def test_http_json_invalid_spans_and_bad_hex_ids_are_rejected_individually() -> None:
    with running_server() as srv:
        request, valid, invalid = mixed_request("mixed-json")
        document = to_otlp_json(request)
        spans = document["resourceSpans"][0]["scopeSpans"][0]["spans"]
        spans[0]["traceId"] = spans[0]["traceId"].upper()  # hex is case-insensitive: still valid
        template = dict(spans[0], name="hex", parentSpanId="")
        spans += [
            dict(template, name="trace id not hex", traceId="zz" * 16),
            dict(template, name="trace id odd length", traceId="abc"),
            dict(template, name="span id not hex", spanId="0g" * 8),
            dict(template, name="parent id not hex", parentSpanId="xyz"),
        ]
        invalid += 4
        answer = http_post(srv.http_url, json.dumps(document).encode(), JSON)
        assert answer.status == 200
        assert answer.content_type == JSON
        raw = json.loads(answer.body)["partialSuccess"]  # the OTLP/JSON field names, int64 as a string
        assert int(raw["rejectedSpans"]) == invalid
        assert_partial_success(answer.export_response(), invalid)
        assert answer.export_response().partial_success.error_message.endswith(f"and {invalid - 5} more")
        assert_valid_spans_kept(srv, "mixed-json", valid, invalid)
        assert_still_serving(srv)


def test_request_of_only_invalid_spans_is_accepted_with_all_rejected() -> None:
    with running_server() as srv:
        request = make_request(
            "all-bad", [make_span("zero", trace_id=bytes(16)), make_span("z", span_id=b"")]
        )
        assert_partial_success(grpc_export(srv, request), 2)
        snapshot = graph(srv)
        assert (snapshot.spans_accepted, snapshot.spans_rejected) == (0, 2)
        assert "all-bad" not in {n.name for n in snapshot.nodes}  # a service is what sent a valid span
        assert_still_serving(srv)


# ---------------------------------------------------------------------------------------------------------
# Size limits


def test_request_over_the_size_limit_is_refused() -> None:
    limit = 64 * 1024
    with running_server(max_request_bytes=limit) as srv:
        big = padded_request("too-big", spans=2, bytes_per_span=limit // 2 + 1024)
        body = big.SerializeToString()
        assert limit < len(body) < 2 * limit

        error = grpc_error(srv, body)
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED

        for encoding, payload in ((PROTOBUF, body), (JSON, json.dumps(to_otlp_json(big)).encode())):
            answer = http_post(srv.http_url, payload, encoding)
            assert answer.status == 413
            assert answer.content_type == encoding
            assert answer.rpc_status().code == code_pb2.RESOURCE_EXHAUSTED

        # The limit holds for the decompressed body: a small gzip that inflates past it is refused too.
        bomb = gzip.compress(body)
        assert len(bomb) < limit // 10
        answer = http_post(srv.http_url, bomb, PROTOBUF, Content_Encoding="gzip")
        assert answer.status == 413
        assert answer.rpc_status().code == code_pb2.RESOURCE_EXHAUSTED

        assert graph(srv).spans_accepted == 0
        assert node(srv, "too-big") is None
        # Just under the limit is fine.
        fits = padded_request("fits", spans=1, bytes_per_span=limit - 1024)
        assert len(fits.SerializeToString()) < limit
        assert not grpc_export(srv, fits).HasField("partial_success")
        assert http_export(srv, fits).status == 200
        assert_still_serving(srv)


def test_default_limit_admits_requests_past_grpc_default_4mib() -> None:
    with running_server() as srv:
        request = padded_request("big-batch", spans=9, bytes_per_span=MIB)
        body = request.SerializeToString()
        assert len(body) > 8 * MIB
        assert not grpc_export(srv, body).HasField("partial_success")
        answer = http_post(srv.http_url, body, PROTOBUF)
        assert answer.status == 200
        assert not answer.export_response().HasField("partial_success")
        big = node(srv, "big-batch")
        assert big is not None
        assert big.requests_total == 18
        assert_still_serving(srv)


# ---------------------------------------------------------------------------------------------------------
# Backpressure


def run_on_loop(srv: RunningServer, coroutine_function: Callable[[], Any]) -> Any:
    return asyncio.run_coroutine_threadsafe(coroutine_function(), srv.loop).result(timeout=10)


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


def retry_info(status: status_pb2.Status) -> error_details_pb2.RetryInfo:
    (detail,) = status.details
    info = error_details_pb2.RetryInfo()
    assert detail.Unpack(info), detail.type_url
    return info


def test_backpressure_when_ingest_falls_behind() -> None:
    """With the ingest worker held, queued bodies fill the byte budget and the receivers refuse the rest.

    The worker is held with the Ingestor's own `stop()` and released with `start()`: the queue and its byte
    count survive, so what the receivers see is exactly an ingest worker that has fallen behind.
    """
    budget = 4096
    with running_server(max_queue_bytes=budget, retry_after_seconds=2.5) as srv:
        ingestor = srv.server.ingestor
        run_on_loop(srv, ingestor.stop)

        held = padded_request("held", spans=1, bytes_per_span=2500).SerializeToString()
        small = good_request("small").SerializeToString()
        refused = padded_request("refused", spans=1, bytes_per_span=2000)
        assert len(held) + len(small) <= budget < len(held) + len(small) + refused.ByteSize()

        with grpc.insecure_channel(srv.grpc_target) as channel:
            export = export_callable(channel)
            # Requests that fit into the byte budget are queued (their clients wait) ...
            pending = [export.future(held, timeout=30)]
            wait_until(lambda: srv.call(lambda: ingestor.queued_bytes) == len(held), "the first body queued")
            pending.append(export.future(small, timeout=30))
            wait_until(
                lambda: srv.call(lambda: ingestor.queued_bytes) == len(held) + len(small), "both queued"
            )
            assert not any(future.done() for future in pending)

            # ... one that does not is refused at once: UNAVAILABLE with RetryInfo in the status details.
            with pytest.raises(grpc.RpcError) as caught:
                export(refused.SerializeToString(), timeout=10)
            error = caught.value
            assert error.code() == grpc.StatusCode.UNAVAILABLE
            details = dict(error.trailing_metadata())["grpc-status-details-bin"]
            status = status_pb2.Status.FromString(details)
            assert status.code == code_pb2.UNAVAILABLE
            assert status.message == error.details()
            assert retry_info(status).retry_delay.ToNanoseconds() == 2_500_000_000

            # OTLP/HTTP: 503 with Retry-After (whole seconds, rounded up) and the same Status in the body.
            for encoding in (PROTOBUF, JSON):
                answer = http_export(srv, refused, encoding)
                assert answer.status == 503
                assert answer.headers["Retry-After"] == "3"
                assert answer.content_type == encoding
                status = answer.rpc_status()
                assert status.code == code_pb2.UNAVAILABLE
                assert retry_info(status).retry_delay.ToMilliseconds() == 2500
            assert srv.call(lambda: ingestor.requests_refused) == 3

            # The worker catches up: the queued requests complete, nothing refused was ingested.
            srv.call(ingestor.start)
            for future in pending:
                assert not future.result(timeout=10).HasField("partial_success")
        assert srv.call(lambda: ingestor.queued_bytes) == 0
        snapshot = graph(srv)
        assert snapshot.spans_accepted == 3
        assert {n.name for n in snapshot.nodes} == {"held", "small"}
        assert_still_serving(srv)


def test_a_body_larger_than_the_queue_budget_is_admitted_into_an_empty_queue() -> None:
    # Otherwise a legal request larger than the budget would be refused and retried forever.
    with running_server(max_queue_bytes=1024) as srv:
        request = padded_request("larger-than-budget", spans=1, bytes_per_span=4096)
        assert not grpc_export(srv, request).HasField("partial_success")
        assert http_export(srv, request).status == 200
        assert srv.call(lambda: srv.server.ingestor.requests_refused) == 0
        assert_still_serving(srv)


# ---------------------------------------------------------------------------------------------------------
# Compression


def test_gzip_bodies_are_accepted_and_corrupt_gzip_is_400() -> None:
    with running_server() as srv:
        for encoding in (PROTOBUF, JSON):
            request = good_request(f"gzip-{encoding.rsplit('/', 1)[-1]}")
            plain = request.SerializeToString() if encoding == PROTOBUF else json.dumps(to_otlp_json(request))
            body = gzip.compress(plain if isinstance(plain, bytes) else plain.encode())
            answer = http_post(srv.http_url, body, encoding, Content_Encoding="gzip")
            assert answer.status == 200, answer
            assert not answer.export_response().HasField("partial_success")
        # gRPC's own message compression.
        response = grpc_export(srv, good_request("gzip-grpc"), compression=grpc.Compression.Gzip)
        assert not response.HasField("partial_success")
        assert {"gzip-x-protobuf", "gzip-json", "gzip-grpc"} <= {n.name for n in graph(srv).nodes}

        valid = gzip.compress(good_request("corrupt").SerializeToString())
        corrupt = {
            "not-gzip": b"plain bytes, not gzip at all",
            "bad-deflate-data": valid[:10] + b"\xff" * 8 + valid[18:],
        }
        for name, body in corrupt.items():
            for encoding in (PROTOBUF, JSON):
                answer = http_post(srv.http_url, body, encoding, Content_Encoding="gzip")
                assert answer.status == 400, (name, encoding, answer)
                assert answer.content_type == encoding, (name, answer)
                assert answer.rpc_status().code == code_pb2.INVALID_ARGUMENT
        assert node(srv, "corrupt") is None
        assert_still_serving(srv)


def test_keep_alive_client_survives_every_bad_request() -> None:
    """Exporters keep their HTTP connection open: after a refused request, the next one on it still works."""
    limit = 64 * 1024
    too_big = padded_request("too-big", spans=2, bytes_per_span=limit // 2 + 1024).SerializeToString()
    corrupt_gzip = b"\x1f\x8b\x08\x00" + b"\xff" * 64
    bad = [
        ("corrupt gzip", corrupt_gzip, PROTOBUF, {"Content-Encoding": "gzip"}, 400),
        ("gzip bomb", gzip.compress(too_big), PROTOBUF, {"Content-Encoding": "gzip"}, 413),
        ("too big", too_big, PROTOBUF, {}, 413),
        ("garbage protobuf", b"garbage", PROTOBUF, {}, 400),
        ("garbage json", b"{", JSON, {}, 400),
        ("content type", b"{}", "text/plain", {}, 415),
    ]
    with running_server(max_request_bytes=limit) as srv, requests.Session() as session:
        for number, (name, body, content_type, headers, expected) in enumerate(bad):
            answer = session.post(
                srv.http_url, data=body, headers={"Content-Type": content_type, **headers}, timeout=10
            )
            assert answer.status_code == expected, name
            good = good_request(f"keep-alive-{number}").SerializeToString()
            answer = session.post(srv.http_url, data=good, headers={"Content-Type": PROTOBUF}, timeout=10)
            assert answer.status_code == 200, f"the request after {name}"
        assert graph(srv).spans_accepted == 2 * len(bad)
        assert_still_serving(srv)
