"""Live reconfiguration on the in-process pipeline, and the three baselines, against the correctness contract:
same greedy tokens as a run without reconfiguration, moved KV equal at the commit, every layer on one stage,
nothing lost or preempted by live, a pause that copies only the final dirty tail, rollback on failure."""

from __future__ import annotations

import random
import shutil
import threading
import time
from typing import Any

import pytest
import torch

from services.pipelive.checkpoint import write_checkpoint
from services.pipelive.engine import LLMEngine
from services.pipelive.kv_cache import StageKVCache
from services.pipelive.kv_patch import DirtyBitmap, MigrationFabric, copy_blocks
from services.pipelive.live_migration import Reconfiguration
from services.pipelive.params import SamplingParams
from services.pipelive.pipeline import PipelineError, ProcessPipeline
from services.pipelive.reconfigure import ReconfigureFailed, ReconfigureRefused
from tests.services.pipelive.reconf_support import (
    MODEL8,
    PROMPTS,
    assert_each_layer_on_one_stage,
    config,
    reference_outputs,
    run_with_reconfiguration,
)

TARGETS = {
    "move one layer back": [range(0, 3), range(3, 8)],
    "move two layers forward": [range(0, 6), range(6, 8)],
    "add a stage": [range(0, 2), range(2, 5), range(5, 8)],
    "remove a stage": [range(0, 8)],
}


@pytest.fixture(scope="module")
def expected() -> list[list[int]]:
    return reference_outputs()


@pytest.mark.parametrize("name", list(TARGETS))
def test_live_keeps_tokens_and_moves_kv_exactly(name: str, expected: list[list[int]]) -> None:
    target = TARGETS[name]
    compared: list[tuple[int, int]] = []
    with LLMEngine(MODEL8, config()) as engine:
        outputs, reconfiguration = run_with_reconfiguration(
            engine,
            lambda e: e.begin_reconfigure(
                target, before_switch=lambda r: compared.append(r.compare_moved_kv())
            ),
        )
        result = reconfiguration.future.result()
        assert outputs == expected
        assert (
            len(compared) == 1 and compared[0][0] > 0 and compared[0][1] == 0
        )  # torch.equal, block by block
        assert engine.layer_ranges == target and result.stages == target
        assert_each_layer_on_one_stage(engine)
        assert result.preempted == 0 and result.dropped == 0 and engine.scheduler.num_preemptions == 0
        assert result.kv_bytes_copied > 0 and result.weight_bytes_copied > 0
        assert 1 <= result.patch_rounds <= 3
        assert [(s.first_layer, s.end_layer) for s in engine.status().stages] == [
            (r.start, r.stop) for r in target
        ]


def test_live_shrinks_the_pool_during_the_change_and_grows_it_after(expected: list[list[int]]) -> None:
    # Each stage's budget fits its 4 layers and ~200 blocks; holding 6 layers during the change fits fewer.
    tight = config(stage_memory_bytes=3_500_000, initial_kv_blocks=None)
    sizes: list[int] = []
    with LLMEngine(MODEL8, tight) as engine:
        before = engine.pool.num_total
        outputs, reconfiguration = run_with_reconfiguration(
            engine,
            lambda e: e.begin_reconfigure(
                [range(0, 2), range(2, 8)], before_switch=lambda _: sizes.append(e.pool.num_total)
            ),
        )
        result = reconfiguration.future.result()
        plan = reconfiguration.plan
        assert outputs == expected
        assert sizes == [plan.capacity_during] and plan.capacity_during < before
        assert engine.pool.num_total == plan.capacity_after == engine.capacity_blocks() // 8 * 8
        assert result.preempted == 0 and engine.scheduler.num_preemptions == 0
        for stage in engine.status().stages:  # every stage inside its budget after the change
            assert stage.weight_bytes + stage.kv_bytes <= stage.usable_bytes


