"""One simulated run of a serving-pipeline scenario through the real control loop.

The scenario's `[pipeline]` table becomes a `PipelineSim`. Each simulated second: due events are injected
(budget changes, devices joining or leaving, load and mix changes), the second's arrivals are scheduled, the
pipeline runs to the end of the second, and every `tick_seconds` the real `ControlLoop` ticks: the
`PipelineSimActuator` reports the pipeline (stages, device pool, KV in use, vLLM-named metrics) as the
inventory's `PipelineInventory`, controllers decide on that view, the coordinator plans, and the actuator
carries `ReconfigurePipeline` out on the simulated engine with the method the action names.

The score is the one every scenario gets (`services.demo.results.score`), with the time to first token as
the request latency (so `slo_violation_fraction` is over seconds whose TTFT p99 broke the SLO, a dropped
request counting as infinitely slow), plus what only a pipeline has: TPOT p50/p99, dropped and preempted
requests, reconfigurations and seconds of unavailability.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from bench.percentiles import percentile
from bench.timeline import EventTimeline, simulated_control_loop
from controlplane import ControllerRegistry
from controlplane.engine.store import DecisionStore
from services.demo.results import RunScore, score
from services.demo.scenario import Scenario
from services.sim.events import apply_pipeline_event
from services.sim.pipeline import PipelineRecorder, PipelineSim
from services.sim.pipeline_actuator import PipelineSimActuator
from telemetry import ModelConfig, TelemetryModel

# Where the simulated clock starts, as the microservice simulator's.
BASE_UNIX = 1_700_000_000.0


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
        "tpot_p50_ms": round(percentile(tpots, 0.5), 3) if tpots else None,
        "tpot_p99_ms": round(percentile(tpots, 0.99), 3) if tpots else None,
        "dropped": recorder.dropped,
        "preempted": recorder.preempted,
        "finished": len(recorder.tpot_ms),
        "reconfigurations": len(recorder.reconfigurations),
        "unavailable_s": round(recorder.unavailable_seconds, 3),
        "final_layout": [f"{layers}@{device}" for device, layers in sim.stages],
    }
    return result, recorder, sim.requests_started, extra
