"""`controlplane demo`: serve, drive generated traces at it, let built-in controllers decide, show it all.

Everything goes through the real path: generated requests are serialized and sent over gRPC on loopback
to the receiver, and the tables are drawn from the gRPC API's answers, as `controlplane graph` would.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import threading
import time
from dataclasses import replace

import grpc
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from actuators.memory import InMemoryActuator
from bench.tracegen import TraceGenerator, layered_topology
from controlplane.engine.guardrails import GuardrailConfig
from controlplane.serve.config import Config
from controlplane.serve.render import decision_line, make_console, print_graph, print_stats
from controlplane.serve.server import ControlPlaneServer
from controlplane.view import Inventory, ServiceInventory
from protos.controlplane.v1 import controlplane_pb2 as pb
from protos.controlplane.v1 import controlplane_pb2_grpc as pb_grpc
from telemetry.otlp_status import EXPORT_METHOD

TICK_SECONDS = 0.5
# The built-in controllers the demo runs against its in-memory substrate: autoscalers act, the learning and
# hybrid ones stay in shadow (as they would until an operator promotes them).
DEMO_CONTROLLERS = {
    "hpa": {"mode": "active", "period_seconds": 2.0},
    "queueing": {"mode": "shadow", "period_seconds": 2.0},
    "routing": {"mode": "active", "period_seconds": 2.0},
    "isolation": {"mode": "active", "period_seconds": 2.0},
    "remediation": {"mode": "shadow", "period_seconds": 2.0},
}


def send_generated_traffic(
    target: str, seconds: float, traces_per_second: float, seed: int, stop: threading.Event
) -> int:
    """Export generated traces to `target` at a steady rate; returns the number of spans sent."""
    generator = TraceGenerator(layered_topology(seed=seed), seed=seed, error_ratio=0.02)
    sent = 0
    with grpc.insecure_channel(target) as channel:
        export = channel.unary_unary(EXPORT_METHOD)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not stop.is_set():
            started = time.monotonic()
            request = generator.request(min_traces=max(1, round(traces_per_second * TICK_SECONDS)))
            export(request.SerializeToString(), timeout=10)
            sent += sum(
                len(scope.spans) for resource in request.resource_spans for scope in resource.scope_spans
            )
            stop.wait(max(0.0, TICK_SECONDS - (time.monotonic() - started)))
    return sent


def _summary_table(graph: pb.GetGraphResponse, elapsed: float, seconds: float) -> Table:
    table = Table(title=f"controlplane demo — {elapsed:4.1f}/{seconds:.0f} s")
    for column in ("nodes", "edges", "spans accepted", "busiest service", "req/s", "p95 ms"):
        table.add_column(column)
    busiest = max(graph.nodes, key=lambda node: node.stats.request_rate, default=None)
    table.add_row(
        str(len(graph.nodes)),
        str(len(graph.edges)),
        f"{graph.spans_accepted:,}",
        busiest.name if busiest else "-",
        f"{busiest.stats.request_rate:.1f}" if busiest else "-",
        f"{busiest.stats.p95_ms:.2f}" if busiest else "-",
    )
    return table


async def _run(seconds: float, traces_per_second: float, seed: int, console: Console) -> None:
    store = os.path.join(tempfile.mkdtemp(prefix="controlplane-demo-"), "decisions.db")
    config = replace(Config(controllers=DEMO_CONTROLLERS), guardrails=GuardrailConfig(cooldown_seconds=5.0))
    config = config.with_server(
        otlp_grpc="127.0.0.1:0", otlp_http="127.0.0.1:0", api="127.0.0.1:0", decision_store=store
    )
    topology = layered_topology(seed=seed)
    inventory = Inventory(
        services={
            name: ServiceInventory(name, replicas=2, ready_replicas=2, cpu_request=0.5)
            for name in topology.calls
        }
    )
    server = ControlPlaneServer(config, actuator=InMemoryActuator(inventory))
    ports = await server.start()
    target = f"127.0.0.1:{ports.api}"
    console.print(
        f"control plane listening: OTLP/gRPC and API on {target}, OTLP/HTTP on 127.0.0.1:{ports.otlp_http}"
    )
    stop = threading.Event()
    sender = asyncio.create_task(
        asyncio.to_thread(send_generated_traffic, target, seconds, traces_per_second, seed, stop)
    )
    channel = grpc.aio.insecure_channel(target)
    stub = pb_grpc.ControlPlaneStub(channel)
    started = time.monotonic()
    try:
        with Live(console=console, refresh_per_second=2, transient=True) as live:
            while not sender.done():
                graph = await stub.GetGraph(pb.GetGraphRequest())
                live.update(Group(_summary_table(graph, time.monotonic() - started, seconds)))
                await asyncio.sleep(1.0)
        sent = await sender
        server.ingestor.flush_now()
        graph = await stub.GetGraph(pb.GetGraphRequest())
        stats = await stub.GetServiceStats(pb.GetServiceStatsRequest(include_operations=False))
        print_graph(graph, console)
        print_stats(stats, console)
        decisions = await stub.ListDecisions(pb.ListDecisionsRequest(page_size=1000))
        _print_decisions(decisions, console)
        console.print(f"sent {sent:,} spans in {time.monotonic() - started:.1f} s")
    finally:
        stop.set()
        await channel.close()
        await server.stop()


def _print_decisions(response: pb.ListDecisionsResponse, console: Console) -> None:
    """Decisions per controller and status, then the latest few, as `controlplane decisions` shows them."""
    counts: dict[tuple[str, str], int] = {}
    for info in response.decisions:
        status = pb.DecisionStatus.Name(info.status).removeprefix("DECISION_STATUS_").lower()
        counts[info.controller, status] = counts.get((info.controller, status), 0) + 1
    table = Table(title=f"Decisions ({len(response.decisions)})")
    for column in ("controller", "status", "count"):
        table.add_column(column)
    for (controller, status), count in sorted(counts.items()):
        table.add_row(controller, status, str(count))
    console.print(table)
    for info in list(response.decisions)[:8]:
        console.print(decision_line(info))


def run_demo(seconds: float = 20.0, traces_per_second: float = 100.0, seed: int = 1) -> int:
    """The main job until the scenario benchmark exists: returns the process exit code."""
    asyncio.run(_run(seconds, traces_per_second, seed, make_console()))
    return 0
