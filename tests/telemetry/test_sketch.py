"""The latency sketch against numpy, merging, freezing, and quantiles of unions."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from telemetry.sketch import LatencySketch

QUANTILES = (0.0, 0.01, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999, 1.0)


def _distribution(name: str, size: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if name == "lognormal":
        return rng.lognormal(mean=2.0, sigma=1.0, size=size)
    if name == "exponential":
        return rng.exponential(scale=12.0, size=size)
    if name == "pareto":
        return (rng.pareto(1.5, size=size) + 1) * 3.0
    if name == "bimodal":
        return np.concatenate(
            [rng.normal(5, 0.5, size // 2).clip(0.01), rng.normal(300, 40, size - size // 2)]
        )
    raise ValueError(name)


@pytest.mark.parametrize("name", ["lognormal", "exponential", "pareto", "bimodal"])
@pytest.mark.parametrize("accuracy", [0.01, 0.02])
def test_quantiles_within_relative_error_of_numpy(name: str, accuracy: float) -> None:
    values = _distribution(name, 20_000, seed=hash(name) % 1000)
    sketch = LatencySketch(accuracy)
    for value in values:
        sketch.add(float(value))
    for q in QUANTILES:
        exact = float(np.quantile(values, q, method="lower"))
        assert abs(sketch.quantile(q) - exact) <= accuracy * exact + 1e-12, (q, sketch.quantile(q), exact)
    assert sketch.count == len(values)
    assert sketch.mean == pytest.approx(float(values.mean()))


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.floats(min_value=0.0, max_value=1e6, allow_nan=False), min_size=1, max_size=300),
    st.lists(st.floats(min_value=0.0, max_value=1e6, allow_nan=False), min_size=0, max_size=300),
    st.floats(min_value=0.0, max_value=1.0),
)
def test_merging_shards_equals_aggregating_the_union(left: list[float], right: list[float], q: float) -> None:
    a, b, union = LatencySketch(), LatencySketch(), LatencySketch()
    for value in left:
        a.add(value)
        union.add(value)
    for value in right:
        b.add(value)
        union.add(value)
    a.merge(b)
    assert a.bins == union.bins
    assert a.zero_count == union.zero_count
    assert a.count == union.count
    assert a.quantile(q) == union.quantile(q)
    exact = float(np.quantile(np.array(left + right), q, method="lower"))
    assert abs(a.quantile(q) - exact) <= 0.01 * exact + 1e-6


def test_zero_values_and_empty_sketch() -> None:
    sketch = LatencySketch()
    assert sketch.quantile(0.99) == 0.0
    for _ in range(10):
        sketch.add(0.0)
    sketch.add(5.0)
    assert sketch.quantile(0.5) == 0.0
    assert sketch.quantile(1.0) == pytest.approx(5.0, rel=0.01)


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError):
        LatencySketch(0.0)
    with pytest.raises(ValueError):
        LatencySketch().add(-1.0)
    with pytest.raises(ValueError):
        LatencySketch().quantile(1.5)
    with pytest.raises(ValueError):
        LatencySketch(0.01).merge(LatencySketch(0.02))


def test_bucket_count_stays_bounded_over_a_huge_range() -> None:
    sketch = LatencySketch(0.01)
    for exponent in np.linspace(-3, 7, 100_000):  # 1 us .. ~3 hours, in ms
        sketch.add(float(10**exponent))
    # log_gamma(1e10) with gamma = 1.01/0.99: about 1,150 buckets whatever the number of values.
    assert len(sketch) < 1200


def test_a_frozen_sketch_reads_the_same_and_copies_to_a_writable_one() -> None:
    sketch = LatencySketch()
    for value in (0.0, 0.5, 3.0, 3.01, 250.0, 9000.0):
        sketch.add(value)
    before = (sketch.quantiles((0.1, 0.5, 0.99)), dict(sketch.bins))
    sketch.freeze()
    assert sketch.frozen
    assert (sketch.quantiles((0.1, 0.5, 0.99)), dict(sketch.bins.items())) == before
    assert sketch.bins[next(iter(before[1]))] == next(iter(before[1].values()))
    with pytest.raises(TypeError):
        sketch.bins[1] = 5  # read-only: writers must copy first
    writable = sketch.copy()
    writable.add(42.0)
    assert not writable.frozen and writable.count == sketch.count + 1
    union = LatencySketch()
    union.merge(sketch)
    union.subtract(sketch)
    assert union.count == 0 and union.bins == {}


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.lists(st.floats(min_value=0.0, max_value=1e5, allow_nan=False), max_size=80),
        min_size=1,
        max_size=4,
    ),
    st.lists(st.floats(min_value=0.0, max_value=1.0), min_size=1, max_size=4),
)
def test_quantiles_of_a_union_equal_those_of_the_merged_sketch(
    parts: list[list[float]], qs: list[float]
) -> None:
    from telemetry.sketch import quantiles_of

    sketches, merged = [], LatencySketch()
    for values in parts:
        sketch = LatencySketch()
        for value in values:
            sketch.add(value)
        merged.merge(sketch)
        sketches.append(sketch)
    assert quantiles_of(sketches, qs) == merged.quantiles(qs)
