"""A mergeable latency sketch with bounded relative error (the DDSketch log-bucket mapping).

A value v > 0 lands in bucket ceil(log_gamma(v)) with gamma = (1 + a) / (1 - a); reporting a bucket by
2 * gamma**i / (gamma + 1) is within relative error a of every value in it. Two sketches with the same
accuracy merge exactly by adding bucket counts, so shards aggregated apart give the sketch of the union.
"""

from __future__ import annotations

import math
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Iterator, Mapping, Sequence
from itertools import accumulate, chain

DEFAULT_RELATIVE_ACCURACY = 0.01
# Values below this count as zero (the model records milliseconds, so this is 1 ns): buckets for
# ever smaller values would only cost memory.
MIN_POSITIVE = 1e-6


class FrozenBins(Mapping[int, int]):
    """Read-only bucket counts in two arrays: a sixth of a dict's memory, for buckets no longer written."""

    __slots__ = ("_indexes", "_counts", "_cumulative")

    def __init__(self, bins: Mapping[int, int]) -> None:
        ordered = sorted(bins.items())
        self._indexes = array("q", [index for index, _ in ordered])
        self._counts = array("q", [count for _, count in ordered])
        # Running totals, so a quantile of a frozen sketch is a bisection, not a sort.
        self._cumulative = array("q", accumulate(self._counts))

    def items(self) -> Iterator[tuple[int, int]]:  # type: ignore[override]
        return zip(self._indexes, self._counts, strict=True)

    def __getitem__(self, index: int) -> int:
        position = bisect_left(self._indexes, index)
        if position < len(self._indexes) and self._indexes[position] == index:
            return self._counts[position]
        raise KeyError(index)

    def __iter__(self) -> Iterator[int]:
        return iter(self._indexes)

    def __len__(self) -> int:
        return len(self._indexes)


class LatencySketch:
    """Counts of values in logarithmic buckets; quantiles within `relative_accuracy` of the true value."""

    __slots__ = ("relative_accuracy", "_gamma", "_inv_log_gamma", "bins", "zero_count", "count", "total")

    def __init__(self, relative_accuracy: float = DEFAULT_RELATIVE_ACCURACY) -> None:
        if not 0.0 < relative_accuracy < 1.0:
            raise ValueError(f"relative_accuracy must be in (0, 1), got {relative_accuracy}")
        self.relative_accuracy = relative_accuracy
        self._gamma = (1.0 + relative_accuracy) / (1.0 - relative_accuracy)
        self._inv_log_gamma = 1.0 / math.log(self._gamma)
        self.bins: dict[int, int] | FrozenBins = {}
        self.zero_count = 0
        self.count = 0
        self.total = 0.0

    def bucket_of(self, value: float) -> int:
        """The bucket index a positive value falls in."""
        return math.ceil(math.log(value) * self._inv_log_gamma)

    def add(self, value: float, weight: int = 1) -> None:
        """Record `value` (>= 0) `weight` times."""
        if value < 0:
            raise ValueError(f"latency cannot be negative: {value}")
        self.count += weight
        self.total += value * weight
        if value < MIN_POSITIVE:
            self.zero_count += weight
            return
        index = math.ceil(math.log(value) * self._inv_log_gamma)
        bins = self.bins
        bins[index] = bins.get(index, 0) + weight

    def add_many(self, values: list[float]) -> None:
        """Record every value of `values` (all >= 0; the ingest path checks): `add` for a whole batch."""
        bins = self.bins
        get = bins.get
        log = math.log
        ceil = math.ceil
        scale = self._inv_log_gamma
        zeros = 0
        for value in values:
            if value < MIN_POSITIVE:
                zeros += 1
            else:
                index = ceil(log(value) * scale)
                bins[index] = get(index, 0) + 1
        self.zero_count += zeros
        self.count += len(values)
        self.total += math.fsum(values)

    def add_weighted(self, values: list[tuple[float, int]]) -> None:
        """Record each (value, weight) pair: spans that stand for several (see telemetry/sampling.py)."""
        bins = self.bins
        get = bins.get
        log = math.log
        ceil = math.ceil
        scale = self._inv_log_gamma
        zeros = count = 0
        total = 0.0
        for value, weight in values:
            count += weight
            total += value * weight
            if value < MIN_POSITIVE:
                zeros += weight
            else:
                index = ceil(log(value) * scale)
                bins[index] = get(index, 0) + weight
        self.zero_count += zeros
        self.count += count
        self.total += total

    def merge(self, other: LatencySketch) -> None:
        """Add every value of `other` (same accuracy required) to this sketch."""
        if other.relative_accuracy != self.relative_accuracy:
            raise ValueError("cannot merge sketches of different accuracy")
        bins = self.bins
        for index, weight in other.bins.items():
            bins[index] = bins.get(index, 0) + weight
        self.zero_count += other.zero_count
        self.count += other.count
        self.total += other.total

    def subtract(self, other: LatencySketch) -> None:
        """Remove every value of `other`, which must have been merged into this sketch before."""
        bins = self.bins
        for index, weight in other.bins.items():
            left = bins[index] - weight
            if left:
                bins[index] = left
            else:
                del bins[index]
        self.zero_count -= other.zero_count
        self.count -= other.count
        # Float sums do not subtract exactly: an empty sketch has no drift left.
        self.total = self.total - other.total if self.count else 0.0

    def freeze(self) -> None:
        """Keep the counts read-only and compact (a closed window bucket); `copy` gives a writable one."""
        if not isinstance(self.bins, FrozenBins):
            self.bins = FrozenBins(self.bins)

    @property
    def frozen(self) -> bool:
        return isinstance(self.bins, FrozenBins)

    def copy(self) -> LatencySketch:
        clone = LatencySketch.__new__(LatencySketch)  # skips __init__'s checks: snapshots copy thousands
        clone.relative_accuracy = self.relative_accuracy
        clone._gamma = self._gamma
        clone._inv_log_gamma = self._inv_log_gamma
        bins = self.bins
        clone.bins = dict(bins.items()) if isinstance(bins, FrozenBins) else dict(bins)
        clone.zero_count = self.zero_count
        clone.count = self.count
        clone.total = self.total
        return clone

    def quantile(self, q: float) -> float:
        """The value of rank floor(q * (count - 1)) (numpy's method="lower"), within the relative accuracy.

        Returns 0.0 for an empty sketch.
        """
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"quantile must be in [0, 1], got {q}")
        return self.quantiles((q,))[0]

    def quantiles(self, qs: Iterable[float]) -> list[float]:
        """Several quantiles (as `quantile`) from one sort of the buckets."""
        return quantiles_of((self,), qs)

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else 0.0

    def __len__(self) -> int:
        return len(self.bins)