def test_pause_copies_the_final_dirty_tail_not_the_whole_kv() -> None:
    long_prompts = [[(3 * i + j) % 256 for j in range(120)] for i in range(6)]
    params = SamplingParams(max_tokens=40)
    figures = {}
    for method in ("live", "stop_and_copy"):
        with LLMEngine(MODEL8, config(initial_kv_blocks=256, max_num_batched_tokens=256)) as engine:
            _, reconfiguration = run_with_reconfiguration(
                engine,
                lambda e, m=method: e.begin_reconfigure([range(0, 2), range(2, 8)], m),
                long_prompts,
                params,
                steps_before=6,
            )
            figures[method] = reconfiguration.future.result()
    live, stop = figures["live"], figures["stop_and_copy"]
    bytes_per_block = 2 * config().block_size * MODEL8.kv_bytes_per_token_per_layer()  # two moving layers
    assert live.pause_kv_bytes == live.final_dirty_blocks * bytes_per_block
    # Six decoding requests dirty at most a block each per step; the whole KV is ~200 blocks.
    assert stop.pause_kv_bytes == stop.kv_bytes_copied >= 180 * bytes_per_block
    assert live.pause_kv_bytes * 4 < stop.pause_kv_bytes
    assert live.kv_bytes_copied >= stop.kv_bytes_copied  # live copied it all too, before the pause
    assert live.final_dirty_blocks <= 16 or live.patch_rounds == 3


@pytest.mark.parametrize("method", ["stop_and_copy", "stop_and_redeploy", "live_no_resize"])
def test_baselines_keep_tokens(method: str, expected: list[list[int]]) -> None:
    with LLMEngine(MODEL8, config()) as engine:
        outputs, reconfiguration = run_with_reconfiguration(
            engine, lambda e: e.begin_reconfigure([range(0, 2), range(2, 5), range(5, 8)], method)
        )
        result = reconfiguration.future.result()
        assert outputs == expected
        assert_each_layer_on_one_stage(engine)
        if method == "stop_and_redeploy":
            assert result.preempted == 8  # every running request's KV dropped and recomputed
            assert result.kv_bytes_copied == 0
        if method == "stop_and_copy":
            assert result.pause_kv_bytes == result.kv_bytes_copied > 0 and result.patch_rounds == 0


def test_live_without_kv_resizing_preempts_where_live_does_not(expected: list[list[int]]) -> None:
    tight = config(stage_memory_bytes=3_500_000, initial_kv_blocks=None)
    results = {}
    for method in ("live", "live_no_resize"):
        with LLMEngine(MODEL8, tight) as engine:
            outputs, reconfiguration = run_with_reconfiguration(
                engine, lambda e, m=method: e.begin_reconfigure([range(0, 2), range(2, 8)], m)
            )
            assert outputs == expected
            results[method] = reconfiguration.future.result()
    assert results["live"].preempted == 0
    assert results["live_no_resize"].preempted == len(PROMPTS)  # the pool was allocated anew: all KV lost


def test_random_reconfigurations_under_load_keep_every_request_exact() -> None:
    rng = random.Random(5)
    prompts = [[rng.randrange(256) for _ in range(rng.randint(1, 50))] for _ in range(24)]
    params = SamplingParams(max_tokens=20)
    with LLMEngine(MODEL8, config(num_stages=1, initial_kv_blocks=None)) as reference:
        expected = reference.generate(prompts, params)
    with LLMEngine(MODEL8, config(initial_kv_blocks=160)) as engine:
        outputs: dict[str, list[int]] = {}
        ids: list[str] = []
        pending = list(prompts)
        reconfiguration: Reconfiguration | None = None
        done = 0
        step = 0
        while pending or engine.has_unfinished() or (reconfiguration and not reconfiguration.finished):
            step += 1
            if pending and rng.random() < 0.5:  # requests keep arriving
                ids.append(engine.add_request(pending.pop(0), params))
                outputs[ids[-1]] = []
            if (reconfiguration is None or reconfiguration.finished) and step % 7 == 0:
                if reconfiguration is not None:
                    assert reconfiguration.future.result().preempted == 0
                    assert_each_layer_on_one_stage(engine)
                    done += 1
                stages = rng.randint(1, 4)
                cuts = sorted(rng.sample(range(1, 8), stages - 1))
                bounds = [0, *cuts, 8]
                target = [range(a, b) for a, b in zip(bounds, bounds[1:], strict=False)]
                if target != engine.layer_ranges:
                    reconfiguration = engine.begin_reconfigure(target, dirty_threshold=rng.choice([0, 2, 16]))
            for output in engine.step():
                outputs[output.request_id].append(output.token_id)
        assert done >= 3
        assert [outputs[request_id] for request_id in ids] == expected
        assert engine.scheduler.num_preemptions == 0
        assert_each_layer_on_one_stage(engine)


