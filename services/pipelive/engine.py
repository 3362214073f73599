"""The serving engine: scheduler, block pool and pipeline, stepped one iteration at a time.

`LLMEngine.step()` is one iteration: schedule, lay out micro-batches, run them through the stages, sample,
and report the new tokens. Between two steps nothing is in flight — that is the safe point where the KV
pool is resized (`resize_kv`), and where a reconfiguration (`begin_reconfigure`, see `live_migration.py`)
switches layer ownership. A reconfiguration reaches the engine only through the pool-control object the
engine hands it (`EnginePoolControl`, the `PoolControl` of `pool_control.py`).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from services.pipelive.block_pool import BlockPool, ResizeRefused
from services.pipelive.config import EngineConfig, ModelConfig
from services.pipelive.kv_patch import DEFAULT_DIRTY_THRESHOLD, DEFAULT_MAX_ROUNDS
from services.pipelive.live_migration import ProcessReconfiguration, Reconfiguration
from services.pipelive.metrics import EngineMetrics
from services.pipelive.params import InvalidRequest, Limits, SamplingParams
from services.pipelive.pipeline import Pipeline, start_pipeline
from services.pipelive.plan import SequenceWork, build_plan
from services.pipelive.pool_control import PoolControl
from services.pipelive.reconfigure import (
    ReconfigurationPlan,
    ReconfigureRefused,
    admission_refusal,
    plan_reconfiguration,
)
from services.pipelive.sampling import sample_token
from services.pipelive.scheduler import KVCacheManager, Request, ScheduledWork, Scheduler
from services.pipelive.stage import StageSpec, StageStatus
from services.pipelive.weight_store import HostWeightStore


@dataclass(frozen=True)
class TokenOutput:
    """One new token of one request (finished requests also say why)."""

    request_id: str
    token_id: int
    finish_reason: str | None = None

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None


@dataclass(frozen=True)
class KVStatus:
    """The shared KV pool: its geometry and how many blocks are in use."""

    block_size: int
    blocks_per_chunk: int
    layers_per_unit: int
    total_blocks: int
    used_blocks: int
    free_blocks: int
    num_chunks: int


@dataclass(frozen=True)
class EngineStatus:
    """What `Status` reports: queue lengths, the KV pool, and each stage's layers and memory."""

    model_name: str
    num_layers: int
    running: int
    waiting: int
    kv: KVStatus
    stages: list[StageStatus]
    max_stages: int = 0  # the most stages live reconfiguration can grow to; 0: no bound


@dataclass
class ResizeResult:
    """Pool size after a resize and the chunks it added or released."""

    total_blocks: int
    added_chunks: list[int] = field(default_factory=list)
    released_chunks: list[int] = field(default_factory=list)


def split_microbatches(work: list[SequenceWork], count: int) -> list[list[SequenceWork]]:
    """Spread sequences over at most `count` micro-batches with about equal token counts (largest first)."""
    count = max(1, min(count, len(work)))
    batches: list[list[SequenceWork]] = [[] for _ in range(count)]
    tokens = [0] * count
    for item in sorted(work, key=lambda w: -len(w.token_ids)):
        lightest = tokens.index(min(tokens))
        batches[lightest].append(item)
        tokens[lightest] += len(item.token_ids)
    return [batch for batch in batches if batch]


