"""End to end with the real OpenTelemetry Python SDK: four instrumented services and a database, exported over
OTLP/gRPC and OTLP/HTTP to a real server on loopback, then read back through the ControlPlane gRPC API.

The application runs in-process, but every service has its own TracerProvider, Resource and exporter, and
calls between services cross a W3C `traceparent` carried in a dict, exactly as an HTTP header would:

    frontend GET /checkout ──► checkout POST /checkout ──► inventory POST /reserve ──► PostgreSQL (x2)
                                                      └──► payment POST /pay  (500 in the FAILING requests)

The frontend degrades gracefully when checkout fails (its own span stays OK), so errors show on the
frontend -> checkout edge but not on the frontend service. In the PROXY_FAILING requests the sidecar in front
of inventory answers checkout with a 500 although inventory itself served the request fine, and checkout's
HTTP client records only the status code (span status left UNSET): the checkout -> inventory edge counts
those errors from the client span alone, while the inventory service has none.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import grpc
import pytest
from opentelemetry import propagate, trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http import Compression as HttpCompression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from opentelemetry.trace import SpanKind, Status, StatusCode

from protos.controlplane.v1 import controlplane_pb2 as pb
from protos.controlplane.v1 import controlplane_pb2_grpc as pb_grpc
from telemetry import ModelConfig
from telemetry.semconv import peer_of
from tests.support import RunningServer, running_server

REQUESTS = 20
FAILING = frozenset(i for i in range(REQUESTS) if i % 5 == 3)  # requests 3, 8, 13, 18
PROXY_FAILING = frozenset({6, 16})
SERVICES = ("frontend", "checkout", "inventory", "payment")
DB_ATTRIBUTES = {
    "db.system": "postgresql",
    "db.namespace": "inventory_db",
    "server.address": "db.internal",
    "server.port": 5432,
}
DB_QUERIES = ("SELECT inventory_db.stock", "UPDATE inventory_db.stock")
# What semconv.PEER_NAME_KEYS picks for DB_ATTRIBUTES: server.address comes before db.namespace.
DB_NODE = "db.internal"
SPANS_PER_REQUEST = 3 + 3 + 3 + 1  # frontend, checkout, inventory, payment

# With a long TTL nothing times out on its own during the test: pending links resolve only at `flush`.
LONG_TTL = ModelConfig(link_ttl_seconds=60.0)


@pytest.fixture(autouse=True)
def _no_otel_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """OTEL_* variables of the machine running the tests must not redirect or reconfigure the exporters."""
    for name in list(os.environ):
        if name.startswith("OTEL_"):
            monkeypatch.delenv(name)


class RecordingExporter(SpanExporter):
    """Passes spans to the real OTLP exporter and keeps its results, so a failed export fails the test."""

    def __init__(self, inner: SpanExporter) -> None:
        self.inner = inner
        self.results: list[SpanExportResult] = []
        self.spans_exported = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        result = self.inner.export(spans)
        self.results.append(result)
        self.spans_exported += len(spans)
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self.inner.force_flush(timeout_millis)


@dataclass
class Service:
    name: str
    provider: TracerProvider
    exporter: RecordingExporter
    tracer: trace.Tracer = field(init=False)

    def __post_init__(self) -> None:
        self.tracer = self.provider.get_tracer("tests.shop", "1.0.0")


ExporterFactory = Callable[[RunningServer], SpanExporter]


def grpc_exporter(compression: grpc.Compression | None = None) -> ExporterFactory:
    return lambda srv: GrpcSpanExporter(
        endpoint=srv.grpc_target, insecure=True, timeout=10, compression=compression
    )


def http_exporter(compression: HttpCompression | None = None) -> ExporterFactory:
    return lambda srv: HttpSpanExporter(endpoint=srv.http_url, timeout=10, compression=compression)


def make_service(name: str, exporter: SpanExporter) -> Service:
    recording = RecordingExporter(exporter)
    provider = TracerProvider(resource=Resource.create({"service.name": name}), sampler=ALWAYS_ON)
    provider.add_span_processor(
        BatchSpanProcessor(
            recording,
            max_queue_size=10_000,
            max_export_batch_size=10_000,
            schedule_delay_millis=60_000,  # export only on force_flush: one request per service
        )
    )
    return Service(name, provider, recording)


def flush_all(services: dict[str, Service], order: Sequence[str] | None = None) -> None:
    """Export each service's spans (one request per service), in `order`."""
    for name in order or services:
        service = services[name]
        assert service.provider.force_flush(timeout_millis=20_000), f"{service.name}: force_flush timed out"
        assert service.exporter.results, f"{service.name}: nothing exported"
        assert all(result is SpanExportResult.SUCCESS for result in service.exporter.results), (
            f"{service.name}: export failed: {service.exporter.results}"
        )


