"""The bundled trace generator: realistic OTLP traffic from a made-up application of many services.

A seeded, layered topology (a gateway, then layers of services, some of them calling databases and
caches that send no spans) yields request trees 3 to 6 services deep. Each call is a CLIENT span in the
caller and a SERVER span in the callee with the attributes real instrumentation sets (5 to 10 per span),
and a small share of calls fail with HTTP 500. Spans are grouped per service into `resource_spans`, as
each service's SDK would export them.

Trace ids start with an 8-byte `marker` shared by every trace of one generated request, so a load
generator can send one pre-serialized request many times with fresh trace ids by replacing the marker
bytes (`with_fresh_traces`), at C speed, instead of building messages in Python.
"""

from __future__ import annotations

import random
import time
from collections import defaultdict
from dataclasses import dataclass, field

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

MARKER_BYTES = 8
_SERVER, _CLIENT = Span.SPAN_KIND_SERVER, Span.SPAN_KIND_CLIENT
_DATABASES = (("postgresql", "5432"), ("redis", "6379"), ("mongodb", "27017"), ("memcached", "11211"))
_ROUTES = ("/api/items/{id}", "/api/users/{id}", "/api/search", "/api/cart", "/api/orders", "/healthz")


@dataclass(frozen=True, slots=True)
class Topology:
    """Who calls whom: `calls[s]` are the services s may call, `databases[s]` the external store it uses."""

    entry: str
    calls: dict[str, tuple[str, ...]]
    databases: dict[str, tuple[str, str]]
    layers: tuple[tuple[str, ...], ...] = field(default=())

    @property
    def services(self) -> list[str]:
        return sorted(self.calls)


def layered_topology(service_count: int = 24, depth: int = 6, seed: int = 7) -> Topology:
    """A gateway over `depth - 1` layers of services; every service reachable, leaves using databases."""
    if service_count < depth or depth < 3:
        raise ValueError("need depth >= 3 and at least one service per layer")
    rng = random.Random(seed)
    names = [f"svc-{index:02d}" for index in range(1, service_count)]
    layers: list[list[str]] = [["gateway"]] + [[] for _ in range(depth - 1)]
    for index, name in enumerate(names):  # every layer gets at least one service, then round-robin-ish
        layers[1 + (index if index < depth - 1 else rng.randrange(depth - 1))].append(name)
    calls: dict[str, tuple[str, ...]] = {}
    for level, layer in enumerate(layers):
        below = layers[level + 1] if level + 1 < len(layers) else []
        for name in layer:
            fanout = min(len(below), rng.randint(1, 2))
            calls[name] = tuple(rng.sample(below, fanout)) if below else ()
        for name in below:  # make every service reachable from the layer above
            if not any(name in calls[caller] for caller in layer):
                caller = rng.choice(layer)
                calls[caller] = calls[caller] + (name,)
    databases = {}
    for name in calls:
        if not calls[name] or rng.random() < 0.25:
            system, port = _DATABASES[rng.randrange(len(_DATABASES))]
            databases[name] = (f"{name}-{system}", system)
    return Topology("gateway", calls, databases, tuple(tuple(layer) for layer in layers))


