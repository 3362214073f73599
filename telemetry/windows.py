"""Bucketed sliding windows of request counts, errors and latency, all mergeable.

Each tracked thing (a service, an operation, an edge) keeps one `WindowedStats`: lifetime totals plus a
ring of fixed-width time buckets, each an `Aggregate` (count, errors, latency sum and sketch). A window
summary merges the buckets that fall inside it. Buckets are keyed by absolute bucket index
(floor(time / width)), so windows kept by different receiver shards line up and merge bucket by bucket.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from telemetry.sketch import DEFAULT_RELATIVE_ACCURACY, LatencySketch

SUMMARY_QUANTILES = (0.5, 0.95, 0.99)


class Aggregate:
    """Errors and latencies (milliseconds) of one bucket, or of several merged; the sketch counts requests."""

    __slots__ = ("errors", "sketch")

    def __init__(self, relative_accuracy: float = DEFAULT_RELATIVE_ACCURACY) -> None:
        self.errors = 0
        self.sketch = LatencySketch(relative_accuracy)

    @property
    def count(self) -> int:
        return self.sketch.count

    @property
    def latency_ms_sum(self) -> float:
        return self.sketch.total

    def record(self, latency_ms: float, error: bool) -> None:
        self.errors += error
        self.sketch.add(latency_ms)

    def merge(self, other: Aggregate) -> None:
        self.errors += other.errors
        self.sketch.merge(other.sketch)

    def subtract(self, other: Aggregate) -> None:
        """Remove `other`, which must have been merged into this one before."""
        self.errors -= other.errors
        self.sketch.subtract(other.sketch)

    def copy(self) -> Aggregate:
        clone = Aggregate.__new__(Aggregate)
        clone.errors = self.errors
        clone.sketch = self.sketch.copy()
        return clone


@dataclass(frozen=True, slots=True)
class WindowSummary:
    """What one window says about one thing; the unit of every stats answer."""

    window_seconds: float
    requests: int
    errors: int
    request_rate: float
    error_rate: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float
    concurrency: float

    @classmethod
    def of(cls, aggregate: Aggregate, window_seconds: float) -> WindowSummary:
        count = aggregate.count
        p50, p95, p99 = aggregate.sketch.quantiles(SUMMARY_QUANTILES)
        seconds = max(window_seconds, 1e-9)
        return cls(
            window_seconds=window_seconds,
            requests=count,
            errors=aggregate.errors,
            request_rate=count / seconds,
            error_rate=aggregate.errors / count if count else 0.0,
            p50_ms=p50,
            p95_ms=p95,
            p99_ms=p99,
            mean_ms=aggregate.latency_ms_sum / count if count else 0.0,
            # Little's law: mean in flight = arrival rate x mean time in system = busy time / wall time.
            concurrency=aggregate.latency_ms_sum / 1000.0 / seconds,
        )


class WindowedStats:
    """Lifetime totals plus a ring of time buckets for one service, operation or edge.

    Snapshots are taken every control tick, so the window over the whole ring is kept incrementally:
    `_closed` holds the sum of every bucket older than the newest one; a bucket is added to it when a newer
    one opens and subtracted when it leaves the ring (counts subtract exactly). A summary of the full
    window is then one copy and one merge, not a merge of every bucket.
    """

    __slots__ = (
        "bucket_seconds",
        "bucket_count",
        "buckets",
        "requests_total",
        "errors_total",
        "first_seen",
        "last_seen",
        "relative_accuracy",
        "_closed",
        "_newest",
    )

    def __init__(
        self, bucket_seconds: float, bucket_count: int, relative_accuracy: float, now: float
    ) -> None:
        self.bucket_seconds = bucket_seconds
        self.bucket_count = bucket_count
        self.relative_accuracy = relative_accuracy
        self.buckets: dict[int, Aggregate] = {}
        self.requests_total = 0
        self.errors_total = 0
        self.first_seen = now
        self.last_seen = now
        self._closed: Aggregate | None = Aggregate(relative_accuracy)  # None: rebuild from the buckets
        self._newest = -(2**62)

    def bucket(self, index: int) -> Aggregate:
        """The aggregate of bucket `index`, created on demand; opening a newer bucket advances the ring."""
        if index > self._newest:
            self._advance(index)
        elif index < self._newest:
            if index <= self._newest - self.bucket_count:
                return Aggregate(self.relative_accuracy)  # older than the ring: counted in totals only
            self._closed = None  # a closed bucket changes (clock went back): rebuild the sum lazily
        aggregate = self.buckets.get(index)
        if aggregate is None:
            aggregate = self.buckets[index] = Aggregate(self.relative_accuracy)
        return aggregate

    def _advance(self, index: int) -> None:
        """Make `index` the newest bucket: close the previous newest, drop what leaves the ring."""
        closed = self._closed
        previous = self.buckets.get(self._newest)
        if closed is not None and previous is not None:
            closed.merge(previous)
        self._newest = index
        oldest = index - self.bucket_count + 1
        for stale in [key for key in self.buckets if key < oldest]:
            leaving = self.buckets.pop(stale)
            if closed is not None:
                closed.subtract(leaving)

    def closed_sum(self) -> Aggregate:
        if self._closed is None:
            closed = Aggregate(self.relative_accuracy)
            for index, aggregate in self.buckets.items():
                if index < self._newest:
                    closed.merge(aggregate)
            self._closed = closed
        return self._closed

    def record(self, now: float, latency_ms: float, error: bool) -> None:
        """Record one request at time `now` (one-off path; the ingest hot path fills buckets itself)."""
        self.bucket(math.floor(now / self.bucket_seconds)).record(latency_ms, error)
        self.requests_total += 1
        self.errors_total += error
        self.last_seen = max(self.last_seen, now)

    def window(self, now: float, window_seconds: float) -> tuple[Aggregate, float]:
        """A new Aggregate of the last `window_seconds` (whole buckets, the current one partly elapsed)
        and the seconds it covers."""
        width = self.bucket_seconds
        current = math.floor(now / width)
        span = min(max(1, math.ceil(window_seconds / width)), self.bucket_count)
        oldest = current - span + 1
        if current > self._newest:
            self._advance(current)
        if span == self.bucket_count and current == self._newest:
            merged = self.closed_sum().copy()
            newest = self.buckets.get(current)
            if newest is not None:
                merged.merge(newest)
        else:  # a shorter window, or `now` before the newest data: add up the buckets it covers
            merged = Aggregate(self.relative_accuracy)
            for index, aggregate in self.buckets.items():
                if oldest <= index <= current:
                    merged.merge(aggregate)
        start = max(oldest * width, self.first_seen)
        # While warming up, a rate over the full window would understate: divide by what was observed,
        # but by at least one bucket so that a single early request does not read as a huge rate.
        return merged, max(now - start, width)

    def summary(self, now: float, window_seconds: float) -> WindowSummary:
        return WindowSummary.of(*self.window(now, window_seconds))

    def merge(self, other: WindowedStats) -> None:
        """Add `other` (same bucket width) into this one, bucket by bucket."""
        if other.bucket_seconds != self.bucket_seconds:
            raise ValueError("cannot merge windows of different bucket widths")
        for index, aggregate in other.buckets.items():
            mine = self.buckets.get(index)
            if mine is None:
                mine = self.buckets[index] = Aggregate(self.relative_accuracy)
            mine.merge(aggregate)
        self._closed = None
        newest = max(self._newest, other._newest)
        self._newest = newest - 1  # re-advance to prune what left the ring; the sum is rebuilt lazily
        self._advance(newest)
        self.requests_total += other.requests_total
        self.errors_total += other.errors_total
        self.first_seen = min(self.first_seen, other.first_seen)
        self.last_seen = max(self.last_seen, other.last_seen)
