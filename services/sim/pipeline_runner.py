"""One simulated run of a serving-pipeline scenario through the real control loop, and its actuator.

The scenario's `[pipeline]` table becomes a `PipelineSim`. Each simulated second: due events are injected
(budget changes, devices joining or leaving, load and mix changes), the second's arrivals are scheduled, the
pipeline runs to the end of the second, and every `tick_seconds` the real `ControlLoop` ticks: the
`PipelineSimActuator` reports the pipeline (stages, device pool, KV in use, vLLM-named metrics) as the
inventory's `PipelineInventory`, controllers decide on that view, the coordinator plans, and the actuator
carries `ReconfigurePipeline` out on the simulated engine with the method the action names.

The score is the one every scenario gets (`services.sim.results.score`), with the time to first token as
the request latency (so `slo_violation_fraction` is over seconds whose TTFT p99 broke the SLO, a dropped
request counting as infinitely slow), plus what only a pipeline has: TPOT p50/p99, dropped and preempted
requests, reconfigurations and seconds of unavailability.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from controlplane.actions import Action, ReconfigurePipeline
from controlplane.actuator import Actuator, Outcome
from controlplane.registry import ControllerRegistry
from controlplane.store import DecisionStore
from controlplane.view import DeviceInventory, Inventory, PipelineInventory, StageInventory
from services.sim.pipeline import GIB, DeviceSpec, PipelineRecorder, PipelineSim
from services.sim.results import RunScore, score
from services.sim.scenario import Event, Scenario
from services.sim.timeline import EventTimeline, Undo, simulated_control_loop
from telemetry import ModelConfig, TelemetryModel

# Where the simulated clock starts, as the microservice simulator's.
BASE_UNIX = 1_700_000_000.0


class PipelineSimActuator(Actuator):
    """Reports a `PipelineSim` as the inventory's pipeline and carries `ReconfigurePipeline` out on it."""

    name = "simulated-pipeline"

    def __init__(self, sim: PipelineSim) -> None:
        self.sim = sim
        self.applied = 0

    async def inventory(self) -> Inventory:
        return Inventory(pipelines={self.sim.spec.name: pipeline_inventory(self.sim)})

    async def apply(self, action: Action) -> Outcome:
        sim = self.sim
        if not isinstance(action, ReconfigurePipeline):
            return Outcome(
                False, f"the pipeline simulation carries out only reconfigure_pipeline, not {action.name}"
            )
        if action.target != sim.spec.name:
            return Outcome(
                False, f"no serving pipeline named {action.target!r} (this one is {sim.spec.name!r})"
            )
        ok, detail = sim.reconfigure(action.layers_per_stage, action.devices, action.method)
        self.applied += ok
        return Outcome(ok, detail)


def pipeline_inventory(sim: PipelineSim) -> PipelineInventory:
    """What a PipeLive actuator would report: `Status` (stages, memory, KV) and the `/metrics` scrape."""
    spec = sim.spec
    stages, first = [], 0
    for index, (device, layers) in enumerate(sim.stages):
        known = sim.devices[device]
        capacity = max(0, sim.stage_capacity(device, layers))
        stages.append(
            StageInventory(
                index=index,
                first_layer=first,
                end_layer=first + layers,
                device=device,
                budget_bytes=known.budget_bytes,
                weight_bytes=layers * spec.layer_weight_bytes,
                kv_bytes=capacity * layers * spec.kv_block_bytes_per_layer,
                kv_blocks_used=sim.used_blocks,
                kv_blocks_capacity=capacity,
            )
        )
        first += layers
    pool = {
        name: DeviceInventory(name, d.budget_bytes, d.prefill_speed, d.decode_speed, ready=d.ready)
        for name, d in sim.devices.items()
    }
    return PipelineInventory(
        name=spec.name,
        layers_per_stage=tuple(layers for _, layers in sim.stages),
        devices=tuple(device for device, _ in sim.stages),
        address=f"sim://{spec.name}",
        stages=tuple(stages),
        pool=pool,
        layer_weight_bytes=spec.layer_weight_bytes,
        kv_block_bytes_per_layer=spec.kv_block_bytes_per_layer,
        kv_blocks_used=sim.used_blocks,
        metrics=sim.metrics(),
    )