def test_a_failure_before_the_switch_rolls_back_and_the_old_layout_serves(tmp_path, expected) -> None:  # noqa: ANN001
    checkpoint = write_checkpoint(MODEL8, tmp_path / "ckpt")
    with LLMEngine(MODEL8, config(), checkpoint=checkpoint) as engine:  # no host copy: layers come from disk
        before = engine.status()
        shutil.rmtree(checkpoint)  # the disk copy is gone, so copying layer 3's weights fails
        outputs, reconfiguration = run_with_reconfiguration(
            engine, lambda e: e.begin_reconfigure([range(0, 3), range(3, 8)])
        )
        with pytest.raises(ReconfigureFailed, match="rolled back; 0-3,4-7 still serves"):
            reconfiguration.future.result()
        assert outputs == expected
        assert engine.layer_ranges == [range(0, 4), range(4, 8)] and not engine.reconfiguring
        assert_each_layer_on_one_stage(engine)
        after = engine.status()
        assert after.stages == before.stages and after.kv.total_blocks == before.kv.total_blocks


@pytest.mark.parametrize("target", [[range(0, 3), range(3, 6), range(6, 8)], [range(0, 8)]])
def test_a_stage_failing_mid_switch_reaches_the_driver_and_close_ends_every_process(
    monkeypatch: pytest.MonkeyPatch, target: list[range]
) -> None:
    # Stage 0 is told to adopt a layer it never received, so it raises while applying the switch, after
    # which the chain is half switched: the failure must still reach the driver (not leave it waiting on
    # the stage that would have been last), and closing must not wait on a chain that cannot carry `stop`.
    switch = ProcessPipeline.switch

    def corrupted(self: ProcessPipeline, num_stages: int, **args: Any) -> Any:
        args["changes"][0]["incoming"] = [7]
        return switch(self, num_stages, **args)

    monkeypatch.setattr(ProcessPipeline, "switch", corrupted)
    engine = LLMEngine(MODEL8, config(threads_per_stage=1, max_stages=3), mode="process")
    processes = list(engine.pipeline._processes)  # type: ignore[attr-defined]
    try:
        with pytest.raises(PipelineError, match="stage 0 failed"):
            run_with_reconfiguration(engine, lambda e: e.begin_reconfigure(target))
    finally:
        started = time.monotonic()
        engine.close()
    assert time.monotonic() - started < 20
    assert all(not process.is_alive() for process in processes)


def test_a_process_stage_added_by_a_failed_change_goes_back_on_standby(tmp_path, expected) -> None:  # noqa: ANN001
    checkpoint = write_checkpoint(MODEL8, tmp_path / "ckpt")
    grown = [range(0, 3), range(3, 6), range(6, 8)]
    settings = config(max_stages=3)  # default threads: each switch re-divides the cores among the stages
    with LLMEngine(MODEL8, settings, checkpoint=checkpoint, mode="process") as engine:
        before = engine.status()
        shutil.rmtree(checkpoint)  # the new stage cannot read its layers
        outputs, reconfiguration = run_with_reconfiguration(engine, lambda e: e.begin_reconfigure(grown))
        with pytest.raises(ReconfigureFailed, match="rolled back; 0-3,4-7 still serves"):
            reconfiguration.future.result()
        assert outputs == expected
        after = engine.status()
        assert after.stages == before.stages and after.kv.total_blocks == before.kv.total_blocks
        write_checkpoint(MODEL8, checkpoint)  # the same seeded weights again: now the stage can join
        outputs, reconfiguration = run_with_reconfiguration(engine, lambda e: e.begin_reconfigure(grown))
        assert reconfiguration.future.result().preempted == 0 and outputs == expected
        assert [(s.first_layer, s.end_layer) for s in engine.status().stages] == [(0, 3), (3, 6), (6, 8)]


