"""Property: however spans are batched and ordered, the model sees the edges the trace trees hold."""

from collections import Counter
from dataclasses import dataclass, field

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from telemetry import ModelConfig, TelemetryModel

SERVICES = ("web", "api", "auth", "store", "queue-worker")
SERVER, CLIENT, INTERNAL = Span.SPAN_KIND_SERVER, Span.SPAN_KIND_CLIENT, Span.SPAN_KIND_INTERNAL
PRODUCER, CONSUMER = Span.SPAN_KIND_PRODUCER, Span.SPAN_KIND_CONSUMER


@dataclass
class Node:
    service: str
    kind: int
    error: bool
    duration: int
    peer: str | None = None
    children: list["Node"] = field(default_factory=list)


@st.composite
def trees(draw: st.DrawFn, depth: int = 0) -> Node:
    kind = draw(st.sampled_from([SERVER, CLIENT, INTERNAL, PRODUCER]))
    node = Node(
        service=draw(st.sampled_from(SERVICES)),
        kind=kind,
        error=draw(st.booleans()),
        duration=draw(st.integers(min_value=0, max_value=50_000_000)),
        peer=draw(st.sampled_from([None, "postgres", "redis"])) if kind in (CLIENT, PRODUCER) else None,
    )
    if depth < 4:
        node.children = draw(st.lists(trees(depth + 1), max_size=3))
    return node


@dataclass
class FlatSpan:
    service: str
    span: Span


def flatten(root: Node, rng_bytes: st.DrawFn) -> tuple[list[FlatSpan], Counter, Counter, Counter]:
    """The spans of a tree plus the edges, edge errors and served requests it implies."""
    spans: list[FlatSpan] = []
    edges: Counter = Counter()
    edge_errors: Counter = Counter()
    served: Counter = Counter()
    trace_id = rng_bytes(16)

    def visit(node: Node, parent: Node | None, parent_id: bytes) -> bytes:
        span_id = rng_bytes(8)
        span = Span(
            trace_id=trace_id,
            span_id=span_id,
            parent_span_id=parent_id,
            name=f"op-{node.kind}",
            kind=node.kind,
            start_time_unix_nano=1_000,
            end_time_unix_nano=1_000 + node.duration,
        )
        if node.error:
            span.status.code = 2
        if node.peer:
            span.attributes.add(key="peer.service").value.string_value = node.peer
        spans.append(FlatSpan(node.service, span))
        if node.kind == SERVER or parent is None:
            served[node.service, node.error] += 1
        if parent is not None and parent.service != node.service:
            edges[parent.service, node.service] += 1
            failed = node.error or (parent.error and parent.kind in (CLIENT, PRODUCER))
            edge_errors[parent.service, node.service] += failed
        answered = any(child.service != node.service for child in node.children)
        if node.peer and not answered:
            edges[node.service, node.peer] += 1
            edge_errors[node.service, node.peer] += node.error
        for child in node.children:
            visit(child, node, span_id)
        return span_id

    visit(root, None, b"")
    return spans, edges, edge_errors, served


@st.composite
def scenarios(draw: st.DrawFn):
    rng = draw(st.randoms(use_true_random=False))
    seen_ids: set[bytes] = set()

    def fresh(size: int) -> bytes:
        while True:
            value = rng.randbytes(size)
            if any(value) and value not in seen_ids:
                seen_ids.add(value)
                return value

    spans: list[FlatSpan] = []
    edges: Counter = Counter()
    edge_errors: Counter = Counter()
    served: Counter = Counter()
    for root in draw(st.lists(trees(), min_size=1, max_size=6)):
        tree_spans, tree_edges, tree_errors, tree_served = flatten(root, fresh)
        spans += tree_spans
        edges += tree_edges
        edge_errors.update(tree_errors)
        served += tree_served
    # A consumer in another trace linked to one producer span (messaging): an edge via span links.
    producers = [flat for flat in spans if flat.span.kind == PRODUCER]
    if producers and draw(st.booleans()):
        producer = draw(st.sampled_from(producers))
        consumer = Span(
            trace_id=fresh(16),
            span_id=fresh(8),
            name="consume",
            kind=CONSUMER,
            start_time_unix_nano=5,
            end_time_unix_nano=9,
        )
        consumer.links.add(trace_id=producer.span.trace_id, span_id=producer.span.span_id)
        spans.append(FlatSpan("queue-worker", consumer))
        served["queue-worker", False] += 1
        if producer.service != "queue-worker":
            edges[producer.service, "queue-worker"] += 1
            edge_errors[producer.service, "queue-worker"] += producer.span.status.code == 2
            peer = next((kv.value.string_value for kv in producer.span.attributes), None)
            answered_before = any(
                flat.span.parent_span_id == producer.span.span_id and flat.service != producer.service
                for flat in spans
            )
            if peer and not answered_before:  # the link answers the producer: no external call
                edges[producer.service, peer] -= 1
                edge_errors[producer.service, peer] -= producer.span.status.code == 2
    order = draw(st.permutations(range(len(spans))))
    cuts = sorted(draw(st.lists(st.integers(0, len(spans)), max_size=8)))
    return [spans[index] for index in order], cuts, +edges, edge_errors, served


def batches(spans: list[FlatSpan], cuts: list[int]) -> list[ExportTraceServiceRequest]:
    bounds = [0, *cuts, len(spans)]
    requests = []
    for start, end in zip(bounds, bounds[1:], strict=False):
        request = ExportTraceServiceRequest()
        for flat in spans[start:end]:  # one resource per span: the worst case for grouping
            resource = request.resource_spans.add()
            resource.resource.attributes.add(key="service.name").value.string_value = flat.service
            resource.scope_spans.add().spans.append(flat.span)
        requests.append(request)
    return requests


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.large_base_example, HealthCheck.too_slow],
)
@given(scenarios())
def test_any_batching_and_order_gives_the_edges_of_the_trees(scenario) -> None:
    spans, cuts, edges, edge_errors, served = scenario
    model = TelemetryModel(ModelConfig(link_ttl_seconds=60.0), clock=lambda: 1000.0)
    for request in batches(spans, cuts):
        result = model.ingest(request)
        assert result.rejected_spans == 0
    model.flush()
    snapshot = model.snapshot()
    got = Counter({(edge.source, edge.target): edge.calls_total for edge in snapshot.edges})
    got_errors = Counter({(edge.source, edge.target): edge.errors_total for edge in snapshot.edges})
    assert got == edges
    assert +got_errors == +edge_errors
    served_by_service = Counter()
    errors_by_service = Counter()
    for (service, error), count in served.items():
        served_by_service[service] += count
        errors_by_service[service] += count * error
    for node in snapshot.nodes:
        if node.kind == "service":
            assert node.requests_total == served_by_service[node.name]
            assert node.errors_total == errors_by_service[node.name]
    assert snapshot.spans_accepted == len(spans)
