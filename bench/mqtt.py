"""`controlplane bench mqtt`: node agents against one broker and the plane.

100 agents (asyncio tasks, each a full `NodeAgent` with its own SQLite record and an in-memory node
actuator) and the plane's `MqttActuator` share one process and one broker (Mosquitto from the shipped
configuration on a free loopback port, or the embedded amqtt broker). Three phases:

1. round trip: `--actions` actions, `--concurrency` in flight (1, as the control loop applies them), timed
   from `MqttActuator.apply` (the decision handed to the actuator) to its outcome;
2. telemetry: every agent reports as fast as it can for `--telemetry-seconds`; messages merged into the
   plane's model per second;
3. broker restart: `--restart-actions` actions issued at once; while they are in flight the broker is
   stopped (SIGTERM), kept down half a second and started again; every action must end applied exactly
   once (`lost_actions`, `duplicate_applications` count failures, from what the agents' actuators did).
"""

from __future__ import annotations

import asyncio
import json
import logging
import tempfile
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Column, Table

from actuators.memory import InMemoryActuator
from agents.connection import BrokerSettings
from agents.embedded import EmbeddedBroker
from agents.mosquitto import CENTRAL_USER, MosquittoBroker
from agents.node import AgentConfig, NodeAgent
from agents.plane import CentralConfig, MqttActuator
from bench.percentiles import percentile
from controlplane import ActuatorContext, Inventory, NodeInventory, Scale, ServiceInventory
from telemetry import TelemetryModel
from telemetry.ingest import Ingestor


@dataclass(frozen=True, slots=True)
class MqttBenchConfig:
    agents: int = 100
    actions: int = 2000
    # The control loop applies a tick's decisions one after the other, so one action in flight is how
    # the plane really drives agents; higher values measure latency under a backlog.
    concurrency: int = 1
    restart_actions: int = 500
    telemetry_seconds: float = 5.0
    broker: str = "mosquitto"  # or "embedded"
    down_seconds: float = 0.5


class _Broker:
    """The benchmark's broker, either kind, with the same start/restart/stop."""

    def __init__(self, kind: str, work_dir: Path, users: dict[str, str]) -> None:
        self.kind = kind
        self.work_dir = work_dir.parent
        self.mosquitto = MosquittoBroker(work_dir, users) if kind == "mosquitto" else None
        self.embedded = EmbeddedBroker() if kind == "embedded" else None

    @property
    def url(self) -> str:
        return self.mosquitto.url if self.mosquitto else self.embedded.url  # type: ignore[union-attr]

    async def start(self) -> None:
        if self.mosquitto:
            await asyncio.to_thread(self.mosquitto.start)
        else:
            await self.embedded.start()  # type: ignore[union-attr]

    async def restart(self, down_seconds: float) -> None:
        if self.mosquitto:
            # Off the event loop: the agents and the plane must notice and reconnect meanwhile.
            done = threading.Event()
            threading.Thread(target=lambda: (self.mosquitto.restart(down_seconds), done.set())).start()  # type: ignore[union-attr]
            while not done.is_set():
                await asyncio.sleep(0.01)
        else:
            await self.embedded.stop()  # type: ignore[union-attr]
            await asyncio.sleep(down_seconds)
            await self.embedded.start()  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self.mosquitto:
            self.mosquitto.stop()
        else:
            await self.embedded.stop()  # type: ignore[union-attr]


async def _measure(config: MqttBenchConfig, work_dir: Path) -> dict:
    nodes = [f"node-{index:03d}" for index in range(config.agents)]
    users = {CENTRAL_USER: "bench-plane", **{node: f"bench-{node}" for node in nodes}}
    broker = _Broker(config.broker, work_dir / "broker", users)
    await broker.start()
    try:
        return await _phases(config, broker, users)
    finally:
        await broker.stop()


