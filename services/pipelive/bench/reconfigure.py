"""`controlplane pipelive bench --reconfigure`: live reconfiguration against its baselines, on one trace.

The workload follows the PipeLive paper's shape: a prefill-heavy phase (512 tokens in, 16 out) followed by
a decode-heavy phase (128 in, 512 out), scaled to what two CPU cores serve (`token_scale`, default
1/4: 128 in / 4 out at 4 requests/s, then 32 in / 128 out at 2 requests/s, 12 s each). Arrival gaps come
from the Azure LLM inference conversation trace (`shared/data/azure-llm-inference-2023`), compressed to
each phase's rate; prompts are seeded random ids.

Two stages on devices of different memory: stage 0 is small, stage 1 large. The stage layouts the paper
uses as static baselines are, on this engine:

* prefill-optimal: layers split evenly (balanced compute per stage, so micro-batches pipeline best), but
  the small stage bounds the shared KV pool;
* decode-optimal: most layers on the large stage, so the KV pool (which decode-heavy load fills) is
  larger, at the price of an unbalanced pipeline;
* balanced: in between.

Every method starts on the prefill-optimal layout and changes to the decode-optimal one at the same
moment — 3 s into the decode-heavy phase, when a controller would have seen the load shift and KV of
running requests is in flight — in the same trace: live, live without KV resizing, stop-and-copy (no
patching) and stop-and-redeploy. Figures: the switch pause, the whole reconfiguration's time, bytes and
rounds copied, TTFT and TPOT (p50/p99/mean) over requests arriving in the window around the change (from
`window` seconds before it to the end of the trace, so the new layout's effect counts) and over the
whole run, preemptions, drops, and whether every request's tokens equal those of the run without a
reconfiguration (float64, so a different batch schedule cannot flip a greedy token).
"""

from __future__ import annotations

import random
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from services.pipelive.bench.workload import percentile, read_trace
from services.pipelive.config import EngineConfig, ModelConfig
from services.pipelive.engine import LLMEngine
from services.pipelive.live_migration import ReconfigureResult
from services.pipelive.params import SamplingParams
from services.pipelive.reconfigure import format_layer_ranges

METHODS = ("live", "live_no_resize", "stop_and_copy", "stop_and_redeploy")
# The paper's figures next to which ours are printed.
PAPER = {
    "ttft_lower_with_kv_resizing_x": 2.5,
    "pause_with_patching_ms_below": 10.0,
    "ttft_better_than_without_patching_percent_up_to": 54.7,
    "tpot_better_than_without_patching_percent_up_to": 14.7,
}
BENCH_MODEL = ModelConfig(
    name="pipelive-bench-reconfigure",
    vocab_size=256,
    hidden_size=256,
    intermediate_size=512,
    num_hidden_layers=8,
    num_attention_heads=8,
    num_key_value_heads=4,
    head_dim=32,
    max_position_embeddings=2048,
    dtype="float64",
)
LAYOUTS = {
    "prefill_optimal": [range(0, 4), range(4, 8)],
    "balanced": [range(0, 3), range(3, 8)],
    "decode_optimal": [range(0, 2), range(2, 8)],
}


@dataclass(frozen=True)
class Phase:
    name: str
    seconds: float
    rate: float  # requests per second
    prompt_tokens: int
    output_tokens: int


@dataclass(frozen=True)
class TraceItem:
    arrival: float
    phase: str
    prompt_token_ids: list[int]
    max_tokens: int


def paper_phases(token_scale: float, seconds: float, prefill_rate: float, decode_rate: float) -> list[Phase]:
    """Prefill-heavy (512 in / 16 out) then decode-heavy (128 in / 512 out), token counts scaled."""

    def scaled(tokens: int) -> int:
        return max(1, round(tokens * token_scale))

    return [
        Phase("prefill_heavy", seconds, prefill_rate, scaled(512), scaled(16)),
        Phase("decode_heavy", seconds, decode_rate, scaled(128), scaled(512)),
    ]


