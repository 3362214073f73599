"""The mergeable state of the model: window statistics per service, per operation and per edge.

Everything here adds up: two `TelemetryAggregates` built from two shards of the traffic merge into the
aggregates of all of it (`merge`), which is how several receiver processes or hosts feed one control plane.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Iterable

from telemetry.linker import Call
from telemetry.sketch import MIN_POSITIVE
from telemetry.windows import Aggregate, WindowedStats

EntryRecorder = Callable[[str, str, float, bool], None]


class TelemetryAggregates:
    """Per-service, per-operation and per-edge `WindowedStats`, plus which nodes exist."""

    def __init__(self, bucket_seconds: float, bucket_count: int, relative_accuracy: float) -> None:
        self.bucket_seconds = bucket_seconds
        self.bucket_count = bucket_count
        self.relative_accuracy = relative_accuracy
        self.services: dict[str, WindowedStats] = {}
        self.operations: dict[tuple[str, str], WindowedStats] = {}
        self.edges: dict[tuple[str, str], WindowedStats] = {}
        # Every service that sent spans, and when it last did (a service may serve no entry spans).
        self.service_last_seen: dict[str, float] = {}
        # External nodes (uninstrumented peers) and the system they run, if known.
        self.externals: dict[str, str] = {}
        self.external_last_seen: dict[str, float] = {}

    def _stats(self, table: dict, key: Hashable, now: float) -> WindowedStats:
        stats = table.get(key)
        if stats is None:
            stats = table[key] = WindowedStats(self.bucket_seconds, self.bucket_count, self.relative_accuracy, now)
        stats.last_seen = max(stats.last_seen, now)
        return stats

    def entry_recorder(self, bucket_index: int, now: float) -> EntryRecorder:
        """A function recording one served request into bucket `bucket_index`; cached for one batch."""
        cache: dict[tuple[str, str], tuple[WindowedStats, Aggregate, WindowedStats, Aggregate]] = {}
        log = math.log
        ceil = math.ceil

        def record(service: str, operation: str, latency_ms: float, error: bool) -> None:
            key = (service, operation)
            hit = cache.get(key)
            if hit is None:
                service_stats = self._stats(self.services, service, now)
                operation_stats = self._stats(self.operations, key, now)
                hit = cache[key] = (
                    service_stats,
                    service_stats.bucket(bucket_index),
                    operation_stats,
                    operation_stats.bucket(bucket_index),
                )
            service_stats, service_bucket, operation_stats, operation_bucket = hit
            service_stats.requests_total += 1
            operation_stats.requests_total += 1
            if error:
                service_stats.errors_total += 1
                operation_stats.errors_total += 1
                service_bucket.errors += 1
                operation_bucket.errors += 1
            # The sketch's own `add`, inlined for both sketches: this runs once per ingested span.
            for sketch in (service_bucket.sketch, operation_bucket.sketch):
                sketch.count += 1
                sketch.total += latency_ms
                if latency_ms < MIN_POSITIVE:
                    sketch.zero_count += 1
                else:
                    index = ceil(log(latency_ms) * sketch._inv_log_gamma)
                    bins = sketch.bins
                    bins[index] = bins.get(index, 0) + 1

        return record

    def saw_service(self, service: str, now: float) -> None:
        self.service_last_seen[service] = max(self.service_last_seen.get(service, now), now)

    def record_calls(self, calls: Iterable[Call], bucket_index: int, now: float) -> None:
        """Add caller -> callee observations (from the linker) to the edge windows."""
        for caller, callee, latency_ms, error, external, system in calls:
            stats = self._stats(self.edges, (caller, callee), now)
            stats.bucket(bucket_index).record(latency_ms, error)
            stats.requests_total += 1
            stats.errors_total += error
            if external:
                if system or callee not in self.externals:
                    self.externals[callee] = system
                self.external_last_seen[callee] = now

    def forget_before(self, cutoff: float) -> None:
        """Drop services, operations, edges and external nodes last seen before `cutoff`."""
        for table in (self.services, self.operations, self.edges):
            for key in [key for key, stats in table.items() if stats.last_seen < cutoff]:
                del table[key]
        for key in [key for key, seen in self.service_last_seen.items() if seen < cutoff]:
            del self.service_last_seen[key]
        for key in [key for key, seen in self.external_last_seen.items() if seen < cutoff]:
            del self.external_last_seen[key]
            self.externals.pop(key, None)

    def merge(self, other: TelemetryAggregates) -> None:
        """Add another shard's aggregates into these (same bucket width and accuracy)."""
        if (other.bucket_seconds, other.relative_accuracy) != (self.bucket_seconds, self.relative_accuracy):
            raise ValueError("cannot merge aggregates kept with different buckets or accuracy")
        for mine, theirs in ((self.services, other.services), (self.operations, other.operations),
                             (self.edges, other.edges)):
            for key, stats in theirs.items():
                target = mine.get(key)
                if target is None:
                    target = mine[key] = WindowedStats(
                        self.bucket_seconds, self.bucket_count, self.relative_accuracy, stats.first_seen
                    )
                    target.last_seen = stats.last_seen
                target.merge(stats)
        for service, seen in other.service_last_seen.items():
            self.saw_service(service, seen)
        for name, system in other.externals.items():
            if system or name not in self.externals:
                self.externals[name] = system
        for name, seen in other.external_last_seen.items():
            self.external_last_seen[name] = max(self.external_last_seen.get(name, seen), seen)
