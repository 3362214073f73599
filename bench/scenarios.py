"""`controlplane bench` (no sub-benchmark): every scenario with every controller set, in the simulator.

Runs go to worker processes (`--jobs`, one simulated run per core at a time; each run is single-threaded
and seeded, so the results do not depend on how many run at once) with a progress bar, and land in
`--out`: `results.json`, one PNG per scenario and `report.md` (see `bench.report`). Controller sets are
names from `CONTROLLER_SETS`, or installed controller names joined by `+` (`hpa+remediation`, or a
plugin's name alone), each run in active mode.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from bench.report import print_table, write_plots, write_report
from controlplane.registry import default_registry

# A benchmark user picking a set is the operator: learning controllers in it are promoted, or they
# would only ever record what they would have done. Simulated time stands still while a controller
# decides, so its wall-clock budget only guards against a hang: a busy machine must not turn a slow decide
# into a fault (and a run into a different run).
ACTIVE = {"mode": "active", "promoted": True, "time_budget_seconds": 60.0}
# The controller sets of the comparison. `builtin` is this project's answer to the baselines: the
# model-based autoscaler, detect-localize-act remediation, graph-aware placement and outlier-aware routing.
# The bulkheads (`isolation`) are left out of it: they trade failed requests for latency, and this
# benchmark counts a failed request as an SLO miss (add them with `builtin` spelled out plus `+isolation`).
CONTROLLER_SETS: dict[str, dict[str, dict[str, Any]]] = {
    "static": {},
    "hpa": {"hpa": ACTIVE},
    "builtin": {
        "queueing": ACTIVE,
        "remediation": ACTIVE,
        "placement": ACTIVE,
        "routing": ACTIVE,
    },
}
# The serving-pipeline scenarios compare no reconfiguration with the `pipeline` controller carrying its
# layouts out live (PipeLive) or by stopping and redeploying the pipeline.
CONTROLLER_SETS["pipeline-live"] = {"pipeline": ACTIVE}
CONTROLLER_SETS["pipeline-redeploy"] = {"pipeline": {**ACTIVE, "params": {"method": "stop_and_redeploy"}}}
DEFAULT_SETS = ("static", "hpa", "builtin")
DEMO_SCENARIOS = ("demo-short",)


def controller_set(name: str) -> dict[str, dict[str, Any]]:
    """A set by name, or installed controllers joined by `+`; ValueError names what is unknown."""
    if name in CONTROLLER_SETS:
        return CONTROLLER_SETS[name]
    default_registry.discover()
    installed = set(default_registry.names())
    wanted = [part for part in name.split("+") if part]
    unknown = [part for part in wanted if part not in installed]
    if unknown or not wanted:
        raise ValueError(
            f"unknown controller set or controller {name!r}: sets {sorted(CONTROLLER_SETS)}, "
            f"installed controllers {sorted(installed)} (join several with +)"
        )
    return {part: ACTIVE for part in wanted}


@dataclass(frozen=True, slots=True)
class RunSpec:
    scenario: str  # a bundled name or a file path
    controllers: str
    seed: int
    decision_store: str


def _run_one(spec: RunSpec) -> dict[str, Any]:
    """One run in a worker process; returns its `results.json` entry plus the per-second series."""
    from bench.sim_run import run_scenario
    from services.demo.results import p99_series
    from services.demo.scenario import load_scenario

    scenario = load_scenario(spec.scenario)
    started = time.perf_counter()
    run = asyncio.run(
        run_scenario(
            scenario, controller_set(spec.controllers), spec.seed, spec.controllers, spec.decision_store
        )
    )
    wall = time.perf_counter() - started
    seconds = run.recorder.seconds
    entry = run.score.as_dict()
    entry.update(
        decision_store=spec.decision_store,
        wall_seconds=round(wall, 2),
        simulated_requests_per_wall_second=round(run.simulated_requests / wall),
        slo_p99_ms=scenario.slo_p99_ms or _app_slo(scenario),
        events=[{"at": event.at, "kind": event.kind} for event in scenario.events],
    )
    entry.update(run.extra)
    series = {
        "p99_ms": p99_series(seconds),
        "replicas": [second.replicas for second in seconds],
        "decisions": [second.decisions for second in seconds],
    }
    return {"run": entry, "series": series}


@dataclass(frozen=True, slots=True)
class LiveSettings:
    """`--live`: the first scenario, cut to `seconds`, as real processes at `scale` of its request rate."""

    scale: float = 0.05
    seconds: float = 120.0


def _live_comparison(
    scenario_name: str, sets: Sequence[str], seed: int, settings: LiveSettings, out: Path, console: Console
) -> list[dict[str, Any]]:
    """Each set on the same cut of one scenario, live and simulated; entries tagged with their fidelity."""
    import dataclasses

    from bench.live_run import run_live
    from bench.sim_run import run_scenario
    from services.demo.scenario import load_scenario

    full = load_scenario(scenario_name)
    seconds = min(settings.seconds, full.duration_seconds)
    scenario = dataclasses.replace(
        full,
        duration_seconds=seconds,
        events=tuple(event for event in full.events if event.at < seconds),
        warmup_seconds=min(full.warmup_seconds, seconds / 4),
    )
    entries = []
    for name in sets:
        console.print(f"live: {scenario.name} / {name} ({seconds:g} s at {settings.scale:g} of the rate)")
        store = out / "decisions" / f"{scenario.name}__{_safe(name)}__sim-cut.db"
        store.unlink(missing_ok=True)
        simulated = asyncio.run(run_scenario(scenario, controller_set(name), seed, name, store))
        live, _ = asyncio.run(
            run_live(
                scenario,
                controller_set(name),
                seed,
                scale=settings.scale,
                label=name,
                workdir=out / "live" / f"{scenario.name}__{_safe(name)}",
            )
        )
        for fidelity, result in (("sim", simulated.score), ("live", live)):
            entry = _finite(result.as_dict())
            entry.update(fidelity=fidelity, seconds=seconds, live_scale=settings.scale)
            entries.append(entry)
    return entries


def _app_slo(scenario: Any) -> float:
    from services.demo.app import load_app

    return load_app(scenario.app).slo_p99_ms


def run_bench(
    scenarios: Sequence[str],
    sets: Sequence[str],
    seed: int,
    out: Path,
    jobs: int,
    as_json: bool = False,
    console: Console | None = None,
    live: LiveSettings | None = None,
) -> dict[str, Any]:
    """Run the grid, write the outputs, print the table (or JSON); returns the results document."""
    from services.demo.scenario import load_scenario

    console = console or Console(stderr=as_json)
    loaded = {scenario: load_scenario(scenario) for scenario in scenarios}
    names = {scenario: loaded[scenario].name for scenario in scenarios}
    # No sets asked for: each scenario's own (a pipeline scenario names its), else the default ones.
    sets_of = {
        scenario: list(sets) or list(loaded[scenario].controller_sets) or list(DEFAULT_SETS)
        for scenario in scenarios
    }
    for wanted in sets_of.values():
        for name in wanted:
            controller_set(name)  # unknown names fail before anything runs
    out.mkdir(parents=True, exist_ok=True)
    (out / "decisions").mkdir(exist_ok=True)
    specs = [
        RunSpec(scenario, name, seed, str(out / "decisions" / f"{names[scenario]}__{_safe(name)}.db"))
        for scenario in scenarios
        for name in sets_of[scenario]
    ]
    for spec in specs:  # a rerun starts from empty stores
        Path(spec.decision_store).unlink(missing_ok=True)
    outcomes: dict[tuple[str, str], dict[str, Any]] = {}
    progress = Progress(
        TextColumn("[bold]bench[/]"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("runs"),
        TimeElapsedColumn(),
        TextColumn("{task.description}"),
        console=console,
        transient=False,
    )
    with progress, ProcessPoolExecutor(max_workers=max(1, jobs)) as pool:
        task = progress.add_task("", total=len(specs))
        futures = {pool.submit(_run_one, spec): spec for spec in specs}
        for future in as_completed(futures):
            spec = futures[future]
            outcomes[spec.scenario, spec.controllers] = future.result()
            progress.update(task, advance=1, description=f"{names[spec.scenario]} / {spec.controllers}")
    ordered = [outcomes[spec.scenario, spec.controllers] for spec in specs]
    document: dict[str, Any] = {"runs": [_finite(outcome["run"]) for outcome in ordered]}
    if live is not None:
        document["live"] = _live_comparison(scenarios[0], sets_of[scenarios[0]], seed, live, out, console)
    (out / "results.json").write_text(json.dumps(document, indent=2, allow_nan=False) + "\n")
    plots = write_plots(ordered, out)
    write_report(document, plots, out)
    if as_json:
        print(json.dumps(document, allow_nan=False))
    else:
        print_table(document, console)
        console.print(f"results: {out / 'results.json'}  report: {out / 'report.md'}  plots: {len(plots)}")
    return document


def _safe(name: str) -> str:
    return "".join(char if char.isalnum() or char in "-_" else "_" for char in name)


def _finite(entry: dict[str, Any]) -> dict[str, Any]:
    """JSON has no NaN or infinity: a figure that does not exist (no request succeeded) is null."""
    return {
        key: None if isinstance(value, float) and not math.isfinite(value) else value
        for key, value in entry.items()
    }


def default_jobs() -> int:
    return max(1, min(len(os.sched_getaffinity(0)), 4))


def resolve_scenarios(requested: Sequence[str]) -> list[str]:
    """The scenarios to run: those requested, else every bundled one but the demo's."""
    from services.demo.scenario import bundled_scenarios

    if requested:
        return list(requested)
    return [name for name in bundled_scenarios() if name not in DEMO_SCENARIOS]


def sets_or_default(requested: Sequence[str]) -> list[str]:
    """The sets asked for, else the default ones (`run_bench` takes an empty list as each scenario's own)."""
    return list(requested) if requested else list(DEFAULT_SETS)
