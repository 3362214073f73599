"""Carrying out a reconfiguration plan on a running engine: live in place, or one of the three baselines.

A `Reconfiguration` is started by `LLMEngine.begin_reconfigure` (at a safe point, after planning and
admission) and advanced by the engine at every later safe point — between two iterations, with no
micro-batch in flight — until it commits or rolls back. Its `future` then holds the `ReconfigureResult`.
It reaches the engine only through the `PoolControl` it is handed (`pool_control.py`: the KV pool, the
stages' statuses, the pipeline, the partition serving), never the engine itself.

* **live**: shrink the KV pool to what the stages can hold during the change (releasing free chunks only),
  give the targets KV units for their incoming layers and start dirty tracking on the sources; then, on a
  background thread while decoding continues, copy the incoming layers' weights from the host-memory copy
  and pre-copy the moving layers' KV in rounds (`kv_patch`). At the first safe point after that, pause:
  copy the last dirty blocks, switch layer ownership (and relink the chain when stages are added or
  removed), resume. At the next safe point grow the pool to what the new layout allows. Anything failing
  before the switch rolls back; the old partition keeps serving throughout.
* **live_no_resize**: the same, but the pool cannot be resized in place: when it must get smaller it is
  allocated anew, which loses the KV of every running request (all are preempted and recomputed), and it
  does not grow back after the switch.
* **stop_and_copy**: at one safe point, pause, copy the weights and all KV of the moving layers, switch.
* **stop_and_redeploy**: at one safe point, preempt every running request (their KV is dropped and they are
  recomputed), tear the pipeline down, build it again with the new partition, re-prefill.

On the in-process (thread) pipeline the driver reaches the stages directly (`Reconfiguration`); on the
process pipeline the same steps are control commands and migration-channel tasks
(`ProcessReconfiguration`, `process_migration.py`), where stages are added from standby processes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from services.pipelive.kv_patch import (
    DEFAULT_DIRTY_THRESHOLD,
    DEFAULT_MAX_ROUNDS,
    DirtyBitmap,
    MigrationFabric,
    copy_blocks,
)
from services.pipelive.model import StageWeights
from services.pipelive.partition import contiguous_runs
from services.pipelive.pipeline import ProcessPipeline, ThreadPipeline
from services.pipelive.pool_control import PoolControl
from services.pipelive.process_migration import MigrationClient
from services.pipelive.reconfigure import ReconfigurationPlan, ReconfigureFailed
from services.pipelive.stage import StageSpec, StageWorker
from services.pipelive.weight_store import HostWeightStore, copy_layer_to

log = logging.getLogger(__name__)


@dataclass
class ReconfigureResult:
    """What a committed reconfiguration cost."""

    method: str
    stages: list[range]
    pause_ms: float = 0.0  # inference stopped at the switch
    total_ms: float = 0.0  # from the request to the commit, background copying included
    weight_bytes_copied: int = 0
    kv_bytes_copied: int = 0
    pause_kv_bytes: int = 0  # the part of kv_bytes_copied copied inside the pause
    patch_rounds: int = 0  # copy rounds before the pause, the first (full) one included
    dirty_per_round: list[int] = field(default_factory=list)  # dirty blocks found after each round
    final_dirty_blocks: int = 0
    preempted: int = 0
    dropped: int = 0
    channel_rejections: int = 0


@dataclass
class _StageChange:
    """One stage's part: its worker (new stages get one) and its plan."""

    worker: StageWorker
    incoming: tuple[int, ...]
    outgoing: tuple[int, ...]
    target: range | None
    becomes_last: bool
    stops_being_last: bool
    budget_bytes: int | None