@contextlib.contextmanager
def shop(srv: RunningServer, exporter: ExporterFactory) -> Iterator[dict[str, Service]]:
    """One TracerProvider (own Resource, own exporter) per service; shut down on exit."""
    services = {name: make_service(name, exporter(srv)) for name in SERVICES}
    try:
        yield services
    finally:
        for service in services.values():
            service.provider.shutdown()


class Shop:
    """The application: each handler is one service's request handler, called with the incoming headers."""

    def __init__(
        self,
        services: dict[str, Service],
        failing: frozenset[int] = FAILING,
        proxy_failing: frozenset[int] = PROXY_FAILING,
    ) -> None:
        self.services = services
        self.failing = failing
        self.proxy_failing = proxy_failing

    def _call(
        self,
        caller: str,
        callee: str,
        route: str,
        handler: Callable[[dict[str, str], int], int],
        request: int,
        proxy_fails: bool = False,
    ) -> int:
        """An HTTP client span in `caller`; the W3C context crosses to `callee` in a dict of headers.

        With `proxy_fails`, the callee serves the request but the caller gets a 500 from the proxy between
        them, and records it as the status code only (no span status), as some HTTP clients do.
        """
        tracer = self.services[caller].tracer
        attributes = {
            "http.request.method": "POST",
            "server.address": callee,
            "server.port": 8080,
            "url.full": f"http://{callee}:8080{route}",
        }
        with tracer.start_as_current_span("POST", kind=SpanKind.CLIENT, attributes=attributes) as span:
            headers: dict[str, str] = {}
            propagate.inject(headers, context=trace.set_span_in_context(span))
            assert "traceparent" in headers
            status = handler(headers, request)
            if proxy_fails:
                status = 500
                span.set_attribute("http.response.status_code", status)
                return status
            span.set_attribute("http.response.status_code", status)
            if status >= 500:
                span.set_status(Status(StatusCode.ERROR))
            return status

    def _serve(self, service: str, route: str, headers: dict[str, str]) -> trace.Span:
        context = propagate.extract(headers)
        return self.services[service].tracer.start_as_current_span(
            f"POST {route}",
            context=context,
            kind=SpanKind.SERVER,
            attributes={"http.request.method": "POST", "http.route": route},
        )

    def frontend(self, request: int) -> int:
        tracer = self.services["frontend"].tracer
        attributes = {"http.request.method": "GET", "http.route": "/checkout"}
        with tracer.start_as_current_span(
            "GET /checkout", kind=SpanKind.SERVER, attributes=attributes
        ) as span:
            with tracer.start_as_current_span("render cart"):  # INTERNAL: no call, no entry
                pass
            self._call("frontend", "checkout", "/checkout", self.checkout, request)
            # Degrades gracefully: a "try again later" page is still a 200 for the frontend.
            span.set_attribute("http.response.status_code", 200)
            return 200

    def checkout(self, headers: dict[str, str], request: int) -> int:
        with self._serve("checkout", "/checkout", headers) as span:
            # A failed reservation is reconciled later: checkout carries on either way.
            proxy_fails = request in self.proxy_failing
            self._call("checkout", "inventory", "/reserve", self.inventory, request, proxy_fails)
            status = self._call("checkout", "payment", "/pay", self.payment, request)
            if status >= 500:
                span.set_status(Status(StatusCode.ERROR, "payment failed"))
            span.set_attribute("http.response.status_code", status)
            return status

    def inventory(self, headers: dict[str, str], request: int) -> int:
        with self._serve("inventory", "/reserve", headers) as span:
            tracer = self.services["inventory"].tracer
            for query in DB_QUERIES:
                attributes = {**DB_ATTRIBUTES, "db.operation.name": query.split()[0]}
                with tracer.start_as_current_span(query, kind=SpanKind.CLIENT, attributes=attributes):
                    pass
            span.set_attribute("http.response.status_code", 200)
            return 200

    def payment(self, headers: dict[str, str], request: int) -> int:
        with self._serve("payment", "/pay", headers) as span:
            status = 500 if request in self.failing else 200
            span.set_attribute("http.response.status_code", status)
            if status >= 500:
                span.set_status(Status(StatusCode.ERROR, "card declined by a broken gateway"))
            return status


