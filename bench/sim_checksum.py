"""`controlplane bench sim-checksum`: fingerprints of simulated runs, to show a change kept behaviour.

For every scenario and controller set (each scenario's own sets, else static, hpa, builtin), one seeded
run through the real control loop, and three SHA-256 fingerprints (first 16 hex digits): of every span the
simulator exported (the OTLP bytes, serialized deterministically, in order), of every second's latencies,
failures, replicas and decisions applied, and of the score. Equal fingerprints on the same seed mean the
simulator, the model and the controllers did exactly the same thing; a refactoring that claims to change
no behaviour is checked against the figures recorded in docs/benchmark.md ("Fingerprints").
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import struct
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from rich.console import Console
from rich.table import Table

from bench.scenarios import CONTROLLER_SETS, DEFAULT_SETS
from bench.sim_run import SimRun, run_scenario
from services.demo.scenario import bundled_scenarios, load_scenario


def fingerprint(run: SimRun, spans: hashlib._Hash) -> dict[str, Any]:
    """The three fingerprints of a finished run (spans were hashed as they were exported)."""
    seconds = hashlib.sha256()
    for second in run.recorder.seconds:
        seconds.update(
            struct.pack(
                "<iiiii",
                second.second,
                second.failed,
                second.replicas,
                second.ready_replicas,
                second.decisions,
            )
        )
        seconds.update(struct.pack(f"<{len(second.latencies_ms)}d", *second.latencies_ms))
    score = run.score.as_dict()
    return {
        "spans": spans.hexdigest()[:16],
        "seconds": seconds.hexdigest()[:16],
        "score": hashlib.sha256(json.dumps(score, sort_keys=True).encode()).hexdigest()[:16],
        "requests": run.simulated_requests,
        "actions": score["actions"],
        "slo_violation_fraction": score["slo_violation_fraction"],
    }


def fingerprint_run(
    name: str, controller_set: str, seed: int, seconds: float | None = None
) -> tuple[str, dict[str, Any]]:
    """Run one scenario (bundled name or TOML file) with one set on `seed`; ("scenario/set", fingerprints)."""
    scenario = load_scenario(name)
    if seconds is not None:
        scenario = dataclasses.replace(scenario, duration_seconds=min(seconds, scenario.duration_seconds))
    spans = hashlib.sha256()

    def exported(request: ExportTraceServiceRequest) -> None:
        spans.update(request.SerializeToString(deterministic=True))

    run = asyncio.run(
        run_scenario(scenario, CONTROLLER_SETS[controller_set], seed, controller_set, on_export=exported)
    )
    return f"{scenario.name}/{controller_set}", fingerprint(run, spans)


def run_sim_checksum(
    scenarios: list[str], seed: int, seconds: float | None, jobs: int, as_json: bool = False
) -> int:
    """Fingerprint every run of the grid (every bundled scenario unless some are named); print them."""
    names = scenarios or bundled_scenarios()
    grid = []
    for name in names:
        own = load_scenario(name).controller_sets
        grid += [(name, controller_set, seed, seconds) for controller_set in (own or DEFAULT_SETS)]
    with ProcessPoolExecutor(max(1, jobs)) as pool:
        results = dict(pool.map(fingerprint_run, *zip(*grid, strict=True)))
    figures = {"seed": seed, "seconds": seconds, "runs": dict(sorted(results.items()))}
    if as_json:
        print(json.dumps(figures, indent=1))
        return 0
    columns = ("spans", "seconds", "score", "requests", "actions", "slo_violation_fraction")
    table = Table("run", *columns, title=f"controlplane bench sim-checksum (seed {seed})")
    for run, values in figures["runs"].items():
        table.add_row(run, *(str(values[column]) for column in columns))
    Console().print(table)
    return 0