class LLMEngine:
    """A pipeline-parallel engine with a paged, live-resizable KV cache; one caller (thread) steps it."""

    def __init__(
        self,
        model: ModelConfig,
        engine: EngineConfig | None = None,
        checkpoint: str | Path | None = None,
        mode: str = "thread",
        metrics: EngineMetrics | None = None,
        host_weights: bool = False,
    ) -> None:
        self.model = model
        self.config = engine or EngineConfig()
        self.metrics = metrics or EngineMetrics()
        self.mode = mode
        self.checkpoint = str(checkpoint) if checkpoint else None
        # The host-memory copy of the weights that live reconfiguration copies moving layers from (in each
        # stage process, on the process pipeline); without `host_weights` it is made on first use and reads
        # each layer from disk (or the seed) when needed.
        self.host_weights = host_weights
        self._weight_store = (
            HostWeightStore(model, self.checkpoint) if host_weights and mode == "thread" else None
        )
        self._reconfiguration: Reconfiguration | None = None
        self._pool_control: PoolControl = EnginePoolControl(self)
        self.layer_ranges = self.config.layer_ranges(model.num_hidden_layers)
        specs = [
            self._stage_spec(
                index,
                len(self.layer_ranges),
                layers,
                self.config.stage_budgets[index] if self.config.stage_budgets else None,
            )
            for index, layers in enumerate(self.layer_ranges)
        ]
        self.pipeline = start_pipeline(specs, mode, self.config.threads_per_stage, self.config.max_stages)
        try:
            self.pool = BlockPool(self.config.blocks_per_chunk)
            self._stages = self.pipeline.control("status")
            capacity = self.capacity_blocks()
            wanted = capacity if self.config.initial_kv_blocks is None else self.config.initial_kv_blocks
            chunks = min(wanted, capacity) // self.config.blocks_per_chunk
            if self.config.initial_kv_blocks is not None and wanted > capacity:
                raise ValueError(
                    f"initial_kv_blocks {wanted} exceeds what the stage budgets allow ({capacity})"
                )
            if chunks < 1:
                raise ValueError(self._no_room_message())
            self._add_chunks(chunks)
        except BaseException:
            self.pipeline.close()
            raise
        self.kv = KVCacheManager(self.pool, self.config.block_size)
        self.scheduler = Scheduler(self.kv, self.config.max_num_batched_tokens, self.config.max_num_seqs)
        self.max_model_len = min(
            self.config.max_model_len or model.max_position_embeddings, model.max_position_embeddings
        )
        self.num_microbatches = self.config.num_microbatches or len(self.layer_ranges)
        self._generators: dict[str, torch.Generator] = {}
        self._ids = itertools.count()
        self.num_steps = 0

    def _stage_spec(self, index: int, num_stages: int, layers: range, budget: int | None) -> StageSpec:
        return StageSpec(
            index,
            num_stages,
            layers,
            self.model,
            self.config,
            self.checkpoint,
            budget,
            self.host_weights and self.mode == "process",
        )

    def _no_room_message(self) -> str:
        lines = [
            f"stage {s.index} (layers {s.first_layer}-{s.end_layer - 1}): "
            f"budget {s.usable_bytes} bytes usable, "
            f"weights {s.weight_bytes}, room for {s.max_blocks} KV blocks"
            for s in self._stages
        ]
        return (
            "the stage memory budgets leave no room for one KV chunk of "
            f"{self.config.blocks_per_chunk} blocks: " + "; ".join(lines)
        )

    # capacity and resizing
    def capacity_blocks(self) -> int:
        """The most blocks every stage can hold at once (the block-id space is shared by all stages)."""
        return min(s.max_blocks for s in self._stages)

    def _add_chunks(self, count: int) -> list[int]:
        chunk_ids = self.pool.grow(count)
        try:
            self._stages = self.pipeline.control("add_chunks", chunk_ids=chunk_ids)
        except Exception:
            self.pool.shrink(count)
            raise
        return chunk_ids

    def _release_chunks(self, count: int) -> list[int]:
        released = self.pool.shrink(count)
        if released:
            self._stages = self.pipeline.control("release_chunks", chunk_ids=released)
        return released

    def resize_kv(self, target_blocks: int) -> ResizeResult:
        """Grow or shrink the KV pool to `target_blocks` (rounded up to whole chunks) while requests run.

        Raises ResizeRefused with the reason when a stage's budget cannot hold it, or when shrinking would
        have to touch live blocks or leave a request without room to finish.
        """
        if self._reconfiguration is not None:
            raise ResizeRefused("a reconfiguration is in progress; resize the KV pool after it commits")
        per_chunk = self.config.blocks_per_chunk
        target_chunks = -(-max(0, target_blocks) // per_chunk)
        current = self.pool.num_chunks
        if target_chunks > current:
            capacity = self.capacity_blocks() // per_chunk
            if target_chunks > capacity:
                tight = min(self._stages, key=lambda s: s.max_blocks)
                raise ResizeRefused(
                    f"cannot grow the KV pool to {target_chunks * per_chunk} blocks: stage {tight.index} "
                    f"(budget {tight.usable_bytes} bytes usable, weights {tight.weight_bytes}) has room for "
                    f"{tight.max_blocks} blocks, i.e. {capacity} chunks of {per_chunk}"
                )
            added = self._add_chunks(target_chunks - current)
            return ResizeResult(self.pool.num_total, added_chunks=added)
        if target_chunks < current:
            needed = max(
                (
                    self.kv.blocks_needed(len(r.prompt_token_ids) + r.params.max_tokens)
                    for r in self._active()
                ),
                default=0,
            )
            if target_chunks < 1 or target_chunks * per_chunk < needed:
                raise ResizeRefused(
                    f"cannot shrink the KV pool to {target_chunks * per_chunk} blocks: "
                    "a request in progress needs "
                    f"up to {max(needed, 1)} blocks to finish, and the pool keeps at least one chunk"
                )
            released = self._release_chunks(current - target_chunks)
            return ResizeResult(self.pool.num_total, released_chunks=released)
        return ResizeResult(self.pool.num_total)

    def wanted_pool_blocks(self, capacity: int) -> int:
        """The pool size to keep when `capacity` blocks fit: all of it, or the configured initial size."""
        if self.config.initial_kv_blocks is None:
            return capacity
        per_chunk = self.config.blocks_per_chunk
        return min(capacity, self.config.initial_kv_blocks // per_chunk * per_chunk)

    # reconfiguration
    def weight_store(self) -> HostWeightStore:
        if self._weight_store is None:
            self._weight_store = HostWeightStore(self.model, self.checkpoint, preload=False)
        return self._weight_store

    @property
    def reconfiguring(self) -> bool:
        return self._reconfiguration is not None

    def plan_reconfiguration(
        self, target: Sequence[range], method: str = "live", budgets: Sequence[int] | None = None
    ) -> ReconfigurationPlan:
        """The moves and memory plan of changing to `target` now (InvalidPartition for a bad one)."""
        return plan_reconfiguration(
            self.model,
            self._stages,
            target,
            method,
            gpu_memory_utilization=self.config.gpu_memory_utilization,
            default_budget_bytes=self.config.stage_memory_bytes,
            bytes_per_block_per_layer=self.config.block_size * self.model.kv_bytes_per_token_per_layer(),
            layers_per_unit=self.config.layers_per_unit,
            blocks_per_chunk=self.config.blocks_per_chunk,
            pool_blocks=self.pool.num_total,
            blocks_in_use=self.pool.num_used,
            blocks_to_finish=self.scheduler.blocks_to_finish(),
            budgets=budgets,
        )

    def begin_reconfigure(
        self,
        target: Sequence[range],
        method: str = "live",
        *,
        budgets: Sequence[int] | None = None,
        dirty_threshold: int = DEFAULT_DIRTY_THRESHOLD,
        max_rounds: int = DEFAULT_MAX_ROUNDS,
        before_switch: Callable[[Reconfiguration], None] | None = None,
    ) -> Reconfiguration:
        """Start changing the partition to `target` (call between steps, from the thread that steps).

        Raises InvalidPartition for a partition or method that can never work, ReconfigureRefused when it
        does not fit now (nothing is changed then). Otherwise the change proceeds at the following steps'
        safe points; the returned object's `future` resolves to a ReconfigureResult at the commit, or to
        ReconfigureFailed after a rollback.
        """
        if self._reconfiguration is not None:
            raise ReconfigureRefused("a reconfiguration is already in progress")
        plan = self.plan_reconfiguration(target, method, budgets)
        standing = getattr(self.pipeline, "max_stages", 0)  # process pipeline: processes started
        if plan.method != "stop_and_redeploy" and standing and len(plan.target) > standing:
            raise ReconfigureRefused(
                f"method {plan.method!r} cannot grow the process pipeline to {len(plan.target)} stages: it "
                f"started {standing} stage processes (stages are torch.distributed ranks, fixed at start); "
                "start it with more (EngineConfig.max_stages, --max-stages), or use stop_and_redeploy"
            )
        if list(plan.target) == list(plan.current) and not budgets:
            raise ReconfigureRefused("the engine already serves this partition")
        reason = admission_refusal(plan)
        if reason is None and plan.method in ("live", "stop_and_copy"):
            keep = min(self.pool.num_chunks, plan.capacity_during // plan.blocks_per_chunk)
            try:
                self.pool.plan_shrink(self.pool.num_chunks - keep)
            except ResizeRefused as error:
                reason = f"the KV pool must shrink to {keep} chunks during the change: {error}"
        if reason is not None:
            raise ReconfigureRefused(reason)
        kind = Reconfiguration if self.mode == "thread" else ProcessReconfiguration
        reconfiguration = kind(
            self._pool_control,
            plan,
            budgets=list(budgets) if budgets else None,
            dirty_threshold=dirty_threshold,
            max_rounds=max_rounds,
            before_switch=before_switch,
        )
        self._reconfiguration = reconfiguration
        self._advance_reconfiguration()
        return reconfiguration

    def _advance_reconfiguration(self) -> None:
        reconfiguration = self._reconfiguration
        if reconfiguration is None:
            return
        reconfiguration.at_safe_point()
        if reconfiguration.finished:
            self._reconfiguration = None

    def _active(self) -> Iterable[Request]:
        return self.scheduler.requests.values()

    # requests
    def limits(self) -> Limits:
        return Limits(
            model_name=self.model.name,
            vocab_size=self.model.vocab_size,
            max_model_len=self.max_model_len,
            max_request_blocks=self.pool.num_total,
            block_size=self.config.block_size,
        )

    def add_request(
        self, prompt_token_ids: list[int], params: SamplingParams, request_id: str | None = None
    ) -> str:
        request_id = request_id or f"req-{next(self._ids)}"
        if request_id in self.scheduler.requests:
            raise InvalidRequest("request_id", f"request id {request_id} is already in use")
        request = Request(request_id, list(prompt_token_ids), params)
        if params.temperature > 0:
            generator = torch.Generator()
            generator.manual_seed(params.seed if params.seed is not None else int(time.time_ns() % 2**63))
            self._generators[request_id] = generator
        self.scheduler.add(request)
        return request_id

    def abort_request(self, request_id: str) -> bool:
        """Stop a request and free its KV blocks; False if it is not known (already finished)."""
        request = self.scheduler.requests.get(request_id)
        if request is None:
            return False
        self._finish(request, "abort")
        return True

    def has_unfinished(self) -> bool:
        return self.scheduler.has_work()

    # one iteration
    def step(self) -> list[TokenOutput]:
        self._advance_reconfiguration()  # the safe point: nothing is in flight between two steps
        scheduled = self.scheduler.schedule()
        if not scheduled.work:
            self._report(0, 0, len(scheduled.preempted))
            return []
        work = [self._sequence_work(item) for item in scheduled.work]
        plans = [
            build_plan(batch, self.config.block_size)
            for batch in split_microbatches(work, self.num_microbatches)
        ]
        logits = self.pipeline.run_step(plans)
        next_tokens: dict[str, int] = {}
        for plan, rows in zip(plans, logits, strict=True):
            for row, request_id in enumerate(plan.sample_request_ids):
                next_tokens[request_id] = self._sample(request_id, rows[row])
        now = time.monotonic()
        outputs: list[TokenOutput] = []
        prompt_tokens = generation_tokens = 0
        for item in scheduled.work:
            request = item.request
            if request.num_computed_tokens < len(request.prompt_token_ids):
                prompt_tokens += min(
                    item.num_new_tokens, len(request.prompt_token_ids) - request.num_computed_tokens
                )
            request.num_computed_tokens += item.num_new_tokens
            token = next_tokens.get(request.request_id)
            if token is None:
                continue  # a prefill chunk that does not reach the end of the prompt yet
            generation_tokens += 1
            request.output_token_ids.append(token)
            if request.first_token_time is None:
                request.first_token_time = now
                self.metrics.first_token(now - request.arrival_time)
            else:
                assert request.last_token_time is not None
                self.metrics.inter_token(now - request.last_token_time)
            request.last_token_time = now
            reason = self._stop_reason(request, token)
            if reason is not None:
                self._finish(request, reason)
            outputs.append(TokenOutput(request.request_id, token, reason))
        self.num_steps += 1
        self._report(prompt_tokens, generation_tokens, len(scheduled.preempted))
        return outputs

    def _sequence_work(self, item: ScheduledWork) -> SequenceWork:
        request = item.request
        start = request.num_computed_tokens
        return SequenceWork(
            request_id=request.request_id,
            token_ids=request.token_at(start, item.num_new_tokens),
            start=start,
            slots=self.kv.slots(request.request_id),
            sample=item.completes_known_tokens,
        )

    def _sample(self, request_id: str, logits: torch.Tensor) -> int:
        params = self.scheduler.requests[request_id].params
        return sample_token(logits, params, self._generators.get(request_id))

    def _stop_reason(self, request: Request, token: int) -> str | None:
        eos = self.model.eos_token_id
        if eos is not None and token == eos and not request.params.ignore_eos:
            return "stop"
        if len(request.output_token_ids) >= request.params.max_tokens:
            return "length"
        return None

    def _finish(self, request: Request, reason: str) -> None:
        self.scheduler.finish(request, reason)
        self._generators.pop(request.request_id, None)
        now = time.monotonic()
        admitted = request.scheduled_time or now
        first = request.first_token_time or now
        self.metrics.finished(
            reason=reason,
            e2e=now - request.arrival_time,
            queue=admitted - request.arrival_time,
            prefill=max(0.0, first - admitted),
            decode=max(0.0, now - first),
            prompt_tokens=len(request.prompt_token_ids),
            generation_tokens=len(request.output_token_ids),
            max_tokens=request.params.max_tokens,
        )

    def _report(self, prompt_tokens: int, generation_tokens: int, preemptions: int) -> None:
        self.metrics.step(
            running=len(self.scheduler.running),
            waiting=len(self.scheduler.waiting),
            kv_usage=self.pool.usage(),
            prompt_tokens=prompt_tokens,
            generation_tokens=generation_tokens,
            preemptions=preemptions,
        )

    # whole runs
    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[list[int]]:
        """Run these prompts to completion (batched together) and return each one's output tokens."""
        ids = [self.add_request(prompt, params) for prompt in prompts]
        outputs: dict[str, list[int]] = {request_id: [] for request_id in ids}
        while self.has_unfinished():
            for output in self.step():
                if output.request_id in outputs:
                    outputs[output.request_id].append(output.token_id)
        return [outputs[request_id] for request_id in ids]

    def status(self) -> EngineStatus:
        return EngineStatus(
            model_name=self.model.name,
            num_layers=self.model.num_hidden_layers,
            running=len(self.scheduler.running),
            waiting=len(self.scheduler.waiting),
            kv=KVStatus(
                block_size=self.config.block_size,
                blocks_per_chunk=self.config.blocks_per_chunk,
                layers_per_unit=self.config.layers_per_unit,
                total_blocks=self.pool.num_total,
                used_blocks=self.pool.num_used,
                free_blocks=self.pool.num_free,
                num_chunks=self.pool.num_chunks,
            ),
            stages=list(self._stages),
            max_stages=getattr(self.pipeline, "max_stages", 0),
        )

    def close(self) -> None:
        if self._reconfiguration is not None:
            self._reconfiguration.cancel()
        self.pipeline.close()

    def __enter__(self) -> LLMEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class EnginePoolControl:
    """The `PoolControl` (pool_control.py) of one engine: what a reconfiguration may do to it, nothing more.

    It lives here, beside the engine, because it is the one other class that touches the engine's private
    state; live migration only ever sees it as a `PoolControl`.
    """

    def __init__(self, engine: LLMEngine) -> None:
        self._engine = engine

    @property
    def pipeline(self) -> Pipeline:
        return self._engine.pipeline

    @property
    def stages(self) -> list[StageStatus]:
        return list(self._engine._stages)

    @property
    def block_size(self) -> int:
        return self._engine.config.block_size

    @property
    def checkpoint(self) -> str | None:
        return self._engine.checkpoint

    @property
    def num_chunks(self) -> int:
        return self._engine.pool.num_chunks

    @property
    def num_preemptions(self) -> int:
        return self._engine.scheduler.num_preemptions

    def chunk_ids(self) -> list[int]:
        return self._engine.pool.chunk_ids()

    def live_slots(self) -> list[int]:
        pool = self._engine.pool
        return sorted(pool.slot_index(block) for block in pool.live_blocks())

    def capacity_blocks(self) -> int:
        return self._engine.capacity_blocks()

    def wanted_pool_blocks(self, capacity: int) -> int:
        return self._engine.wanted_pool_blocks(capacity)

    def add_chunks(self, count: int) -> list[int]:
        return self._engine._add_chunks(count)

    def release_chunks(self, count: int) -> list[int]:
        return self._engine._release_chunks(count)

    def refresh_stages(self) -> None:
        self._engine._stages = self._engine.pipeline.control("status")

    def preempt_all(self) -> int:
        count = 0
        while self._engine.scheduler.preempt_newest() is not None:
            count += 1
        return count

    def reserve_for_running(self, reserve: bool) -> None:
        self._engine.scheduler.reserve_for_running = reserve

    def stage_spec(self, index: int, num_stages: int, layers: range, budget_bytes: int | None) -> StageSpec:
        return self._engine._stage_spec(index, num_stages, layers, budget_bytes)

    def weight_store(self) -> HostWeightStore:
        return self._engine.weight_store()

    def switched(self, layers: list[range], stages: list[StageStatus] | None = None) -> None:
        engine = self._engine
        engine.layer_ranges = list(layers)
        engine.num_microbatches = engine.config.num_microbatches or len(layers)
        engine._stages = list(stages) if stages is not None else engine.pipeline.control("status")

    def redeploy(self, specs: list[StageSpec]) -> None:
        engine = self._engine
        standing = getattr(engine.pipeline, "max_stages", 0)  # the stage processes it was started with
        engine.pipeline.close()
        engine.pipeline = start_pipeline(
            specs,
            engine.mode,
            engine.config.threads_per_stage,
            max(engine.config.max_stages or 0, standing, len(specs)),
        )
        engine.pool.shrink(engine.pool.num_chunks)  # the new stages hold no chunks yet
        self.switched([spec.layers for spec in specs])
