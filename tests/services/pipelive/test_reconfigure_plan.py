"""Reconfiguration planning and admission: partitions, moves, per-stage memory, refusals changing nothing."""

from __future__ import annotations

import pytest

from services.pipelive.engine import LLMEngine
from services.pipelive.reconfigure import (
    InvalidPartition,
    ReconfigureRefused,
    Transfer,
    contiguous_runs,
    parse_layer_ranges,
    validate_method,
    validate_partition,
)
from tests.services.pipelive.reconf_support import MODEL8, PARAMS, PROMPTS, config, reference_outputs


def test_layer_ranges_parse_and_bad_partitions_are_named() -> None:
    assert parse_layer_ranges("0-2, 3-7") == [range(0, 3), range(3, 8)]
    assert parse_layer_ranges("0-6,7") == [range(0, 7), range(7, 8)]
    with pytest.raises(InvalidPartition, match="stage 1: 'x' is not a layer range"):
        parse_layer_ranges("0-3,x")
    cases = {
        "belong to no stage \\(a gap\\)": [range(0, 3), range(4, 8)],
        "already belong to an earlier stage \\(an overlap\\)": [range(0, 4), range(3, 8)],
        "stage 1: layer range \\[4, 4\\) is empty": [range(0, 4), range(4, 4), range(4, 8)],
        "out of range; the model has layers 0-7": [range(0, 4), range(4, 9)],
        "the last stage ends too early": [range(0, 4), range(4, 7)],
        "has no stages": [],
    }
    for message, ranges in cases.items():
        with pytest.raises(InvalidPartition, match=message) as caught:
            validate_partition(ranges, 8)
        assert caught.value.field == "stages"
    assert validate_partition([range(0, 8)], 8) == [range(0, 8)]
    with pytest.raises(InvalidPartition, match="unknown method 'teleport'") as caught:
        validate_method("teleport")
    assert caught.value.field == "method"
    assert validate_method("") == "live"


def test_contiguous_runs_sort_and_merge_adjacent_layers() -> None:
    assert contiguous_runs([5, 2, 3, 7]) == [range(2, 4), range(5, 6), range(7, 8)]
    assert contiguous_runs(()) == []


def test_plan_lists_moves_and_each_stages_memory_during_and_after() -> None:
    with LLMEngine(MODEL8, config(initial_kv_blocks=None)) as engine:
        statuses = engine.status().stages
        layer_bytes = MODEL8.layer_parameter_count() * MODEL8.dtype_bytes
        per_layer_block = engine.config.block_size * MODEL8.kv_bytes_per_token_per_layer()
        plan = engine.plan_reconfiguration([range(0, 3), range(3, 8)])
        assert plan.transfers == (Transfer(0, 1, (3,)),)
        giver, taker = plan.stages
        assert (giver.outgoing, taker.incoming) == ((3,), (3,))
        assert taker.weight_bytes_during == statuses[1].weight_bytes + layer_bytes
        assert taker.weight_bytes_after == taker.weight_bytes_during
        assert giver.weight_bytes_after == statuses[0].weight_bytes - layer_bytes
        assert (taker.kv_layers_now, taker.kv_layers_during, taker.kv_layers_after) == (4, 5, 5)
        # Layer 3 shares a KV unit (layers 0-3, k = 4) with layers that stay: the unit keeps its memory.
        assert (giver.kv_layers_during, giver.kv_layers_after) == (4, 4)
        usable = int(engine.config.stage_memory_bytes * engine.config.gpu_memory_utilization)
        assert taker.max_blocks_during == (usable - taker.weight_bytes_during) // (5 * per_layer_block)
        assert plan.capacity_during == min(giver.max_blocks_during, taker.max_blocks_during) // 8 * 8
        assert plan.capacity_during < statuses[1].max_blocks  # holding both layer sets costs KV room

        grown = engine.plan_reconfiguration([range(0, 2), range(2, 5), range(5, 8)])
        assert grown.transfers == (Transfer(0, 1, (2, 3)), Transfer(1, 2, (5, 6, 7)))
        new = grown.stages[2]
        assert new.current is None and new.becomes_last and grown.stages[1].stops_being_last
        head_bytes = (MODEL8.hidden_size + MODEL8.vocab_size * MODEL8.hidden_size) * MODEL8.dtype_bytes
        assert new.weight_bytes_during == 3 * layer_bytes + head_bytes
        # Stage 1 gives layers 5-7 and its unit 4-7 keeps layer 4, so the unit stays; 2-3 come in a new unit.
        assert grown.stages[1].kv_layers_after == 4 + 2

        merged = engine.plan_reconfiguration([range(0, 8)])
        assert merged.transfers == (Transfer(1, 0, (4, 5, 6, 7)),)
        assert merged.stages[1].target is None and merged.stages[0].becomes_last


def test_refusal_names_the_stage_and_changes_nothing() -> None:
    expected = reference_outputs()
    # A budget with room for little more than the weights: holding one more layer leaves too few KV blocks.
    tight = config(stage_memory_bytes=2_560_000, initial_kv_blocks=None, blocks_per_chunk=4)
    with LLMEngine(MODEL8, tight) as engine:
        ids = [engine.add_request(prompt, PARAMS) for prompt in PROMPTS]
        outputs: dict[str, list[int]] = {request_id: [] for request_id in ids}
        for _ in range(6):
            for output in engine.step():
                outputs[output.request_id].append(output.token_id)
        before = engine.status()
        workers = engine.pipeline.workers  # type: ignore[attr-defined]
        units_before = [list(w.cache.units) for w in workers]
        plan = engine.plan_reconfiguration([range(0, 2), range(2, 8)])
        assert plan.blocks_in_use > plan.capacity_during
        with pytest.raises(ReconfigureRefused, match=r"stage 1 \(layers 4-7 -> 2-7\).*KV blocks are in use"):
            engine.begin_reconfigure([range(0, 2), range(2, 8)])
        with pytest.raises(InvalidPartition):
            engine.begin_reconfigure([range(0, 2), range(3, 8)])
        after = engine.status()
        assert after.stages == before.stages and after.kv == before.kv
        assert [list(w.cache.units) for w in workers] == units_before
        assert engine.layer_ranges == [range(0, 4), range(4, 8)] and not engine.reconfiguring
        assert not any(w.incoming_weights or w.dirty for w in workers)
        while engine.has_unfinished():
            for output in engine.step():
                outputs[output.request_id].append(output.token_id)
        assert [outputs[request_id] for request_id in ids] == expected


def test_a_second_reconfiguration_waits_for_the_first() -> None:
    with LLMEngine(MODEL8, config()) as engine:
        engine.add_request(PROMPTS[2], PARAMS)
        engine.step()
        first = engine.begin_reconfigure([range(0, 3), range(3, 8)])
        with pytest.raises(ReconfigureRefused, match="already in progress"):
            engine.begin_reconfigure([range(0, 5), range(5, 8)])
        while engine.has_unfinished() or not first.finished:
            engine.step()
        assert first.future.result().stages == [range(0, 3), range(3, 8)]
