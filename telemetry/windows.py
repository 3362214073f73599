"""Bucketed sliding windows of request counts, errors and latency, all mergeable.

Each tracked thing (a service, an operation, an edge) keeps one `WindowedStats`: lifetime totals plus a
ring of fixed-width time buckets, each an `Aggregate` (count, errors, latency sum and sketch). A window
summary merges the buckets that fall inside it. Buckets are keyed by absolute bucket index
(floor(time / width)), so windows kept by different receiver shards line up and merge bucket by bucket.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from telemetry.sketch import DEFAULT_RELATIVE_ACCURACY, LatencySketch, quantiles_of

SUMMARY_QUANTILES = (0.5, 0.95, 0.99)


class Aggregate:
    """Errors and latencies (milliseconds) of one bucket, or of several merged; the sketch counts requests."""

    __slots__ = ("errors", "sketch", "shared")

    def __init__(self, relative_accuracy: float = DEFAULT_RELATIVE_ACCURACY) -> None:
        self.errors = 0
        self.sketch = LatencySketch(relative_accuracy)
        # Set when a snapshot holds this aggregate: writers must then copy it first (copy on write).
        self.shared = False

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

    def quantiles(self, qs: Iterable[float]) -> list[float]:
        return self.sketch.quantiles(qs)

    def subtract(self, other: Aggregate) -> None:
        """Remove `other`, which must have been merged into this one before."""
        self.errors -= other.errors
        self.sketch.subtract(other.sketch)

    def copy(self) -> Aggregate:
        clone = Aggregate.__new__(Aggregate)
        clone.shared = False
        clone.errors = self.errors
        clone.sketch = self.sketch.copy()
        return clone


class UnionAggregate:
    """Several aggregates read as one; their sketches are merged only when a quantile is asked for."""

    __slots__ = ("parts", "errors", "count", "latency_ms_sum", "_sketch")

    def __init__(self, parts: Sequence[Aggregate | UnionAggregate]) -> None:
        flat: list[Aggregate] = []
        errors = count = 0
        latency_ms_sum = 0.0
        for part in parts:
            for leaf in part.parts if isinstance(part, UnionAggregate) else (part,):
                flat.append(leaf)
                errors += leaf.errors
                sketch = leaf.sketch
                count += sketch.count
                latency_ms_sum += sketch.total
        self.parts = tuple(flat)
        self.errors = errors
        self.count = count
        self.latency_ms_sum = latency_ms_sum
        self._sketch: LatencySketch | None = None

    def quantiles(self, qs: Iterable[float]) -> list[float]:
        """Quantiles of the union, from the parts' buckets directly (no merged sketch is built)."""
        if self._sketch is not None:
            return self._sketch.quantiles(qs)
        return quantiles_of([part.sketch for part in self.parts], qs)

    @classmethod
    def pair(cls, closed: Aggregate, open_bucket: Aggregate) -> UnionAggregate:
        """The union of two plain aggregates: the snapshot's hot case, without the general loop."""
        union = cls.__new__(cls)
        union.parts = (closed, open_bucket)
        union.errors = closed.errors + open_bucket.errors
        closed_sketch, open_sketch = closed.sketch, open_bucket.sketch
        union.count = closed_sketch.count + open_sketch.count
        union.latency_ms_sum = closed_sketch.total + open_sketch.total
        union._sketch = None
        return union

    @property
    def sketch(self) -> LatencySketch:
        if self._sketch is None:
            merged = self.parts[0].sketch.copy()
            for part in self.parts[1:]:
                merged.merge(part.sketch)
            self._sketch = merged
        return self._sketch