def _gaps(trace_path: Path | None, count: int, generator: random.Random) -> list[float]:
    """Inter-arrival gaps with mean 1: the Azure trace's (when present), else exponential."""
    if trace_path is not None and trace_path.is_file():
        arrivals = [item.arrival for item in read_trace(trace_path, limit=count + 1)]
        gaps = [b - a for a, b in zip(arrivals, arrivals[1:], strict=False)]
        mean = statistics.fmean(gaps) if gaps else 0.0
        if len(gaps) == count and mean > 0:
            return [gap / mean for gap in gaps]
    return [generator.expovariate(1.0) for _ in range(count)]


def build_trace(
    phases: list[Phase], vocab_size: int, trace_path: Path | None, seed: int = 0
) -> list[TraceItem]:
    generator = random.Random(seed)
    items: list[TraceItem] = []
    start = 0.0
    for phase in phases:
        count = max(1, round(phase.seconds * phase.rate))
        gaps = _gaps(trace_path, count, generator)
        clock = start
        for gap in gaps:
            clock += gap / phase.rate
            if clock >= start + phase.seconds:
                break
            prompt = [generator.randrange(vocab_size) for _ in range(phase.prompt_tokens)]
            items.append(TraceItem(clock, phase.name, prompt, phase.output_tokens))
        start += phase.seconds
    return items


def stage_budgets(
    model: ModelConfig, config: EngineConfig, small_blocks: int, large_blocks: int
) -> tuple[int, int]:
    """Budgets such that stage 0 holds 4 layers and `small_blocks` KV blocks, stage 1 6 layers (and the
    head) and `large_blocks` blocks: the prefill-optimal pool is small, the decode-optimal one large."""
    layer = model.layer_parameter_count() * model.dtype_bytes
    table = model.vocab_size * model.hidden_size * model.dtype_bytes
    per_block_layer = config.block_size * model.kv_bytes_per_token_per_layer()
    small = table + 4 * layer + small_blocks * 4 * per_block_layer
    large = table + model.hidden_size * model.dtype_bytes + 6 * layer + large_blocks * 6 * per_block_layer
    return (
        int(small / config.gpu_memory_utilization) + 1,
        int(large / config.gpu_memory_utilization) + 1,
    )


@dataclass
class _Timing:
    arrival: float
    phase: str
    first: float | None = None
    last: float | None = None
    tokens: int = 0


def replay(
    engine: LLMEngine,
    trace: list[TraceItem],
    change_at: float | None = None,
    target: list[range] | None = None,
    method: str = "live",
) -> dict[str, Any]:
    """Submit at the trace's times, step, start the reconfiguration at `change_at`; what clients see."""
    timings: dict[str, _Timing] = {}
    tokens: dict[str, list[int]] = {}
    order: list[str] = []
    start = time.perf_counter()
    next_index = 0
    reconfiguration = None
    preemptions_at_change = 0
    while next_index < len(trace) or engine.has_unfinished() or engine.reconfiguring:
        now = time.perf_counter() - start
        while next_index < len(trace) and trace[next_index].arrival <= now:
            item = trace[next_index]
            request_id = engine.add_request(
                item.prompt_token_ids, SamplingParams(max_tokens=item.max_tokens, ignore_eos=True)
            )
            timings[request_id] = _Timing(start + item.arrival, item.phase)
            tokens[request_id] = []
            order.append(request_id)
            next_index += 1
        if change_at is not None and reconfiguration is None and now >= change_at:
            assert target is not None
            preemptions_at_change = engine.scheduler.num_preemptions
            reconfiguration = engine.begin_reconfigure(target, method)
        if not engine.has_unfinished() and not engine.reconfiguring:
            if next_index < len(trace):
                wake = trace[next_index].arrival
                if change_at is not None and reconfiguration is None:
                    wake = min(wake, change_at)
                time.sleep(max(0.0, wake - (time.perf_counter() - start)))
            continue
        outputs = engine.step()
        stamp = time.perf_counter()
        for output in outputs:
            timing = timings[output.request_id]
            timing.first = timing.first or stamp
            timing.last = stamp
            timing.tokens += 1
            tokens[output.request_id].append(output.token_id)
        if not outputs and engine.reconfiguring:
            time.sleep(0.001)
    result: ReconfigureResult | None = None
    if reconfiguration is not None:
        result = reconfiguration.future.result()
    return {
        "timings": [timings[request_id] for request_id in order],
        "tokens": [tokens[request_id] for request_id in order],
        "seconds": time.perf_counter() - start,
        "start": start,
        "reconfigure": result,
        "preemptions": engine.scheduler.num_preemptions,
        "preemptions_after_change": engine.scheduler.num_preemptions - preemptions_at_change,
        "kv_blocks_after": engine.pool.num_total,
    }


