"""Planning a pipeline reconfiguration: which layers move where, each stage's memory, and admission.

A reconfiguration replaces the partition of layers over stages (one contiguous range per stage, in pipeline
order) with another, possibly with more or fewer stages. Stage i of the new partition is stage i of the
old one; stages beyond the old count are new, stages beyond the new count are removed (all their layers
leave). A layer moves when its stage changes.

Memory: during the change a stage holds the weights and KV of its current and its incoming layers at once
(the source keeps serving with its layers until the switch, while the target receives copies), so the KV
budget it has left is smaller then. One block-id space serves every stage, so the pool the engine can keep
during the change is the smallest of what the stages can hold, rounded down to whole chunks. Admission
refuses the change — before anything is touched — when the blocks in use, plus what running requests still
need to finish, do not fit in it (live must neither drop nor preempt a request), or when a stage cannot hold
the weights at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from services.pipelive.config import ModelConfig
from services.pipelive.kv_cache import layer_units
from services.pipelive.partition import (  # noqa: F401 - re-exported: the planning API in one place
    METHODS,
    InvalidPartition,
    contiguous_runs,
    format_layer_ranges,
    parse_layer_ranges,
    validate_method,
    validate_partition,
)
from services.pipelive.stage import StageStatus

NO_BOUND = 2**40  # max_blocks of a stage that holds no KV: it puts no bound on the pool


class ReconfigureRefused(RuntimeError):
    """A reconfiguration that does not fit now (memory, KV in use, engine busy); nothing was changed."""


class ReconfigureFailed(RuntimeError):
    """A reconfiguration that failed before the switch and was rolled back; the old partition serves."""


@dataclass(frozen=True)
class Transfer:
    """Layers moving from one stage to another (one migration stream)."""

    source: int
    target: int
    layers: tuple[int, ...]


@dataclass(frozen=True)
class StageMemoryPlan:
    """One stage's weights, KV layer slots and block capacity now, during the change and after it."""

    index: int
    current: range | None  # None: a stage the change adds
    target: range | None  # None: a stage the change removes
    usable_bytes_during: int
    usable_bytes_after: int
    weight_bytes_now: int
    weight_bytes_during: int
    weight_bytes_after: int
    kv_layers_now: int
    kv_layers_during: int
    kv_layers_after: int
    max_blocks_during: int
    max_blocks_after: int
    incoming: tuple[int, ...]
    outgoing: tuple[int, ...]
    becomes_last: bool
    stops_being_last: bool

    def describe(self) -> str:
        now = "new" if self.current is None else f"{self.current.start}-{self.current.stop - 1}"
        then = "removed" if self.target is None else f"{self.target.start}-{self.target.stop - 1}"
        return f"stage {self.index} (layers {now} -> {then})"


@dataclass(frozen=True)
class ReconfigurationPlan:
    """Everything decided before a reconfiguration starts."""

    method: str
    current: tuple[range, ...]
    target: tuple[range, ...]
    transfers: tuple[Transfer, ...]
    stages: tuple[StageMemoryPlan, ...]
    blocks_per_chunk: int
    pool_blocks: int
    blocks_in_use: int
    blocks_to_finish: int  # more blocks running requests need to reach their max_tokens
    capacity_during: int  # blocks, whole chunks
    capacity_after: int  # blocks, whole chunks

    @property
    def moved_layers(self) -> list[int]:
        return sorted(layer for transfer in self.transfers for layer in transfer.layers)

    def owner_after(self, layer: int) -> int:
        return next(index for index, r in enumerate(self.target) if layer in r)