def apply_pipeline_event(sim: PipelineSim, event: Event) -> Undo | None:
    """Inject a pipeline scenario's event now; returns its undo (for events with a duration) or None."""
    parameters = event.parameters
    if event.kind == "load":
        factor = float(parameters["factor"])
        sim.rate_factor *= factor

        def undo_load() -> None:
            sim.rate_factor /= factor

        return undo_load
    if event.kind == "mix":
        previous = sim.mix_weights
        sim.set_mix(dict(parameters["weights"]))
        return lambda: sim.set_mix(previous)
    if event.kind == "device_budget":
        device = str(parameters["device"])
        before = sim.device(device).budget_bytes
        sim.set_budget(device, int(float(parameters["budget_gib"]) * GIB))
        return lambda: sim.set_budget(device, before)
    if event.kind == "device_join":
        name = str(parameters["device"])
        sim.add_device(
            DeviceSpec(
                name,
                int(float(parameters["budget_gib"]) * GIB),
                float(parameters.get("prefill_speed", 1.0)),
                float(parameters.get("decode_speed", 1.0)),
            )
        )
        return lambda: sim.remove_device(name)
    if event.kind == "device_leave":
        name = str(parameters["device"])
        sim.remove_device(name)

        def undo_leave() -> None:
            sim.device(name).ready = True

        return undo_leave
    raise ValueError(f"a pipeline scenario cannot inject a {event.kind} event")


async def run_pipeline_scenario(
    scenario: Scenario,
    controllers: Mapping[str, Mapping[str, Any]],
    seed: int,
    label: str,
    decision_store: str | Path = ":memory:",
    registry: ControllerRegistry | None = None,
    on_second: Callable[[int], None] | None = None,
) -> tuple[RunScore, PipelineRecorder, int, dict[str, Any]]:
    """Run a pipeline scenario; returns (score, recorder, requests started, the pipeline's own figures)."""
    spec = scenario.pipeline
    if spec is None:
        raise ValueError(f"scenario {scenario.name} has no [pipeline] table")
    recorder = PipelineRecorder(scenario.duration_seconds)
    sim = PipelineSim(spec, seed, recorder)
    if scenario.workload.mix:
        sim.set_mix(dict(scenario.workload.mix))

    def clock() -> float:
        return BASE_UNIX + sim.now

    model = TelemetryModel(ModelConfig(window_seconds=15.0), clock=clock)
    actuator = PipelineSimActuator(sim)
    store = DecisionStore(str(decision_store))
    loop = simulated_control_loop(model, controllers, registry, actuator, store, scenario.tick_seconds, clock)
    rates = scenario.rate_curve()
    timeline = EventTimeline(scenario.events, lambda event: apply_pipeline_event(sim, event))
    tick_every = max(1, round(scenario.tick_seconds))
    try:
        for second in range(len(rates)):
            timeline.advance(second)
            applied_before = actuator.applied
            sim.schedule_arrivals(float(second), rates[second])
            sim.run_until(second + 1.0)
            if (second + 1) % tick_every == 0:
                await loop.tick()
            recorder.record_second(
                second, len(sim.stages), sim.stages_serving(), actuator.applied - applied_before
            )
            if on_second is not None:
                on_second(second)
    finally:
        await loop.stop()
        store.close()
    slo = scenario.slo_p99_ms or 1000.0
    result = score(
        recorder,
        scenario=scenario.name,
        controllers=label,
        seed=seed,
        slo_p99_ms=slo,
        event_times=[event.at for event in scenario.events if event.kind != "device_join"],
        warmup_seconds=scenario.warmup_seconds,
        actions=actuator.applied,
    )
    scored = [(at, tpot) for at, tpot in recorder.tpot_ms if at >= scenario.warmup_seconds]
    tpots = sorted(tpot for _, tpot in scored)
    extra = {
        "ttft_slo_ms": slo,
        "tpot_p50_ms": round(_quantile(tpots, 0.5), 3) if tpots else None,
        "tpot_p99_ms": round(_quantile(tpots, 0.99), 3) if tpots else None,
        "dropped": recorder.dropped,
        "preempted": recorder.preempted,
        "finished": len(recorder.tpot_ms),
        "reconfigurations": len(recorder.reconfigurations),
        "unavailable_s": round(recorder.unavailable_seconds, 3),
        "final_layout": [f"{layers}@{device}" for device, layers in sim.stages],
    }
    return result, recorder, sim.requests_started, extra


def _quantile(ordered: list[float], quantile: float) -> float:
    return ordered[max(0, math.ceil(quantile * len(ordered)) - 1)]
