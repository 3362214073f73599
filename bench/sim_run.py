"""One simulated benchmark run: a scenario, a set of controllers, a seed, through the real control loop.

Each simulated second: due scenario events are injected (and undone when their duration ends), arrivals
for the second are scheduled from the scenario's rate curve, the simulator runs to the end of the second,
the spans it finished go to the model's Ingestor as one decoded OTLP export (what the receivers hand it
for production traffic), and, every `tick_seconds`, the real `ControlLoop` ticks: controllers decide on
the complete-bucket view, the coordinator plans, `SimActuator` applies, and decisions land in a real
SQLite decision store.
The model and the loop read the simulator's clock, so the controllers' periods are simulated seconds.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from bench.timeline import EventTimeline, simulated_control_loop
from controlplane import ControllerRegistry
from controlplane.engine.store import DecisionStore
from services.demo.app import load_app
from services.demo.results import RunRecorder, RunScore, score
from services.demo.scenario import Scenario
from services.sim.actuator import SimActuator
from services.sim.engine import Simulator
from services.sim.events import apply_event
from telemetry import ModelConfig, TelemetryModel
from telemetry.ingest import Ingestor

# The model's window in the simulator: long enough for stable percentiles at a few hundred requests per
# second, short enough that a controller sees a change within seconds (the default 60 s suits production).
SIM_WINDOW_SECONDS = 15.0


@dataclass(frozen=True, slots=True)
class SimRun:
    """A finished run: its score, its seconds, and where its decisions are stored."""

    score: RunScore
    recorder: RunRecorder
    decision_store: str
    simulated_requests: int
    # Figures only some scenarios have (a serving pipeline's TPOT, drops, reconfigurations).
    extra: dict[str, Any] = field(default_factory=dict)


async def run_scenario(
    scenario: Scenario,
    controllers: Mapping[str, Mapping[str, Any]],
    seed: int,
    label: str,
    decision_store: str | Path = ":memory:",
    registry: ControllerRegistry | None = None,
    on_second: Callable[[int], None] | None = None,
    on_export: Callable[[ExportTraceServiceRequest], None] | None = None,
) -> SimRun:
    """Run `scenario` with `controllers` (a `[controllers]` table; empty: static provisioning).

    `on_second` is told each simulated second as it ends; `on_export` sees each second's spans before they
    are ingested (a serving-pipeline scenario exports none).
    """
    if scenario.pipeline is not None:
        from bench.pipeline_run import run_pipeline_scenario

        result, recorder, started, extra = await run_pipeline_scenario(
            scenario, controllers, seed, label, decision_store, registry, on_second
        )
        return SimRun(result, recorder, str(decision_store), started, extra)
    app = load_app(scenario.app)
    recorder = RunRecorder(scenario.duration_seconds)
    sim = Simulator(app, scenario.cluster, seed, recorder, trace_sampling=scenario.trace_sampling)
    if scenario.workload.mix:
        sim.set_mix(dict(scenario.workload.mix))
    base = sim.base_unix

    def clock() -> float:
        return base + sim.now

    model = TelemetryModel(ModelConfig(window_seconds=SIM_WINDOW_SECONDS), clock=clock)
    ingestor = Ingestor(model)
    actuator = SimActuator(sim)
    store = DecisionStore(str(decision_store))
    loop = simulated_control_loop(model, controllers, registry, actuator, store, scenario.tick_seconds, clock)
    rates = scenario.rate_curve()
    timeline = EventTimeline(scenario.events, lambda event: apply_event(sim, event))
    tick_every = max(1, round(scenario.tick_seconds))
    try:
        for second in range(len(rates)):
            timeline.advance(second)
            sim.place_pending()
            applied_before = actuator.applied
            sim.schedule_arrivals(float(second), rates[second])
            sim.run_until(second + 1.0)
            # Spans reach the model just before the second ends, as a 1 s export batch would.
            spans = sim.take_spans()
            if on_export is not None:
                on_export(spans)
            ingestor.ingest_now(spans, now=base + second + 0.999)
            ingestor.expire_now(base + second + 1.0)
            if (second + 1) % tick_every == 0:
                await loop.tick()
            running, ready = sim.replica_counts()
            recorder.record_second(second, running, ready, actuator.applied - applied_before)
            if on_second is not None:
                on_second(second)
    finally:
        await loop.stop()
        store.close()
    slo = scenario.slo_p99_ms or app.slo_p99_ms
    result = score(
        recorder,
        scenario=scenario.name,
        controllers=label,
        seed=seed,
        slo_p99_ms=slo,
        event_times=[event.at for event in scenario.events if event.kind not in ("node_join",)],
        warmup_seconds=scenario.warmup_seconds,
        actions=actuator.applied,
    )
    return SimRun(result, recorder, str(decision_store), sim.requests_started)
