"""The partition solver of the `pipeline` controller: which contiguous layers each device should hold.

A pure function of its arguments. Devices are taken in a fixed order (the pipeline's order); each device
gets a contiguous, possibly empty, run of layers, the runs in device order cover every layer once, and a
device with no layers is left out of the pipeline. A device holding layers `[i, j)` takes
`sum(layer_seconds[d][i:j])` per unit of work (the stage time) and needs `sum(layer_bytes[i:j])` of memory,
which must not exceed its budget.

`solve_partition` returns the partition that minimizes the bottleneck stage time (the largest stage time:
a pipeline runs at the pace of its slowest stage) and, among those, the smallest sum of stage times (the
time one token spends crossing the pipeline). It is exact: two dynamic programs over (devices used, layers
covered), O(devices x layers^2) each. The first finds the optimal bottleneck; the second minimizes the sum
over partitions whose every stage is within that bottleneck (a single DP over the pair is not exact: the
lexicographic order of (max, sum) has no optimal substructure). Optionally a device must also hold its
current and its new layers at once (a live change), a constraint of the same shape.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

# Stage times equal up to this relative difference count as equal (they come from float sums).
RELATIVE_TOLERANCE = 1e-9


@dataclass(frozen=True, slots=True)
class StageAssignment:
    """Layers [first_layer, end_layer) on device number `device` (an index into the solver's devices)."""

    device: int
    first_layer: int
    end_layer: int
    seconds: float
    bytes: int

    @property
    def layers(self) -> int:
        return self.end_layer - self.first_layer


@dataclass(frozen=True, slots=True)
class Partition:
    """A solution: the stages in pipeline order, their bottleneck and the sum of their times."""

    stages: tuple[StageAssignment, ...]
    bottleneck: float
    total: float

    @property
    def layers_per_stage(self) -> tuple[int, ...]:
        return tuple(stage.layers for stage in self.stages)

    @property
    def devices(self) -> tuple[int, ...]:
        return tuple(stage.device for stage in self.stages)


def _prefix(values: Sequence[float] | Sequence[int]) -> list:
    sums = [0]
    for value in values:
        sums.append(sums[-1] + value)
    return sums


def _check(
    layer_seconds: Sequence[Sequence[float]], layer_bytes: Sequence[int], budgets: Sequence[int]
) -> int:
    layers = len(layer_bytes)
    if layers < 1:
        raise ValueError("layer_bytes: a model has at least one layer")
    if len(layer_seconds) != len(budgets):
        raise ValueError(
            f"layer_seconds has {len(layer_seconds)} device rows but budgets has {len(budgets)} devices"
        )
    for device, row in enumerate(layer_seconds):
        if len(row) != layers:
            raise ValueError(f"layer_seconds[{device}] has {len(row)} layers, layer_bytes has {layers}")
        if any(not math.isfinite(value) or value < 0 for value in row):
            raise ValueError(f"layer_seconds[{device}]: every stage time must be finite and >= 0")
    if any(value < 0 for value in layer_bytes):
        raise ValueError("layer_bytes must be >= 0")
    return layers


def stage_seconds(layer_seconds: Sequence[Sequence[float]], device: int, first: int, end: int) -> float:
    """The time device `device` takes for layers [first, end), summed the way the solver sums it."""
    return float(sum(layer_seconds[device][first:end]))


def solve_partition(
    layer_seconds: Sequence[Sequence[float]],
    layer_bytes: Sequence[int],
    budgets: Sequence[int],
    *,
    current: Sequence[tuple[int, int] | None] | None = None,
    transition_bytes: Sequence[int] | None = None,
) -> Partition | None:
    """The best contiguous partition of the layers over the devices (module docstring), or None if none fits.

    `layer_seconds[d][l]`: time layer `l` takes on device `d`; `layer_bytes[l]`: memory layer `l` needs
    once the change is done (its weights and its share of the KV); `budgets[d]`: memory device `d` may use.

    With `current` (per device, the layers [first, end) it holds now, or None) and `transition_bytes` (per
    layer, what it takes while being moved: weights and the KV in use), a device must also hold the union of
    its current and its new layers at once, as PipeLive does during a live change; a layout that needs more
    would be refused by the engine, so it is not a solution.
    """
    layers = _check(layer_seconds, layer_bytes, budgets)
    devices = len(budgets)
    seconds = [_prefix(row) for row in layer_seconds]
    memory = _prefix(layer_bytes)
    if (current is None) != (transition_bytes is None):
        raise ValueError("current and transition_bytes go together")
    if current is not None and transition_bytes is not None:
        if len(current) != devices or len(transition_bytes) != layers:
            raise ValueError("current needs one entry per device and transition_bytes one per layer")
        moving = _prefix(transition_bytes)
    held = list(current) if current is not None else [None] * devices

    def cost(device: int, first: int, end: int) -> float:
        return seconds[device][end] - seconds[device][first]

    def fits(device: int, first: int, end: int) -> bool:
        budget = budgets[device]
        if memory[end] - memory[first] > budget:
            return False
        old = held[device]
        if old is None:
            return True
        start, stop = old
        if start <= end and first <= stop:  # overlapping or adjacent: one run
            return moving[max(end, stop)] - moving[min(first, start)] <= budget
        return moving[end] - moving[first] + moving[stop] - moving[start] <= budget

    def candidates(device: int, end: int) -> range:
        """Starts `first` for which layers [first, end) fit on `device` (memory grows as first falls)."""
        first = end - 1
        while first >= 0 and fits(device, first, end):
            first -= 1
        return range(first + 1, end)

    # 1. The smallest bottleneck: best[j] after k devices = smallest max stage time covering layers [0, j).
    inf = math.inf
    best = [0.0] + [inf] * layers
    for device in range(devices):
        nxt = list(best)  # the device may take no layers
        for end in range(1, layers + 1):
            for first in candidates(device, end):
                if best[first] < inf:
                    value = max(best[first], cost(device, first, end))
                    if value < nxt[end]:
                        nxt[end] = value
        best = nxt
    bottleneck = best[layers]
    if bottleneck == inf:
        return None

    # 2. The smallest sum of stage times among partitions whose stages all stay within that bottleneck.
    limit = bottleneck + RELATIVE_TOLERANCE * bottleneck
    total = [0.0] + [inf] * layers
    choices: list[list[int | None]] = []  # per device, per end: the chosen first layer (None: unused)
    for device in range(devices):
        nxt = list(total)
        chosen: list[int | None] = [None] * (layers + 1)
        for end in range(1, layers + 1):
            for first in candidates(device, end):
                if total[first] == inf:
                    continue
                stage = cost(device, first, end)
                if stage > limit:
                    continue
                value = total[first] + stage
                if value < nxt[end]:
                    nxt[end] = value
                    chosen[end] = first
        choices.append(chosen)
        total = nxt

    stages: list[StageAssignment] = []
    end = layers
    for device in range(devices - 1, -1, -1):
        first = choices[device][end]
        if first is None:
            continue
        stages.append(
            StageAssignment(
                device=device,
                first_layer=first,
                end_layer=end,
                seconds=cost(device, first, end),
                bytes=memory[end] - memory[first],
            )
        )
        end = first
    stages.reverse()
    return Partition(
        stages=tuple(stages),
        bottleneck=max(stage.seconds for stage in stages),
        total=sum(stage.seconds for stage in stages),
    )


def evaluate_partition(
    layer_seconds: Sequence[Sequence[float]],
    layer_bytes: Sequence[int],
    budgets: Sequence[int],
    assignment: Sequence[tuple[int, int]],
) -> tuple[Partition, list[int]]:
    """The given layout (device, layer count) per stage, scored like a solution; and the stages that overflow.

    Used on the layout the pipeline runs now, to compare it with the solver's and to see whether it still
    fits its devices' memory.
    """
    layers = _check(layer_seconds, layer_bytes, budgets)
    if sum(count for _, count in assignment) != layers:
        raise ValueError(f"the layout covers {sum(c for _, c in assignment)} layers, the model has {layers}")
    stages: list[StageAssignment] = []
    overflowing: list[int] = []
    first = 0
    for index, (device, count) in enumerate(assignment):
        end = first + count
        needed = int(sum(layer_bytes[first:end]))
        stages.append(
            StageAssignment(device, first, end, stage_seconds(layer_seconds, device, first, end), needed)
        )
        if needed > budgets[device]:
            overflowing.append(index)
        first = end
    return (
        Partition(
            tuple(stages),
            bottleneck=max(stage.seconds for stage in stages),
            total=sum(stage.seconds for stage in stages),
        ),
        overflowing,
    )
