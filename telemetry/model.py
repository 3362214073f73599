"""The live model of the application: services, operations and calls, with sliding-window statistics.

`TelemetryModel.ingest` takes one decoded OTLP `ExportTraceServiceRequest`, rejects invalid spans one by
one (the OTLP partial-success contract), feeds the rest to the `DependencyLinker` and to the windows of
`TelemetryAggregates`. Windows are keyed by the time the model ingests a span (the model's clock), not by
the span's own timestamps: the control loop acts on what it has observed lately, client clocks may be
skewed, and a replayed file or a simulator's spans then land in the current window.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from telemetry.aggregates import TelemetryAggregates
from telemetry.caps import (
    DEFAULT_MAX_EDGES,
    DEFAULT_MAX_EXTERNAL_PEERS,
    DEFAULT_MAX_NAME_LENGTH,
    DEFAULT_MAX_OPERATIONS,
    DEFAULT_MAX_OPERATIONS_PER_SERVICE,
    DEFAULT_MAX_SERVICES,
    DEFAULT_MAX_SPAN_WEIGHT,
    OTHER_OPERATION,
    OTHER_PEERS,
    OTHER_SERVICES,
    CardinalityLimits,
    cap_name,
)
from telemetry.critical_path import TraceSampler
from telemetry.linker import DependencyLinker, SpanRecord
from telemetry.sampling import adjusted_count, span_weight
from telemetry.semconv import (
    INTERESTING_KEYS,
    KIND_CLIENT,
    KIND_CONSUMER,
    KIND_PRODUCER,
    KIND_SERVER,
    SERVICE_NAME,
    SERVICE_VERSION,
    STATUS_ERROR,
    STATUS_UNSET,
    UNKNOWN_SERVICE,
    Attributes,
    is_error,
    operation_of,
    peer_of,
)
from telemetry.snapshot import GraphSnapshot, build_snapshot

_ZERO_TRACE_ID = bytes(16)
_ZERO_SPAN_ID = bytes(8)
_MAX_REASONS = 5


@dataclass(frozen=True, slots=True)
class ModelConfig:
    """How the model aggregates and forgets; the defaults suit a live control loop."""

    bucket_seconds: float = 1.0
    window_seconds: float = 60.0
    link_ttl_seconds: float = 10.0
    max_linked_spans: int = 1_000_000
    retention_seconds: float = 600.0
    relative_accuracy: float = 0.01
    max_operations_per_service: int = DEFAULT_MAX_OPERATIONS_PER_SERVICE
    # Share of traces (out of 256, by trace id) kept whole for critical paths; 0 turns sampling off.
    trace_sample_per_256: int = 4
    slowest_traces_kept: int = 5
    # Bounds on what senders can make the model keep (telemetry/caps.py; docs/limits.md).
    max_name_length: int = DEFAULT_MAX_NAME_LENGTH
    max_span_weight: int = DEFAULT_MAX_SPAN_WEIGHT
    max_services: int = DEFAULT_MAX_SERVICES
    max_operations: int = DEFAULT_MAX_OPERATIONS
    max_external_peers: int = DEFAULT_MAX_EXTERNAL_PEERS
    max_edges: int = DEFAULT_MAX_EDGES

    def __post_init__(self) -> None:
        if self.bucket_seconds <= 0 or self.window_seconds < self.bucket_seconds:
            raise ValueError("need 0 < bucket_seconds <= window_seconds")
        if self.retention_seconds < self.window_seconds:
            raise ValueError("retention_seconds must cover at least one window")
        if self.max_name_length < 16:
            raise ValueError("max_name_length must be at least 16 characters")
        if self.max_span_weight < 1:
            raise ValueError("max_span_weight must be at least 1")
        self.limits  # noqa: B018 - checks the cardinality limits

    @property
    def limits(self) -> CardinalityLimits:
        return CardinalityLimits(
            max_services=self.max_services,
            max_operations=self.max_operations,
            max_operations_per_service=self.max_operations_per_service,
            max_external_peers=self.max_external_peers,
            max_edges=self.max_edges,
        )

    @property
    def bucket_count(self) -> int:
        return math.ceil(self.window_seconds / self.bucket_seconds)


@dataclass(slots=True)
class IngestResult:
    """What happened to one export request: the OTLP partial-success fields.

    `warnings` counts what was accepted but capped (a truncated name, a capped weight, a folded series);
    OTLP lets a server say so in `error_message` with nothing rejected.
    """

    accepted_spans: int = 0
    rejected_spans: int = 0
    reasons: list[str] = field(default_factory=list)
    warnings: dict[str, int] = field(default_factory=dict)

    def reject(self, reason: str) -> None:
        self.rejected_spans += 1
        if len(self.reasons) < _MAX_REASONS:
            self.reasons.append(reason)

    def warn(self, what: str, count: int = 1) -> None:
        """Count `count` observations of a cap (`what` says which, e.g. "names cut to 256 characters")."""
        if count:
            self.warnings[what] = self.warnings.get(what, 0) + count

    def add(self, other: IngestResult) -> None:
        """Fold another part of the same request into this result."""
        self.accepted_spans += other.accepted_spans
        self.rejected_spans += other.rejected_spans
        self.reasons.extend(other.reasons[: max(0, _MAX_REASONS - len(self.reasons))])
        for what, count in other.warnings.items():
            self.warn(what, count)

    @property
    def error_message(self) -> str:
        parts = []
        if self.rejected_spans:
            more = self.rejected_spans - len(self.reasons)
            tail = f"; and {more} more" if more > 0 else ""
            parts.append(f"rejected {self.rejected_spans} span(s): " + "; ".join(self.reasons) + tail)
        if self.warnings:
            parts.append(
                "accepted with caps: " + "; ".join(f"{what}: {n}" for what, n in self.warnings.items())
            )
        return ". ".join(parts)


def invalid_span_reason(span: Span) -> str:
    """Why the OTLP specification makes `span` invalid (called only for spans that are)."""
    if len(span.trace_id) != 16 or span.trace_id == _ZERO_TRACE_ID:
        return "invalid trace_id (must be 16 bytes, not all zero)"
    if len(span.span_id) != 8 or span.span_id == _ZERO_SPAN_ID:
        return "invalid span_id (must be 8 bytes, not all zero)"
    if span.parent_span_id and (len(span.parent_span_id) != 8 or span.parent_span_id == _ZERO_SPAN_ID):
        return "invalid parent_span_id (must be empty or 8 bytes, not all zero)"
    return f"end time {span.end_time_unix_nano} is before start time {span.start_time_unix_nano}"


class TelemetryModel:
    """Everything the control plane knows from traces; fed by receivers, read through snapshots."""

    def __init__(self, config: ModelConfig | None = None, clock: Callable[[], float] = time.time) -> None:
        self.config = config or ModelConfig()
        self.clock = clock
        now = clock()
        self.aggregates = TelemetryAggregates(
            self.config.bucket_seconds,
            self.config.bucket_count,
            self.config.relative_accuracy,
            limits=self.config.limits,
        )
        self.linker = DependencyLinker(self.config.link_ttl_seconds, self.config.max_linked_spans, now)
        self.traces = TraceSampler(
            self.config.trace_sample_per_256,
            quiet_seconds=self.config.link_ttl_seconds,
            window_seconds=self.config.window_seconds,
            keep=self.config.slowest_traces_kept,
        )
        self.spans_accepted = 0
        self.spans_rejected = 0
        # What the caps cut since start (telemetry/caps.py), besides what they folded (`aggregates.folded`).
        self.capped: Counter[str] = Counter()
        # The control loop's view of the current bucket, keyed by (bucket index, layout version); built on
        # demand, or ahead of time by `prepare_complete_snapshot` once anyone has asked for one.
        self._complete: tuple[tuple[int, int], GraphSnapshot] | None = None
        self._complete_wanted = False
        self._prepared_bucket = -1

    def ingest(self, request: ExportTraceServiceRequest, now: float | None = None) -> IngestResult:
        """Validate and aggregate every span of one request; invalid spans are rejected individually."""
        now = self.clock() if now is None else now
        result = IngestResult()
        aggregates = self.aggregates
        bucket_index = math.floor(now / self.config.bucket_seconds)
        # Observations are gathered per batch and aggregated once per key at the end.
        served: dict[tuple[str, str], list[float]] = {}
        served_errors: dict[tuple[str, str], int] = {}
        # Sampled spans that stand for several requests: (latency, weight), see telemetry/sampling.py.
        served_weighted: dict[tuple[str, str], list[tuple[float, int]]] = {}
        linked: list[SpanRecord] = []
        link = linked.append
        interesting = INTERESTING_KEYS
        sample_below = self.traces.threshold
        sample = self.traces.add
        accepted = 0
        # Caps on what a request can make the model keep (telemetry/caps.py); what they cut is counted.
        max_name = self.config.max_name_length
        max_weight = self.config.max_span_weight
        truncated = capped_weights = folded_spans = 0
        folded_before = dict(aggregates.folded)
        for resource_index, resource_spans in enumerate(request.resource_spans):
            service = UNKNOWN_SERVICE
            version = ""
            for kv in resource_spans.resource.attributes:
                key = kv.key
                if key == SERVICE_NAME:
                    service = kv.value.string_value or UNKNOWN_SERVICE
                elif key == SERVICE_VERSION:
                    version = kv.value.string_value
            if len(service) > max_name:
                service = cap_name(service, max_name)
                truncated += 1
            if len(version) > max_name:
                version = cap_name(version, max_name)
                truncated += 1
            named = service
            service = aggregates.service_key(service)
            spans_of_service = 0
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    trace_id = span.trace_id
                    span_id = span.span_id
                    parent_id = span.parent_span_id
                    start = span.start_time_unix_nano
                    end = span.end_time_unix_nano
                    # One cheap test for the common case; the reason is worked out only for bad spans.
                    if (
                        len(trace_id) != 16
                        or len(span_id) != 8
                        or end < start
                        or trace_id == _ZERO_TRACE_ID
                        or span_id == _ZERO_SPAN_ID
                        or (parent_id and (len(parent_id) != 8 or parent_id == _ZERO_SPAN_ID))
                    ):
                        reason = invalid_span_reason(span)
                        result.reject(f"resource {resource_index} span {span.name!r}: {reason}")
                        continue
                    kind = span.kind
                    # Most spans leave status unset: HasField avoids building the sub-message.
                    status = span.status.code if span.HasField("status") else STATUS_UNSET
                    latency_ms = (end - start) * 1e-6
                    peer = None
                    # Internal spans carry neither peers nor protocol status codes: skip their attributes.
                    if kind >= KIND_SERVER:
                        found: Attributes = {}
                        for kv in span.attributes:
                            key = kv.key
                            if key in interesting:
                                found[key] = kv.value
                        error = status == STATUS_ERROR or (
                            status == STATUS_UNSET and bool(found) and is_error(status, found)
                        )
                        if kind in (KIND_CLIENT, KIND_PRODUCER) and found:
                            peer = peer_of(found)
                            if peer is not None and (len(peer[0]) > max_name or len(peer[1]) > max_name):
                                peer = (cap_name(peer[0], max_name), cap_name(peer[1], max_name))
                                truncated += 1
                        served_key = (
                            (service, operation_of(span.name, found))
                            if kind in (KIND_SERVER, KIND_CONSUMER) or not parent_id
                            else None
                        )
                    else:
                        error = status == STATUS_ERROR
                        served_key = None if parent_id else (service, span.name)
                    if served_key is not None and len(served_key[1]) > max_name:
                        served_key = (service, cap_name(served_key[1], max_name))
                        truncated += 1
                    if trace_id[15] < sample_below:
                        operation = served_key[1] if served_key else cap_name(span.name, max_name)
                        sample(trace_id, (service, operation, span_id, parent_id, start, end), now)
                    trace_state = span.trace_state
                    weight = span_weight(adjusted_count(trace_state), span_id) if trace_state else 1
                    if weight > max_weight:
                        # An absurd adjusted count (a threshold near 2**56) must not overflow a later read.
                        weight = max_weight
                        capped_weights += 1
                    if served_key is not None:
                        if weight == 1:
                            latencies = served.get(served_key)
                            if latencies is None:
                                latencies = served[served_key] = []
                            latencies.append(latency_ms)
                        else:
                            served_weighted.setdefault(served_key, []).append((latency_ms, weight))
                        if error:
                            served_errors[served_key] = served_errors.get(served_key, 0) + weight
                    link_keys = None
                    if kind == KIND_CONSUMER and span.links:
                        link_keys = [
                            link.trace_id + link.span_id
                            for link in span.links
                            if len(link.trace_id) == 16 and len(link.span_id) == 8
                        ]
                    link(
                        (
                            trace_id + span_id,
                            trace_id + parent_id if parent_id else None,
                            (service, kind, latency_ms, error, weight),
                            peer,
                            link_keys,
                        )
                    )
                    spans_of_service += 1
            if spans_of_service:
                aggregates.saw_service(service, now, version)
                accepted += spans_of_service
                if service != named:
                    folded_spans += spans_of_service
        aggregates.folded["services"] += folded_spans
        result.accepted_spans = accepted
        self.spans_accepted += accepted
        self.spans_rejected += result.rejected_spans
        aggregates.record_served(served, served_errors, bucket_index, now, served_weighted)
        self.linker.add_all(linked)
        aggregates.record_calls(self.linker.take_calls(), bucket_index, now)
        result.warn(f"names longer than {max_name} characters cut", truncated)
        result.warn(f"span weights above max_span_weight={max_weight} capped", capped_weights)
        self.capped["names_cut"] += truncated
        self.capped["span_weights_capped"] += capped_weights
        self._warn_folded(result, folded_before)
        return result

    def _warn_folded(self, result: IngestResult, before: dict[str, int]) -> None:
        limits = self.config.limits
        for kind, limit, into in (
            ("services", f"max_services={limits.max_services}", OTHER_SERVICES),
            (
                "operations",
                f"max_operations={limits.max_operations} or max_operations_per_service="
                f"{limits.max_operations_per_service}",
                OTHER_OPERATION,
            ),
            ("external_peers", f"max_external_peers={limits.max_external_peers}", OTHER_PEERS),
            ("edges", f"max_edges={limits.max_edges}", "an overflow edge"),
        ):
            count = self.aggregates.folded[kind] - before.get(kind, 0)
            result.warn(f"{kind} past {limit} counted under {into!r}", count)

    def caps_counts(self) -> dict[str, int]:
        """Everything the caps cut or folded since start, by kind (for /metrics and the API)."""
        counts = dict(self.capped)
        counts.update({f"{kind}_folded": count for kind, count in self.aggregates.folded.items()})
        return counts

    def merge(self, aggregates: TelemetryAggregates) -> None:
        """Add pre-aggregated telemetry (another shard's, or a node agent's report) to the windows."""
        self.aggregates.merge(aggregates)

    def expire(self, now: float | None = None) -> None:
        """Time out pending links and forget services, operations and edges unseen for the retention."""
        now = self.clock() if now is None else now
        self.linker.expire(now)
        self.traces.expire(now)
        self.aggregates.record_calls(
            self.linker.take_calls(), math.floor(now / self.config.bucket_seconds), now
        )
        self.aggregates.forget_before(now - self.config.retention_seconds)

    def flush(self, now: float | None = None) -> None:
        """Resolve every pending link now: unanswered client calls become calls to external nodes."""
        now = self.clock() if now is None else now
        self.linker.flush()
        self.traces.flush(now)
        self.aggregates.record_calls(
            self.linker.take_calls(), math.floor(now / self.config.bucket_seconds), now
        )

    def snapshot(
        self, window_seconds: float | None = None, now: float | None = None, complete_buckets: bool = False
    ) -> GraphSnapshot:
        """An immutable picture of the graph and its window statistics.

        `complete_buckets` reads the configured window over complete buckets only (the control loop's
        view; see `complete_snapshot`); otherwise the bucket still filling counts too.
        """
        now = self.clock() if now is None else now
        window = window_seconds or self.config.window_seconds
        if complete_buckets and window == self.config.window_seconds:
            return self.complete_snapshot(now)
        return build_snapshot(
            self.aggregates, now, window, self.spans_accepted, self.spans_rejected, self.traces.slowest()
        )

    def complete_snapshot(self, now: float | None = None) -> GraphSnapshot:
        """The configured window over complete buckets only: what the control loop reads every tick.

        Complete buckets do not change until the next one closes, so one snapshot serves every tick of a
        bucket, as long as no node, operation, edge or service version has come or gone since (the layout
        version). Its lifetime totals, `last_seen` and critical paths are as of when it was built: at most
        one bucket old, like its statistics. See `prepare_complete_snapshot` for building it ahead of time.
        """
        now = self.clock() if now is None else now
        self._complete_wanted = True
        key = (math.floor(now / self.config.bucket_seconds), self.aggregates.layout_version)
        cached = self._complete
        if cached is not None and cached[0] == key:
            return cached[1]
        snapshot = build_snapshot(
            self.aggregates,
            now,
            self.config.window_seconds,
            self.spans_accepted,
            self.spans_rejected,
            self.traces.slowest(),
            complete_buckets=True,
        )
        self._complete = (key, snapshot)
        return snapshot

    def prepare_complete_snapshot(self, now: float | None = None) -> bool:
        """Build the next `complete_snapshot` ahead of time; True when it built one.

        The ingest worker calls this between requests: the first call after a bucket closes builds the
        snapshot, with its node quantiles and dependency graph, so that the control loop's tick finds it
        ready instead of building it itself. Does nothing until someone has asked for a complete snapshot
        (a server without a control loop pays nothing), while the current one is still valid, or when one
        was built ahead already in this bucket: senders adding a new series with every request must not
        make the event loop rebuild the view after every request (the tick rebuilds it once if needed).
        """
        if not self._complete_wanted:
            return False
        now = self.clock() if now is None else now
        bucket = math.floor(now / self.config.bucket_seconds)
        key = (bucket, self.aggregates.layout_version)
        if self._complete is not None and (self._complete[0] == key or self._prepared_bucket == bucket):
            return False
        self._prepared_bucket = bucket
        self.complete_snapshot(now).prepare()
        return True
