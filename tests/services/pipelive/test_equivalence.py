"""Greedy tokens of the paged, pipelined engine equal a plain dense forward of the same weights."""

import pytest

from services.pipelive.block_pool import ResizeRefused
from services.pipelive.engine import LLMEngine
from services.pipelive.params import SamplingParams
from services.pipelive.reference import DenseReference
from tests.services.pipelive.support import PROMPTS, TINY, engine_config

MAX_TOKENS = 20


@pytest.fixture(scope="module")
def expected() -> list[list[int]]:
    reference = DenseReference(TINY)
    return [reference.generate([prompt], MAX_TOKENS)[0] for prompt in PROMPTS]


@pytest.mark.parametrize("stages", [1, 2, 4])
def test_mixed_batch_matches_dense_reference(stages: int, expected: list[list[int]]) -> None:
    with LLMEngine(TINY, engine_config(num_stages=stages)) as engine:
        outputs = engine.generate(PROMPTS, SamplingParams(max_tokens=MAX_TOKENS))
        assert engine.pool.num_used == 0
        status = engine.status()
    assert outputs == expected
    assert [(s.first_layer, s.end_layer) for s in status.stages] == [
        (r.start, r.stop) for r in engine_config(num_stages=stages).layer_ranges(TINY.num_hidden_layers)
    ]


def test_uneven_split_and_single_token_batches_match(expected: list[list[int]]) -> None:
    # one sequence per step and one micro-batch per stage count: the schedule itself must not matter
    config = engine_config(num_stages=2, layer_split=(1, 3), max_num_seqs=1, num_microbatches=1)
    with LLMEngine(TINY, config) as engine:
        assert engine.generate(PROMPTS, SamplingParams(max_tokens=MAX_TOKENS)) == expected


def test_dense_reference_batches_equal_length_prompts_like_single_ones() -> None:
    reference = DenseReference(TINY)
    prompts = [[1, 2, 3, 4], [9, 8, 7, 6], [5, 5, 5, 5]]
    batched = reference.generate(prompts, 6)
    assert batched == [reference.generate([p], 6)[0] for p in prompts]
    assert len({tuple(o) for o in batched}) == 3


def test_preemption_recomputes_and_keeps_tokens(expected: list[list[int]]) -> None:
    # 24 blocks of 4 tokens cannot hold all six sequences (up to 60 tokens each) at once
    with LLMEngine(TINY, engine_config(num_stages=2, initial_kv_blocks=24)) as engine:
        outputs = engine.generate(PROMPTS, SamplingParams(max_tokens=MAX_TOKENS))
        assert engine.scheduler.num_preemptions > 0
        assert engine.pool.num_used == 0
    assert outputs == expected


def test_kv_pool_grows_and_shrinks_while_requests_run(expected: list[list[int]]) -> None:
    with LLMEngine(TINY, engine_config(num_stages=2, initial_kv_blocks=16)) as engine:
        ids = [engine.add_request(prompt, SamplingParams(max_tokens=MAX_TOKENS)) for prompt in PROMPTS]
        outputs: dict[str, list[int]] = {i: [] for i in ids}

        def step() -> None:
            for output in engine.step():
                outputs[output.request_id].append(output.token_id)

        for _ in range(3):
            step()
        grown = engine.resize_kv(96)
        assert grown.total_blocks == 96 and len(grown.added_chunks) == 10
        assert all(s.num_chunks == 12 for s in engine.status().stages)
        for _ in range(8):
            step()
        used_before = engine.pool.live_blocks()
        assert used_before
        # Shrinking to one chunk would touch live blocks: refused, with the reason, nothing changed.
        assert engine.pool.num_used > 16
        with pytest.raises(ResizeRefused, match="live KV blocks are never moved"):
            engine.resize_kv(16)
        with pytest.raises(ResizeRefused, match="needs up to 15 blocks"):
            engine.resize_kv(8)  # the longest request (40 + 20 tokens) could not finish in 8 blocks
        assert engine.pool.live_blocks() == used_before and engine.pool.num_total == 96
        free_chunks = len(engine.pool.free_chunk_ids())
        assert free_chunks > 0
        shrunk = engine.resize_kv(96 - 8 * free_chunks)
        assert len(shrunk.released_chunks) == free_chunks
        assert engine.pool.live_blocks() == used_before  # no live block moved
        kv_bytes = [s.kv_bytes for s in engine.status().stages]
        assert all(
            b == (12 - free_chunks) * s.chunk_bytes
            for b, s in zip(kv_bytes, engine.status().stages, strict=True)
        )
        while engine.has_unfinished():
            step()
    assert [outputs[i] for i in ids] == expected


@pytest.mark.parametrize("stages", [1, 2, 4])
def test_process_per_stage_with_gloo_matches(stages: int, expected: list[list[int]]) -> None:
    with LLMEngine(TINY, engine_config(num_stages=stages), mode="process") as engine:
        assert engine.pipeline.backend == "gloo"  # CPU stages: the transport picks gloo
        outputs = engine.generate(PROMPTS, SamplingParams(max_tokens=MAX_TOKENS))
        engine.resize_kv(128)
        status = engine.status()
    assert outputs == expected
    assert [s.num_chunks for s in status.stages] == [16] * stages


def test_sampling_with_a_seed_is_reproducible() -> None:
    params = SamplingParams(max_tokens=12, temperature=0.8, seed=123)
    with LLMEngine(TINY, engine_config()) as engine:
        first = engine.generate([PROMPTS[1]], params)
        second = engine.generate([PROMPTS[1]], params)
        other = engine.generate([PROMPTS[1]], SamplingParams(max_tokens=12, temperature=0.8, seed=124))
    assert first == second
    assert first != other


def test_eos_stops_a_request() -> None:
    reference = DenseReference(TINY)
    tokens = reference.generate([PROMPTS[2]], 10)[0]
    eos = tokens[4]
    model = TINY.__class__(**{**TINY.to_dict(), "eos_token_id": eos})
    with LLMEngine(model, engine_config()) as engine:
        request_id = engine.add_request(PROMPTS[2], SamplingParams(max_tokens=10))
        outputs = []
        while engine.has_unfinished():
            outputs += engine.step()
    assert [o.token_id for o in outputs] == tokens[: tokens.index(eos) + 1]
    assert outputs[-1].request_id == request_id and outputs[-1].finish_reason == "stop"