def quantiles_of(sketches: Sequence[LatencySketch], qs: Iterable[float]) -> list[float]:
    """Quantiles of the union of `sketches` (same accuracy) without building a merged sketch.

    Equal bucket indexes from different sketches may stand side by side in the sorted list: cumulative
    counts over it are still right, so a union's quantiles cost one sort instead of a copy and a merge.
    """
    qs = list(qs)
    if any(not 0.0 <= q <= 1.0 for q in qs):
        raise ValueError(f"quantiles must be in [0, 1], got {qs}")
    count = sum(sketch.count for sketch in sketches)
    if count == 0 or not qs:
        return [0.0] * len(qs)
    zeros = sum(sketch.zero_count for sketch in sketches)
    gamma = sketches[0]._gamma
    if len(sketches) == 1 and isinstance(sketches[0].bins, FrozenBins):
        frozen = sketches[0].bins
        answers = []
        for q in qs:
            rank = math.floor(q * (count - 1))
            if rank < zeros:
                answers.append(0.0)
            else:
                index = frozen._indexes[bisect_right(frozen._cumulative, rank - zeros)]
                answers.append(2.0 * gamma**index / (gamma + 1.0))
        return answers
    if len(sketches) == 1:
        pairs = sorted(sketches[0].bins.items())
    else:
        pairs = sorted(chain.from_iterable(sketch.bins.items() for sketch in sketches))
    indexes, counts = zip(*pairs, strict=True) if pairs else ((), ())
    # cumulative[i]: values at or below indexes[i], zeros included; bisect finds the bucket of a rank.
    cumulative = list(accumulate(counts, initial=zeros))[1:]
    answers = []
    for q in qs:
        rank = math.floor(q * (count - 1))
        if rank < zeros:
            answers.append(0.0)
            continue
        index = indexes[bisect_right(cumulative, rank)]
        answers.append(2.0 * gamma**index / (gamma + 1.0))
    return answers