def test_dirty_bitmap_tracks_layers_and_slots() -> None:
    bitmap = DirtyBitmap([5, 6, 7], block_size=4)
    bitmap.mark_rows(torch.tensor([0, 1, 9, 40]))  # slots 0, 2, 10
    bitmap.mark_rows(torch.tensor([13]), layers=[7])  # slot 3, layer 7 only
    assert bitmap.count([5]) == 3 and bitmap.count([7]) == 4
    assert bitmap.take([5, 6]).tolist() == [0, 2, 10]
    assert bitmap.count([5, 6]) == 0 and bitmap.take([7]).tolist() == [0, 2, 3, 10]
    assert bitmap.take([5, 6, 7]).tolist() == []


def test_two_stages_migrating_to_each_other_do_not_deadlock() -> None:
    caches = []
    for layers in (range(0, 4), range(4, 8)):
        cache = StageKVCache(
            MODEL8, layers, block_size=4, blocks_per_chunk=8, layers_per_unit=4, device="cpu"
        )
        for chunk in range(4):
            cache.add_chunk(chunk)
        caches.append(cache)
    caches[0].add_layers(range(4, 6))  # 4-5 go 1 -> 0 while 2-3 go 0 -> 1
    caches[1].add_layers(range(2, 4))
    rows = caches[0].block_rows(torch.arange(32))
    for layer in (2, 3):
        caches[0].write_rows(layer, rows, torch.randn(2, 2, rows.count, 16, dtype=torch.float64))
    for layer in (4, 5):
        caches[1].write_rows(layer, rows, torch.randn(2, 2, rows.count, 16, dtype=torch.float64))
    fabric = MigrationFabric()
    copied: list[int] = []

    def slow_copy(source: StageKVCache, target: StageKVCache, layers: tuple[int, ...]) -> int:
        time.sleep(0.01)  # hold both channels long enough that the two directions meet
        return copy_blocks(source, target, layers, torch.arange(32))

    def migrate(source: int, target: int, layers: tuple[int, ...]) -> None:
        for _ in range(5):
            copied.append(
                fabric.transfer(source, target, lambda: slow_copy(caches[source], caches[target], layers))
            )

    threads = [
        threading.Thread(target=migrate, args=(0, 1, (2, 3))),
        threading.Thread(target=migrate, args=(1, 0, (4, 5))),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)
    assert not any(thread.is_alive() for thread in threads)
    assert len(copied) == 10 and fabric.stats.transfers == 10
    assert fabric.stats.rejections > 0  # they did meet, and one side was told to back off
    for layer, (source, target) in {2: (0, 1), 3: (0, 1), 4: (1, 0), 5: (1, 0)}.items():
        assert torch.equal(caches[source].read_rows(layer, rows), caches[target].read_rows(layer, rows))


