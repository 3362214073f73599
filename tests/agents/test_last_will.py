"""A killed agent: its last will marks the node offline, no actions go to it, placement moves its replicas."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

from actuators.memory import InMemoryActuator
from agents.node import AgentConfig, NodeAgent
from agents.plane import CentralConfig, MqttActuator
from controllers.placement import GraphAwarePlacement
from controlplane.actions import Place, Scale
from controlplane.decisions import DecisionStatus
from controlplane.engine.controllers_config import load_controllers
from controlplane.engine.runtime import ControlLoop
from controlplane.engine.store import DecisionStore
from controlplane.registry import ControllerRegistry
from controlplane.view import Inventory, NodeInventory
from telemetry import TelemetryModel
from tests.agents.conftest import PASSWORDS, agent_settings, central_settings, run
from tests.support import REPO


def _agent_process(broker, node: str, state_dir: Path) -> subprocess.Popen:
    command = [
        sys.executable, "-m", "controlplane.serve", "agent", "--node", node, "--broker", broker.url,
        "--state-dir", str(state_dir), "--replicas", "api=2", "--keepalive", "2", "--cpu", "4",
    ]  # fmt: skip
    env = {**os.environ, "CONTROLPLANE_MQTT_PASSWORD": PASSWORDS[node]}
    return subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def test_killed_agent_goes_offline_gets_no_actions_and_its_replicas_move(broker, tmp_path: Path) -> None:
    process = _agent_process(broker, "node-a", tmp_path / "node-a")

    async def scenario() -> None:
        survivor_actuator = InMemoryActuator(Inventory(nodes={"node-b": NodeInventory("node-b", 8, 16384)}))
        survivor = NodeAgent(
            AgentConfig("node-b", agent_settings(broker, "node-b"), tmp_path / "node-b"), survivor_actuator
        )
        plane = MqttActuator(CentralConfig(central_settings(broker), action_timeout_seconds=3))
        await plane.start()
        await survivor.start()
        try:
            await plane.wait_for_nodes(["node-a", "node-b"], 15)
            before = await plane.inventory()
            replicas = sorted(replica for replica, node in before.placements.items() if node == "node-a")
            assert len(replicas) == 2 and before.services["api"].ready_replicas == 2

            os.kill(process.pid, signal.SIGKILL)  # no goodbye: only the broker's last will tells
            process.wait(5)
            await plane.wait_for_nodes(["node-a"], 10, online=False)
            after = await plane.inventory()
            assert not after.nodes["node-a"].ready and after.nodes["node-b"].ready
            assert after.services["api"].ready_replicas == 0
            assert sorted(r for r, node in after.placements.items() if node == "node-a") == replicas

            # Nothing is sent to the dead node: straight to it, or via a replica on it.
            refused = await plane.apply(Place(target="api", node="node-a"))
            assert not refused.ok and "node node-a is offline" in refused.detail

            # The control loop with the built-in placement controller evacuates node-a onto node-b.
            registry = ControllerRegistry()
            registry.register(GraphAwarePlacement)
            controllers = load_controllers({"placement": {"mode": "active"}}, registry)
            store = DecisionStore(tmp_path / "plane.db")
            loop = ControlLoop(TelemetryModel(), controllers, plane, store)
            decisions = await loop.tick()
            moves = [d for d in decisions if isinstance(d.action, Place)]
            assert {d.action.replica for d in moves} == set(replicas)
            assert all(d.action.node == "node-b" and d.status is DecisionStatus.APPLIED for d in moves), [
                (d.status, d.why, d.outcome) for d in moves
            ]
            placed = [a for a in survivor_actuator.applied if isinstance(a, Place)]
            assert sorted(a.replica for a in placed) == replicas
            moved = await plane.inventory()
            assert {moved.placements[replica] for replica in replicas} == {"node-b"}
            await loop.stop()
            store.close()
        finally:
            await survivor.stop()
            await plane.stop()

    try:
        run(scenario(), timeout=40)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(5)
    assert process.returncode == -signal.SIGKILL


def test_agent_refuses_to_start_with_a_bad_broker_url(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "controlplane.serve", "agent", "--node", "node-a", "--broker", "http://x",
         "--state-dir", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode == 2
    assert "broker URL must be mqtt://HOST[:PORT] or mqtts://HOST[:PORT]" in result.stderr


def test_scale_of_a_service_only_on_a_dead_node_goes_to_a_live_one(broker, tmp_path: Path) -> None:
    # Covered end to end above for Place; here the Scale fallback: no online host, the least loaded node.
    async def scenario() -> None:
        live = InMemoryActuator(Inventory(nodes={"node-b": NodeInventory("node-b", 8, 16384)}))
        agent = NodeAgent(AgentConfig("node-b", agent_settings(broker, "node-b"), tmp_path), live)
        plane = MqttActuator(CentralConfig(central_settings(broker)))
        await plane.start()
        await agent.start()
        try:
            await plane.wait_for_nodes(["node-b"], 10)
            outcome = await plane.apply(Scale(target="worker", replicas=2))
            assert outcome.ok and outcome.detail.startswith("node-b: worker now has 2 replicas")
        finally:
            await agent.stop()
            await plane.stop()

    run(scenario())


def test_the_applied_record_survives_kill_9_of_the_agent(broker, tmp_path: Path) -> None:
    import re

    from agents import topics
    from agents.wire import action_pb
    from protos.controlplane.v1 import agent_pb2 as apb

    process = _agent_process(broker, "node-a", tmp_path / "node-a")

    async def scenario() -> None:
        plane = MqttActuator(CentralConfig(central_settings(broker)))
        await plane.start()
        try:
            await plane.wait_for_nodes(["node-a"], 15)
            outcome = await plane.apply(Scale(target="api", replicas=3))
            assert outcome.ok
            key = re.search(r"decision key ([0-9a-f]+)", outcome.detail).group(1)
            os.kill(process.pid, signal.SIGKILL)
            process.wait(5)
            await plane.wait_for_nodes(["node-a"], 10, online=False)
            # A new agent on the same state directory gets the same decision again.
            local = InMemoryActuator()
            agent = NodeAgent(
                AgentConfig("node-a", agent_settings(broker, "node-a"), tmp_path / "node-a"), local
            )
            await agent.start()
            try:
                await plane.wait_for_nodes(["node-a"], 10)
                repeat = apb.ActionRequest(
                    decision_key=key, node="node-a", action=action_pb(Scale(target="api", replicas=3))
                )
                await plane.link.publish(
                    topics.topic("node-a", topics.Kind.ACTIONS), repeat.SerializeToString()
                )
                while agent.duplicate_deliveries == 0:
                    await asyncio.sleep(0.01)
                assert local.applied == []
                record = agent.applied.get(key)
                assert record.finished and record.ok and "api has 3 replicas on node-a" in record.detail
            finally:
                await agent.stop()
        finally:
            await plane.stop()

    try:
        run(scenario(), timeout=40)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(5)