def _max_blocks(usable: int, weights: int, kv_layers: int, bytes_per_block_per_layer: int) -> int:
    if kv_layers == 0:
        return NO_BOUND
    return max(0, (usable - weights) // (kv_layers * bytes_per_block_per_layer))


def plan_reconfiguration(
    model: ModelConfig,
    statuses: Sequence[StageStatus],
    target: Sequence[range],
    method: str,
    *,
    gpu_memory_utilization: float,
    default_budget_bytes: int,
    bytes_per_block_per_layer: int,
    layers_per_unit: int,
    blocks_per_chunk: int,
    pool_blocks: int,
    blocks_in_use: int,
    blocks_to_finish: int,
    budgets: Sequence[int] | None = None,
) -> ReconfigurationPlan:
    """Work out the moves and every stage's memory now, during and after the change (no admission yet)."""
    method = validate_method(method)
    target = validate_partition(target, model.num_hidden_layers)
    current = [range(s.first_layer, s.end_layer) for s in statuses]
    if budgets and len(budgets) != len(target):
        raise InvalidPartition(
            "budget_bytes",
            f"give one budget per stage of the new partition ({len(target)}), not {len(budgets)}",
        )
    if budgets and min(budgets) < 1:
        raise InvalidPartition("budget_bytes", "budgets must be positive")
    layer_bytes = model.layer_parameter_count() * model.dtype_bytes
    head_bytes = (model.hidden_size + model.vocab_size * model.hidden_size) * model.dtype_bytes
    owner_now = {layer: index for index, r in enumerate(current) for layer in r}
    owner_after = {layer: index for index, r in enumerate(target) for layer in r}
    moves: dict[tuple[int, int], list[int]] = {}
    for layer in range(model.num_hidden_layers):
        if owner_now[layer] != owner_after[layer]:
            moves.setdefault((owner_now[layer], owner_after[layer]), []).append(layer)
    transfers = tuple(Transfer(s, t, tuple(layers)) for (s, t), layers in sorted(moves.items()))
    stages = []
    last_now, last_after = len(current) - 1, len(target) - 1
    for index in range(max(len(current), len(target))):
        status = statuses[index] if index < len(current) else None
        now_range = current[index] if status is not None else None
        after_range = target[index] if index < len(target) else None
        incoming = tuple(t_layer for t in transfers if t.target == index for t_layer in t.layers)
        outgoing = tuple(t_layer for t in transfers if t.source == index for t_layer in t.layers)
        becomes_last = index == last_after and index != last_now
        stops_being_last = index == last_now and index != last_after
        budget_now = status.budget_bytes if status is not None else default_budget_bytes
        budget_after = budgets[index] if budgets and after_range is not None else budget_now
        usable_now = int(budget_now * gpu_memory_utilization)
        usable_after = int(budget_after * gpu_memory_utilization)
        # Before the switch the old budget still binds too (a shrinking budget is why we reconfigure).
        usable_during = min(usable_now, usable_after) if status is not None else usable_after
        weights_now = status.weight_bytes if status is not None else 0
        weights_during = weights_now + len(incoming) * layer_bytes + (head_bytes if becomes_last else 0)
        weights_after = weights_during - len(outgoing) * layer_bytes - (head_bytes if stops_being_last else 0)
        units_now = [range(a, b) for a, b in status.kv_units] if status is not None else []
        units_in = [u for run in contiguous_runs(incoming) for u in layer_units(run, layers_per_unit)]
        kv_now = sum(len(u) for u in units_now)
        kv_during = kv_now + len(incoming)
        keep = set(after_range or ())
        kv_after = sum(len(u) for u in units_now + units_in if keep.intersection(u))
        stages.append(
            StageMemoryPlan(
                index=index,
                current=now_range,
                target=after_range,
                usable_bytes_during=usable_during,
                usable_bytes_after=usable_after,
                weight_bytes_now=weights_now,
                weight_bytes_during=weights_during,
                weight_bytes_after=weights_after,
                kv_layers_now=kv_now,
                kv_layers_during=kv_during,
                kv_layers_after=kv_after,
                max_blocks_during=_max_blocks(
                    usable_during, weights_during, kv_during, bytes_per_block_per_layer
                ),
                max_blocks_after=(
                    _max_blocks(usable_after, weights_after, kv_after, bytes_per_block_per_layer)
                    if after_range is not None
                    else NO_BOUND
                ),
                incoming=incoming,
                outgoing=outgoing,
                becomes_last=becomes_last,
                stops_being_last=stops_being_last,
            )
        )

    def whole_chunks(blocks: int) -> int:
        return blocks // blocks_per_chunk * blocks_per_chunk

    return ReconfigurationPlan(
        method=method,
        current=tuple(current),
        target=tuple(target),
        transfers=transfers,
        stages=tuple(stages),
        blocks_per_chunk=blocks_per_chunk,
        pool_blocks=pool_blocks,
        blocks_in_use=blocks_in_use,
        blocks_to_finish=blocks_to_finish,
        capacity_during=whole_chunks(min(s.max_blocks_during for s in stages)),
        capacity_after=whole_chunks(min(s.max_blocks_after for s in stages)),
    )


def admission_refusal(plan: ReconfigurationPlan) -> str | None:
    """Why this plan cannot be carried out now, or None when it can. Checks only; changes nothing."""
    chunk = plan.blocks_per_chunk
    for stage in plan.stages:
        if stage.target is not None and stage.usable_bytes_after < stage.weight_bytes_after:
            return (
                f"{stage.describe()}: its weights after the change take {stage.weight_bytes_after} bytes, "
                f"more than its usable budget of {stage.usable_bytes_after} bytes"
            )
    if plan.capacity_after < chunk:
        tight = min(plan.stages, key=lambda s: s.max_blocks_after)
        return (
            f"{tight.describe()}: after the change its budget leaves room for {tight.max_blocks_after} KV "
            f"blocks, less than one chunk of {chunk}"
        )
    if plan.method == "stop_and_redeploy":
        return None  # the old stages are gone before the new ones are built: only "after" must fit
    tight = min(plan.stages, key=lambda s: s.max_blocks_during)
    if tight.usable_bytes_during < tight.weight_bytes_during:
        return (
            f"{tight.describe()}: during the change it holds the weights of its current and incoming "
            f"layers, {tight.weight_bytes_during} bytes, more than its usable budget of "
            f"{tight.usable_bytes_during} bytes"
        )
    if plan.method == "live_no_resize":
        return None  # without KV resizing, room is made by preempting requests instead (live_migration.py)
    if plan.blocks_in_use > plan.capacity_during or plan.capacity_during < chunk:
        return (
            f"{tight.describe()}: during the change it holds weights of {tight.weight_bytes_during} "
            f"bytes and KV for {tight.kv_layers_during} layers, which leaves room for "
            f"{tight.max_blocks_during} KV blocks "
            f"({plan.capacity_during} in whole chunks of {chunk}), but {plan.blocks_in_use} KV blocks are in "
            "use — retry when requests finish, or give the stage more memory"
        )
    shrinks = plan.capacity_during < plan.pool_blocks
    needed = plan.blocks_in_use + plan.blocks_to_finish
    if plan.method == "live" and shrinks and needed > plan.capacity_during:
        return (
            f"{tight.describe()}: during the change it has room for {plan.capacity_during} KV blocks "
            f"(in whole chunks of {chunk}); {plan.blocks_in_use} are in use and the running requests need "
            f"{plan.blocks_to_finish} more to finish, so some would be preempted — retry when requests "
            "finish, or give the stage more memory"
        )
    return None