class TraceGenerator:
    """Builds export requests of whole traces over a topology; seeded and deterministic."""

    def __init__(self, topology: Topology, seed: int = 1, error_ratio: float = 0.01) -> None:
        self.topology = topology
        self.rng = random.Random(seed)
        self.error_ratio = error_ratio

    def request(
        self, min_spans: int = 1, min_traces: int = 1, start_unix_nano: int | None = None
    ) -> ExportTraceServiceRequest:
        """Whole traces (at least `min_spans` spans, `min_traces` traces) sharing a fresh trace-id marker."""
        marker = self.rng.randbytes(MARKER_BYTES)
        by_service: dict[str, list[Span]] = defaultdict(list)
        spans = traces = 0
        clock = time.time_ns() if start_unix_nano is None else start_unix_nano
        while spans < min_spans or traces < min_traces:
            traces += 1
            trace_id = marker + self.rng.randbytes(16 - MARKER_BYTES)
            spans += self._serve(self.topology.entry, trace_id, b"", clock, 0, by_service)
            clock += 1_000_000
        request = ExportTraceServiceRequest()
        for service in sorted(by_service):
            resource_spans = request.resource_spans.add()
            resource_spans.resource.attributes.extend(
                [
                    _kv("service.name", service),
                    _kv("service.version", "1.4.2"),
                    _kv("telemetry.sdk.language", "python"),
                ]
            )
            scope_spans = resource_spans.scope_spans.add()
            scope_spans.scope.name = "controlplane.tracegen"
            scope_spans.spans.extend(by_service[service])
        return request

    def _serve(
        self, service: str, trace_id: bytes, parent: bytes, start: int, depth: int, out: dict[str, list[Span]]
    ) -> int:
        """The SERVER span of `service` and everything below it; returns how many spans were made."""
        rng = self.rng
        span_id = rng.randbytes(8)
        route = _ROUTES[rng.randrange(len(_ROUTES))]
        cursor = start + rng.randint(50_000, 400_000)
        made = 1
        failed = False
        callees = self.topology.calls[service]
        chosen = [callee for callee in callees if rng.random() < 0.45] or list(callees[:1])
        for callee in chosen:
            client_id = rng.randbytes(8)
            child_start = cursor + rng.randint(10_000, 50_000)
            made += self._serve(callee, trace_id, client_id, child_start, depth + 1, out)
            child_end = child_start + rng.randint(200_000, 5_000_000)
            error = rng.random() < self.error_ratio
            failed |= error
            out[service].append(
                _span(
                    trace_id,
                    client_id,
                    span_id,
                    f"GET {callee}",
                    _CLIENT,
                    cursor,
                    child_end + 20_000,
                    error,
                    [
                        _kv("http.request.method", "GET"),
                        _kv("server.address", callee),
                        _kv("server.port", 8080),
                        _kv("url.full", f"http://{callee}:8080{route}"),
                        _kv("http.response.status_code", 500 if error else 200),
                        _kv("network.protocol.version", "1.1"),
                    ],
                )
            )
            made += 1
            cursor = child_end + 30_000
        database = self.topology.databases.get(service)
        if database is not None:
            name, system = database
            db_end = cursor + rng.randint(100_000, 2_000_000)
            out[service].append(
                _span(
                    trace_id,
                    rng.randbytes(8),
                    span_id,
                    f"SELECT {name}",
                    _CLIENT,
                    cursor,
                    db_end,
                    False,
                    [
                        _kv("db.system", system),
                        _kv("db.namespace", name),
                        _kv("db.operation.name", "SELECT"),
                        _kv("server.address", f"{name}.internal"),
                        _kv("server.port", 5432),
                    ],
                )
            )
            made += 1
            cursor = db_end
        end = cursor + rng.randint(20_000, 200_000)
        out[service].append(
            _span(
                trace_id,
                span_id,
                parent,
                f"GET {route}",
                _SERVER,
                start,
                end,
                failed,
                [
                    _kv("http.request.method", "GET"),
                    _kv("http.route", route),
                    _kv("url.path", route.replace("{id}", str(rng.randint(1, 9999)))),
                    _kv("url.scheme", "http"),
                    _kv("http.response.status_code", 500 if failed else 200),
                    _kv("server.port", 8080),
                    _kv("user_agent.original", "tracegen/1.0"),
                    _kv("network.peer.address", f"10.0.{depth}.{rng.randint(1, 250)}"),
                ],
            )
        )
        return made


def with_fresh_traces(body: bytes, marker: bytes, replacement: bytes) -> bytes:
    """A serialized request generated with `marker` whose every trace id now starts with `replacement`."""
    return body.replace(marker, replacement)


def marker_of(request: ExportTraceServiceRequest) -> bytes:
    return request.resource_spans[0].scope_spans[0].spans[0].trace_id[:MARKER_BYTES]


def _kv(key: str, value: str | int) -> KeyValue:
    kv = KeyValue(key=key)
    if isinstance(value, int):
        kv.value.int_value = value
    else:
        kv.value.string_value = value
    return kv


def _span(
    trace_id: bytes,
    span_id: bytes,
    parent: bytes,
    name: str,
    kind: int,
    start: int,
    end: int,
    error: bool,
    attributes: list[KeyValue],
) -> Span:
    span = Span(
        trace_id=trace_id,
        span_id=span_id,
        parent_span_id=parent,
        name=name,
        kind=kind,
        start_time_unix_nano=start,
        end_time_unix_nano=end,
    )
    span.attributes.extend(attributes)
    if error:
        span.status.code = Status.STATUS_CODE_ERROR
    return span