def _latency(timings: list[_Timing]) -> dict[str, float]:
    ttft = [(t.first - t.arrival) * 1000 for t in timings if t.first is not None]
    tpot = [
        (t.last - t.first) * 1000 / (t.tokens - 1)
        for t in timings
        if t.first is not None and t.last is not None and t.tokens > 1
    ]
    return {
        "requests": len(timings),
        "ttft_p50_ms": round(percentile(ttft, 0.5), 2),
        "ttft_p99_ms": round(percentile(ttft, 0.99), 2),
        "ttft_mean_ms": round(statistics.fmean(ttft), 2) if ttft else 0.0,
        "tpot_p50_ms": round(percentile(tpot, 0.5), 2),
        "tpot_p99_ms": round(percentile(tpot, 0.99), 2),
        "tpot_mean_ms": round(statistics.fmean(tpot), 2) if tpot else 0.0,
    }


def summarize(
    run: dict[str, Any], reference_tokens: list[list[int]], window: tuple[float, float]
) -> dict[str, Any]:
    timings: list[_Timing] = run["timings"]
    start = run["start"]
    around = [t for t in timings if window[0] <= t.arrival - start <= window[1]]
    in_window = _latency(around)
    figures: dict[str, Any] = {
        "pause_ms_p50": 0.0,
        "pause_ms_max": 0.0,
        "reconfig_total_ms": 0.0,
        **{key: value for key, value in in_window.items() if key != "requests"},
        "window_requests": in_window["requests"],
        "whole_run": _latency(timings),
        "dropped": sum(1 for t in timings if t.first is None),
        "preempted": 0,  # by the reconfiguration itself (below); the workload's own are counted apart
        "preempted_from_change_to_end": run["preemptions_after_change"] if run["reconfigure"] else None,
        "preempted_whole_run": run["preemptions"],
        "tokens_identical": run["tokens"] == reference_tokens,
        "tokens_agreement": round(
            sum(a == b for a, b in zip(run["tokens"], reference_tokens, strict=True)) / max(1, len(timings)),
            4,
        ),
        "kv_blocks_after": run["kv_blocks_after"],
    }
    result: ReconfigureResult | None = run["reconfigure"]
    if result is not None:
        figures.update(
            {
                "pause_ms_p50": round(result.pause_ms, 3),  # one change per run: p50 = max
                "pause_ms_max": round(result.pause_ms, 3),
                "reconfig_total_ms": round(result.total_ms, 2),
                "weight_bytes_copied": result.weight_bytes_copied,
                "kv_bytes_copied": result.kv_bytes_copied,
                "pause_kv_bytes": result.pause_kv_bytes,
                "patch_rounds": result.patch_rounds,
                "dirty_blocks_per_round": result.dirty_per_round,
                "final_dirty_blocks": result.final_dirty_blocks,
                "preempted": result.preempted,
            }
        )
    return figures


def _ratio(ours: float, theirs: float) -> float | None:
    return round(theirs / ours, 2) if ours > 0 else None


