"""`controlplane pipelive bench --pause-scaling`: how the switch pause grows with the KV in flight.

PipeLive's claim, and our correctness contract, is that a live reconfiguration's pause grows with the
final dirty tail (the blocks written since the last pre-copy round, about one per running request), not
with the KV of the moving layers; stop-and-copy, which copies all of that KV inside its pause, grows with
it. The reconfigure benchmark has 128-192 KiB of KV in flight at its change, too little to show this, so
this one sweeps the KV in use over an order of magnitude at a fixed number of running requests.

For each size a fresh two-stage engine (the reconfigure benchmark's model in float32, budgets large
enough that the pool never has to shrink) runs `requests` requests whose prompts fill `blocks` KV blocks,
lets every one of them prefill and start decoding, then moves two layers from stage 0 to stage 1 — live,
and in a second engine with stop-and-copy — while they keep decoding. Per method: the pause, the KV
bytes copied inside it and in all, the final dirty blocks, the patch rounds, the whole reconfiguration's
time, and the longest and mean engine-loop iteration (a decode step, plus starting the change in the
first) from the change to its commit, what running requests feel, next to the mean step just before it.
"""

from __future__ import annotations

import random
import statistics
import time
from dataclasses import replace
from typing import Any

import torch

from services.pipelive.bench.reconfigure import BENCH_MODEL
from services.pipelive.config import EngineConfig, ModelConfig
from services.pipelive.engine import LLMEngine
from services.pipelive.params import SamplingParams

METHODS = ("live", "stop_and_copy")
SIZES = (256, 1024, 4096)  # KV blocks in use at the change
CURRENT = [range(0, 4), range(4, 8)]
TARGET = [range(0, 2), range(2, 8)]  # layers 2 and 3 move from stage 0 to stage 1


