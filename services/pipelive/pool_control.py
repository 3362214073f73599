"""The pool-control object: what a reconfiguration may do to the engine it changes, and nothing else.

A reconfiguration (`live_migration.py`) resizes the engine's KV pool, keeps the engine's record of its
stages current, reaches the stages through the pipeline, and, at the switch, tells the engine which
partition serves from then on. `PoolControl` names exactly those operations. `LLMEngine` builds one over
itself and hands it to the reconfiguration it starts, so live migration never imports the engine and never
touches its private state.

This module imports neither the engine nor live migration: both import it.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from services.pipelive.pipeline import Pipeline
from services.pipelive.stage import StageSpec, StageStatus
from services.pipelive.weight_store import HostWeightStore


@runtime_checkable
class PoolControl(Protocol):
    """The engine's KV pool, stage statuses and pipeline, as a reconfiguration sees them.

    Used from the thread that steps the engine, at safe points (between two iterations); the background
    copy of a live reconfiguration only reads `pipeline`, `checkpoint` and `weight_store`.
    """

    @property
    def pipeline(self) -> Pipeline:
        """The pipeline serving now: its control channel, and its workers (thread pipeline) or migration
        channel (process pipeline)."""
        ...

    @property
    def stages(self) -> list[StageStatus]:
        """Each stage's status as last reported (refreshed by every pool or partition change here)."""
        ...

    @property
    def block_size(self) -> int:
        """Tokens per KV block (the dirty bitmaps and KV comparisons work in blocks)."""
        ...

    @property
    def checkpoint(self) -> str | None:
        """Where the model's weights come from (None: the seed); stage processes read moving layers there."""
        ...

    @property
    def num_chunks(self) -> int:
        """Chunks in the KV pool now."""
        ...

    @property
    def num_preemptions(self) -> int:
        """Requests preempted since the engine started (a reconfiguration reports its own share)."""
        ...

    def chunk_ids(self) -> list[int]:
        """The pool's chunk ids, sorted (a new stage allocates the same chunks)."""
        ...

    def live_slots(self) -> list[int]:
        """Physical slot index of every live KV block, sorted: the blocks whose KV must move."""
        ...

    def capacity_blocks(self) -> int:
        """The most blocks every stage can hold at once."""
        ...

    def wanted_pool_blocks(self, capacity: int) -> int:
        """The pool size to keep when `capacity` blocks fit."""
        ...

    def add_chunks(self, count: int) -> list[int]:
        """Grow the pool by `count` chunks on every stage; returns their ids (nothing changes on failure)."""
        ...

    def release_chunks(self, count: int) -> list[int]:
        """Release `count` chunks holding no live block, from the pool and every stage; returns their ids
        (ResizeRefused, nothing changed, when fewer are free)."""
        ...

    def refresh_stages(self) -> None:
        """Ask the stages for their status again."""
        ...

    def preempt_all(self) -> int:
        """Preempt every running request (its KV is dropped, it is recomputed later); returns how many."""
        ...

    def reserve_for_running(self, reserve: bool) -> None:
        """While on, admit a new request only if every running one can still finish in the pool."""
        ...

    def stage_spec(self, index: int, num_stages: int, layers: range, budget_bytes: int | None) -> StageSpec:
        """The spec of stage `index` of `num_stages` holding `layers`, as this engine builds its stages."""
        ...

    def weight_store(self) -> HostWeightStore:
        """The host-memory copy of the weights that moving layers are copied from."""
        ...

    def switched(self, layers: list[range], stages: list[StageStatus] | None = None) -> None:
        """The stages now serve `layers` (one range per stage): the engine schedules for that partition.
        `stages` are their statuses when the switch reported them; None asks the stages."""
        ...

    def redeploy(self, specs: list[StageSpec]) -> None:
        """Close the pipeline and start a new one from `specs` with an empty KV pool; it serves from now."""
        ...