class Reconfiguration:
    """One reconfiguration in progress; `at_safe_point` is called by the engine between iterations."""

    def __init__(
        self,
        control: PoolControl,
        plan: ReconfigurationPlan,
        *,
        budgets: list[int] | None = None,
        dirty_threshold: int = DEFAULT_DIRTY_THRESHOLD,
        max_rounds: int = DEFAULT_MAX_ROUNDS,
        before_switch: Callable[[Reconfiguration], None] | None = None,
    ) -> None:
        if dirty_threshold < 0:
            raise ValueError("dirty_threshold must not be negative")
        if max_rounds < 1:
            raise ValueError("max_rounds must be at least 1")
        self.control = control
        self.plan = plan
        self.method = plan.method
        self.budgets = budgets
        self.dirty_threshold = dirty_threshold
        self.max_rounds = max_rounds
        self.before_switch = before_switch
        self.future: Future[ReconfigureResult] = Future()
        self.result = ReconfigureResult(plan.method, list(plan.target))
        self.state = "start"
        self.fabric = MigrationFabric()
        self._begin = time.perf_counter()
        self._preemptions_before = control.num_preemptions
        self._released_chunks = 0
        self._prepare_ms = 0.0
        self._dirty_blocks_copied = 0
        self._changes: list[_StageChange] = []
        self._initial_slots = torch.zeros(0, dtype=torch.long)
        self._thread: threading.Thread | None = None
        self._cancel = threading.Event()
        self._error: BaseException | None = None
        self._lock = threading.Lock()  # guards the byte counters the background thread adds to
        self._joined: list[int] = []  # process pipeline: standby stages given a worker for this change

    @property
    def finished(self) -> bool:
        return self.future.done()

    # the engine's hook
    def at_safe_point(self) -> None:
        """Advance: start, switch when the background copy is ready, roll back when it failed, commit."""
        try:
            if self.state == "start":
                self._start()
            elif self.state == "failed":
                self._rollback()
                self.future.set_exception(
                    ReconfigureFailed(
                        f"reconfiguration to {_ranges(self.plan.target)} failed before the switch and was "
                        f"rolled back; {_ranges(self.plan.current)} still serves: {self._error}"
                    )
                )
                self.state = "done"
            elif self.state == "ready":
                self._switch()
                self.state = "grow"
            elif self.state == "grow":
                self._commit()
        except BaseException as error:
            if self.state in ("start", "copying", "ready", "failed"):
                log.exception("reconfiguration failed before the switch; rolling back")
                self._cancel.set()
                self._rollback()
                self.future.set_exception(
                    ReconfigureFailed(
                        f"reconfiguration failed before the switch and was rolled back: {error}"
                    )
                )
                self.state = "done"
            else:
                self.state = "done"
                self.future.set_exception(error)
                raise

    def cancel(self) -> None:
        """Stop the background copy (the engine is closing); whoever waits for the result learns so."""
        self._cancel.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        if not self.future.done():
            self.future.set_exception(
                ReconfigureFailed("the engine closed before the reconfiguration committed")
            )

    # starting
    def _workers(self) -> list[StageWorker]:
        pipeline = self.control.pipeline
        if not isinstance(pipeline, ThreadPipeline):
            raise RuntimeError("live reconfiguration needs the thread pipeline")
        return pipeline.workers

    def _start(self) -> None:
        if self.method == "stop_and_redeploy":
            self._stop_and_redeploy()
            self.state = "grow"
            return
        self._prepare()
        if self.method == "stop_and_copy":
            started = time.perf_counter()
            self._copy_weights()
            self._add_kv(self._copy_kv_round(self._initial_slots), pause=True)
            self.state = "switching"
            self._switch_stages()
            self.result.pause_ms = (time.perf_counter() - started) * 1000 + self._prepare_ms
            self.result.patch_rounds = 0
            self.state = "grow"
            return
        self.state = "copying"
        self._thread = threading.Thread(target=self._background, name="pipelive-migration", daemon=True)
        self._thread.start()

    def _prepare(self) -> None:
        """At a safe point: make room in the pool, give targets KV units, start dirty tracking."""
        started = time.perf_counter()
        control, plan = self.control, self.plan
        per_chunk = plan.blocks_per_chunk
        keep = min(control.num_chunks, plan.capacity_during // per_chunk)
        if self.method == "live_no_resize" and keep < control.num_chunks:
            # Without live resizing the pool is one allocation: making it smaller means allocating it anew,
            # which loses every block's KV, so every running request is preempted (and recomputed).
            control.preempt_all()
        released = control.release_chunks(control.num_chunks - keep)
        self._released_chunks = len(released)
        if released and self.method == "live":
            control.reserve_for_running(True)
        self._prepare_stages()
        self._initial_slots = torch.tensor(control.live_slots(), dtype=torch.long)
        self._prepare_ms = (time.perf_counter() - started) * 1000

    def _prepare_stages(self) -> None:
        plan = self.plan
        workers = self._workers()
        for stage in plan.stages:
            if stage.current is not None:
                worker = workers[stage.index]
            else:
                worker = self._standby_worker(stage.index, stage.target or range(0, 0))
            budget = self.budgets[stage.index] if self.budgets and stage.target is not None else None
            change = _StageChange(
                worker,
                stage.incoming,
                stage.outgoing,
                stage.target,
                stage.becomes_last,
                stage.stops_being_last,
                budget,
            )
            self._changes.append(change)
            for run in contiguous_runs(stage.incoming):
                worker.cache.add_layers(run)
            if stage.outgoing:
                worker.dirty = DirtyBitmap(stage.outgoing, self.control.block_size)

    def _new_stage_spec(self, index: int, target: range) -> StageSpec:
        """A new stage before the switch: no layers yet (its layers come with the switch), not the last."""
        return self.control.stage_spec(
            index,
            index + 2,
            range(target.start, target.start),
            self.budgets[index] if self.budgets else None,
        )

    def _standby_worker(self, index: int, target: range) -> StageWorker:
        """A new stage: no layers yet, KV chunks matching the pool (units come with its incoming layers)."""
        worker = StageWorker(self._new_stage_spec(index, target), weights=StageWeights(layers={}))
        for chunk_id in self.control.chunk_ids():
            worker.cache.add_chunk(chunk_id)
        return worker

    # the background copy (live methods)
    def _background(self) -> None:
        try:
            self._copy_weights()
            copied = self._copy_kv_round(self._initial_slots)
            self._add_kv(copied)
            rounds = 1
            while not self._cancel.is_set():
                dirty = self._dirty_count()
                self.result.dirty_per_round.append(dirty)
                if dirty <= self.dirty_threshold or rounds >= self.max_rounds:
                    break
                self._add_kv(self._copy_dirty())
                rounds += 1
            self.result.patch_rounds = rounds
            if self._cancel.is_set():
                raise RuntimeError("cancelled")
            self.state = "ready"
        except BaseException as error:  # noqa: BLE001 - rolled back at the next safe point
            log.warning("background copy failed: %s", error)
            self._error = error
            self.state = "failed"

    def _store(self) -> HostWeightStore:
        return self.control.weight_store()

    def _copy_weights(self) -> None:
        store = self._store()
        for change in self._changes:
            worker = change.worker
            for layer in change.incoming:
                if self._cancel.is_set():
                    raise RuntimeError("cancelled")
                copy = copy_layer_to(store.layer(layer), worker.config.torch_dtype, worker.device)
                worker.incoming_weights[layer] = copy
                with self._lock:
                    self.result.weight_bytes_copied += copy.nbytes()
            if change.becomes_last:
                norm, head = store.head()
                dtype = worker.config.torch_dtype
                worker.incoming_head = (
                    norm.to(worker.device, dtype, copy=True),
                    head.to(worker.device, dtype, copy=True),
                )
                with self._lock:
                    self.result.weight_bytes_copied += sum(
                        t.numel() * t.element_size() for t in worker.incoming_head
                    )

    def _transfers(self) -> list[tuple[_StageChange, _StageChange, tuple[int, ...]]]:
        return [(self._changes[t.source], self._changes[t.target], t.layers) for t in self.plan.transfers]

    def _copy_kv_round(self, slots: torch.Tensor) -> int:
        """Copy these slots of every moving layer, each transfer on its own thread over the fabric."""
        return self._run_transfers({index: slots for index in range(len(self.plan.transfers))})

    def _copy_dirty(self, threaded: bool = True) -> int:
        """Take and copy every transfer's dirty blocks; `_dirty_blocks_copied` says how many there were."""
        taken = {}
        for index, (source, _, layers) in enumerate(self._transfers()):
            assert source.worker.dirty is not None
            taken[index] = source.worker.dirty.take(layers)
        self._dirty_blocks_copied = sum(int(slots.numel()) for slots in taken.values())
        return self._run_transfers(taken, threaded)

    def _run_transfers(self, slots_of: dict[int, torch.Tensor], threaded: bool = True) -> int:
        """Copy each transfer's slots; in the pause (`threaded=False`) one after another, with no threads
        to start and nothing else on the channels."""
        transfers = self.plan.transfers
        copied = [0] * len(transfers)
        errors: list[BaseException] = []

        def run(index: int) -> None:
            source, target, layers = self._transfers()[index]
            slots = slots_of[index]
            try:
                copied[index] = self.fabric.transfer(
                    transfers[index].source,
                    transfers[index].target,
                    lambda: copy_blocks(source.worker.cache, target.worker.cache, layers, slots),
                )
            except BaseException as error:  # noqa: BLE001 - raised below, on the calling thread
                errors.append(error)

        if not threaded:
            for index in slots_of:
                run(index)
            slots_of = {}
        threads = [threading.Thread(target=run, args=(index,), daemon=True) for index in slots_of]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]
        return sum(copied)

    def _dirty_count(self) -> int:
        total = 0
        for source, _, layers in self._transfers():
            assert source.worker.dirty is not None
            total += source.worker.dirty.count(layers)
        return total

    def _add_kv(self, copied: int, pause: bool = False) -> None:
        with self._lock:
            self.result.kv_bytes_copied += copied
            if pause:
                self.result.pause_kv_bytes += copied

    # the switch
    def _switch(self) -> None:
        """Pause (we are between iterations), copy the last dirty blocks, switch ownership, resume."""
        started = time.perf_counter()
        self._add_kv(self._copy_dirty(threaded=False), pause=True)
        self.result.final_dirty_blocks = self._dirty_blocks_copied
        hook_ms = 0.0
        if self.before_switch is not None:
            hook_started = time.perf_counter()
            self.before_switch(self)
            hook_ms = (time.perf_counter() - hook_started) * 1000
        # From here on stages change hands one by one: a failure can no longer be rolled back.
        self.state = "switching"
        self._switch_stages()
        self.result.pause_ms = (time.perf_counter() - started) * 1000 - hook_ms

    def _switch_stages(self) -> None:
        plan = self.plan
        count = len(plan.target)
        for change in self._changes:
            worker = change.worker
            worker.dirty = None
            if change.target is None:
                continue  # a removed stage: dropped from the chain below
            for layer in change.incoming:
                worker.weights.layers[layer] = worker.incoming_weights.pop(layer)
            for layer in change.outgoing:
                del worker.weights.layers[layer]
            worker.cache.drop_layers(list(change.outgoing))
            if change.becomes_last:
                assert worker.incoming_head is not None
                worker.weights.final_norm, worker.weights.lm_head = worker.incoming_head
                worker.incoming_head = None
            if change.stops_being_last:
                worker.weights.final_norm = worker.weights.lm_head = None
            budget = change.budget_bytes if change.budget_bytes is not None else worker.spec.budget_bytes
            worker.spec = replace(worker.spec, num_stages=count, layers=change.target, budget_bytes=budget)
            worker.first = worker.spec.index == 0
            worker.last = worker.spec.index == count - 1
            worker.cache.layers = change.target
        new_workers = [change.worker for change in self._changes if change.target is not None]
        pipeline = self.control.pipeline
        assert isinstance(pipeline, ThreadPipeline)
        if len(new_workers) != pipeline.num_stages:
            pipeline.relink(new_workers)
        self.control.switched(list(plan.target))

    def _commit(self) -> None:
        """Next safe point after the switch: give the pool what the new layout allows, and finish."""
        control, plan = self.control, self.plan
        control.reserve_for_running(False)
        if self.method != "live_no_resize":  # without live resizing the pool cannot grow back either
            wanted = control.wanted_pool_blocks(min(plan.capacity_after, control.capacity_blocks()))
            missing = wanted // plan.blocks_per_chunk - control.num_chunks
            if missing > 0:
                control.add_chunks(missing)
        self.result.preempted = control.num_preemptions - self._preemptions_before
        self.result.channel_rejections = self.fabric.stats.rejections
        self.result.total_ms = (time.perf_counter() - self._begin) * 1000
        self.state = "done"
        self.future.set_result(self.result)

    # rollback
    def _rollback(self) -> None:
        """Undo everything before the switch; the old partition never stopped serving."""
        self._cancel.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=30)
        control = self.control
        self._rollback_stages()
        control.reserve_for_running(False)
        if self._released_chunks:
            control.add_chunks(self._released_chunks)
            self._released_chunks = 0
        control.refresh_stages()

    def _rollback_stages(self) -> None:
        for change in self._changes:
            worker = change.worker
            worker.dirty = None
            worker.incoming_weights.clear()
            worker.incoming_head = None
            held = [layer for layer in change.incoming if layer in worker.cache.held_layers()]
            if held:
                worker.cache.drop_layers(held)

    # stop and redeploy
    def _stop_and_redeploy(self) -> None:
        control, plan = self.control, self.plan
        started = time.perf_counter()
        self.result.preempted += control.preempt_all()
        self.state = "switching"  # the old pipeline goes away: nothing to roll back to after this
        current = control.stages

        def budget(index: int) -> int | None:
            if self.budgets:
                return self.budgets[index]
            return current[index].budget_bytes if index < len(current) else None

        specs = [
            control.stage_spec(index, len(plan.target), layers, budget(index))
            for index, layers in enumerate(plan.target)
        ]
        control.redeploy(specs)
        # Fresh stages hold exactly their layers' KV units, so the new pool may exceed the live plan's.
        control.add_chunks(control.wanted_pool_blocks(control.capacity_blocks()) // plan.blocks_per_chunk)
        self.result.pause_ms = (time.perf_counter() - started) * 1000
        self.result.weight_bytes_copied = sum(s.weight_bytes for s in control.stages)

    # for tests and checks
    def compare_moved_kv(self) -> tuple[int, int]:
        """(blocks compared, blocks differing) between source and target, for every moved layer and live
        block — meaningful inside `before_switch`, after the last dirty blocks were copied."""
        compared = differing = 0
        slots = torch.tensor(self.control.live_slots(), dtype=torch.long)
        for source, target, layers in self._transfers():
            for slot in slots.tolist():
                rows = source.worker.cache.block_rows(torch.tensor([slot]))
                for layer in layers:
                    compared += 1
                    if not torch.equal(
                        source.worker.cache.read_rows(layer, rows), target.worker.cache.read_rows(layer, rows)
                    ):
                        differing += 1
        return compared, differing


def _ranges(ranges: tuple[range, ...]) -> str:
    return ",".join(f"{r.start}-{r.stop - 1}" for r in ranges)


class ProcessReconfiguration(Reconfiguration):
    """The same steps on the process pipeline: control commands at safe points, migration tasks between.

    Stages keep their processes (and torch.distributed ranks); an added stage is a standby process the
    pipeline started for the purpose, a removed one goes back on standby.
    """

    def _client(self) -> MigrationClient:
        return self._pipeline().migration

    def _pipeline(self) -> ProcessPipeline:
        pipeline = self.control.pipeline
        assert isinstance(pipeline, ProcessPipeline)
        return pipeline

    def _stage_changes(self) -> dict[int, dict[str, Any]]:
        return {
            stage.index: {
                "incoming": list(stage.incoming),
                "outgoing": list(stage.outgoing),
                "target": stage.target,
                "becomes_last": stage.becomes_last,
                "stops_being_last": stage.stops_being_last,
                "budget_bytes": self.budgets[stage.index] if self.budgets else None,
            }
            for stage in self.plan.stages
        }

    def _new_stages(self) -> list[int]:
        return [stage.index for stage in self.plan.stages if stage.current is None]

    def _prepare_stages(self) -> None:
        changes = self._stage_changes()
        self.control.pipeline.control("reconf_prepare", changes=changes)
        chunk_ids = self.control.chunk_ids()
        for index in self._new_stages():
            target = self.plan.stages[index].target
            assert target is not None
            self._joined.append(index)
            self._client().call(
                index + 1,
                "join",
                spec=self._new_stage_spec(index, target),
                chunk_ids=chunk_ids,
                change=changes[index],
            )

    def _copy_weights(self) -> None:
        client = self._client()
        for stage in self.plan.stages:
            if stage.incoming or stage.becomes_last:
                if self._cancel.is_set():
                    raise RuntimeError("cancelled")
                copied = client.call(
                    stage.index + 1,
                    "load_weights",
                    layers=list(stage.incoming),
                    head=stage.becomes_last,
                    checkpoint=self.control.checkpoint,
                )
                with self._lock:
                    self.result.weight_bytes_copied += copied

    def _copy_kv_round(self, slots: torch.Tensor) -> int:
        client = self._client()
        return sum(
            client.transfer(t.source + 1, t.target + 1, list(t.layers), slots.tolist())[0]
            for t in self.plan.transfers
        )

    def _copy_dirty(self, threaded: bool = True) -> int:
        client = self._client()
        copied = [
            client.transfer(t.source + 1, t.target + 1, list(t.layers), None) for t in self.plan.transfers
        ]
        self._dirty_blocks_copied = sum(blocks for _, blocks in copied)
        return sum(size for size, _ in copied)

    def _dirty_count(self) -> int:
        client = self._client()
        return sum(client.call(t.source + 1, "count", layers=list(t.layers)) for t in self.plan.transfers)

    def _switch(self) -> None:
        """The pause, with the final dirty copy riding the chain instead of the migration channel: the
        chain is already idle at the safe point, and one pass through it costs what one message per stage
        costs, where the channel would take a request and a reply per transfer and stage.

        Transfers towards a later stage are carried by the switch itself (a source attaches its last dirty
        blocks as the switch passes, the target writes them before it switches). Transfers towards an
        earlier stage take one more pass first, whose data comes back to the driver and rides the switch.
        With a `before_switch` hook (which must see the copy complete but nothing switched) the copy passes
        come first and the switch carries nothing.
        """
        started = time.perf_counter()
        transfers = {
            index: (t.source, t.target, list(t.layers)) for index, t in enumerate(self.plan.transfers)
        }
        written: dict[int, tuple[int, int]] = {}
        hook_ms = 0.0
        if self.before_switch is None:
            backward = {index: t for index, t in transfers.items() if t[1] < t[0]}
            kv = self._carry(transfers, backward, {}, written) if backward else {}
            forward = {index: t for index, t in transfers.items() if index not in backward}
            self.state = "switching"  # stages change hands from here: a failure can no longer roll back
            self._switch_stages(transfers=transfers, carry=forward, kv=kv, written=written)
        else:
            kv = self._carry(transfers, transfers, {}, written)
            in_chain = {index: d for index, d in kv.items() if transfers[index][1] < len(self.plan.current)}
            if in_chain:  # towards earlier stages
                undelivered = self._carry(transfers, {}, in_chain, written)
                if undelivered:
                    raise RuntimeError(f"final KV of transfers {sorted(undelivered)} reached no target")
            for index, (slots, data) in kv.items():
                if index not in in_chain:  # towards a stage not in the chain yet
                    _, target, layers = transfers[index]
                    size = self._client().call(target + 1, "write", layers=layers, slots=slots, data=data)
                    written[index] = (int(slots.numel()), size)
            hook_started = time.perf_counter()
            self.before_switch(self)
            hook_ms = (time.perf_counter() - hook_started) * 1000
            self.state = "switching"
            self._switch_stages()
        self.result.final_dirty_blocks = sum(blocks for blocks, _ in written.values())
        self._add_kv(sum(size for _, size in written.values()), pause=True)
        self.result.pause_ms = (time.perf_counter() - started) * 1000 - hook_ms

    def _carry(
        self,
        transfers: dict[int, tuple[int, int, list[int]]],
        carry: dict[int, tuple[int, int, list[int]]],
        kv: dict[int, Any],
        written: dict[int, tuple[int, int]],
    ) -> dict[int, Any]:
        """One `reconf_copy` pass (`process_migration.apply_carry`); returns the data still undelivered."""
        message = self._pipeline().control_message(
            "reconf_copy", transfers=transfers, carry=carry, kv=kv, written={}
        )
        written.update(message.args["written"])
        return message.args["kv"]

    def _switch_stages(
        self,
        transfers: dict[int, tuple[int, int, list[int]]] | None = None,
        carry: dict[int, tuple[int, int, list[int]]] | None = None,
        kv: dict[int, Any] | None = None,
        written: dict[int, tuple[int, int]] | None = None,
    ) -> None:
        plan = self.plan
        pipeline = self._pipeline()
        if self._new_stages():
            # Into the chain first: each then waits for the switch from the stage before it.
            self._client().call_each([index + 1 for index in self._new_stages()], "enter_chain")
        message = pipeline.switch(
            len(plan.target),
            changes=self._stage_changes(),
            transfers=transfers or {},
            carry=carry or {},
            kv=kv or {},
            written={},
        )
        if message.args["kv"]:
            raise RuntimeError(f"final KV of transfers {sorted(message.args['kv'])} reached no target")
        if written is not None:
            written.update(message.args["written"])
        self.control.switched(list(plan.target), [reply for reply in message.replies if reply is not None])

    def _rollback_stages(self) -> None:
        changes = self._stage_changes()
        try:
            self.control.pipeline.control(
                "reconf_abort",
                changes={index: c for index, c in changes.items() if index < len(self.plan.current)},
            )
        finally:
            joined, self._joined = self._joined, []
            for index in joined:  # back on standby, or they would refuse every later join
                self._client().call(index + 1, "leave")

    def compare_moved_kv(self) -> tuple[int, int]:
        client = self._client()
        slots = self.control.live_slots()
        compared = differing = 0
        for t in self.plan.transfers:
            source = client.call(t.source + 1, "read", layers=list(t.layers), slots=slots)
            target = client.call(t.target + 1, "read", layers=list(t.layers), slots=slots)
            for index in range(len(slots)):
                for layer in range(len(t.layers)):
                    compared += 1
                    block = slice(index * self.control.block_size, (index + 1) * self.control.block_size)
                    if not torch.equal(source[layer, :, :, block], target[layer, :, :, block]):
                        differing += 1
        return compared, differing
