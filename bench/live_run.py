"""`run_live`: one scenario, one controller set, played by real processes under a real control plane.

The run, in order:

1. the router and every service's initial replicas start as processes (`LocalProcessActuator`), and the
   run waits until each answers its health check;
2. a `ControlPlaneServer` starts on 127.0.0.1 with the given controllers (an empty mapping is static
   provisioning) and that actuator; the replicas' OpenTelemetry SDKs export to its OTLP/gRPC port and its
   control loop ticks on its own, applying decisions through the actuator and storing them;
3. the load generator replays the scenario's rate curve times `scale`, second by second, while the
   scenario's events are injected at their times (`services.live.events` says which are reproduced);
4. every answer's latency and outcome and every second's replicas, ready replicas and applied decisions
   go into a `RunRecorder`, scored by `services.demo.results.score` exactly as the simulator's runs are.

`time_scale` (default `1 / scale`) multiplies every service time: at a twentieth of the rate, service
times twenty times longer keep every replica exactly as busy (utilization is rate x time / workers) while
the CPU the processes spend per second falls twentyfold. Latencies are recorded divided by `time_scale`,
in the application's time, so the SLO and the simulator's figures compare directly.

Everything is stopped in `finally` blocks: an error or a KeyboardInterrupt leaves no process behind.

`controlplane bench --live` is the way to compare runs; for trying one and measuring its cost:

    python -m bench.live_run --scenario demo-short --seconds 60 --controllers hpa [--scale 0.05]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import logging
import math
import random
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from pathlib import Path
from typing import Any

from controlplane import free_port
from controlplane.serve.config import Config
from controlplane.serve.server import ControlPlaneServer
from services.demo.app import AppSpec, load_app
from services.demo.results import RunRecorder, RunScore, score
from services.demo.scenario import Event, Scenario, load_scenario
from services.live.actuator import LocalProcessActuator
from services.live.costs import LiveCosts, cpu_of, memory_of
from services.live.events import Applied, apply_event
from services.live.loadgen import LoadGenerator

log = logging.getLogger(__name__)

# Seconds the run waits after the last arrival for the answers still on their way.
DRAIN_SECONDS = 5.0


def controllers_label(controllers: Mapping[str, Mapping[str, Any]]) -> str:
    """The controller set's name in results: its controllers joined by '+', or 'static' for none."""
    return "+".join(sorted(controllers)) or "static"


async def run_live(
    scenario: Scenario,
    controllers: Mapping[str, Mapping[str, Any]],
    seed: int,
    *,
    scale: float = 0.05,
    duration_seconds: float | None = None,
    label: str = "",
    time_scale: float | None = None,
    workdir: str | Path | None = None,
    spec_startup: bool = True,
    on_costs: Callable[[LiveCosts], None] | None = None,
) -> tuple[RunScore, RunRecorder]:
    """Run `scenario` live with `controllers` (e.g. `{"hpa": {"mode": "active"}}`; `{}`: static).

    `scale` multiplies the request rate, `time_scale` (default `1 / scale`) the service times;
    `duration_seconds` cuts the scenario short (events after it do not happen). Logs of every process
    and the decision store go to `workdir` (a temporary directory, removed afterwards, by default).
    With `spec_startup`, a replica started during the run is held unready for the spec's
    `startup_seconds` if its process comes up sooner (as in the simulator); without, it is ready as soon
    as its process answers. `on_costs` receives what the run cost (processes, memory, CPU, process
    start-up times).
    """
    if scale <= 0:
        raise ValueError(f"scale must be > 0, got {scale}")
    time_scale = time_scale if time_scale is not None else 1.0 / scale
    duration = float(duration_seconds if duration_seconds is not None else scenario.duration_seconds)
    app = load_app(scenario.app)
    recorder = RunRecorder(duration)
    with contextlib.ExitStack() as stack:
        if workdir is None:
            workdir = stack.enter_context(tempfile.TemporaryDirectory(prefix="controlplane-live-"))
        workdir = Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        otlp = f"127.0.0.1:{free_port()}"
        actuator = LocalProcessActuator(
            scenario.app, otlp, seed=seed, time_scale=time_scale, workdir=workdir, spec_startup=spec_startup
        )
        config = Config(controllers={name: dict(table) for name, table in controllers.items()})
        config = config.with_server(
            otlp_grpc=otlp,
            otlp_http="127.0.0.1:0",
            api=otlp,
            decision_store=str(workdir / "decisions.db"),
            tick_seconds=scenario.tick_seconds,
        )
        server = ControlPlaneServer(config, actuator=actuator)
        started = time.monotonic()
        cpu_before = time.process_time(), _reaped_children_cpu()
        event_times: list[float] = []
        try:
            await actuator.start()
            await actuator.start_replicas()
            await server.start()  # after the replicas: the first tick sees the application as it starts
            event_times = await _play(scenario, actuator, recorder, app, seed, scale, time_scale, duration)
            if on_costs is not None:
                on_costs(_costs(actuator, started, cpu_before))
        finally:
            try:
                await server.stop(0)
            finally:
                await actuator.stop()
    result = score(
        recorder,
        scenario=scenario.name,
        controllers=label or controllers_label(controllers),
        seed=seed,
        slo_p99_ms=scenario.slo_p99_ms or app.slo_p99_ms,
        event_times=event_times,
        warmup_seconds=scenario.warmup_seconds,
        actions=actuator.applied_actions,
    )
    return result, recorder


