"""One stage's KV layout: k-layer units per chunk, reads and writes across chunks, budget sizing."""

import pytest
import torch

from services.pipelive.config import EngineConfig, ModelConfig
from services.pipelive.kv_cache import StageKVCache, group_rows, layer_units
from services.pipelive.stage import ControlMessage, StageFailure, StageSpec, StageWorker

MODEL = ModelConfig(num_hidden_layers=6, dtype="float64")


def test_layers_are_stacked_k_at_a_time_into_allocation_units() -> None:
    assert layer_units(range(2, 8), 4) == [range(2, 6), range(6, 8)]
    cache = StageKVCache(
        MODEL, range(0, 6), block_size=4, blocks_per_chunk=8, layers_per_unit=4, device="cpu"
    )
    cache.add_chunk(0)
    cache.add_chunk(5)
    shapes = [tuple(t.shape) for t in cache._chunks[5]]
    assert shapes == [(4, 2, 2, 32, 16), (2, 2, 2, 32, 16)]  # one tensor per unit of <= 4 layers
    assert cache.nbytes() == 2 * cache.chunk_nbytes() == 2 * 8 * 6 * cache.bytes_per_block_per_layer
    cache.release_chunk(0)
    assert cache.chunk_ids() == [5] and cache.nbytes() == cache.chunk_nbytes()
    with pytest.raises(ValueError, match="already exists"):
        cache.add_chunk(5)


def test_rows_written_are_read_back_across_chunks() -> None:
    cache = StageKVCache(
        MODEL, range(0, 6), block_size=4, blocks_per_chunk=2, layers_per_unit=4, device="cpu"
    )
    for chunk in (0, 3, 7):
        cache.add_chunk(chunk)
    rows_per_chunk = cache.rows_per_chunk  # 8
    rows = torch.tensor([7 * rows_per_chunk + 1, 0, 3 * rows_per_chunk + 5, 7, 3 * rows_per_chunk])
    groups = group_rows(rows, rows_per_chunk)
    assert sorted(chunk for chunk, _, _ in groups.groups) == [0, 3, 7]
    key = torch.randn(5, 2, 16, dtype=torch.float64)
    value = torch.randn(5, 2, 16, dtype=torch.float64)
    cache.write(5, groups, key, value)
    read = cache.gather(5, group_rows(rows.flip(0), rows_per_chunk))
    assert torch.equal(read[0], key.flip(0).transpose(0, 1)) and torch.equal(
        read[1], value.flip(0).transpose(0, 1)
    )
    assert torch.count_nonzero(cache.gather(4, groups)) == 0  # another layer is untouched


def test_stage_sizes_its_pool_by_the_budget_rule() -> None:
    engine = EngineConfig(
        num_stages=2, stage_memory_bytes=4 * 2**20, gpu_memory_utilization=0.5, block_size=8
    )
    spec = StageSpec(1, 2, range(3, 6), MODEL, engine)
    worker = StageWorker(spec)
    per_block_per_layer = 8 * 2 * MODEL.num_key_value_heads * MODEL.head_dim * 8
    expected = (2 * 2**20 - worker.weights.nbytes()) // (3 * per_block_per_layer)
    assert worker.max_blocks() == expected > 0
    status = worker.status()
    assert (status.first_layer, status.end_layer, status.usable_bytes) == (3, 6, 2 * 2**20)
    assert worker.weights.lm_head is not None and worker.weights.embed_tokens is None
    too_many = list(range(expected // engine.blocks_per_chunk + 1))
    failure = worker.handle(ControlMessage("add_chunks", {"chunk_ids": too_many}))
    assert isinstance(failure, StageFailure) and "budget allows" in failure.error
    assert worker.cache.chunk_ids() == []