class WindowSummary:
    """What one window says about one thing; the unit of every stats answer. Treat it as read-only.

    The latency quantiles are worked out on first read: a snapshot summarises every service, operation and
    edge, while a controller usually reads a few of them, and quantiles are most of the cost.
    """

    __slots__ = (
        "window_seconds",
        "requests",
        "errors",
        "request_rate",
        "error_rate",
        "mean_ms",
        "concurrency",
        "_aggregate",
        "_quantiles",
    )

    def __init__(
        self,
        *,
        window_seconds: float,
        requests: int,
        errors: int,
        request_rate: float,
        error_rate: float,
        p50_ms: float,
        p95_ms: float,
        p99_ms: float,
        mean_ms: float,
        concurrency: float,
    ) -> None:
        """A summary from known values (views built by hand, tests); the model uses `of`."""
        self.window_seconds = window_seconds
        self.requests = requests
        self.errors = errors
        self.request_rate = request_rate
        self.error_rate = error_rate
        self.mean_ms = mean_ms
        self.concurrency = concurrency
        self._aggregate = None
        self._quantiles = (p50_ms, p95_ms, p99_ms)

    @classmethod
    def of(cls, aggregate: Aggregate | UnionAggregate, window_seconds: float) -> WindowSummary:
        """The summary of `aggregate`, which must not change afterwards (window() hands out such)."""
        summary = cls.__new__(cls)
        count = aggregate.count
        errors = aggregate.errors
        latency_ms_sum = aggregate.latency_ms_sum
        seconds = max(window_seconds, 1e-9)
        summary.window_seconds = window_seconds
        summary.requests = count
        summary.errors = errors
        summary.request_rate = count / seconds
        summary.error_rate = errors / count if count else 0.0
        summary.mean_ms = latency_ms_sum / count if count else 0.0
        # Little's law: mean in flight = arrival rate x mean time in system = busy time / wall time.
        summary.concurrency = latency_ms_sum / 1000.0 / seconds
        summary._aggregate = aggregate  # read .sketch lazily: a union merges its parts only then
        summary._quantiles = None
        return summary

    def _percentiles(self) -> tuple[float, float, float]:
        quantiles = self._quantiles
        if quantiles is None:
            quantiles = self._quantiles = tuple(self._aggregate.quantiles(SUMMARY_QUANTILES))
        return quantiles

    @property
    def p50_ms(self) -> float:
        return self._percentiles()[0]

    @property
    def p95_ms(self) -> float:
        return self._percentiles()[1]

    @property
    def p99_ms(self) -> float:
        return self._percentiles()[2]

    def as_tuple(self) -> tuple[float, ...]:
        return (
            self.window_seconds,
            self.requests,
            self.errors,
            self.request_rate,
            self.error_rate,
            self.p50_ms,
            self.p95_ms,
            self.p99_ms,
            self.mean_ms,
            self.concurrency,
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, WindowSummary) and self.as_tuple() == other.as_tuple()

    def __hash__(self) -> int:
        return hash(self.as_tuple())

    def __repr__(self) -> str:
        names = (
            "window_seconds",
            "requests",
            "errors",
            "request_rate",
            "error_rate",
            "p50_ms",
            "p95_ms",
            "p99_ms",
            "mean_ms",
            "concurrency",
        )
        return (
            "WindowSummary("
            + ", ".join(f"{n}={v!r}" for n, v in zip(names, self.as_tuple(), strict=True))
            + ")"
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
        "_summary_cache",
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
        self._summary_cache: tuple[Aggregate, float, WindowSummary] | None = None

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
        elif aggregate.shared or aggregate.sketch.frozen:  # held by a snapshot, or closed: write to a copy
            aggregate = self.buckets[index] = aggregate.copy()
        return aggregate

    def _advance(self, index: int) -> None:
        """Make `index` the newest bucket: close the previous newest, drop what leaves the ring."""
        # Copy on write: summaries handed out earlier may still hold the previous sum.
        closed = self._closed.copy() if self._closed is not None else None
        previous = self.buckets.get(self._newest)
        if previous is not None:
            if closed is not None:
                closed.merge(previous)
            # Nothing writes a closed bucket again (bucket() copies first), so it can shrink to arrays.
            previous.sketch.freeze()
        self._newest = index
        oldest = index - self.bucket_count + 1
        for stale in [key for key in self.buckets if key < oldest]:
            leaving = self.buckets.pop(stale)
            if closed is not None:
                closed.subtract(leaving)
        if closed is not None:
            closed.sketch.freeze()  # read-only from here on; sorted arrays make union quantiles cheap
        self._closed = closed

    def _sum_of_buckets(self, first: int, last: int) -> Aggregate:
        """A new Aggregate of the buckets with index in first..last."""
        total = Aggregate(self.relative_accuracy)
        for index, aggregate in self.buckets.items():
            if first <= index <= last:
                total.merge(aggregate)
        return total

    def closed_sum(self) -> Aggregate:
        if self._closed is None:
            closed = self._sum_of_buckets(self._newest - self.bucket_count + 1, self._newest - 1)
            closed.sketch.freeze()
            self._closed = closed
        return self._closed

    def record(self, now: float, latency_ms: float, error: bool) -> None:
        """Record one request at time `now` (one-off path; the ingest hot path fills buckets itself)."""
        self.bucket(math.floor(now / self.bucket_seconds)).record(latency_ms, error)
        self.requests_total += 1
        self.errors_total += error
        self.last_seen = max(self.last_seen, now)

    def window(self, now: float, window_seconds: float) -> tuple[Aggregate | UnionAggregate, float]:
        """The aggregate of the last `window_seconds` (whole buckets, the current one partly elapsed) and
        the seconds it covers. It is the caller's to keep: nothing changes it later."""
        width = self.bucket_seconds
        current = math.floor(now / width)
        span = min(max(1, math.ceil(window_seconds / width)), self.bucket_count)
        oldest = current - span + 1
        if current > self._newest:
            self._advance(current)
        if span == self.bucket_count and current == self._newest:
            # Neither part is copied: the closed sum is never changed in place (see _advance), and the open
            # bucket is marked shared, so the next write to it goes to a copy (see bucket()).
            newest = self.buckets.get(current)
            closed = self.closed_sum()
            if newest is None:
                merged = closed
            else:
                newest.shared = True
                merged = UnionAggregate.pair(closed, newest)
        else:  # a shorter window, or `now` before the newest data: add up the buckets it covers
            merged = self._sum_of_buckets(oldest, current)
        start = max(oldest * width, self.first_seen)
        # While warming up, a rate over the full window would understate: divide by what was observed,
        # but by at least one bucket so that a single early request does not read as a huge rate.
        return merged, max(now - start, width)

    def record_batch(
        self,
        bucket_index: int,
        latencies_ms: list[float],
        errors: int,
        weighted_ms: list[tuple[float, int]] | None = None,
    ) -> None:
        """Record a batch of requests (`errors` of them failed) in bucket `bucket_index`: the ingest path.

        `weighted_ms` holds (latency, weight) for sampled spans that stand for `weight` requests each;
        `errors` already counts them by weight.
        """
        bucket = self.bucket(bucket_index)
        bucket.errors += errors
        sketch = bucket.sketch
        before = sketch.count
        if latencies_ms:
            sketch.add_many(latencies_ms)
        if weighted_ms:
            sketch.add_weighted(weighted_ms)
        self.requests_total += sketch.count - before
        self.errors_total += errors

    def complete_summary(self, now: float) -> WindowSummary:
        """The summary of the ring's complete buckets, leaving out the one still filling.

        What the control loop reads: whole intervals only (no partial-bucket noise), at most one bucket
        old, and cheap: the closed sum is ready-made (see _advance) and its summary is kept until the next
        bucket opens, so every controller of a tick, and every tick within one bucket, shares it.
        """
        width = self.bucket_seconds
        current = math.floor(now / width)
        if current > self._newest:
            self._advance(current)
        if current < self._newest:  # `now` before the newest data (a clock that went back): add up
            merged = self._sum_of_buckets(current - self.bucket_count + 1, current - 1)
            return WindowSummary.of(merged, max(width, (self.bucket_count - 1) * width))
        closed = self.closed_sum()
        start = max((current - self.bucket_count + 1) * width, self.first_seen)
        covered = max(current * width - start, width)
        cached = self._summary_cache
        if cached is not None and cached[0] is closed and cached[1] == covered:
            return cached[2]
        summary = WindowSummary.of(closed, covered)
        self._summary_cache = (closed, covered, summary)
        return summary

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
            elif mine.shared or mine.sketch.frozen:
                mine = self.buckets[index] = mine.copy()
            mine.merge(aggregate)
        self._closed = None
        newest = max(self._newest, other._newest)
        self._newest = newest - 1  # re-advance to prune what left the ring; the sum is rebuilt lazily
        self._advance(newest)
        self.requests_total += other.requests_total
        self.errors_total += other.errors_total
        self.first_seen = min(self.first_seen, other.first_seen)
        self.last_seen = max(self.last_seen, other.last_seen)