async def _play(
    scenario: Scenario,
    actuator: LocalProcessActuator,
    recorder: RunRecorder,
    app: AppSpec,
    seed: int,
    scale: float,
    time_scale: float,
    duration: float,
) -> list[float]:
    """Replay the load and the events; returns the times of the events reproduced live."""
    curve = scenario.rate_curve() or [scenario.workload.mean_rps]
    nodes = [node.name for node in scenario.cluster.nodes]
    events = [event for event in scenario.events if event.at < duration]
    reproduced: list[float] = []
    background: set[asyncio.Task] = set()
    undo_at: list[tuple[float, Applied]] = []

    async def inject(event: Event) -> None:
        try:
            applied = await apply_event(event, actuator, load, nodes)
        except Exception:  # a broken event is logged; the run and the other events go on
            log.exception("event %s at %g s failed", event.kind, event.at)
            return
        log.info("t=%gs %s: %s", event.at, event.kind, applied.detail)
        if applied.reproduced:
            reproduced.append(event.at)
        if applied.undo is not None and applied.undo_after_seconds is not None:
            undo_at.append((event.at + applied.undo_after_seconds, applied))

    def in_background(coroutine: Coroutine[Any, Any, object]) -> None:
        # Events run beside the load: a crash waiting for its processes to die must not delay arrivals.
        task = asyncio.create_task(coroutine)
        background.add(task)
        task.add_done_callback(background.discard)

    rng = random.Random(seed)
    async with LoadGenerator(app, actuator.router_address, recorder, rng, time_scale) as load:
        if scenario.workload.mix:
            load.set_mix(scenario.workload.mix)
        load.started_at = time.monotonic()
        for second in range(math.ceil(duration)):
            for event in events:
                if second <= event.at < second + 1:
                    in_background(inject(event))
            for due in [item for item in undo_at if item[0] < second + 1]:
                undo_at.remove(due)
                assert due[1].undo is not None
                in_background(due[1].undo())
            before = actuator.applied_actions
            await load.run_second(second, curve[second % len(curve)] * scale)
            replicas, ready = actuator.counts()
            recorder.record_second(second, replicas, ready, actuator.applied_actions - before)
        unanswered = await load.drain(DRAIN_SECONDS)
        if unanswered:
            log.warning("%d requests were still unanswered %g s after the run", unanswered, DRAIN_SECONDS)
        if background:
            await asyncio.wait(set(background), timeout=DRAIN_SECONDS)
    return sorted(reproduced)


def _reaped_children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _costs(actuator: LocalProcessActuator, started: float, cpu_before: tuple[float, float]) -> LiveCosts:
    pids = actuator.pids()
    replicas = max(1, len(pids) - 1)  # the router is one of them
    memory = memory_of(pids)
    startups = actuator.process_start_seconds
    return LiveCosts(
        processes=len(pids),
        rss_mb_total=round(memory, 1),
        rss_mb_per_replica=round(memory / replicas, 1) if pids else 0.0,
        cpu_seconds_children=round(cpu_of(pids) + _reaped_children_cpu() - cpu_before[1], 2),
        cpu_seconds_runner=round(time.process_time() - cpu_before[0], 2),
        wall_seconds=round(time.monotonic() - started, 2),
        process_start_seconds_median=round(statistics.median(startups), 3) if startups else None,
        process_start_seconds_max=round(max(startups), 3) if startups else None,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.live_run", description="one live run: its score and its cost as JSON"
    )
    parser.add_argument("--scenario", default="demo-short", help="bundled scenario name or a TOML file")
    parser.add_argument("--controllers", nargs="*", default=[], help="controller names (none: static)")
    parser.add_argument("--seconds", type=float, default=None, help="cut the scenario short")
    parser.add_argument("--scale", type=float, default=0.05, help="request-rate factor")
    parser.add_argument("--time-scale", type=float, default=None, help="service-time factor (1/scale)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workdir", default=None, help="keep process logs and decisions here")
    parser.add_argument("-v", "--verbose", action="store_true")
    arguments = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if arguments.verbose else logging.WARNING)
    costs: list[LiveCosts] = []
    result, recorder = asyncio.run(
        run_live(
            load_scenario(arguments.scenario),
            {name: {"mode": "active"} for name in arguments.controllers},
            arguments.seed,
            scale=arguments.scale,
            duration_seconds=arguments.seconds,
            time_scale=arguments.time_scale,
            workdir=arguments.workdir,
            on_costs=costs.append,
        )
    )
    report = {"score": result.as_dict(), "costs": dataclasses.asdict(costs[0]) if costs else None}
    if costs:
        report["costs"]["cpu_cores_used"] = round(costs[0].cpu_cores_used, 3)
    report["replicas_per_second"] = [second.replicas for second in recorder.seconds]
    json.dump(report, sys.stdout, indent=2, default=str)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
