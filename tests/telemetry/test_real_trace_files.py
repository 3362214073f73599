"""The real OTLP files in shared/data (OTLP examples, Jaeger fixtures) through the real receivers."""

import json
import urllib.request
from pathlib import Path

import grpc
import pytest
from google.protobuf import text_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from protos.controlplane.v1 import controlplane_pb2 as pb
from protos.controlplane.v1 import controlplane_pb2_grpc as pb_grpc
from telemetry.otlp_json import parse_trace_request
from telemetry.otlp_status import EXPORT_METHOD
from tests.support import SHARED_DATA, running_server

EXAMPLES = SHARED_DATA / "otlp-examples"
JAEGER = SHARED_DATA / "otlp-jaeger-fixtures"
JAEGER_TRACES = sorted(path for path in JAEGER.glob("*.json") if path.name != "queries.json")


def _post(url: str, body: bytes, content_type: str) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": content_type}, method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, response.read()


def _graph(target: str) -> pb.GetGraphResponse:
    with grpc.insecure_channel(target) as channel:
        return pb_grpc.ControlPlaneStub(channel).GetGraph(pb.GetGraphRequest(), timeout=10)


def test_the_data_is_there() -> None:
    assert len(JAEGER_TRACES) >= 30, f"expected the Jaeger fixtures under {JAEGER}"
    assert (EXAMPLES / "trace.json").is_file()


def test_json_protobuf_text_and_binary_examples_decode_to_the_same_request() -> None:
    from_json = parse_trace_request((EXAMPLES / "trace.json").read_bytes())
    from_binary = ExportTraceServiceRequest.FromString((EXAMPLES / "trace.protobuf-bin").read_bytes())
    from_text = text_format.Parse((EXAMPLES / "trace.protobuf-text").read_text(), ExportTraceServiceRequest())
    assert from_json == from_binary == from_text
    span = from_json.resource_spans[0].scope_spans[0].spans[0]
    # Upper-case hex in the JSON file: ids are case-insensitive hex in OTLP/JSON.
    assert span.trace_id.hex() == "5b8efff798038103d269b633813fc60c"
    assert span.parent_span_id.hex() == "eee19b7ec3c1b173"


def test_the_example_lands_as_one_service_over_http_json_http_protobuf_and_grpc() -> None:
    with running_server() as server:
        status, body = _post(server.http_url, (EXAMPLES / "trace.json").read_bytes(), "application/json")
        assert status == 200
        assert json.loads(body) == {}  # full success: no partial_success, per the spec
        binary = (EXAMPLES / "trace.protobuf-bin").read_bytes()
        status, body = _post(server.http_url, binary, "application/x-protobuf")
        assert status == 200
        assert not ExportTraceServiceResponse.FromString(body).HasField("partial_success")
        with grpc.insecure_channel(server.grpc_target) as channel:
            export = channel.unary_unary(
                EXPORT_METHOD, response_deserializer=ExportTraceServiceResponse.FromString
            )
            assert not export(binary, timeout=10).HasField("partial_success")
        server.call(server.server.model.flush)  # the orphan parent never arrives: no crash, no edge
        graph = _graph(server.api_target)
    assert [node.name for node in graph.nodes] == ["my.service"]
    assert graph.nodes[0].requests_total == 3  # one SERVER span, sent three ways
    assert list(graph.edges) == []
    assert graph.spans_accepted == 3


def _spans_in(document: dict) -> list[tuple[str, dict]]:
    found = []
    for resource_spans in document["resourceSpans"]:
        attributes = resource_spans.get("resource", {}).get("attributes", [])
        service = next(a["value"]["stringValue"] for a in attributes if a["key"] == "service.name")
        for scope_spans in resource_spans.get("scopeSpans", []):
            found += [(service, span) for span in scope_spans.get("spans", [])]
    return found


@pytest.mark.parametrize("path", JAEGER_TRACES, ids=lambda path: path.stem)
def test_each_jaeger_fixture_decodes_with_its_ids_attributes_events_and_links(path: Path) -> None:
    document = json.loads(path.read_bytes())
    request = parse_trace_request(path.read_bytes())
    decoded = [
        span for resource in request.resource_spans for scope in resource.scope_spans for span in scope.spans
    ]
    expected = _spans_in(document)
    assert len(decoded) == len(expected)
    for span, (_, raw) in zip(decoded, expected, strict=True):
        assert span.trace_id.hex() == raw["traceId"].lower()
        assert span.span_id.hex() == raw["spanId"].lower()
        assert span.parent_span_id.hex() == raw.get("parentSpanId", "").lower()
        assert span.name == raw["name"]
        assert [kv.key for kv in span.attributes] == [kv["key"] for kv in raw.get("attributes", [])]
        assert len(span.events) == len(raw.get("events", []))
        assert [link.span_id.hex() for link in span.links] == [
            link["spanId"].lower() for link in raw.get("links", [])
        ]


# What a person reading the fixtures draws: each file's services; the one parent/child pair
# (opname_maxdur_trace.json) stays inside query07-service, and the links of link_attributes_trace.json and
# tags_opname_trace.json sit on spans that are not CONSUMER spans, so no file holds a call between services.
EXPECTED_SERVICES = {
    "example_trace": {"example-service-1", "example-service-2", "example-service-3"},
    "opname_maxdur_trace": {"query07-service"},
    "link_attributes_trace": {"query25-service"},
    "multi_index_trace": {"query05-service"},
}


def test_the_jaeger_fixtures_over_http_json_give_the_graph_a_reader_draws() -> None:
    services_by_file = {}
    spans_by_service: dict[str, int] = {}
    with running_server() as server:
        for path in JAEGER_TRACES:
            status, body = _post(server.http_url, path.read_bytes(), "application/json")
            assert status == 200, path.name
            assert json.loads(body) == {}, path.name
            spans = _spans_in(json.loads(path.read_bytes()))
            services_by_file[path.stem] = {service for service, _ in spans}
            for service, _ in spans:
                spans_by_service[service] = spans_by_service.get(service, 0) + 1
        server.call(server.server.model.flush)
        graph = _graph(server.api_target)
    for name, services in EXPECTED_SERVICES.items():
        assert services_by_file[name] == services
    assert {node.name for node in graph.nodes} == set(spans_by_service)
    assert all(node.kind == pb.NODE_KIND_SERVICE for node in graph.nodes)
    assert list(graph.edges) == []
    assert graph.spans_accepted == sum(spans_by_service.values())
    assert graph.spans_rejected == 0
    # Root spans are requests served: query07-service sent a root and a child of it.
    requests = {node.name: node.requests_total for node in graph.nodes}
    assert requests["query07-service"] == 1
    assert requests["example-service-1"] == 3  # three roots in example_trace.json