def _better_percent(ours: float, theirs: float) -> float | None:
    return round((1 - ours / theirs) * 100, 1) if theirs > 0 else None


def comparisons(methods: dict[str, dict[str, Any]]) -> dict[str, Any]:
    live = methods["live"]
    out: dict[str, Any] = {"paper": PAPER}
    out["ttft_lower_with_kv_resizing_x"] = {
        "p99": _ratio(live["ttft_p99_ms"], methods["live_no_resize"]["ttft_p99_ms"]),
        "mean": _ratio(live["ttft_mean_ms"], methods["live_no_resize"]["ttft_mean_ms"]),
    }
    out["live_pause_ms"] = live["pause_ms_max"]
    for baseline in ("stop_and_copy", "stop_and_redeploy", "live_no_resize"):
        other = methods[baseline]
        out[f"vs_{baseline}"] = {
            "ttft_p99_better_percent": _better_percent(live["ttft_p99_ms"], other["ttft_p99_ms"]),
            "tpot_p99_better_percent": _better_percent(live["tpot_p99_ms"], other["tpot_p99_ms"]),
            "ttft_mean_better_percent": _better_percent(live["ttft_mean_ms"], other["ttft_mean_ms"]),
            "tpot_mean_better_percent": _better_percent(live["tpot_mean_ms"], other["tpot_mean_ms"]),
            "pause_ratio_x": _ratio(live["pause_ms_max"], other["pause_ms_max"]),
        }
    return out


def run(
    *,
    token_scale: float = 0.25,
    phase_seconds: float = 12.0,
    change_delay: float = 3.0,
    window_before: float = 3.0,
    prefill_rate: float = 4.0,
    decode_rate: float = 2.0,
    small_blocks: int = 48,
    large_blocks: int = 192,
    trace_path: Path | None = None,
    seed: int = 0,
    mode: str = "thread",
    progress: bool = True,
) -> dict[str, Any]:
    model = BENCH_MODEL
    torch.set_num_threads(1)  # one core per stage thread: oversubscribed OpenMP teams wait on each other
    # k = 2 layers per KV unit: with 8 layers that is as fine, relative to a stage, as the paper's k = 4 on
    # its 32-80-layer models, so a stage that gives away half its layers can release their KV memory.
    base = EngineConfig(
        num_stages=2,
        block_size=16,
        blocks_per_chunk=8,
        layers_per_unit=2,
        max_num_batched_tokens=512,
        device="cpu",
    )
    budgets = stage_budgets(model, base, small_blocks, large_blocks)
    phases = paper_phases(token_scale, phase_seconds, prefill_rate, decode_rate)
    trace = build_trace(phases, model.vocab_size, trace_path, seed)
    change_at = phases[0].seconds + change_delay
    window = (change_at - window_before, sum(phase.seconds for phase in phases))

    def engine_for(layout: list[range]) -> LLMEngine:
        config = EngineConfig(
            num_stages=2,
            layer_split=tuple(len(r) for r in layout),
            stage_budgets=budgets,
            block_size=base.block_size,
            blocks_per_chunk=base.blocks_per_chunk,
            layers_per_unit=base.layers_per_unit,
            max_num_batched_tokens=base.max_num_batched_tokens,
            threads_per_stage=1,
            device="cpu",
        )
        return LLMEngine(model, config, mode=mode, host_weights=True)

    def say(text: str) -> None:
        if progress:
            print(text, flush=True)

    static: dict[str, dict[str, Any]] = {}
    runs: dict[str, dict[str, Any]] = {}
    for name, layout in LAYOUTS.items():
        say(f"static {name} ({format_layer_ranges(layout)}) ...")
        with engine_for(layout) as engine:
            runs[name] = replay(engine, trace)
            runs[name]["kv_blocks"] = engine.pool.num_total
    reference = runs["prefill_optimal"]["tokens"]  # the run without a reconfiguration
    for name in LAYOUTS:
        static[name] = {
            "layout": format_layer_ranges(LAYOUTS[name]),
            "kv_blocks": runs[name]["kv_blocks"],
            **{k: v for k, v in summarize(runs[name], reference, window).items() if "pause" not in k},
        }
    methods: dict[str, dict[str, Any]] = {}
    for method in METHODS:
        say(f"{method}: prefill_optimal -> decode_optimal at t={change_at:.0f}s ...")
        with engine_for(LAYOUTS["prefill_optimal"]) as engine:
            result = replay(engine, trace, change_at, LAYOUTS["decode_optimal"], method)
        methods[method] = summarize(result, reference, window)
    workload = {
        "phases": [phase.__dict__ for phase in phases],
        "requests": len(trace),
        "token_scale": token_scale,
        "arrivals": "azure conv trace gaps" if trace_path and trace_path.is_file() else "poisson",
        "change_at_seconds": change_at,
        "window_seconds": list(window),
    }
    return {
        "model": model.name,
        "parameters": model.parameter_count(),
        "dtype": model.dtype,
        "mode": mode,
        "stage_budgets_bytes": list(budgets),
        "workload": workload,
        "static": static,
        "methods": methods,
        "comparison": comparisons(methods),
    }


