"""Shared pieces of the reconfiguration tests: an 8-layer float64 model, a driver that steps an engine
through a reconfiguration while requests run, and the ownership invariant."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from services.pipelive.config import EngineConfig, ModelConfig
from services.pipelive.engine import LLMEngine
from services.pipelive.live_migration import Reconfiguration
from services.pipelive.params import SamplingParams

# float64, so a different batch schedule (a reconfiguration changes it) cannot flip a greedy argmax.
MODEL8 = ModelConfig(name="pipelive-tiny8", dtype="float64", seed=11, num_hidden_layers=8)
PROMPTS = [[(7 + 5 * i + j * j) % 256 for j in range(n)] for i, n in enumerate((3, 17, 40, 9, 1, 26, 33, 12))]
PARAMS = SamplingParams(max_tokens=24)


def config(**overrides: Any) -> EngineConfig:
    settings: dict[str, Any] = {
        "num_stages": 2,
        "block_size": 4,
        "blocks_per_chunk": 8,
        "initial_kv_blocks": 96,
        "max_num_batched_tokens": 48,
        "stage_memory_bytes": 16 * 2**20,
        "device": "cpu",
    }
    settings.update(overrides)
    return EngineConfig(**settings)


def reference_outputs(
    prompts: Sequence[list[int]] = PROMPTS, params: SamplingParams = PARAMS
) -> list[list[int]]:
    with LLMEngine(MODEL8, config(num_stages=1, initial_kv_blocks=None)) as engine:
        return engine.generate(list(prompts), params)


def run_with_reconfiguration(
    engine: LLMEngine,
    start: Callable[[LLMEngine], Reconfiguration],
    prompts: Sequence[list[int]] = PROMPTS,
    params: SamplingParams = PARAMS,
    steps_before: int = 4,
) -> tuple[list[list[int]], Reconfiguration]:
    """Run `prompts`, start the reconfiguration after `steps_before` steps, step until all is done."""
    ids = [engine.add_request(prompt, params) for prompt in prompts]
    outputs: dict[str, list[int]] = {request_id: [] for request_id in ids}
    for _ in range(steps_before):
        for output in engine.step():
            outputs[output.request_id].append(output.token_id)
    reconfiguration = start(engine)
    while engine.has_unfinished() or not reconfiguration.finished:
        for output in engine.step():
            outputs[output.request_id].append(output.token_id)
    return [outputs[request_id] for request_id in ids], reconfiguration


def assert_each_layer_on_one_stage(engine: LLMEngine) -> None:
    """Weights and KV of each layer on exactly one stage, as the partition says; nothing left over."""
    workers = engine.pipeline.workers  # type: ignore[attr-defined]
    assert len(workers) == len(engine.layer_ranges)
    owners: dict[int, int] = {}
    for index, (worker, layers) in enumerate(zip(workers, engine.layer_ranges, strict=True)):
        assert worker.spec.index == index and worker.spec.layers == layers
        assert sorted(worker.weights.layers) == list(layers)
        assert worker.cache.held_layers() == list(layers)
        assert not worker.incoming_weights and worker.incoming_head is None and worker.dirty is None
        assert (worker.weights.lm_head is not None) == (index == len(workers) - 1)
        assert (worker.weights.embed_tokens is not None) == (index == 0)
        for layer in layers:
            assert layer not in owners
            owners[layer] = index
    assert sorted(owners) == list(range(engine.model.num_hidden_layers))
