import pytest

from telemetry.windows import WindowedStats


def _stats(now: float = 0.0) -> WindowedStats:
    return WindowedStats(bucket_seconds=1.0, bucket_count=10, relative_accuracy=0.01, now=now)


def test_window_counts_rates_errors_and_littles_law() -> None:
    stats = _stats(now=100.0)
    for second in range(100, 110):
        for _ in range(5):
            stats.record(second + 0.5, latency_ms=200.0, error=False)
        stats.record(second + 0.5, latency_ms=200.0, error=True)
    # The window is whole buckets ending with the current one: at 109.999 it spans 100..109.999.
    summary = stats.summary(now=109.999, window_seconds=10.0)
    assert summary.requests == 60
    assert summary.errors == 10
    assert summary.request_rate == pytest.approx(6.0, rel=1e-3)
    assert summary.error_rate == pytest.approx(10 / 60)
    assert summary.p50_ms == pytest.approx(200.0, rel=0.01)
    # 6 requests/s each taking 0.2 s: 1.2 in flight on average.
    assert summary.concurrency == pytest.approx(1.2, rel=1e-3)
    assert (stats.requests_total, stats.errors_total) == (60, 10)


def test_old_buckets_leave_the_window_but_totals_remain() -> None:
    stats = _stats()
    stats.record(0.5, 10.0, False)
    stats.record(30.5, 10.0, True)
    summary = stats.summary(now=31.0, window_seconds=10.0)
    assert summary.requests == 1
    assert summary.errors == 1
    assert stats.requests_total == 2
    assert len(stats.buckets) == 1  # the ring dropped the bucket 30 s back


def test_a_shorter_window_sees_only_recent_buckets() -> None:
    stats = _stats()
    for second in range(10):
        stats.record(second + 0.1, latency_ms=float(second + 1), error=False)
    assert stats.summary(now=9.5, window_seconds=3.0).requests == 3
    assert stats.summary(now=9.5, window_seconds=10.0).requests == 10


def test_warm_up_rate_uses_observed_time_not_the_whole_window() -> None:
    stats = _stats(now=50.0)
    for _ in range(20):
        stats.record(50.0, 1.0, False)
    summary = stats.summary(now=52.0, window_seconds=10.0)
    assert summary.request_rate == pytest.approx(10.0)


def test_merging_shards_bucket_by_bucket_equals_the_union() -> None:
    left, right, union = _stats(), _stats(), _stats()
    for index in range(200):
        now = index * 0.05
        target = left if index % 3 else right
        target.record(now, latency_ms=index % 17 + 0.5, error=index % 11 == 0)
        union.record(now, latency_ms=index % 17 + 0.5, error=index % 11 == 0)
    left.merge(right)
    merged, expected = left.summary(10.0, 10.0), union.summary(10.0, 10.0)
    assert merged == expected
    assert left.requests_total == union.requests_total == 200
    with pytest.raises(ValueError):
        left.merge(WindowedStats(2.0, 10, 0.01, 0.0))