def edges_of(graph: pb.GetGraphResponse) -> dict[tuple[str, str], tuple[int, int]]:
    return {(edge.source, edge.target): (edge.calls_total, edge.errors_total) for edge in graph.edges}


def nodes_of(graph: pb.GetGraphResponse) -> dict[str, pb.Node]:
    return {node.name: node for node in graph.nodes}


_ANY_FIELD = {str: "string_value", int: "int_value"}


def test_db_attributes_name_the_expected_peer() -> None:
    # The expected node name below follows semconv.PEER_NAME_KEYS: server.address before db.namespace.
    attributes = {key: AnyValue(**{_ANY_FIELD[type(value)]: value}) for key, value in DB_ATTRIBUTES.items()}
    assert peer_of(attributes) == (DB_NODE, "postgresql")


TRANSPORTS = {
    "grpc": grpc_exporter(),
    "grpc-gzip": grpc_exporter(grpc.Compression.Gzip),
    "http-protobuf": http_exporter(),
    "http-protobuf-gzip": http_exporter(HttpCompression.Gzip),
}


# Spans reach the server in whatever order the services export: callers first (parents are waiting when
# children arrive) or callees first (children wait as orphans for their parents).
FLUSH_ORDERS = {
    "callers-first": ("frontend", "checkout", "inventory", "payment"),
    "callees-first": ("payment", "inventory", "checkout", "frontend"),
}