def test_live_on_the_process_pipeline_over_the_migration_channel(expected: list[list[int]]) -> None:
    compared: list[tuple[int, int]] = []
    with LLMEngine(MODEL8, config(threads_per_stage=1), mode="process") as engine:
        with pytest.raises(ReconfigureRefused, match="started 2 stage processes"):
            engine.begin_reconfigure([range(0, 2), range(2, 5), range(5, 8)])
        outputs, reconfiguration = run_with_reconfiguration(
            engine,
            lambda e: e.begin_reconfigure(
                [range(0, 3), range(3, 8)], before_switch=lambda r: compared.append(r.compare_moved_kv())
            ),
        )
        result = reconfiguration.future.result()
        assert outputs == expected
        assert len(compared) == 1 and compared[0][0] > 0 and compared[0][1] == 0
        assert result.preempted == 0 and result.kv_bytes_copied > 0 and result.weight_bytes_copied > 0
        stages = engine.status().stages
        assert [(s.first_layer, s.end_layer) for s in stages] == [(0, 3), (3, 8)]
        assert [s.kv_units for s in stages] == [((0, 4),), ((4, 8), (3, 4))]  # unit 0-3 keeps layers 0-2
        assert engine.generate([PROMPTS[1]], SamplingParams(max_tokens=24)) == [expected[1]]


def test_the_process_pipeline_adds_stages_from_standby_and_retires_removed_ones(
    expected: list[list[int]],
) -> None:
    # Four stage processes, two serving: grow to four, shrink to one, grow to two again (a retired process
    # serving anew), each live while requests run. Without a hook the last dirty blocks ride the switch
    # through the chain (the shrink: towards earlier stages, one more pass); with one they are copied
    # before it (growing to two: the new stage is not in the chain yet, so the driver delivers them).
    sequence = [
        ([range(0, 2), range(2, 4), range(4, 6), range(6, 8)], True),
        ([range(0, 8)], False),
        ([range(0, 5), range(5, 8)], True),
    ]
    with LLMEngine(MODEL8, config(threads_per_stage=1, max_stages=4), mode="process") as engine:
        processes = list(engine.pipeline._processes)  # type: ignore[attr-defined]
        assert len(processes) == 4 and len(engine.status().stages) == 2 and engine.status().max_stages == 4
        for target, hooked in sequence:
            compared: list[tuple[int, int]] = []

            def start(
                e: LLMEngine, target: list[range] = target, compared: list = compared
            ) -> Reconfiguration:
                return e.begin_reconfigure(
                    target, before_switch=lambda change: compared.append(change.compare_moved_kv())
                )

            outputs, reconfiguration = run_with_reconfiguration(
                engine, start if hooked else lambda e, target=target: e.begin_reconfigure(target)
            )
            result = reconfiguration.future.result()
            assert outputs == expected, target
            if hooked:  # torch.equal, block by block, after the last copy and before the switch
                assert len(compared) == 1 and compared[0][0] > 0 and compared[0][1] == 0
            block_layer_bytes = MODEL8.kv_bytes_per_token_per_layer() * engine.config.block_size
            assert result.pause_kv_bytes % block_layer_bytes == 0  # whole blocks of the moved layers
            assert (result.pause_kv_bytes > 0) == (result.final_dirty_blocks > 0)
            assert result.preempted == 0 and engine.scheduler.num_preemptions == 0
            stages = engine.status().stages
            assert [(s.first_layer, s.end_layer) for s in stages] == [(r.start, r.stop) for r in target]
            assert [s.index for s in stages] == list(range(len(target)))
            held = [layer for s in stages for unit in s.kv_units for layer in range(*unit)]
            assert set(held) >= set(range(8))  # every layer's KV is held (units may keep a departed layer)
            assert engine.generate([PROMPTS[1]], SamplingParams(max_tokens=24)) == [expected[1]]
        with pytest.raises(ReconfigureRefused, match="started 4 stage processes"):
            engine.begin_reconfigure([range(0, 1), range(1, 2), range(2, 3), range(3, 4), range(4, 8)])
    assert all(not process.is_alive() for process in processes)


def test_closing_the_engine_mid_reconfiguration_fails_its_future() -> None:
    engine = LLMEngine(MODEL8, config())
    engine.add_request(PROMPTS[2], SamplingParams(max_tokens=8))
    engine.step()
    reconfiguration = engine.begin_reconfigure([range(0, 3), range(3, 8)])
    engine.close()
    with pytest.raises(ReconfigureFailed, match="engine closed before the reconfiguration committed"):
        reconfiguration.future.result(timeout=30)
