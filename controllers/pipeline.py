"""`pipeline`: when and to which layout a pipeline-parallel LLM service should be reconfigured.

PipeLive can move layers between stages live; it leaves open when to do it and to which layout. This
controller closes that gap. Each round, for every serving pipeline in the inventory that reports its detail
(stages, device pool, per-layer bytes, KV in use, vLLM-named metrics; see `PipelineInventory`):

1. **Load.** Prompt tokens, generated tokens and engine iterations per second come from the counters
   `vllm:prompt_tokens_total`, `vllm:generation_tokens_total` and `vllm:iteration_tokens_total_count`
   (differences between rounds, smoothed by `rate_smoothing`). Their mix says whether the load is
   prefill-heavy or decode-heavy.
2. **Model.** One engine iteration carries `prompt_rate / iteration_rate` prompt tokens and
   `generation_rate / iteration_rate` decode tokens; a layer on device `d` takes
   `prompt * prefill_seconds_per_token_layer / prefill_speed_d + (decode * decode_seconds_per_token_layer +
   layer_overhead_seconds) / decode_speed_d` of it (prefill is compute-bound, decode memory-bound, so each
   has its own speed; the overhead is reading the layer's weights once per iteration). A stage's time is the
   sum over its layers, and the pipeline iterates at the pace of its slowest stage; the bottleneck stage's
   busy share is its time times the iteration rate. (Without an iteration count the same formula runs per
   second of load, without the overhead.) A layer needs its weights plus its share of the KV blocks the
   pipeline needs: those in use plus, when the cache is full (`kv_full_fraction`), what the waiting
   requests would take (estimated from the running ones' average, at most as many again), at its peak over
   the last `kv_peak_rounds` rounds, plus `kv_headroom`; every stage must fit its device's budget.
   For a live change (any method but `stop_and_redeploy`) a device must also hold its current and its new
   layers at once, with the KV in use, as PipeLive's admission demands, or the engine would refuse it.
   When a stage's device is lost and no live change is admissible, it asks for `stop_and_redeploy`: the
   pipeline cannot serve without the stage anyway.
3. **Solve.** `solve_partition` gives the contiguous partition over the ready devices (current stages in
   order, then spare devices) that minimizes the bottleneck stage time under those memory limits, exactly;
   a device that does not help is left out.
4. **Trigger, with hysteresis.** The new layout is proposed (`ReconfigurePipeline`, with `method`) when
   * a stage's device left the pool or is not ready (at once);
   * a stage no longer fits its device (its budget shrank under co-located work, or the KV demand grew);
   * or it lowers the bottleneck by at least `min_improvement` (relative) while the pipeline is busy (the
     bottleneck's busy share is at least `min_utilization`, or requests wait): a device joined, spare
     devices can help, the load shifted between prefill and decode (by `mix_shift` of the prompt share
     since the layout was set), or the layout was never balanced.
   In a change for speed alone, a device that gains layers must also hold them at the KV demand's peak
   over the last `rebalance_peak_rounds` rounds, so that layers do not move back onto a device that was
   just relieved. Except for a lost device, or a mean TTFT over the last round above `ttft_slo_seconds`
   (when set: the symptom is already there), the same layout must come out `confirm_ticks` rounds in a row,
   and a layout once proposed is not proposed again for `retry_seconds` unless the inventory shows it was
   applied; the coordinator's cool-down adds to this. The evidence says which trigger fired, with the
   numbers.

TTFT and TPOT (`vllm:time_to_first_token_seconds`, `vllm:time_per_output_token_seconds`, means over the
last round from the histograms' `_sum` and `_count`) go into the evidence and, above `ttft_slo_seconds`,
make a change urgent; they are the symptom, the model above decides the layout.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

from controllers.pipeline_partition import Partition, evaluate_partition, solve_partition
from controlplane import (
    DEFAULT_BLOCK_SIZE,
    RECONFIGURE_METHODS,
    Action,
    ActionKind,
    Controller,
    ControlLocus,
    DeviceInventory,
    Dynamics,
    Objective,
    PipelineInventory,
    ReconfigurePipeline,
    Strategy,
    Taxonomy,
    Telemetry,
    TelemetryView,
)

PROMPT_TOKENS = "vllm:prompt_tokens_total"
GENERATION_TOKENS = "vllm:generation_tokens_total"
ITERATIONS = "vllm:iteration_tokens_total_count"
WAITING = "vllm:num_requests_waiting"
RUNNING = "vllm:num_requests_running"
CACHE_USAGE = "vllm:gpu_cache_usage_perc"
TTFT = "vllm:time_to_first_token_seconds"
TPOT = "vllm:time_per_output_token_seconds"
GIB = 1024**3


@dataclass
class _PipelineMemory:
    """What the controller keeps about one pipeline across rounds."""

    last_seen: float | None = None
    counters: dict[str, float] = field(default_factory=dict)
    prompt_rate: float | None = None
    generation_rate: float | None = None
    iteration_rate: float | None = None
    # KV blocks the pipeline needed in recent rounds (in use plus waiting); the plan covers their peak.
    kv_demand: deque[float] = field(default_factory=lambda: deque(maxlen=1))
    # The current layout, and the load mix (prompt share of tokens) when it was first seen.
    layout: tuple[tuple[int, ...], tuple[str, ...]] | None = None
    layout_mix: float | None = None
    last_pool: frozenset[str] | None = None
    # Devices that joined the pool since the current layout was first seen.
    joined: set[str] = field(default_factory=set)
    pending: tuple[tuple[int, ...], tuple[str, ...]] | None = None
    pending_rounds: int = 0
    proposed: tuple[tuple[int, ...], tuple[str, ...]] | None = None
    proposed_at: float = -math.inf


@dataclass(frozen=True, slots=True)
class _Model:
    """One round's model of one pipeline: the solver's inputs and the devices they refer to."""

    devices: tuple[DeviceInventory, ...]
    layer_seconds: tuple[tuple[float, ...], ...]
    layer_bytes: tuple[int, ...]
    kv_blocks: int
    transition_bytes: tuple[int, ...]
    current: tuple[tuple[int, int] | None, ...]
    # Iterations per second when stage times are per iteration; 1.0 when they are per second of load.
    iterations_per_second: float


class PipelineReconfiguration(Controller):
    """Re-partitions serving pipelines when devices shrink, join or leave, or the load shifts."""

    name = "pipeline"
    description = (
        "Model-based pipeline re-partitioning for PipeLive: balances per-stage time (layer cost x device"
        " speed) under each device's memory (weights + KV in use), and proposes ReconfigurePipeline when a"
        " device's budget shrinks, a device joins or leaves, or the prefill/decode mix shifts; with"
        " hysteresis."
    )
    # A performance model (stage time per iteration from token and iteration rates, layer costs and device
    # speeds) predicts each layout's bottleneck, an exact solver picks the layout; it reads metrics and the
    # inventory, and its evidence so far is the simulator's pipeline-devices and pipeline-phases scenarios.
    taxonomy = Taxonomy.of(
        ControlLocus.CENTRALIZED,
        Strategy.MODEL_BASED,
        dynamics=[Dynamics.RESOURCE_AVAILABILITY, Dynamics.WORKLOAD],
        evidence=["simulation"],
        objectives=[Objective.LATENCY_SLO, Objective.THROUGHPUT],
        telemetry=[Telemetry.METRICS],
        actions=[ActionKind.RECONFIGURATION],
    )
    period_seconds = 5.0
    time_budget_seconds = 2.0

    @dataclass(frozen=True)
    class Parameters:
        """Settings from `[controllers.pipeline.params]`."""

        # How the substrate should carry the change out: "live" (PipeLive), or a baseline to compare with.
        method: str = "live"
        # Seconds one token takes through one layer on a device of speed 1.0, for prefill and for decode.
        prefill_seconds_per_token_layer: float = 2.0e-5
        decode_seconds_per_token_layer: float = 1.0e-4
        # Seconds one engine iteration costs each layer whatever its tokens (reading the weights), at
        # decode speed 1.0; counted per iteration (`vllm:iteration_tokens_total_count`) when reported.
        layer_overhead_seconds: float = 1.0e-3
        # Weight of the newest token-rate sample in the moving average.
        rate_smoothing: float = 0.5
        # Room kept on every stage for KV growth, as a share of the KV blocks needed now.
        kv_headroom: float = 0.25
        # The KV plan covers the peak demand of this many recent rounds, not one round's dip.
        kv_peak_rounds: int = 6
        # A change for speed alone (not memory, not a lost device) must hold the KV peak of this many rounds.
        rebalance_peak_rounds: int = 24
        # KV cache usage (vllm:gpu_cache_usage_perc) from which waiting requests count as KV demand.
        kv_full_fraction: float = 0.9
        # Every stage keeps room for the KV of at least this many tokens (in blocks of the engine's size).
        min_kv_tokens: int = 1024
        # Relative bottleneck reduction a rebalancing must bring.
        min_improvement: float = 0.15
        # Below this busy share of the bottleneck stage (and with nothing waiting) rebalancing is not worth
        # a change.
        min_utilization: float = 0.3
        # Rounds in a row the same layout must come out before it is proposed (not for a lost device).
        confirm_ticks: int = 2
        # When the mean time to first token of the last round is above this, the symptom is already there:
        # one round confirms a layout (0: off).
        ttft_slo_seconds: float = 0.0
        # A layout proposed once is not proposed again within this many seconds unless it was applied.
        retry_seconds: float = 60.0
        # The prompt share of tokens must move this much from the layout's to count as a "load_shift".
        mix_shift: float = 0.2

        def __post_init__(self) -> None:
            if self.method not in RECONFIGURE_METHODS:
                raise ValueError(f"pipeline: method must be one of {sorted(RECONFIGURE_METHODS)}")
            for name in ("prefill_seconds_per_token_layer", "decode_seconds_per_token_layer"):
                if getattr(self, name) <= 0:
                    raise ValueError(f"pipeline: {name} must be > 0")
            if self.layer_overhead_seconds < 0:
                raise ValueError("pipeline: layer_overhead_seconds must be >= 0")
            if not 0 < self.rate_smoothing <= 1:
                raise ValueError("pipeline: rate_smoothing must be in (0, 1]")
            if self.confirm_ticks < 1:
                raise ValueError("pipeline: confirm_ticks must be >= 1")
            if self.kv_peak_rounds < 1 or self.rebalance_peak_rounds < 1:
                raise ValueError("pipeline: kv_peak_rounds and rebalance_peak_rounds must be >= 1")

    def __init__(self, params: object | None = None) -> None:
        super().__init__(params)
        self._memory: dict[str, _PipelineMemory] = {}

    async def decide(self, view: TelemetryView) -> list[Action]:
        proposals: list[Action] = []
        for name in sorted(view.inventory.pipelines):
            pipeline = view.inventory.pipelines[name]
            if not pipeline.pool or not pipeline.layer_weight_bytes:
                continue  # an actuator that reports no detail: nothing to model
            memory = self._memory.setdefault(name, _PipelineMemory())
            action = self._decide_one(pipeline, memory, view.now)
            if action is not None:
                proposals.append(action)
        return proposals

    # --- one pipeline -------------------------------------------------------------------------------------

    def _decide_one(self, pipeline: PipelineInventory, memory: _PipelineMemory, now: float) -> Action | None:
        p = self.params
        metrics = pipeline.metrics
        means = self._observe(pipeline, memory, now)
        prompt_rate = memory.prompt_rate or 0.0
        generation_rate = memory.generation_rate or 0.0
        mix = prompt_rate / (prompt_rate + generation_rate) if prompt_rate + generation_rate > 0 else None

        current_layout = (tuple(pipeline.layers_per_stage), tuple(pipeline.devices))
        if len(current_layout[1]) != len(current_layout[0]):
            return None  # stages without devices: nothing to model
        pool = frozenset(name for name, device in pipeline.pool.items() if device.ready)
        if memory.layout != current_layout:
            memory.layout, memory.layout_mix = current_layout, mix
            memory.joined = set()
        elif memory.layout_mix is None:
            memory.layout_mix = mix
        if memory.last_pool is not None:
            memory.joined |= pool - memory.last_pool
        memory.last_pool = pool

        waiting = float(metrics.get(WAITING, 0.0))
        running = float(metrics.get(RUNNING, 0.0))
        lost = [device for device in pipeline.devices if device not in pool]
        iteration_rate = memory.iteration_rate or 0.0
        live = p.method != "stop_and_redeploy"
        # Requests waiting while the KV cache is full wait for memory: they will need about what running
        # ones hold (at most as many again as are running). Waiting for other reasons (the engine paused,
        # a burst being admitted) says nothing about memory.
        used = pipeline.kv_blocks_used
        per_request = used / running if running > 0 else 0.0
        full = float(metrics.get(CACHE_USAGE, 0.0)) >= p.kv_full_fraction
        kept = max(p.kv_peak_rounds, p.rebalance_peak_rounds)
        if memory.kv_demand.maxlen != kept:
            memory.kv_demand = deque(memory.kv_demand, maxlen=kept)
        memory.kv_demand.append(used + (min(waiting, running) * per_request if full else 0.0))
        recent = list(memory.kv_demand)

        def plan(peak: bool, transition: bool) -> tuple[_Model, Partition | None]:
            demand = max(recent[-p.kv_peak_rounds :]) if peak else float(used)
            model = self._model(pipeline, prompt_rate, generation_rate, iteration_rate, demand)
            budgets = [device.budget_bytes for device in model.devices]
            if not transition:
                # Stopping frees everything: only the new layout has to fit.
                return model, solve_partition(model.layer_seconds, model.layer_bytes, budgets)
            return model, solve_partition(
                model.layer_seconds,
                model.layer_bytes,
                budgets,
                current=model.current,
                transition_bytes=model.transition_bytes,
            )

        method = p.method
        model, candidate = plan(peak=True, transition=live)
        if candidate is None:
            # The demand does not fit anywhere; plan for the KV in use only, which does fit somewhere now.
            model, candidate = plan(peak=False, transition=live)
        if candidate is None and live and lost:
            # A stage is gone, so the pipeline cannot serve anyway: if no live change is admissible,
            # redeploying costs no availability it still has.
            model, candidate = plan(peak=False, transition=False)
            method = "stop_and_redeploy"
        if candidate is None:
            memory.pending, memory.pending_rounds = None, 0
            return None
        target = (
            candidate.layers_per_stage,
            tuple(model.devices[index].name for index in candidate.devices),
        )
        if target == current_layout:
            memory.pending, memory.pending_rounds = None, 0
            return None

        budgets = [device.budget_bytes for device in model.devices]
        index_of = {device.name: index for index, device in enumerate(model.devices)}
        current: Partition | None = None
        overflowing: list[int] = []
        if not lost:
            current, overflowing = evaluate_partition(
                model.layer_seconds,
                model.layer_bytes,
                budgets,
                [(index_of[device], count) for device, count in zip(*current_layout[::-1], strict=True)],
            )
        improvement = (
            (current.bottleneck - candidate.bottleneck) / current.bottleneck
            if current is not None and current.bottleneck > 0
            else 0.0
        )
        busy = current.bottleneck * model.iterations_per_second if current is not None else 0.0
        if lost:
            trigger = "device_left"
            why = f"device(s) {', '.join(lost)} of the pipeline left or are not ready"
        elif overflowing:
            trigger = "memory"
            why = "; ".join(self._overflow_why(pipeline, model, current, index) for index in overflowing)
        else:
            if improvement < p.min_improvement or (busy < p.min_utilization and waiting <= 0):
                memory.pending, memory.pending_rounds = None, 0
                return None
            # Anti-flap: a device gaining layers for speed alone must hold them at the KV peak of a longer
            # past, or layers would move back onto a device just relieved, and out again at the next peak.
            long_peak = max(
                min_kv_blocks(pipeline, p.min_kv_tokens), math.ceil(max(recent) * (1.0 + p.kv_headroom))
            )
            per_layer = pipeline.layer_weight_bytes + long_peak * pipeline.kv_block_bytes_per_layer
            held_now = dict(zip(current_layout[1], current_layout[0], strict=True))
            if any(
                stage.layers > held_now.get(model.devices[stage.device].name, 0)
                and stage.layers * per_layer > budgets[stage.device]
                for stage in candidate.stages
            ):
                memory.pending, memory.pending_rounds = None, 0
                return None
            new_devices = sorted(set(target[1]) - set(current_layout[1]))
            if set(new_devices) & memory.joined:
                trigger = "device_joined"
                why = f"device(s) {', '.join(new_devices)} joined and can take layers"
            elif new_devices:
                trigger = "spare_device"
                why = f"spare device(s) {', '.join(new_devices)} can take layers"
            elif (
                mix is not None
                and memory.layout_mix is not None
                and abs(mix - memory.layout_mix) >= p.mix_shift
            ):
                trigger = "load_shift"
                why = (
                    f"the load shifted from {memory.layout_mix:.0%} to {mix:.0%} prompt tokens "
                    f"({'prefill' if mix > memory.layout_mix else 'decode'}-heavier)"
                )
            else:
                trigger = "imbalance"
                why = "the stages are unbalanced for the devices' speeds"

        # Hysteresis: the same answer several rounds in a row, and no repeat of a recent proposal.
        if memory.pending == target:
            memory.pending_rounds += 1
        else:
            memory.pending, memory.pending_rounds = target, 1
        ttft = means.get("ttft_mean_s")
        urgent = trigger == "device_left" or (
            p.ttft_slo_seconds > 0 and ttft is not None and ttft > p.ttft_slo_seconds
        )
        if not urgent and memory.pending_rounds < p.confirm_ticks:
            return None
        if memory.proposed == target and now - memory.proposed_at < p.retry_seconds:
            return None
        memory.proposed, memory.proposed_at = target, now

        evidence: dict[str, float | int | str | bool] = {
            "trigger": trigger,
            "bottleneck_stage_seconds_now": round(current.bottleneck, 6) if current is not None else -1.0,
            "bottleneck_stage_seconds_new": round(candidate.bottleneck, 6),
            "per_iteration": iteration_rate > 0,
            "busy_fraction": round(busy, 4),
            "improvement": round(improvement, 4),
            "prompt_tokens_per_s": round(prompt_rate, 2),
            "generation_tokens_per_s": round(generation_rate, 2),
            "kv_blocks_planned": model.kv_blocks,
            "kv_blocks_used": pipeline.kv_blocks_used,
            "requests_waiting": waiting,
            "requests_running": running,
            "confirmed_rounds": memory.pending_rounds,
            "urgent": urgent,
        }
        if mix is not None:
            evidence["prompt_token_share"] = round(mix, 4)
        if CACHE_USAGE in metrics:
            evidence["gpu_cache_usage_perc"] = round(float(metrics[CACHE_USAGE]), 4)
        evidence.update({key: round(value, 4) for key, value in means.items()})
        layout = ", ".join(f"{count}@{device}" for count, device in zip(*target, strict=True))
        before = ", ".join(f"{count}@{device}" for count, device in zip(*current_layout, strict=True))
        unit = "s per iteration" if iteration_rate > 0 else "s per s of load"
        timing = (
            f"bottleneck stage {current.bottleneck:.4g} -> {candidate.bottleneck:.4g} {unit}"
            if current is not None
            else f"bottleneck stage {candidate.bottleneck:.4g} {unit}"
        )
        return ReconfigurePipeline(
            target=pipeline.name,
            layers_per_stage=target[0],
            devices=target[1],
            method="" if method == "live" else method,
            reason=f"{trigger}: {why}; layers {before} -> {layout}; {timing}",
            evidence=evidence,
        )

    def _observe(self, pipeline: PipelineInventory, memory: _PipelineMemory, now: float) -> dict[str, float]:
        """Update the smoothed token rates from the counters; return TTFT/TPOT means since the last round."""
        metrics = pipeline.metrics
        alpha = self.params.rate_smoothing
        means: dict[str, float] = {}
        previous, elapsed = memory.counters, (now - memory.last_seen) if memory.last_seen is not None else 0.0
        if elapsed > 0:
            for key, attribute in (
                (PROMPT_TOKENS, "prompt_rate"),
                (GENERATION_TOKENS, "generation_rate"),
                (ITERATIONS, "iteration_rate"),
            ):
                if key in metrics and key in previous:
                    # A counter that went down was reset (a restart): count from zero.
                    delta = metrics[key] - previous[key] if metrics[key] >= previous[key] else metrics[key]
                    rate = delta / elapsed
                    old = getattr(memory, attribute)
                    setattr(memory, attribute, rate if old is None else alpha * rate + (1 - alpha) * old)
            for histogram, label in ((TTFT, "ttft_mean_s"), (TPOT, "tpot_mean_s")):
                total, count = f"{histogram}_sum", f"{histogram}_count"
                if total in metrics and count in metrics and total in previous and count in previous:
                    observations = metrics[count] - previous[count]
                    if observations > 0:
                        means[label] = (metrics[total] - previous[total]) / observations
        memory.counters = {key: float(value) for key, value in metrics.items()}
        memory.last_seen = now
        return means

    def _model(
        self,
        pipeline: PipelineInventory,
        prompt_rate: float,
        generation_rate: float,
        iteration_rate: float,
        kv_demand: float,
    ) -> _Model:
        p = self.params
        ready = {name: device for name, device in pipeline.pool.items() if device.ready}
        order = [name for name in pipeline.devices if name in ready]
        order += sorted(name for name in ready if name not in order)
        devices = tuple(ready[name] for name in order)
        if iteration_rate > 0:
            # Per iteration: its prompt and decode tokens, and the fixed cost of running each layer once.
            per_iteration = True
            prompt, decode, overhead = prompt_rate / iteration_rate, generation_rate / iteration_rate, 1.0
        else:
            # No iteration count reported: per second of load, without the fixed per-iteration cost.
            per_iteration = False
            prompt, decode, overhead = prompt_rate, generation_rate, 0.0
            if prompt + decode <= 0:
                # No load measured yet: the layout's shape still follows the speeds, with equal token shares.
                prompt = decode = 1.0
        layers = pipeline.num_layers
        layer_seconds = tuple(
            (
                prompt * p.prefill_seconds_per_token_layer / device.prefill_speed
                + (decode * p.decode_seconds_per_token_layer + overhead * p.layer_overhead_seconds)
                / device.decode_speed,
            )
            * layers
            for device in devices
        )
        used = pipeline.kv_blocks_used
        kv_blocks = max(
            min_kv_blocks(pipeline, p.min_kv_tokens), math.ceil(kv_demand * (1.0 + p.kv_headroom))
        )
        per_layer = pipeline.layer_weight_bytes + kv_blocks * pipeline.kv_block_bytes_per_layer
        # While layers move, a device holds its old and new layers with the KV in use (PipeLive's admission).
        moving = pipeline.layer_weight_bytes + used * pipeline.kv_block_bytes_per_layer
        held: dict[str, tuple[int, int]] = {}
        first = 0
        for device, count in zip(pipeline.devices, pipeline.layers_per_stage, strict=False):
            held[device] = (first, first + count)
            first += count
        return _Model(
            devices=devices,
            layer_seconds=layer_seconds,
            layer_bytes=(per_layer,) * layers,
            kv_blocks=kv_blocks,
            transition_bytes=(moving,) * layers,
            current=tuple(held.get(device.name) for device in devices),
            iterations_per_second=iteration_rate if per_iteration else 1.0,
        )

    @staticmethod
    def _overflow_why(
        pipeline: PipelineInventory, model: _Model, current: Partition | None, index: int
    ) -> str:
        stage = current.stages[index] if current is not None else None
        if stage is None:
            return "a stage does not fit"
        device = model.devices[stage.device]
        weights = stage.layers * pipeline.layer_weight_bytes
        return (
            f"stage {index} on {device.name} needs {stage.bytes / GIB:.2f} GiB "
            f"(weights {weights / GIB:.2f} + "
            f"KV for {model.kv_blocks} blocks {(stage.bytes - weights) / GIB:.2f}) of its "
            f"{device.budget_bytes / GIB:.2f} GiB budget"
        )


def min_kv_blocks(pipeline: PipelineInventory, tokens: int) -> int:
    """KV blocks that hold `tokens` tokens in this engine's blocks: the block size is the engine's knob."""
    return -(-tokens // (pipeline.block_size or DEFAULT_BLOCK_SIZE))
