"""Scenarios: a workload, a cluster and timed events, one small TOML file each (`services/demo/scenarios/`).

A scenario names the kind of dynamics it exercises (the taxonomy's `Dynamics`), the application it runs
(the demo by default), the cluster, the request rate (constant, or replayed from a real request-rate trace
in the shared data directory and scaled to the application), and the events injected on the way: load
surges, request-mix shifts, network delay and loss, noisy neighbours, crashes, bad rollouts, nodes leaving
and joining. `docs/benchmark.md` documents every field; `load_scenario` reports the wrong one.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from types import MappingProxyType
from typing import Any

from controlplane import (
    Dynamics,
)
from services.demo.app import DEMO_APP, parse_toml_file
from services.demo.serving import PipelineSpec, check_events, parse_pipeline
from services.shared_data import shared_data_dir

SCENARIO_DIR = Path(__file__).resolve().parent / "scenarios"

# Event kind -> (required parameters, optional parameters).
EVENT_PARAMETERS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "load": (frozenset({"factor"}), frozenset()),
    "mix": (frozenset({"weights"}), frozenset()),
    "network": (frozenset({"nodes"}), frozenset({"delay_ms", "loss"})),
    "interference": (frozenset({"node", "slowdown"}), frozenset()),
    "crash": (frozenset({"service"}), frozenset({"replicas", "recover_seconds"})),
    "node_down": (frozenset({"node"}), frozenset()),
    "rollout": (frozenset({"service", "version"}), frozenset({"error_rate", "slowdown"})),
    "node_leave": (frozenset({"node"}), frozenset()),
    "node_join": (frozenset({"node"}), frozenset({"cpu", "memory_mb"})),
    # Serving-pipeline scenarios only (a `[pipeline]` table): a device's memory budget for the pipeline
    # changes (co-located work), a device joins the pool or leaves it.
    "device_budget": (frozenset({"device", "budget_gib"}), frozenset()),
    "device_join": (frozenset({"device", "budget_gib"}), frozenset({"prefill_speed", "decode_speed"})),
    "device_leave": (frozenset({"device"}), frozenset()),
}
# What a serving-pipeline scenario may inject; the others are about the microservice application.
PIPELINE_EVENTS = frozenset({"load", "mix", "device_budget", "device_join", "device_leave"})


@dataclass(frozen=True, slots=True)
class NodeSpec:
    name: str
    cpu: float = 16.0
    memory_mb: float = 65536.0


@dataclass(frozen=True, slots=True)
class ClusterSpec:
    """Nodes and the network between them (one-way delays; a lost message is resent after a timeout)."""

    nodes: tuple[NodeSpec, ...]
    network_ms: float = 0.25
    local_network_ms: float = 0.05
    retransmit_ms: float = 200.0


@dataclass(frozen=True, slots=True)
class Workload:
    """Requests per second over time: `mean_rps` constant, or a trace segment scaled to that mean."""

    mean_rps: float
    trace: str = ""  # a CSV under the shared data directory (or an absolute path); empty: constant
    column: str = "requests"
    start_index: int = 0
    seconds_per_point: float = 1.0  # simulated seconds each trace row lasts (60 replays minutes as minutes)
    mix: Mapping[str, float] = field(default_factory=dict)  # request type -> weight; empty: the app's


@dataclass(frozen=True, slots=True)
class Event:
    at: float
    kind: str
    parameters: Mapping[str, Any]
    duration: float | None = None  # undone after this many seconds; None: lasts to the end


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    description: str
    dynamics: tuple[Dynamics, ...]
    duration_seconds: float
    workload: Workload
    cluster: ClusterSpec
    events: tuple[Event, ...] = ()
    app: Path = DEMO_APP
    slo_p99_ms: float | None = None  # None: the application's
    tick_seconds: float = 1.0
    warmup_seconds: float = 30.0  # left out of the scores: every controller starts from the same state
    # The share of traces the application's OpenTelemetry sampler keeps (consistent probability sampling,
    # `ot=th:` in the tracestate, which the model counts back up): 1 traces every request.
    trace_sampling: float = 1.0
    # A simulated PipeLive serving pipeline instead of the microservice application (services/sim/pipeline).
    pipeline: PipelineSpec | None = None
    # Controller sets `controlplane bench` compares on this scenario when none are asked for; empty: its own.
    controller_sets: tuple[str, ...] = ()

    def rate_curve(self) -> list[float]:
        """Requests per second for each simulated second, before `load` events."""
        seconds = int(self.duration_seconds)
        workload = self.workload
        if not workload.trace:
            return [workload.mean_rps] * seconds
        series = _trace_column(_trace_path(workload.trace), workload.column)
        points = [
            series[(workload.start_index + int(second / workload.seconds_per_point)) % len(series)]
            for second in range(seconds)
        ]
        mean = sum(points) / len(points) if points else 0.0
        scale = workload.mean_rps / mean if mean > 0 else 0.0
        return [point * scale for point in points]


def _trace_path(name: str) -> Path:
    path = Path(name)
    return path if path.is_absolute() else shared_data_dir() / path


@cache
def _trace_column(path: Path, column: str) -> tuple[float, ...]:
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or column not in reader.fieldnames:
            raise ValueError(f"{path}: no column {column!r} (has {reader.fieldnames})")
        return tuple(float(row[column]) for row in reader)


def _positive(table: Mapping[str, Any], key: str, where: str, default: Any = None) -> float:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ValueError(f"{where}.{key}: expected a number > 0, got {value!r}")
    return float(value)


def _probability(table: Mapping[str, Any], key: str) -> float:
    value = table.get(key, 1.0)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 1:
        raise ValueError(f"scenario.{key}: expected a probability in (0, 1], got {value!r}")
    return float(value)


def _event(table: Mapping[str, Any], index: int) -> Event:
    where = f"events[{index}]"
    kind = table.get("kind")
    if kind not in EVENT_PARAMETERS:
        raise ValueError(f"{where}.kind: expected one of {sorted(EVENT_PARAMETERS)}, got {kind!r}")
    required, optional = EVENT_PARAMETERS[kind]
    parameters = {key: value for key, value in table.items() if key not in ("at", "kind", "duration")}
    missing = required - set(parameters)
    if missing:
        raise ValueError(f"{where}: a {kind} event needs {sorted(missing)}")
    unknown = set(parameters) - required - optional
    if unknown:
        raise ValueError(f"{where}: unknown parameter(s) {sorted(unknown)} for a {kind} event")
    at = table.get("at")
    if isinstance(at, bool) or not isinstance(at, int | float) or at < 0:
        raise ValueError(f"{where}.at: expected a time in seconds >= 0, got {at!r}")
    duration = _positive(table, "duration", where) if "duration" in table else None
    if kind == "network" and (not isinstance(parameters["nodes"], list) or len(parameters["nodes"]) != 2):
        raise ValueError(f"{where}.nodes: a network event names the two nodes of a link")
    return Event(float(at), kind, MappingProxyType(parameters), duration)


def _cluster(table: Mapping[str, Any]) -> ClusterSpec:
    count = table.get("nodes", 4)
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"cluster.nodes: expected a whole number >= 1, got {count!r}")
    cpu = _positive(table, "cpu", "cluster", 16.0)
    memory = _positive(table, "memory_mb", "cluster", 65536.0)
    return ClusterSpec(
        nodes=tuple(NodeSpec(f"node-{index}", cpu, memory) for index in range(count)),
        network_ms=_positive(table, "network_ms", "cluster", 0.25),
        local_network_ms=_positive(table, "local_network_ms", "cluster", 0.05),
        retransmit_ms=_positive(table, "retransmit_ms", "cluster", 200.0),
    )


def parse_scenario(document: Mapping[str, Any], name: str, base: Path = SCENARIO_DIR) -> Scenario:
    """A `Scenario` from a parsed TOML document; ValueError names the first wrong field."""
    workload_table = dict(document.get("workload", {}))
    known_workload = set(Workload.__dataclass_fields__)
    unknown = set(workload_table) - known_workload
    if unknown:
        raise ValueError(f"workload: unknown field(s) {sorted(unknown)}; known: {sorted(known_workload)}")
    workload = Workload(
        mean_rps=_positive(workload_table, "mean_rps", "workload", 300.0),
        trace=str(workload_table.get("trace", "")),
        column=str(workload_table.get("column", "requests")),
        start_index=int(workload_table.get("start_index", 0)),
        seconds_per_point=_positive(workload_table, "seconds_per_point", "workload", 1.0),
        mix=MappingProxyType(dict(workload_table.get("mix", {}))),
    )
    try:
        dynamics = tuple(Dynamics(item) for item in document.get("dynamics", ()))
    except ValueError as error:
        raise ValueError(f"dynamics: {error}; known: {[item.value for item in Dynamics]}") from None
    app = document.get("app")
    slo = document.get("slo_p99_ms")
    pipeline = parse_pipeline(document["pipeline"]) if "pipeline" in document else None
    events = tuple(
        sorted(
            (_event(table, index) for index, table in enumerate(document.get("events", ()))),
            key=lambda event: event.at,
        )
    )
    for event in events:
        if pipeline is not None and event.kind not in PIPELINE_EVENTS:
            raise ValueError(
                f"events: a {event.kind} event needs the microservice application; a pipeline scenario takes "
                f"{sorted(PIPELINE_EVENTS)}"
            )
        if pipeline is None and event.kind.startswith("device_"):
            raise ValueError(f"events: a {event.kind} event needs a [pipeline] table")
    if pipeline is not None:
        check_events(pipeline, [(event.kind, event.parameters) for event in events])
    sets = document.get("controller_sets", [])
    if not isinstance(sets, list) or not all(isinstance(item, str) and item for item in sets):
        raise ValueError(f"controller_sets: expected a list of controller set names, got {sets!r}")
    return Scenario(
        name=str(document.get("name", name)),
        description=str(document.get("description", "")),
        dynamics=dynamics,
        duration_seconds=_positive(document, "duration_seconds", "scenario", 600.0),
        workload=workload,
        cluster=_cluster(document.get("cluster", {})),
        events=events,
        app=(base / app).resolve() if isinstance(app, str) else DEMO_APP,
        slo_p99_ms=_positive(document, "slo_p99_ms", "scenario") if slo is not None else None,
        tick_seconds=_positive(document, "tick_seconds", "scenario", 1.0),
        warmup_seconds=float(document.get("warmup_seconds", 30.0)),
        trace_sampling=_probability(document, "trace_sampling"),
        pipeline=pipeline,
        controller_sets=tuple(sets),
    )


def load_scenario(name_or_path: str | Path) -> Scenario:
    """A bundled scenario by name (`diurnal`), or a scenario file by path."""
    path = Path(name_or_path)
    if not path.suffix:
        path = SCENARIO_DIR / f"{name_or_path}.toml"
        if not path.exists():
            raise ValueError(f"no scenario named {str(name_or_path)!r}; bundled: {bundled_scenarios()}")
    return parse_toml_file(path, lambda document: parse_scenario(document, path.stem, path.parent))


def bundled_scenarios() -> list[str]:
    return sorted(path.stem for path in SCENARIO_DIR.glob("*.toml"))
