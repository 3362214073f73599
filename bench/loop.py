"""`controlplane bench loop`: control-loop tick time at scale, and the decision store under 1M decisions.

Tick: a model holding 1,000 services and 5,000 edges (fed real OTLP requests every simulated second, so
every window is live), an in-memory actuator reporting 1,000 services on 50 nodes, and 10 controllers of
different kinds that read the view as real ones do (rates, p95 latencies, error rates, edges, the
dependency graph, critical paths) and propose about a hundred actions a tick, conflicting on purpose.
Each tick is timed from the view snapshot to the decisions stored in SQLite (synchronous=FULL).

Store: 1,000,000 decisions are appended in batches of 1,000 (`inserts_per_second`), then a real
`controlplane serve` process opens that store and `ListDecisions` by service (pages of 100) is timed over
gRPC on loopback, from this process, for 1,000 random services (`list_decisions_p99_ms`).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any

import grpc
import networkx as nx
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from actuators.memory import InMemoryActuator
from bench.percentiles import percentile
from bench.store import measure_store
from controlplane import (
    Action,
    Controller,
    ControllerRegistry,
    Inventory,
    Isolate,
    IsolationMechanism,
    NodeInventory,
    Place,
    Remediate,
    RemediationOperation,
    Route,
    Scale,
    ServiceInventory,
    Taxonomy,
    TelemetryView,
)
from controlplane.engine.controllers_config import load_controllers
from controlplane.engine.guardrails import GuardrailConfig
from controlplane.engine.runtime import ControlLoop
from controlplane.engine.store import DecisionStore
from controlplane.net import free_port
from controlplane.serve.render import print_figures
from controlplane.serve.server import tune_interpreter
from protos.controlplane.v1 import controlplane_pb2 as pb
from protos.controlplane.v1 import controlplane_pb2_grpc as pb_grpc
from telemetry import ModelConfig, TelemetryModel
from telemetry.ingest import Ingestor

TICK_TARGET_MS = 100.0
LIST_TARGET_MS = 10.0
MS = 1_000_000
RULE = Taxonomy.of(
    "centralized", "rule", dynamics=["workload"], telemetry=["traces"], actions=["autoscaling"]
)


# Ten controllers of different kinds; each reads what its kind would and proposes for what it finds.


class _RateScaler(Controller):
    taxonomy = RULE
    period_seconds = 1.0
    target_rate = 10.0

    async def decide(self, view: TelemetryView) -> list[Action]:
        proposals: list[Action] = []
        for name in view.services:
            stats, known = view.stats(name), view.inventory.services.get(name)
            if stats is None or known is None:
                continue
            wanted = max(1, round(stats.request_rate / self.target_rate))
            if wanted != known.replicas:
                proposals.append(
                    Scale(target=name, replicas=wanted, reason="rate", evidence={"rate": stats.request_rate})
                )
        return proposals[:40]


def _rate_scaler(name: str, target: float, priority: int) -> type[Controller]:
    return type(name, (_RateScaler,), {"name": name, "target_rate": target, "priority": priority})


class _LatencyScaler(Controller):
    name = "bench-latency-slo"
    taxonomy = Taxonomy.of("centralized", "model_based", objectives=["latency_slo"], actions=["autoscaling"])
    period_seconds = 1.0

    async def decide(self, view: TelemetryView) -> list[Action]:
        slow = [name for name in view.services if (stats := view.stats(name)) and stats.p95_ms > 45.0]
        return [
            Scale(target=name, replicas=view.inventory.replicas_of(name) + 1, reason="p95 over SLO")
            for name in slow[:30]
        ]


class _Isolator(Controller):
    name = "bench-isolator"
    taxonomy = Taxonomy.of("centralized", "rule", dynamics=["failure"], actions=["isolation"])
    period_seconds = 1.0

    async def decide(self, view: TelemetryView) -> list[Action]:
        return [
            Isolate(target=name, mechanism=IsolationMechanism.CIRCUIT_BREAKER, reason="errors")
            for name in view.services
            if (stats := view.stats(name)) and stats.error_rate > 0.2
        ]


class _Router(Controller):
    name = "bench-router"
    taxonomy = Taxonomy.of("centralized", "optimization", dynamics=["request_path"], actions=["routing"])
    period_seconds = 1.0

    async def decide(self, view: TelemetryView) -> list[Action]:
        failing = {edge.target for edge in view.edges() if edge.stats.error_rate > 0.2}
        return [
            Route(target=name, weights={"v1": 0.8, "v2": 0.2}, reason="callers see errors")
            for name in sorted(failing)
        ][:20]


class _Placer(Controller):
    name = "bench-placer"
    taxonomy = Taxonomy.of("centralized", "optimization", dynamics=["interference"], actions=["placement"])
    period_seconds = 1.0

    async def decide(self, view: TelemetryView) -> list[Action]:
        busiest = sorted(view.services, key=lambda name: -view.stats(name).concurrency)[:5]
        nodes = sorted(view.inventory.nodes)
        return [
            Place(target=name, node=nodes[index % len(nodes)], reason="spread")
            for index, name in enumerate(busiest)
        ]


class _Remediator(Controller):
    name = "bench-remediator"
    taxonomy = Taxonomy.of("centralized", "rule", dynamics=["failure"], actions=["remediation"])
    period_seconds = 1.0

    async def decide(self, view: TelemetryView) -> list[Action]:
        return [
            Remediate(target=name, operation=RemediationOperation.RESTART, reason="error storm")
            for name in view.services
            if (stats := view.stats(name)) and stats.error_rate > 0.3
        ][:5]


class _CriticalPath(Controller):
    name = "bench-critical-path"
    taxonomy = Taxonomy.of("centralized", "model_based", dynamics=["request_path"], actions=["autoscaling"])
    period_seconds = 1.0

    async def decide(self, view: TelemetryView) -> list[Action]:
        proposals: list[Action] = []
        for paths in view.critical_paths.values():
            step = max(paths[0].steps, key=lambda step: step.self_ms)
            proposals.append(
                Scale(target=step.service, replicas=view.inventory.replicas_of(step.service) + 1)
            )
        return proposals[:10]


class _GraphScaler(Controller):
    name = "bench-graph"
    taxonomy = Taxonomy.of("centralized", "model_based", dynamics=["request_path"], actions=["autoscaling"])
    period_seconds = 1.0

    async def decide(self, view: TelemetryView) -> list[Action]:
        graph = view.graph
        hot = max(view.services, key=lambda name: view.stats(name).request_rate)
        downstream = sorted(nx.descendants(graph, hot))[:10]
        return [Scale(target=name, replicas=view.inventory.replicas_of(name) + 1) for name in downstream]


CONTROLLERS: tuple[type[Controller], ...] = (
    _rate_scaler("bench-rate-a", 5.0, 1),
    _rate_scaler("bench-rate-b", 10.0, 2),
    _rate_scaler("bench-rate-c", 20.0, 0),
    _LatencyScaler,
    _Isolator,
    _Router,
    _Placer,
    _Remediator,
    _CriticalPath,
    _GraphScaler,
)


@dataclass(frozen=True, slots=True)
class LoopBenchConfig:
    services: int = 1000
    edges: int = 5000
    ticks: int = 60
    decisions: int = 1_000_000
    seed: int = 1


class _Traffic:
    """One request per edge per simulated second: caller CLIENT span, callee SERVER span."""

    def __init__(self, config: LoopBenchConfig) -> None:
        self.rng = random.Random(config.seed)
        self.services = [f"svc-{index:04d}" for index in range(config.services)]
        pairs: set[tuple[int, int]] = set()
        while len(pairs) < config.edges:
            caller = self.rng.randrange(config.services - 1)
            pairs.add((caller, self.rng.randrange(caller + 1, config.services)))
        self.pairs = sorted(pairs)
        self.slow = set(self.rng.sample(range(config.services), config.services // 20))
        self.failing = set(self.rng.sample(range(config.services), config.services // 50))

    def request(self) -> ExportTraceServiceRequest:
        rng, by_service = self.rng, {}
        for caller, callee in self.pairs:
            trace, client, server = rng.randbytes(16), rng.randbytes(8), rng.randbytes(8)
            latency = rng.randint(1, 60 if callee in self.slow else 30) * MS
            failed = callee in self.failing and rng.random() < 0.5
            by_service.setdefault(caller, []).append(
                {
                    "trace_id": trace,
                    "span_id": client,
                    "name": "call",
                    "kind": 3,
                    "start_time_unix_nano": 0,
                    "end_time_unix_nano": latency + MS,
                }
            )
            by_service.setdefault(callee, []).append(
                {
                    "trace_id": trace,
                    "span_id": server,
                    "parent_span_id": client,
                    "name": "GET /",
                    "kind": 2,
                    "start_time_unix_nano": MS // 2,
                    "end_time_unix_nano": latency,
                    "status": {"code": 2 if failed else 0},
                }
            )
        request = ExportTraceServiceRequest()
        for index, spans in by_service.items():
            resource = request.resource_spans.add()
            resource.resource.attributes.add(key="service.name").value.string_value = self.services[index]
            scope = resource.scope_spans.add()
            for span in spans:
                scope.spans.add(**span)
        return request


async def _tick_times(
    config: LoopBenchConfig, store_path: str
) -> tuple[list[float], list[float], int, float]:
    clock = {"now": 1_700_000_000.0}
    model = TelemetryModel(ModelConfig(trace_sample_per_256=8), clock=lambda: clock["now"])
    traffic = _Traffic(config)
    inventory = Inventory(
        services={name: ServiceInventory(name, replicas=2, cpu_request=0.5) for name in traffic.services},
        nodes={
            f"node-{index:02d}": NodeInventory(f"node-{index:02d}", 32.0, 131072.0) for index in range(50)
        },
    )
    registry = ControllerRegistry()
    for cls in CONTROLLERS:
        registry.register(cls)
    controllers = load_controllers({cls.name: {"mode": "active"} for cls in CONTROLLERS}, registry)
    store = DecisionStore(store_path)
    loop = ControlLoop(
        model, controllers, InMemoryActuator(inventory), store, GuardrailConfig(), clock=lambda: clock["now"]
    )
    ingestor = Ingestor(model)
    for _ in range(12):  # warm the windows up: 12 simulated seconds of traffic
        clock["now"] += 1.0
        ingestor.ingest_now(traffic.request())
        ingestor.expire_now()
    # The first tick of a server's life builds its own view (nothing has asked the ingest path for one
    # yet) and starts the controllers' threads: timed apart, as `first_tick_ms`.
    times, prepare_times, decided = [], [], 0
    try:
        started = time.perf_counter()
        await loop.tick()
        first_tick_ms = (time.perf_counter() - started) * 1000
        for _ in range(config.ticks):
            clock["now"] += 1.0
            ingestor.ingest_now(traffic.request())
            ingestor.expire_now()
            # What the server's ingest worker does between requests once a bucket has closed.
            started = time.perf_counter()
            model.prepare_complete_snapshot()
            prepare_times.append((time.perf_counter() - started) * 1000)
            started = time.perf_counter()
            decided += len(await loop.tick())
            times.append((time.perf_counter() - started) * 1000)
    finally:
        await loop.stop()
        store.close()
    return times, prepare_times, decided, first_tick_ms


def _list_over_grpc(store_path: str, services: int, queries: int, seed: int) -> list[float]:
    """Time `ListDecisions` by service against a `controlplane serve` process on the store, from this one
    (a client in its own process, as the CLI is; a client on the server's event loop would slow it)."""
    directory = os.path.dirname(store_path)
    config = os.path.join(directory, "serve.toml")
    with open(config, "w") as handle:
        handle.write(f"[server]\ndecision_store = {json.dumps(store_path)}\n")
    target = f"127.0.0.1:{free_port()}"
    command = [sys.executable, "-m", "controlplane.serve", "serve", "--config", config, "--api", target]
    command += ["--otlp-grpc", f"127.0.0.1:{free_port()}", "--otlp-http", f"127.0.0.1:{free_port()}"]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    rng = random.Random(seed)
    latencies = []
    try:
        with grpc.insecure_channel(target) as channel:
            try:
                grpc.channel_ready_future(channel).result(timeout=60)
            except grpc.FutureTimeoutError:
                server.kill()
                raise RuntimeError(f"controlplane serve did not start: {server.communicate()[1]}") from None
            stub = pb_grpc.ControlPlaneStub(channel)
            stub.ListDecisions(pb.ListDecisionsRequest(page_size=1), timeout=30)  # connected before timing
            for _ in range(queries):
                request = pb.ListDecisionsRequest(service=f"svc-{rng.randrange(services):04d}", page_size=100)
                started = time.perf_counter()
                stub.ListDecisions(request, timeout=30)
                latencies.append((time.perf_counter() - started) * 1000)
    finally:
        server.terminate()
        server.wait(timeout=30)
    return latencies


def measure(config: LoopBenchConfig) -> dict[str, Any]:
    """Run both parts; returns the `--json` object."""
    tune_interpreter()
    directory = tempfile.mkdtemp(prefix="controlplane-bench-loop-")
    try:
        ticks, prepares, decided, first_tick_ms = asyncio.run(
            _tick_times(config, os.path.join(directory, "ticks.db"))
        )
        store_path = os.path.join(directory, "decisions.db")
        store = measure_store(store_path, decisions=config.decisions, services=1000, seed=config.seed)
        listed = _list_over_grpc(store_path, 1000, 1000, config.seed)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    tick_p99 = percentile(ticks, 0.99)
    list_p99 = percentile(listed, 0.99)
    return {
        "services": config.services,
        "edges": config.edges,
        "controllers": len(CONTROLLERS),
        "ticks": len(ticks),
        "decisions_per_tick": round(decided / len(ticks), 1),
        "tick_p50_ms": round(percentile(ticks, 0.5), 2),
        "tick_p99_ms": round(tick_p99, 2),
        "tick_target_ms": TICK_TARGET_MS,
        "first_tick_ms": round(first_tick_ms, 2),
        # Paid once per bucket by the ingest worker, outside the tick (prepare_complete_snapshot).
        "view_prepare_p50_ms": round(percentile(prepares, 0.5), 2),
        "view_prepare_p99_ms": round(percentile(prepares, 0.99), 2),
        "decisions_stored": store["decisions"],
        "inserts_per_second": store["inserts_per_second"],
        "list_decisions_p50_ms": round(percentile(listed, 0.5), 2),
        "list_decisions_p99_ms": round(list_p99, 2),
        "list_target_ms": LIST_TARGET_MS,
        "store_list_p99_ms": store["store_list_p99_ms"],
        "meets_tick_target": tick_p99 < TICK_TARGET_MS,
        "meets_list_target": list_p99 < LIST_TARGET_MS,
    }


def run_loop_bench(config: LoopBenchConfig, as_json: bool = False) -> int:
    """Print the figures as a table (or one JSON object); exit code 0 unless the run failed."""
    result = measure(config)
    print_figures("controlplane bench loop", result, as_json)
    return 0
