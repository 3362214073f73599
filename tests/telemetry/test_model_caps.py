"""Hostile input that the model caps: absurd span weights, enormous names, too many services, operations,
peers and edges. Each request is accepted (with a partial-success warning saying what was capped), and
after it a normal request and every read API (graph, stats, decisions, /metrics, /healthz) still answer."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request

import grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from controlplane.serve.cli import fetch_graph, fetch_stats
from protos.controlplane.v1 import controlplane_pb2 as pb
from protos.controlplane.v1 import controlplane_pb2_grpc as pb_grpc
from telemetry import ModelConfig
from telemetry.caps import OTHER_OPERATION, OTHER_PEERS, OTHER_SERVICES, TRUNCATED
from tests.support import REPO, RunningServer, running_server
from tests.telemetry.test_bad_input import (
    assert_still_serving,
    grpc_export,
    make_request,
    make_span,
    new_span_id,
    new_trace_id,
)

# A threshold of (2**56 - 1): an adjusted count of 2**56 per span, what one hostile exporter sent.
ABSURD_TRACESTATE = "ot=th:ffffffffffffff"
BIG_MESSAGES = [("grpc.max_send_message_length", 256 * 1024 * 1024)]


def stub(srv: RunningServer) -> pb_grpc.ControlPlaneStub:
    return pb_grpc.ControlPlaneStub(grpc.insecure_channel(srv.api_target))


def assert_plane_answers(srv: RunningServer, tag: str, known: str = "") -> None:
    """A normal request is accepted whole, and every read API answers correctly and fast. With `known`, the
    request goes to that (already kept) service, for a plane whose service cap is reached."""
    if known:
        before = fetch_stats(stub(srv), pb.GetServiceStatsRequest(services=[known]), timeout=10)
        response = grpc_export(srv, make_request(known, [make_span("GET /")]))  # an operation it has
        assert not response.HasField("partial_success"), response
    else:
        assert_still_serving(srv, tag)
    api = stub(srv)
    graph = fetch_graph(api, 0.0, timeout=10)
    assert (known or f"{tag}-grpc") in {node.name for node in graph.nodes}
    assert len(graph.nodes) == graph.total_nodes and len(graph.edges) == graph.total_edges
    stats = fetch_stats(api, pb.GetServiceStatsRequest(include_operations=True), timeout=10)
    assert (known or f"{tag}-grpc") in {service.service for service in stats.services}
    if known:
        after = next(service for service in stats.services if service.service == known)
        assert after.requests_total == before.services[0].requests_total + 1
    api.ListDecisions(pb.ListDecisionsRequest(page_size=10), timeout=10)
    base = f"http://127.0.0.1:{srv.ports.otlp_http}"
    for path in ("/metrics", "/healthz"):
        started = time.monotonic()
        with urllib.request.urlopen(base + path, timeout=10) as answer:
            assert answer.status == 200
            body = answer.read()
        assert time.monotonic() - started < 1.0, f"{path} took {time.monotonic() - started:.2f} s"
        if path == "/metrics":
            assert b"controlplane_spans_total" in body and b"controlplane_model_capped_total" in body


def test_absurd_span_weights_are_capped_and_no_later_request_fails() -> None:
    config = ModelConfig()
    with running_server() as srv:
        spans = [make_span("GET /poison") for _ in range(200)]
        for span in spans:
            span.trace_state = ABSURD_TRACESTATE
        response = grpc_export(srv, make_request("poisoned", spans))
        assert response.partial_success.rejected_spans == 0
        assert (
            "span weights above max_span_weight=1000000 capped: 200" in response.partial_success.error_message
        )
        stats = fetch_stats(stub(srv), pb.GetServiceStatsRequest(services=["poisoned"]), timeout=10)
        assert stats.services[0].requests_total == 200 * config.max_span_weight
        for round_ in range(3):  # every later request and read works, again and again
            assert_plane_answers(srv, f"after-{round_}")


def test_enormous_names_are_cut_and_stats_and_graph_stay_small() -> None:
    huge = 1_000_000
    with running_server() as srv:
        for batch in range(4):  # 200 spans of one service, each with its own 10**6-character name
            spans = [make_span(f"{batch}-{index:03d}" + "x" * huge) for index in range(50)]
            response = grpc_export(srv, make_request("one-service", spans), options=BIG_MESSAGES)
            message = response.partial_success.error_message
            assert response.partial_success.rejected_spans == 0
            assert "names longer than 256 characters cut: 50" in message
        for index in range(3):
            request = make_request(f"svc-{index}-" + "n" * 1_500_000, [make_span("GET /")])
            grpc_export(srv, request, options=BIG_MESSAGES)
        stats = fetch_stats(stub(srv), pb.GetServiceStatsRequest(include_operations=True), timeout=10)
        operations = {
            op.operation for s in stats.services if s.service == "one-service" for op in s.operations
        }
        # Cut to 256 characters, the per-service operation cap holding the rest under the overflow.
        assert len(operations) <= 201 and all(len(op) <= 256 for op in operations)
        assert all(op.endswith(TRUNCATED) for op in operations if op != OTHER_OPERATION)
        assert stats.ByteSize() < 1024 * 1024
        assert_plane_answers(srv, "after")
        # The command line, as an operator runs it, prints the graph as JSON.
        result = subprocess.run(
            [sys.executable, "-m", "controlplane.serve", "graph", "--json", "--target", srv.api_target],
            capture_output=True, text=True, timeout=60, cwd=REPO, check=True,
        )  # fmt: skip
        nodes = {node["name"] for node in json.loads(result.stdout)["nodes"]}
        assert all(len(name) <= 256 for name in nodes)
        assert sum(1 for name in nodes if name.startswith("svc-")) == 3


def _calls(caller: str, callees: list[str], peer_of_callee: bool = False) -> list:
    """One request per callee: a server span in `caller` and its child (a server span of the callee, or,
    with `peer_of_callee`, a client span of the caller naming the callee as an uninstrumented peer)."""
    requests = []
    for callee in callees:
        trace_id, root = new_trace_id(), new_span_id()
        requests.append(make_request(caller, [make_span("GET /", trace_id=trace_id, span_id=root)]))
        if peer_of_callee:
            client = make_span(
                "SELECT", trace_id=trace_id, parent_span_id=root, kind=Span.SPAN_KIND_CLIENT,
                attributes={"peer.service": callee},
            )  # fmt: skip
            requests.append(make_request(caller, [client]))
        else:
            requests.append(
                make_request(callee, [make_span("GET /x", trace_id=trace_id, parent_span_id=root)])
            )
    return requests


def test_services_operations_peers_and_edges_are_bounded_and_the_overflow_counted() -> None:
    caps = ModelConfig(
        max_services=20, max_operations=40, max_external_peers=5, max_edges=12, link_ttl_seconds=0.5
    )
    with running_server(model=caps) as srv:
        # 60 services of one span each: 20 kept, the 40 others folded (one span each).
        for index in range(60):
            grpc_export(srv, make_request(f"svc-{index:03d}", [make_span("GET /")]))
        # 100 operations: the 40 operation cap holds across services.
        response = grpc_export(srv, make_request("svc-000", [make_span(f"op-{i}") for i in range(100)]))
        assert "operations past max_operations=40" in response.partial_success.error_message
        # 10 uninstrumented peers: 5 kept, the others under the overflow peer.
        for request in _calls("svc-001", [f"db-{i}" for i in range(10)], peer_of_callee=True):
            grpc_export(srv, request)
        deadline = time.monotonic() + 10  # unanswered client spans become calls to peers after the link TTL
        while OTHER_PEERS not in {n.name for n in fetch_graph(stub(srv), 0.0, timeout=10).nodes}:
            assert time.monotonic() < deadline, "the calls to uninstrumented peers never showed"
            time.sleep(0.1)
        # 15 callees of one caller: the edge cap (12, the edges to peers included) holds.
        for request in _calls("svc-002", [f"svc-{i:03d}" for i in range(3, 18)]):
            grpc_export(srv, request)
        graph = fetch_graph(stub(srv), 0.0, timeout=10)
        names = {node.name for node in graph.nodes}
        services = {
            n.name for n in graph.nodes if n.kind == pb.NODE_KIND_SERVICE and n.name != OTHER_SERVICES
        }
        externals = {n.name for n in graph.nodes if n.kind == pb.NODE_KIND_EXTERNAL}
        assert OTHER_SERVICES in names and len(services) <= 20
        assert OTHER_PEERS in externals and len(externals - {OTHER_PEERS}) == 5
        assert (
            len(graph.edges) <= 12 + len(services) + 1
        )  # the cap, plus one overflow edge per caller at most
        assert graph.folded["services"] >= 40 and graph.folded["operations"] >= 60
        assert graph.folded["external_peers"] == 5 and graph.folded["edges"] > 0
        other = next(node for node in graph.nodes if node.name == OTHER_SERVICES)
        assert other.requests_total >= 40  # folded, not lost: the totals stay right
        stats = fetch_stats(stub(srv), pb.GetServiceStatsRequest(include_operations=True), timeout=10)
        assert sum(len(service.operations) for service in stats.services) <= 40 + len(stats.services)
        assert_plane_answers(srv, "after", known="svc-005")


def test_graph_pages_are_bounded_consistent_and_a_bad_token_is_refused() -> None:
    with running_server() as srv:
        long = "p" * 240
        for request in _calls("caller", [f"svc-{i:04d}-{long}" for i in range(300)]):
            grpc_export(srv, request)
        api = stub(srv)
        first = api.GetGraph(pb.GetGraphRequest(page_size=50), timeout=10)
        assert len(first.nodes) == 50 and first.next_page_token and first.total_nodes == 301
        pages, token = [first], first.next_page_token
        while token:
            grpc_export(srv, make_request("late-comer", [make_span("GET /")]))  # the listing must not change
            page = api.GetGraph(pb.GetGraphRequest(page_size=50, page_token=token), timeout=10)
            assert page.generated_unix == first.generated_unix
            pages.append(page)
            token = page.next_page_token
        nodes = [node.name for page in pages for node in page.nodes]
        edges = [(edge.source, edge.target) for page in pages for edge in page.edges]
        assert len(nodes) == len(set(nodes)) == 301 and "late-comer" not in nodes
        assert len(edges) == first.total_edges == 300
        # Without a page size, a page stays near 1 MiB however big the graph.
        assert all(page.ByteSize() <= 1_100_000 for page in pages)
        for token in ("garbage", "99999.0", "1.x"):
            try:
                api.GetGraph(pb.GetGraphRequest(page_token=token), timeout=10)
                raise AssertionError("a bad page token was accepted")
            except grpc.RpcError as error:
                assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "page_token" in error.details()
        assert_plane_answers(srv, "after")


def test_a_graph_larger_than_a_grpc_message_prints_whole_from_the_command_line() -> None:
    with running_server() as srv:
        long = "q" * 240
        callees = [f"svc-{i:04d}-{long}" for i in range(1_000)]
        for caller in range(8):
            request = ExportTraceServiceRequest()
            for callee in callees:  # one request per caller: its server spans and its callees' children
                for call in _calls(f"caller-{caller}-{long}", [callee]):
                    request.resource_spans.extend(call.resource_spans)
            grpc_export(srv, request, options=BIG_MESSAGES)
        pages = []
        token = ""
        while True:
            page = stub(srv).GetGraph(pb.GetGraphRequest(page_token=token), timeout=10)
            pages.append(page.ByteSize())
            token = page.next_page_token
            if not token:
                break
        assert sum(pages) > 4 * 1024 * 1024 and max(pages) < 1_100_000  # past gRPC's default, in pages
        result = subprocess.run(
            [sys.executable, "-m", "controlplane.serve", "graph", "--json", "--target", srv.api_target],
            capture_output=True, text=True, timeout=120, cwd=REPO, check=True,
        )  # fmt: skip
        document = json.loads(result.stdout)
        assert len(document["nodes"]) == 1_008 and len(document["edges"]) == 8_000
