"""Pre-aggregated telemetry reports: the model's mergeable aggregates as `TelemetryReport` messages.

The second signal beside spans. A node agent records what its replicas serve into a `ReportBuffer` and,
every report period, takes the buckets recorded since the previous take (a delta) and sends them as a
`TelemetryReport` (`report_pb`). The receiving Ingestor decodes a report (`aggregates_from_pb`) and merges it
into its model with `TelemetryAggregates.merge`, the operation receiver shards use, so reports and OTLP
traces end up in one model. Buckets are keyed by absolute bucket index, so a delta lands in the right
bucket of the receiver's window.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from protos.controlplane.v1 import agent_pb2 as apb
from telemetry.aggregates import TelemetryAggregates
from telemetry.model import ModelConfig
from telemetry.windows import WindowedStats

# Reports are deltas of seconds of traffic; a window this long covers any report with room to spare.
REPORT_BUCKETS = 64


class MalformedReport(ValueError):
    """A report that cannot merge: other buckets or accuracy, no service, or numbers that do not add up."""


class ReportBuffer:
    """Requests served, aggregated as the model keeps them, until `take` hands them over as a delta."""

    def __init__(self, config: ModelConfig) -> None:
        self.config = config
        self._aggregates = self._fresh()

    def _fresh(self) -> TelemetryAggregates:
        config = self.config
        return TelemetryAggregates(config.bucket_seconds, config.bucket_count, config.relative_accuracy)

    def record(
        self, service: str, operation: str, latencies_ms: Sequence[float], errors: int, now: float
    ) -> None:
        """Requests of one operation that finished at `now` (errors among them counted apart)."""
        bucket = math.floor(now / self.config.bucket_seconds)
        key = (service, operation)
        self._aggregates.record_served({key: list(latencies_ms)}, {key: errors}, bucket, now)
        self._aggregates.saw_service(service, now)

    @property
    def empty(self) -> bool:
        return not self._aggregates.operations

    def take(self) -> TelemetryAggregates:
        """Everything recorded since the last take; the buffer starts afresh."""
        taken, self._aggregates = self._aggregates, self._fresh()
        return taken

    def put_back(self, taken: TelemetryAggregates) -> None:
        """Return a delta that could not be delivered; the next take carries it with what came since."""
        taken.merge(self._aggregates)
        self._aggregates = taken


def report_pb(node: str, seq: int, aggregates: TelemetryAggregates, now: float) -> apb.TelemetryReport:
    """The report of everything `aggregates` holds (served requests per service and operation)."""
    report = apb.TelemetryReport(
        node=node,
        seq=seq,
        bucket_seconds=aggregates.bucket_seconds,
        relative_accuracy=aggregates.relative_accuracy,
        sent_at_unix=now,
    )
    for (service, operation), stats in sorted(aggregates.operations.items()):
        series = report.series.add(service=service, operation=operation)
        for index, aggregate in sorted(stats.buckets.items()):
            sketch = aggregate.sketch
            bins = sorted(sketch.bins.items())
            series.buckets.add(
                index=index,
                errors=aggregate.errors,
                zero_count=sketch.zero_count,
                total_ms=sketch.total,
                bins=[bin_index for bin_index, _ in bins],
                counts=[count for _, count in bins],
            )
    return report


def aggregates_from_pb(
    report: apb.TelemetryReport, bucket_seconds: float, relative_accuracy: float, now: float
) -> TelemetryAggregates:
    """The aggregates a report carries, ready to merge into a model kept with these buckets and accuracy.

    MalformedReport if the report was kept with other buckets or accuracy (it could not merge) or its
    numbers do not add up.
    """
    if report.bucket_seconds != bucket_seconds or report.relative_accuracy != relative_accuracy:
        raise MalformedReport(
            f"telemetry kept with {report.bucket_seconds:g} s buckets and accuracy "
            f"{report.relative_accuracy:g} cannot merge into a model of {bucket_seconds:g} s buckets and "
            f"accuracy {relative_accuracy:g}"
        )
    aggregates = TelemetryAggregates(bucket_seconds, REPORT_BUCKETS, relative_accuracy)
    for series in report.series:
        if not series.service:
            raise MalformedReport("a telemetry series must name its service")
        stats = WindowedStats(bucket_seconds, REPORT_BUCKETS, relative_accuracy, now)
        for bucket in sorted(series.buckets, key=lambda item: item.index):
            _fill(stats, bucket)
        aggregates.operations[series.service, series.operation] = stats
        aggregates.saw_service(series.service, now)
    return aggregates


def _fill(stats: WindowedStats, bucket: apb.BucketAggregate) -> None:
    if len(bucket.bins) != len(bucket.counts):
        raise MalformedReport(
            f"bucket {bucket.index}: {len(bucket.bins)} bins but {len(bucket.counts)} counts"
        )
    count = bucket.zero_count + sum(bucket.counts)
    if bucket.errors > count or not math.isfinite(bucket.total_ms) or bucket.total_ms < 0:
        raise MalformedReport(f"bucket {bucket.index}: errors, counts and latency sum do not add up")
    aggregate = stats.bucket(bucket.index)
    aggregate.errors += bucket.errors
    sketch = aggregate.sketch
    for bin_index, weight in zip(bucket.bins, bucket.counts, strict=True):
        sketch.bins[bin_index] = sketch.bins.get(bin_index, 0) + weight  # type: ignore[index]
    sketch.zero_count += bucket.zero_count
    sketch.count += count
    sketch.total += bucket.total_ms
    stats.requests_total += count
    stats.errors_total += bucket.errors
