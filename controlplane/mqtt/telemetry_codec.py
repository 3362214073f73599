"""Telemetry over MQTT: the model's mergeable aggregates (`TelemetryAggregates`) as `TelemetryReport`s.

An agent records what its replicas serve into aggregates of its own and, every report period, sends the
buckets recorded since the previous report and starts afresh (a delta). The plane decodes a report into a
`TelemetryAggregates` and merges it into its live model with `TelemetryAggregates.merge`, the same
operation receiver shards use, so MQTT telemetry and OTLP traces end up in one model. Buckets are keyed by
absolute bucket index, so a delta lands in the right bucket of the plane's window.
"""

from __future__ import annotations

import math

from controlplane.mqtt.codec import MalformedPayload
from protos.controlplane.v1 import agent_pb2 as apb
from telemetry.aggregates import TelemetryAggregates
from telemetry.windows import WindowedStats

# Reports are deltas of seconds of traffic; a window this long covers any report with room to spare.
REPORT_BUCKETS = 64


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

    MalformedPayload if the report was kept with other buckets or accuracy (it could not merge) or its
    numbers do not add up.
    """
    if report.bucket_seconds != bucket_seconds or report.relative_accuracy != relative_accuracy:
        raise MalformedPayload(
            f"telemetry kept with {report.bucket_seconds:g} s buckets and accuracy "
            f"{report.relative_accuracy:g} cannot merge into a model of {bucket_seconds:g} s buckets and "
            f"accuracy {relative_accuracy:g}"
        )
    aggregates = TelemetryAggregates(bucket_seconds, REPORT_BUCKETS, relative_accuracy)
    for series in report.series:
        if not series.service:
            raise MalformedPayload("a telemetry series must name its service")
        stats = WindowedStats(bucket_seconds, REPORT_BUCKETS, relative_accuracy, now)
        for bucket in sorted(series.buckets, key=lambda item: item.index):
            _fill(stats, bucket)
        aggregates.operations[series.service, series.operation] = stats
        aggregates.saw_service(series.service, now)
    return aggregates


def _fill(stats: WindowedStats, bucket: apb.BucketAggregate) -> None:
    if len(bucket.bins) != len(bucket.counts):
        raise MalformedPayload(
            f"bucket {bucket.index}: {len(bucket.bins)} bins but {len(bucket.counts)} counts"
        )
    count = bucket.zero_count + sum(bucket.counts)
    if bucket.errors > count or not math.isfinite(bucket.total_ms) or bucket.total_ms < 0:
        raise MalformedPayload(f"bucket {bucket.index}: errors, counts and latency sum do not add up")
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