def print_human(result: dict[str, Any]) -> None:
    workload = result["workload"]
    print(
        f"model {result['model']} ({result['parameters'] / 1e6:.1f}M parameters, {result['dtype']}), "
        f"2 stages ({result['mode']}), budgets {result['stage_budgets_bytes']} bytes; "
        f"{workload['requests']} requests ({workload['arrivals']}), "
        f"change at {workload['change_at_seconds']}s, "
        f"window {workload['window_seconds']}"
    )
    for phase in workload["phases"]:
        print(
            f"  {phase['name']}: {phase['seconds']}s at {phase['rate']}/s, "
            f"{phase['prompt_tokens']} in / {phase['output_tokens']} out"
        )
    columns = (
        "",
        "pause p50",
        "pause max",
        "total",
        "TTFT p50",
        "TTFT p99",
        "TPOT p50",
        "TPOT p99",
        "preempt/all",
        "same",
    )
    print(" ".join(f"{name:>17}" for name in columns))

    def row(name: str, figures: dict[str, Any]) -> None:
        cells = [
            name,
            f"{figures.get('pause_ms_p50', 0):.2f}ms",
            f"{figures.get('pause_ms_max', 0):.2f}ms",
            f"{figures.get('reconfig_total_ms', 0):.0f}ms",
            f"{figures['ttft_p50_ms']:.0f}ms",
            f"{figures['ttft_p99_ms']:.0f}ms",
            f"{figures['tpot_p50_ms']:.1f}ms",
            f"{figures['tpot_p99_ms']:.1f}ms",
            f"{figures['preempted']}/{figures['preempted_whole_run']}",
            str(figures["tokens_identical"]),
        ]
        print(" ".join(f"{cell:>17}" for cell in cells))

    for name, figures in result["static"].items():
        row(f"static {name}", figures)
    for name, figures in result["methods"].items():
        row(name, figures)
    comparison = result["comparison"]
    print(
        f"live KV resizing: TTFT x{comparison['ttft_lower_with_kv_resizing_x']['p99']} lower at p99 "
        f"(x{comparison['ttft_lower_with_kv_resizing_x']['mean']} mean) than live_no_resize — paper: x2.5"
    )
    print(f"live pause {comparison['live_pause_ms']:.2f} ms — paper: under 10 ms with patching")
    for baseline in ("stop_and_copy", "stop_and_redeploy", "live_no_resize"):
        c = comparison[f"vs_{baseline}"]
        print(
            f"live vs {baseline}: TTFT p99 {c['ttft_p99_better_percent']}% better, TPOT p99 "
            f"{c['tpot_p99_better_percent']}% better, pause x{c['pause_ratio_x']} shorter"
            + (" — paper (vs no patching): up to 54.7% / 14.7%" if baseline == "stop_and_copy" else "")
        )
