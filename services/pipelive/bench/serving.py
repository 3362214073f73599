"""`controlplane pipelive bench`: replay the Azure trace against the engine for 1, 2 and 4 stages, and
measure the paged operator against a plain dense decode loop on the same weights and batch.

A benchmark, not a test: it prints numbers (TTFT and TPOT p50/p99, output tokens/s, KV usage); `--json`
prints them as one object. Requests go straight into the engine (no HTTP), each stage in its own process.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from services.pipelive.bench.workload import (
    ReplayRequest,
    ReplayResult,
    RequestTiming,
    read_trace,
    save_replay,
    scale_trace,
)
from services.pipelive.checkpoint import write_checkpoint
from services.pipelive.config import EngineConfig, ModelConfig
from services.pipelive.engine import LLMEngine
from services.pipelive.params import SamplingParams
from services.pipelive.pipeline import default_threads_per_stage
from services.pipelive.reference import DenseReference
from services.shared_data import shared_data_dir

REPO = Path(__file__).resolve().parents[3]
RATIO_KEYS = ("output_tokens_per_second", "ttft_p50_ms", "ttft_p99_ms", "tpot_p50_ms", "tpot_p99_ms")


def replay(engine: LLMEngine, requests: list[ReplayRequest]) -> dict[str, Any]:
    """Submit requests at their arrival times, step the engine, and measure what clients would see."""
    timings: dict[str, RequestTiming] = {}
    usage: list[float] = []
    pending = sorted(requests, key=lambda r: r.arrival)
    start = time.perf_counter()
    next_index = 0
    while next_index < len(pending) or engine.has_unfinished():
        now = time.perf_counter() - start
        while next_index < len(pending) and pending[next_index].arrival <= now:
            item = pending[next_index]
            params = SamplingParams(max_tokens=item.max_tokens, ignore_eos=True)
            timings[engine.add_request(item.prompt_token_ids, params)] = RequestTiming(start + item.arrival)
            next_index += 1
        if not engine.has_unfinished():
            time.sleep(max(0.0, pending[next_index].arrival - (time.perf_counter() - start)))
            continue
        outputs = engine.step()
        stamp = time.perf_counter()
        usage.append(engine.pool.usage())
        for output in outputs:
            timings[output.request_id].token(stamp)
    summary = ReplayResult(list(timings.values()), time.perf_counter() - start, usage).summary()
    summary["preemptions"] = engine.scheduler.num_preemptions
    summary["kv_blocks_total"] = engine.pool.num_total
    return summary


def _paged_decode(engine: LLMEngine, prompts: list[list[int]], steps: int) -> tuple[list[list[int]], float]:
    """Prefill the batch in one step, then time the decode steps only."""
    ids = [engine.add_request(p, SamplingParams(max_tokens=steps + 1)) for p in prompts]
    outputs: dict[str, list[int]] = {i: [] for i in ids}
    for output in engine.step():
        outputs[output.request_id].append(output.token_id)
    started = time.perf_counter()
    while engine.has_unfinished():
        for output in engine.step():
            outputs[output.request_id].append(output.token_id)
    return [outputs[i] for i in ids], time.perf_counter() - started


def paged_vs_dense(
    model: ModelConfig, batch: int, prompt_len: int, steps: int, stage_memory: int, repeats: int = 3
) -> dict[str, Any]:
    """Decode tokens/s of the engine (1 stage, in-process) and of the dense loop, same weights and batch.

    The two alternate `repeats` times and the best run of each counts, so that a burst of load from other
    processes on the machine does not decide the comparison.
    """
    prompts = [[(31 * row + 7 * col) % model.vocab_size for col in range(prompt_len)] for row in range(batch)]
    dense = DenseReference(model)
    config = EngineConfig(
        num_stages=1,
        stage_memory_bytes=stage_memory,
        max_num_batched_tokens=max(batch * prompt_len, 512),
        max_num_seqs=batch,
    )
    dense_best = paged_best = float("inf")
    with LLMEngine(model, config) as engine:
        dense.generate(prompts[:2], 2)  # warm-up
        engine.generate(prompts[:2], SamplingParams(max_tokens=2))
        for _ in range(repeats):
            dense_tokens = dense.generate(prompts, steps + 1)
            dense_best = min(dense_best, sum(dense.step_seconds[1:]))
            paged_tokens, seconds = _paged_decode(engine, prompts, steps)
            paged_best = min(paged_best, seconds)
    agree = sum(
        a == b for x, y in zip(dense_tokens, paged_tokens, strict=True) for a, b in zip(x, y, strict=True)
    )
    dense_rate = batch * steps / dense_best
    paged_rate = batch * steps / paged_best
    return {
        "batch": batch,
        "prompt_tokens": prompt_len,
        "decode_steps": steps,
        "best_of": repeats,
        "dense_decode_tokens_per_second": round(dense_rate, 2),
        "paged_decode_tokens_per_second": round(paged_rate, 2),
        "paged_overhead_percent": round((dense_rate / paged_rate - 1) * 100, 1),
        "greedy_token_agreement": round(agree / (batch * (steps + 1)), 4),
    }


def agreement(ours: list[list[int]], theirs: list[list[int]]) -> float:
    """Fraction of output positions where both engines picked the same greedy token."""
    pairs = [(a, b) for x, y in zip(ours, theirs, strict=True) for a, b in zip(x, y, strict=False)]
    total = sum(max(len(x), len(y)) for x, y in zip(ours, theirs, strict=True))
    return sum(a == b for a, b in pairs) / total if total else 0.0


def compare_with_vllm(
    model: ModelConfig, requests: list[ReplayRequest], vllm_python: str, stage_memory: int
) -> dict[str, Any]:
    """Serve the same checkpoint with vLLM (in its own venv), replay the same trace, compare greedy tokens."""
    model = model.with_dtype("float32")
    prompts = [r.prompt_token_ids[:128] for r in requests[:8]]
    tokens = 32
    with tempfile.TemporaryDirectory(prefix="pipelive-vllm-") as scratch:
        directory = Path(scratch)
        checkpoint = write_checkpoint(model, directory / "checkpoint")
        save_replay(requests, directory / "workload.json")
        (directory / "agreement.json").write_text(json.dumps(prompts))
        command = [
            vllm_python, "-m", "services.pipelive.bench.vllm_runner", "--checkpoint", str(checkpoint),
            "--workload", str(directory / "workload.json"), "--agreement", str(directory / "agreement.json"),
            "--agreement-tokens", str(tokens), "--max-model-len", str(model.max_position_embeddings),
            "--out", str(directory / "vllm.json"),
        ]  # fmt: skip
        environment = os.environ | {
            "PYTHONPATH": str(REPO),
            "VLLM_CPU_KVCACHE_SPACE": str(max(1, stage_memory // 2**30)),
            "VLLM_LOGGING_LEVEL": "WARNING",
            # As many torch threads as one of our stages gets (vLLM too keeps a core for its engine loop).
            "OMP_NUM_THREADS": str(default_threads_per_stage(1)),
        }
        # vLLM's own logs go to stderr so that `--json` stays one object on stdout.
        subprocess.run(command, cwd=REPO, env=environment, check=True, stdout=sys.stderr)
        theirs = json.loads((directory / "vllm.json").read_text())
    config = EngineConfig(num_stages=1, stage_memory_bytes=stage_memory)
    with LLMEngine(model, config) as engine:
        ours = engine.generate(prompts, SamplingParams(max_tokens=tokens, ignore_eos=True))
    return {
        "version": theirs["vllm_version"],
        "replay": theirs["replay"],
        "greedy_token_agreement": round(agreement(ours, theirs["greedy_tokens"]), 4),
    }


def run(
    model: ModelConfig,
    stage_counts: list[int],
    *,
    trace: str = "conv",
    num_requests: int = 48,
    rate: float = 1.0,
    token_scale: float = 0.25,
    max_prompt: int = 256,
    max_output: int = 64,
    stage_memory: int = 768 * 2**20,
    mode: str = "process",
    transport_backend: str = "auto",
    dense_batch: int = 16,
    vllm_python: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    trace_file = shared_data_dir() / "azure-llm-inference-2023" / f"AzureLLMInferenceTrace_{trace}.csv"
    requests = scale_trace(
        read_trace(trace_file, limit=num_requests),
        rate=rate,
        token_scale=token_scale,
        max_prompt=max_prompt,
        max_output=max_output,
        vocab_size=model.vocab_size,
    )
    result: dict[str, Any] = {
        "model": model.name,
        "parameters": model.parameter_count(),
        "dtype": model.dtype,
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "cpu_threads": torch.get_num_threads(),
        "workload": {
            "trace": trace_file.name,
            "requests": len(requests),
            "mean_rate_per_second": rate,
            "token_scale": token_scale,
            "prompt_tokens_mean": round(statistics.fmean(len(r.prompt_token_ids) for r in requests), 1),
            "output_tokens_mean": round(statistics.fmean(r.max_tokens for r in requests), 1),
        },
        "mode": mode,
        "stages": {},
    }
    for stages in stage_counts:
        if progress:
            print(f"replaying {len(requests)} requests with {stages} stage(s) ...", flush=True)
        config = EngineConfig(
            num_stages=stages, stage_memory_bytes=stage_memory, transport_backend=transport_backend
        )
        with LLMEngine(model, config, mode=mode) as engine:
            result.setdefault("transport", {})[str(stages)] = engine.pipeline.backend
            warm = [ReplayRequest(0.0, requests[0].prompt_token_ids, 2)]
            replay(engine, warm)
            result["stages"][str(stages)] = replay(engine, requests)
    if dense_batch:
        if progress:
            print("paged decode vs dense decode ...", flush=True)
        result["paged_vs_dense"] = paged_vs_dense(model, dense_batch, 128, 32, stage_memory)
    if vllm_python:
        if progress:
            print("the same trace on vLLM ...", flush=True)
        vllm = compare_with_vllm(model, requests, vllm_python, stage_memory)
        theirs = vllm["replay"]
        vllm["ours_over_vllm"] = {
            stages: {
                f"{key}_ratio": round(row[key] / theirs[key], 3) if theirs[key] else None
                for key in RATIO_KEYS
            }
            for stages, row in result["stages"].items()
        }
        result["vllm"] = vllm
    return result


def print_human(result: dict[str, Any]) -> None:
    workload = result["workload"]
    transport = ", ".join(sorted(set(result.get("transport", {}).values())))
    print(
        f"model {result['model']} ({result['parameters'] / 1e6:.0f}M parameters, {result['dtype']}, "
        f"{result['device']}), {result['mode']} mode ({transport}); workload {workload['trace']}: "
        f"{workload['requests']} requests, {workload['mean_rate_per_second']}/s, prompt "
        f"{workload['prompt_tokens_mean']} / output {workload['output_tokens_mean']} tokens on average"
    )
    columns = ("stages", "TTFT p50", "TTFT p99", "TPOT p50", "TPOT p99", "out tok/s", "KV mean")
    print(" ".join(f"{name:>10}" for name in columns))
    for stages, row in result["stages"].items():
        cells = [
            stages,
            f"{row['ttft_p50_ms']:.1f}ms",
            f"{row['ttft_p99_ms']:.1f}ms",
            f"{row['tpot_p50_ms']:.1f}ms",
            f"{row['tpot_p99_ms']:.1f}ms",
            f"{row['output_tokens_per_second']:.1f}",
            f"{row['kv_usage_mean']:.1%}",
        ]
        print(" ".join(f"{cell:>10}" for cell in cells))
    dense = result.get("paged_vs_dense")
    if dense:
        print(
            f"decode, batch {dense['batch']} x {dense['prompt_tokens']} prompt tokens: "
            f"paged {dense['paged_decode_tokens_per_second']:.1f} tok/s, "
            f"dense {dense['dense_decode_tokens_per_second']:.1f} tok/s "
            f"(paged costs {dense['paged_overhead_percent']:+.1f}%); "
            f"greedy agreement {dense['greedy_token_agreement']:.1%}"
        )
    vllm = result.get("vllm")
    if vllm:
        row = vllm["replay"]
        print(
            f"vLLM {vllm['version']}: TTFT p50 {row['ttft_p50_ms']:.1f}ms p99 {row['ttft_p99_ms']:.1f}ms, "
            f"TPOT p50 {row['tpot_p50_ms']:.1f}ms p99 {row['tpot_p99_ms']:.1f}ms, "
            f"{row['output_tokens_per_second']:.1f} out tok/s; "
            f"greedy agreement {vllm['greedy_token_agreement']:.1%}"
        )
        for stages, ratios in vllm["ours_over_vllm"].items():
            text = ", ".join(f"{key.removesuffix('_ratio')} x{value}" for key, value in ratios.items())
            print(f"  ours / vLLM, {stages} stage(s): {text}")


def to_json(result: dict[str, Any]) -> str:
    return json.dumps(result, indent=2)