@pytest.mark.parametrize("order", FLUSH_ORDERS)
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_sdk_application_builds_the_exact_graph(transport: str, order: str) -> None:
    failures = len(FAILING)
    with running_server(LONG_TTL) as srv, shop(srv, TRANSPORTS[transport]) as services:
        app = Shop(services)
        for request in range(REQUESTS):
            assert app.frontend(request) == 200
        flush_all(services, FLUSH_ORDERS[order])
        assert sum(s.exporter.spans_exported for s in services.values()) == REQUESTS * SPANS_PER_REQUEST

        with grpc.insecure_channel(srv.api_target) as channel:
            stub = pb_grpc.ControlPlaneStub(channel)

            # Before the links time out, the database calls are still waiting for an answer that no
            # instrumented callee will ever send: no external node yet, every service edge already there.
            graph = stub.GetGraph(pb.GetGraphRequest(), timeout=10)
            assert graph.spans_accepted == REQUESTS * SPANS_PER_REQUEST
            assert graph.spans_rejected == 0
            assert set(edges_of(graph)) == {
                ("frontend", "checkout"),
                ("checkout", "inventory"),
                ("checkout", "payment"),
            }
            assert set(nodes_of(graph)) == set(SERVICES)

            srv.call(lambda: srv.server.model.flush())
            graph = stub.GetGraph(pb.GetGraphRequest(), timeout=10)

            assert edges_of(graph) == {
                ("frontend", "checkout"): (REQUESTS, failures),
                ("checkout", "inventory"): (REQUESTS, len(PROXY_FAILING)),
                ("checkout", "payment"): (REQUESTS, failures),
                ("inventory", DB_NODE): (REQUESTS * len(DB_QUERIES), 0),
            }
            for edge in graph.edges:  # everything happened within the window
                assert (edge.stats.requests, edge.stats.errors) == (edge.calls_total, edge.errors_total)
                assert edge.last_seen_unix > 0

            nodes = nodes_of(graph)
            assert set(nodes) == {*SERVICES, DB_NODE}
            for name in SERVICES:
                assert nodes[name].kind == pb.NODE_KIND_SERVICE, name
                assert nodes[name].system == ""
            database = nodes[DB_NODE]
            assert database.kind == pb.NODE_KIND_EXTERNAL
            assert database.system == "postgresql"
            assert (database.requests_total, database.errors_total) == (REQUESTS * len(DB_QUERIES), 0)

            stats = stub.GetServiceStats(pb.GetServiceStatsRequest(include_operations=True), timeout=10)
            by_service = {entry.service: entry for entry in stats.services}
            assert set(by_service) == set(SERVICES)  # the database is external: no service stats
            expected = {
                "frontend": ("GET /checkout", 0),
                "checkout": ("POST /checkout", failures),
                "inventory": ("POST /reserve", 0),
                "payment": ("POST /pay", failures),
            }
            for name, (operation, errors) in expected.items():
                entry = by_service[name]
                assert (entry.requests_total, entry.errors_total) == (REQUESTS, errors), name
                assert (entry.stats.requests, entry.stats.errors) == (REQUESTS, errors), name
                assert entry.stats.error_rate == pytest.approx(errors / REQUESTS)
                assert [op.operation for op in entry.operations] == [operation], name
                (op,) = entry.operations
                assert (op.requests_total, op.errors_total) == (REQUESTS, errors), name
                assert (op.stats.requests, op.stats.errors) == (REQUESTS, errors), name

            only = stub.GetServiceStats(pb.GetServiceStatsRequest(services=["payment"]), timeout=10)
            assert [entry.service for entry in only.services] == ["payment"]
            assert not only.services[0].operations  # include_operations not asked for

            for request in (
                pb.GetServiceStatsRequest(services=["no-such-service"]),
                pb.GetServiceStatsRequest(services=["payment", DB_NODE]),  # external, not a service
            ):
                with pytest.raises(grpc.RpcError) as caught:
                    stub.GetServiceStats(request, timeout=10)
                assert caught.value.code() == grpc.StatusCode.NOT_FOUND
                assert request.services[-1] in caught.value.details()

            with pytest.raises(grpc.RpcError) as caught:
                stub.GetServiceStats(pb.GetServiceStatsRequest(window_seconds=-1), timeout=10)
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            with pytest.raises(grpc.RpcError) as caught:
                stub.GetGraph(pb.GetGraphRequest(window_seconds=-5), timeout=10)
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_unanswered_database_calls_become_external_after_the_link_ttl() -> None:
    """No flush here: only the link TTL (rotated by the server's maintenance or an `expire`) resolves them."""
    ttl = 0.2
    reserves = 3
    with running_server(ModelConfig(link_ttl_seconds=ttl)) as srv, shop(srv, grpc_exporter()) as services:
        app = Shop(services)
        for request in range(reserves):
            assert app.inventory({}, request) == 200  # inventory as a root, called by nobody instrumented
        exported_at = time.monotonic()
        flush_all(services, ["inventory"])
        with grpc.insecure_channel(srv.api_target) as channel:
            stub = pb_grpc.ControlPlaneStub(channel)
            graph = stub.GetGraph(pb.GetGraphRequest(), timeout=10)
            assert graph.spans_accepted == reserves * (1 + len(DB_QUERIES))
            assert not graph.edges  # still waiting for an answer
            deadline = time.monotonic() + 10
            while not graph.edges and time.monotonic() < deadline:
                time.sleep(ttl / 2)
                srv.call(lambda: srv.server.model.expire())
                graph = stub.GetGraph(pb.GetGraphRequest(), timeout=10)
            assert time.monotonic() - exported_at >= ttl
            assert edges_of(graph) == {("inventory", DB_NODE): (reserves * len(DB_QUERIES), 0)}
            database = nodes_of(graph)[DB_NODE]
            assert (database.kind, database.system) == (pb.NODE_KIND_EXTERNAL, "postgresql")
