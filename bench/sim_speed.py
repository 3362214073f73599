"""`controlplane bench sim-speed`: how fast the simulator runs, on one core.

A constant-rate scenario of the demo application (23 services) with the `hpa` controller active, for
`--duration` simulated seconds at `--rate` requests per second, in this process (one core). Reports wall
time, simulated requests per wall second and spans per wall second, and the share of the time spent in the
model's ingest path (which every exported span goes through, as production traffic does).

Two runs by default: with the application's tracer keeping 10% of traces (consistent probability sampling,
which the model counts back up; what a service at 1,000 requests/s exports in production), and with every
trace kept. `--trace-sampling P` runs one of them only.
"""

from __future__ import annotations

import asyncio
import time

from bench.sim_run import run_scenario
from controlplane.serve.render import print_figures
from services.demo.scenario import ClusterSpec, NodeSpec, Scenario, Workload
from telemetry.model import TelemetryModel

TARGET_WALL_SECONDS = 60.0
PRODUCTION_SAMPLING = 0.1


def measure(duration: float, rate: float, seed: int, trace_sampling: float = 1.0) -> dict:
    scenario = Scenario(
        name="sim-speed",
        description="constant load",
        dynamics=(),
        duration_seconds=duration,
        workload=Workload(mean_rps=rate),
        cluster=ClusterSpec(nodes=tuple(NodeSpec(f"node-{index}", 32.0, 131072.0) for index in range(4))),
        trace_sampling=trace_sampling,
    )
    ingest_seconds = [0.0]
    spans = [0]
    original = TelemetryModel.ingest

    def timed_ingest(self, request, now=None):  # measures the share of the ingest path, nothing else
        started = time.perf_counter()
        result = original(self, request, now)
        ingest_seconds[0] += time.perf_counter() - started
        spans[0] += result.accepted_spans
        return result

    TelemetryModel.ingest = timed_ingest
    try:
        started, cpu_started = time.perf_counter(), time.process_time()
        run = asyncio.run(run_scenario(scenario, {"hpa": {"mode": "active"}}, seed, "hpa"))
        wall = time.perf_counter() - started
        cpu = time.process_time() - cpu_started
    finally:
        TelemetryModel.ingest = original
    return {
        "services": 23,
        "simulated_seconds": duration,
        "rate_rps": rate,
        "trace_sampling": trace_sampling,
        "simulated_requests": run.simulated_requests,
        "spans": spans[0],
        "wall_seconds": round(wall, 2),
        # On a quiet machine the same as wall time; on a shared one, what this run itself used.
        "cpu_seconds": round(cpu, 2),
        "simulated_requests_per_wall_second": round(run.simulated_requests / wall),
        "spans_per_wall_second": round(spans[0] / wall),
        "ingest_share": round(ingest_seconds[0] / wall, 3),
        "target_wall_seconds": TARGET_WALL_SECONDS,
        "meets_target": wall < TARGET_WALL_SECONDS,
    }


def run_sim_speed(
    duration: float, rate: float, seed: int, as_json: bool = False, trace_sampling: float | None = None
) -> int:
    if trace_sampling is not None:
        result = measure(duration, rate, seed, trace_sampling)
    else:
        result = measure(duration, rate, seed, PRODUCTION_SAMPLING)
        full = measure(duration, rate, seed, 1.0)
        result["full_tracing"] = {key: full[key] for key in FULL_TRACING_FIGURES}
    print_figures("controlplane bench sim-speed", result, as_json)
    return 0


FULL_TRACING_FIGURES = (
    "simulated_requests",
    "spans",
    "wall_seconds",
    "cpu_seconds",
    "simulated_requests_per_wall_second",
    "spans_per_wall_second",
    "ingest_share",
    "meets_target",
)
