"""The pipeline controller's partition solver against brute force over every layout, on small cases."""

import itertools
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controllers.pipeline_partition import evaluate_partition, solve_partition


def brute_force(layer_seconds, layer_bytes, budgets, current=None, transition_bytes=None):
    """(bottleneck, sum) of the best layout over every way to give each device a contiguous run."""
    layers, devices = len(layer_bytes), len(budgets)
    best = None
    # Cut points 0 <= c1 <= ... <= c_{D-1} <= L: device d holds [c_d, c_{d+1}), possibly empty.
    for cuts in itertools.combinations_with_replacement(range(layers + 1), devices - 1):
        bounds = (0, *cuts, layers)
        times, fits = [], True
        for device in range(devices):
            first, end = bounds[device], bounds[device + 1]
            if first == end:
                continue
            if sum(layer_bytes[first:end]) > budgets[device]:
                fits = False
                break
            if current is not None and current[device] is not None:
                held = set(range(*current[device])) | set(range(first, end))
                if sum(transition_bytes[layer] for layer in held) > budgets[device]:
                    fits = False
                    break
            times.append(sum(layer_seconds[device][first:end]))
        if not fits:
            continue
        key = (max(times), sum(times))
        if best is None:
            best = key
        elif math.isclose(key[0], best[0], rel_tol=1e-9, abs_tol=0.0):
            best = min(best, key, key=lambda pair: pair[1])
        elif key[0] < best[0]:
            best = key
    return best


@st.composite
def problems(draw):
    layers = draw(st.integers(1, 7))
    devices = draw(st.integers(1, 4))
    speeds = st.floats(0.1, 10.0, allow_nan=False)
    # Integer-valued times on purpose in half the cases: ties are where a DP goes wrong.
    integral = draw(st.booleans())
    if integral:
        layer_seconds = [[float(draw(st.integers(0, 5))) for _ in range(layers)] for _ in range(devices)]
    else:
        costs = [draw(st.floats(0.0, 5.0, allow_nan=False)) for _ in range(layers)]
        layer_seconds = [[cost / draw(speeds) for cost in costs] for _ in range(devices)]
    layer_bytes = [draw(st.integers(0, 6)) for _ in range(layers)]
    budgets = [draw(st.integers(0, 20)) for _ in range(devices)]
    current = transition_bytes = None
    if draw(st.booleans()):
        # A current layout: contiguous runs on some of the devices, in order.
        cuts = sorted(draw(st.lists(st.integers(0, layers), min_size=devices - 1, max_size=devices - 1)))
        bounds = (0, *cuts, layers)
        current = [(bounds[d], bounds[d + 1]) if bounds[d] < bounds[d + 1] else None for d in range(devices)]
        transition_bytes = [draw(st.integers(0, 4)) for _ in range(layers)]
    return layer_seconds, layer_bytes, budgets, current, transition_bytes


@settings(max_examples=500, deadline=None)
@given(problems())
def test_the_solver_matches_brute_force(problem) -> None:
    layer_seconds, layer_bytes, budgets, current, transition_bytes = problem
    expected = brute_force(layer_seconds, layer_bytes, budgets, current, transition_bytes)
    found = solve_partition(
        layer_seconds, layer_bytes, budgets, current=current, transition_bytes=transition_bytes
    )
    if expected is None:
        assert found is None
        return
    assert found is not None
    assert math.isclose(found.bottleneck, expected[0], rel_tol=1e-9, abs_tol=0.0)
    assert math.isclose(found.total, expected[1], rel_tol=1e-9, abs_tol=1e-9)
    # The solution is a real layout: contiguous, in device order, every layer once, every stage fits.
    assert found.stages[0].first_layer == 0 and found.stages[-1].end_layer == len(layer_bytes)
    for before, after in itertools.pairwise(found.stages):
        assert before.end_layer == after.first_layer and before.device < after.device
    for stage in found.stages:
        assert stage.layers >= 1
        assert sum(layer_bytes[stage.first_layer : stage.end_layer]) <= budgets[stage.device]
    rescored, overflowing = evaluate_partition(
        layer_seconds, layer_bytes, budgets, [(s.device, s.layers) for s in found.stages]
    )
    assert overflowing == [] and math.isclose(rescored.bottleneck, found.bottleneck, abs_tol=1e-12)


def test_a_faster_device_gets_more_layers_and_a_full_one_fewer() -> None:
    costs = [1.0] * 12
    # Device 1 is three times as fast: balanced stage times give it three layers for each of device 0's.
    found = solve_partition([costs, [c / 3 for c in costs]], [1] * 12, [100, 100])
    assert found.layers_per_stage == (3, 9) and found.bottleneck == pytest.approx(3.0)
    # Now it has room for 4 layers only: the rest must go to the slow device, whatever the time.
    found = solve_partition([costs, [c / 3 for c in costs]], [1] * 12, [100, 4])
    assert found.layers_per_stage == (8, 4) and found.bottleneck == pytest.approx(8.0)
    # A device that fits nothing, or the model on none: no layout.
    assert solve_partition([costs, costs], [1] * 12, [5, 5]) is None


def test_a_live_change_needs_room_for_the_current_and_the_new_layers_at_once() -> None:
    costs = [[1.0] * 8, [1.0] * 8]
    # Device 1 holds layers 4-7 now and has room for 5 layers: taking layer 3 as well would fit at the end
    # (4 -> 5 layers), and so would 3-6, but during the change it would hold 3-7, five layers: still fine.
    found = solve_partition(costs, [1] * 8, [8, 5], current=[(0, 4), (4, 8)], transition_bytes=[1] * 8)
    assert found.layers_per_stage == (4, 4)
    # The fastest layout would shift device 1 to layers 0-3 (a 4-layer run), but holding 0-7 at once does
    # not fit in 5: the solver keeps to layouts the engine admits.
    fast = [[1.0] * 8, [0.1] * 8]
    free = solve_partition(fast, [1] * 8, [8, 5])
    assert free.layers_per_stage == (3, 5)
    admitted = solve_partition(fast, [1] * 8, [8, 5], current=[(4, 8), (0, 4)], transition_bytes=[1] * 8)
    assert admitted.layers_per_stage == (7, 1) and admitted.stages[1].first_layer == 7


def test_a_device_not_worth_using_is_left_out() -> None:
    # Three layers, a fast device with room for all, a slow one: the fast one alone has the lower sum
    # at the same bottleneck? No: splitting lowers the bottleneck; the slow device only gets what helps.
    found = solve_partition([[1.0, 1.0, 1.0], [10.0, 10.0, 10.0]], [1, 1, 1], [10, 10])
    assert found.layers_per_stage == (3,) and found.devices == (0,)


def test_bad_input_names_what_is_wrong() -> None:
    with pytest.raises(ValueError, match="device rows"):
        solve_partition([[1.0]], [1], [1, 1])
    with pytest.raises(ValueError, match=r"layer_seconds\[0\]"):
        solve_partition([[1.0, 2.0]], [1], [1])
    with pytest.raises(ValueError, match="at least one layer"):
        solve_partition([[]], [], [1])
    with pytest.raises(ValueError, match="finite"):
        solve_partition([[math.inf]], [1], [1])