def _engine(model: ModelConfig, blocks: int, block_size: int, mode: str) -> LLMEngine:
    per_block = model.kv_bytes_per_token_per_layer() * block_size * model.num_hidden_layers
    weights = model.parameter_count() * model.dtype_bytes
    chunk = 16
    pool = -(-2 * blocks // chunk) * chunk  # twice what the prompts take, in whole chunks
    # Each stage could hold every layer and twice the pool: the pool never shrinks, so live and
    # stop-and-copy differ only in how they copy.
    budget = 2 * (weights + pool * per_block)
    config = EngineConfig(
        num_stages=2,
        layer_split=tuple(len(r) for r in CURRENT),
        stage_memory_bytes=budget,
        gpu_memory_utilization=1.0,
        block_size=block_size,
        blocks_per_chunk=chunk,
        layers_per_unit=2,
        max_num_batched_tokens=2048,
        max_num_seqs=256,
        initial_kv_blocks=pool,
        threads_per_stage=1,
        device="cpu",
    )
    return LLMEngine(model, config, mode=mode, host_weights=True)


def measure(
    model: ModelConfig,
    blocks: int,
    method: str,
    *,
    requests: int = 32,
    block_size: int = 16,
    mode: str = "thread",
    seed: int = 0,
) -> dict[str, Any]:
    """One engine, `requests` requests holding about `blocks` KV blocks, one reconfiguration by `method`."""
    generator = random.Random(seed)
    prompt_tokens = max(1, blocks * block_size // requests - 1)
    max_model_len = model.max_position_embeddings
    if prompt_tokens + 64 > max_model_len:
        raise ValueError(f"{blocks} blocks over {requests} requests exceeds the context of {max_model_len}")
    with _engine(model, blocks, block_size, mode) as engine:
        for _ in range(requests):
            prompt = [generator.randrange(model.vocab_size) for _ in range(prompt_tokens)]
            engine.add_request(
                prompt, SamplingParams(max_tokens=max_model_len - prompt_tokens, ignore_eos=True)
            )
        decoding: set[str] = set()
        while len(decoding) < requests:  # until every request has its first token: all are decoding
            decoding.update(output.request_id for output in engine.step())
        before: list[float] = []  # decode steps without a change, for comparison
        for _ in range(3):
            started = time.perf_counter()
            engine.step()
            before.append((time.perf_counter() - started) * 1000)
        in_use = engine.pool.num_used
        # Engine-loop iterations from the change to the commit; the first includes starting the change
        # (stop-and-copy's whole pause happens there), as in a serving loop.
        steps: list[float] = []
        started = time.perf_counter()
        reconfiguration = engine.begin_reconfigure(TARGET, method)
        while True:
            engine.step()
            steps.append((time.perf_counter() - started) * 1000)
            if reconfiguration.finished:
                break
            started = time.perf_counter()
        result = reconfiguration.future.result()
        if engine.scheduler.num_preemptions:
            raise RuntimeError(
                f"{method}: {engine.scheduler.num_preemptions} preemptions; the pool is too small"
            )
        return {
            "kv_blocks_in_use": in_use,
            "moving_kv_bytes": in_use * block_size * model.kv_bytes_per_token_per_layer() * 2,
            "pause_ms": round(result.pause_ms, 3),
            "pause_kv_bytes": result.pause_kv_bytes,
            "kv_bytes_copied": result.kv_bytes_copied,
            "final_dirty_blocks": result.final_dirty_blocks,
            "patch_rounds": result.patch_rounds,
            "reconfig_total_ms": round(result.total_ms, 2),
            "steps_during": len(steps),
            "step_ms_max": round(max(steps), 2),
            "step_ms_mean": round(statistics.fmean(steps), 2),
            "step_ms_before": round(statistics.fmean(before), 2),
        }


def run(
    *,
    sizes: tuple[int, ...] = SIZES,
    requests: int = 32,
    mode: str = "thread",
    model: ModelConfig | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    model = model or replace(BENCH_MODEL.with_dtype("float32"), max_position_embeddings=4096)
    torch.set_num_threads(1)  # one core per stage thread, as in the reconfigure benchmark
    rows = []
    for blocks in sizes:
        row: dict[str, Any] = {"kv_blocks": blocks, "methods": {}}
        for method in METHODS:
            if progress:
                print(f"{blocks} KV blocks in use, {method} ...", flush=True)
            row["methods"][method] = measure(model, blocks, method, requests=requests, mode=mode)
        rows.append(row)
    return {
        "model": model.name,
        "dtype": model.dtype,
        "parameters": model.parameter_count(),
        "mode": mode,
        "requests": requests,
        "change": "0-3,4-7 -> 0-1,2-7 (layers 2 and 3 move)",
        "sizes": rows,
    }


def print_human(result: dict[str, Any]) -> None:
    print(
        f"model {result['model']} ({result['parameters'] / 1e6:.1f}M parameters, {result['dtype']}), "
        f"2 stages ({result['mode']}), {result['requests']} requests decoding, {result['change']}"
    )
    header = (
        f"{'KV in use':>10} {'moving KV':>10} {'method':<14} {'pause ms':>9} {'in pause':>10} "
        f"{'copied':>10} {'dirty':>6} {'rounds':>6} {'total ms':>9} {'step max':>9} {'step mean':>9} "
        f"{'before':>7}"
    )
    print(header)
    for row in result["sizes"]:
        for method, m in row["methods"].items():
            print(
                f"{m['kv_blocks_in_use']:>10} {_mib(m['moving_kv_bytes']):>10} {method:<14} "
                f"{m['pause_ms']:>9.2f} {_mib(m['pause_kv_bytes']):>10} {_mib(m['kv_bytes_copied']):>10} "
                f"{m['final_dirty_blocks']:>6} {m['patch_rounds']:>6} {m['reconfig_total_ms']:>9.1f} "
                f"{m['step_ms_max']:>9.1f} {m['step_ms_mean']:>9.1f} {m['step_ms_before']:>7.1f}"
            )


def _mib(size: int) -> str:
    return f"{size / 2**20:.2f} MiB"