async def _phases(config: MqttBenchConfig, broker: _Broker, users: dict[str, str]) -> dict:
    nodes = [f"node-{index:03d}" for index in range(config.agents)]
    work_dir = broker.work_dir

    def settings(user: str) -> BrokerSettings:
        if config.broker == "mosquitto":
            return BrokerSettings(broker.url, user, users[user])
        return BrokerSettings(broker.url)

    model = TelemetryModel()
    plane = MqttActuator(
        CentralConfig(settings(CENTRAL_USER), action_timeout_seconds=30.0),
        ActuatorContext(submit_report=Ingestor(model).submit_report),
    )
    actuators = {
        node: InMemoryActuator(
            Inventory(
                services={f"svc-{node}": ServiceInventory(f"svc-{node}", 1)},
                nodes={node: NodeInventory(node, 8, 8192)},
            )
        )
        for node in nodes
    }
    agents = [
        NodeAgent(
            AgentConfig(node, settings(node), work_dir / "agents", telemetry_seconds=3600.0), actuators[node]
        )
        for node in nodes
    ]
    started = time.perf_counter()
    await plane.start()
    for agent in agents:
        await agent.start()
    await plane.wait_for_nodes(nodes, 60)
    setup_seconds = time.perf_counter() - started
    counter = iter(range(2, 10**9))

    async def fire(count: int, concurrency: int) -> tuple[list[float], list[tuple[Scale, bool]]]:
        gate = asyncio.Semaphore(concurrency)
        rtts: list[float] = []
        results: list[tuple[Scale, bool]] = []

        async def one(index: int) -> None:
            node = nodes[index % len(nodes)]
            action = Scale(target=f"svc-{node}", replicas=next(counter))  # unique: a repeat would show
            async with gate:
                begun = time.perf_counter()
                outcome = await plane.apply(action)
                rtts.append((time.perf_counter() - begun) * 1000.0)
            results.append((action, outcome.ok))

        await asyncio.gather(*(one(index) for index in range(count)))
        return rtts, results

    # 1. Round trip.
    await fire(min(200, config.actions), config.concurrency)  # warm-up: connections, SQLite files, caches
    rtts, results = await fire(config.actions, config.concurrency)
    failed_round_trip = sum(not ok for _, ok in results)

    # 2. Telemetry.
    before = plane.telemetry_reports
    stop_at = time.perf_counter() + config.telemetry_seconds

    async def report(agent: NodeAgent) -> None:
        service = f"svc-{agent.node}"
        while time.perf_counter() < stop_at:
            agent.record(service, "GET /", [1.0, 2.0, 5.0, 12.0], errors=0)
            await agent.report_telemetry()
            await asyncio.sleep(0)

    telemetry_started = time.perf_counter()
    await asyncio.gather(*(report(agent) for agent in agents))
    sent = sum(agent.telemetry_reports for agent in agents)
    # The rate is what the plane merged into its model, timed until it has taken the last report in.
    last_count, last_change = -1, time.perf_counter()
    while plane.telemetry_reports - before < sent and time.perf_counter() - last_change < 2.0:
        if plane.telemetry_reports != last_count:
            last_count, last_change = plane.telemetry_reports, time.perf_counter()
        await asyncio.sleep(0.01)
    received = plane.telemetry_reports - before
    telemetry_seconds = last_change - telemetry_started

    # 3. Broker restart with actions in flight.
    applied_before = Counter(
        action for actuator in actuators.values() for action in map(_key, actuator.applied)
    )
    restart_started = time.perf_counter()
    # All issued at once, so that every one is in flight (sent, queued or being applied) at the restart.
    firing = asyncio.create_task(fire(config.restart_actions, config.restart_actions))
    while len(plane.pending) < config.restart_actions // 2 and not firing.done():
        await asyncio.sleep(0.001)
    in_flight = len(plane.pending)
    await broker.restart(config.down_seconds)
    restart_rtts, restart_results = await firing
    restart_seconds = time.perf_counter() - restart_started
    applied = Counter(action for actuator in actuators.values() for action in map(_key, actuator.applied))
    applied.subtract(applied_before)
    lost = sum(1 for action, ok in restart_results if not ok or applied[_key(action)] == 0)
    duplicates = sum(count - 1 for count in applied.values() if count > 1)
    all_time_duplicates = sum(agent.duplicate_deliveries for agent in agents)

    for agent in agents:
        await agent.stop()
    await plane.stop()
    return {
        "agents": config.agents,
        "broker": config.broker,
        "setup_seconds": round(setup_seconds, 2),
        "actions": len(rtts),
        "concurrency": config.concurrency,
        "action_rtt_p50_ms": round(percentile(rtts, 0.50), 2),
        "action_rtt_p99_ms": round(percentile(rtts, 0.99), 2),
        "action_rtt_max_ms": round(max(rtts), 2),
        "failed_actions": failed_round_trip,
        "telemetry_msgs_per_second": round(received / telemetry_seconds, 1),
        "telemetry_msgs_sent": sent,
        "telemetry_msgs_received": received,
        "telemetry_msgs_lost": sent - received,
        "restart_actions": len(restart_results),
        "restart_actions_in_flight_at_restart": in_flight,
        "restart_phase_seconds": round(restart_seconds, 2),
        "restart_rtt_p99_ms": round(percentile(restart_rtts, 0.99), 2),
        "lost_actions": lost,
        "duplicate_applications": duplicates,
        "duplicate_deliveries_answered_from_record": all_time_duplicates,
    }


def _key(action: Scale) -> tuple[str, int]:
    return (action.target, action.replicas)


def measure(config: MqttBenchConfig) -> dict:
    logging.getLogger("agents").setLevel(logging.ERROR)
    logging.getLogger("mqtt").setLevel(logging.CRITICAL)
    with tempfile.TemporaryDirectory(prefix="controlplane-bench-mqtt-") as work:
        return asyncio.run(_measure(config, Path(work)))


def run_mqtt_bench(config: MqttBenchConfig, as_json: bool = False) -> int:
    """Print the figures as a table (or one JSON object); exit code 1 if an action was lost or doubled."""
    result = measure(config)
    result["config"] = asdict(config)
    if as_json:
        print(json.dumps(result))
    else:
        table = Table("metric", Column("value", justify="right"), title="controlplane bench mqtt")
        for key, value in result.items():
            table.add_row(key, str(value))
        Console().print(table)
    return 1 if result["lost_actions"] or result["duplicate_applications"] else 0
