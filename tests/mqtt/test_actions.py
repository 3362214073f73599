"""Actions from the plane to node agents: delivery, outcome, idempotency, offline nodes."""

from __future__ import annotations

import asyncio
from pathlib import Path

from controlplane.actions import Scale
from controlplane.actuator import InMemoryActuator
from controlplane.mqtt.agent import AgentConfig, NodeAgent
from controlplane.mqtt.central import CentralConfig, MqttActuator
from controlplane.mqtt.local_actuator import NodeSpec, ProcessActuator
from controlplane.view import Inventory, NodeInventory
from tests.mqtt.conftest import agent_settings, central_settings, run


def test_scale_reaches_the_agent_starts_processes_and_reports_the_outcome(broker, tmp_path: Path) -> None:
    async def scenario() -> None:
        local = ProcessActuator(NodeSpec("node-a", cpu_capacity=8))
        agent = NodeAgent(AgentConfig("node-a", agent_settings(broker, "node-a"), tmp_path), local)
        plane = MqttActuator(CentralConfig(central_settings(broker)))
        await plane.start()
        await agent.start()
        try:
            await plane.wait_for_nodes(["node-a"], 10)
            outcome = await plane.apply(Scale(target="api", replicas=2))
            assert outcome.ok, outcome
            assert "api has 2 replicas on node-a" in outcome.detail
            assert sum(replica.running for replica in local.replicas.values()) == 2
            inventory = await plane.inventory()
            assert inventory.replicas_of("api") == 2
            assert inventory.nodes["node-a"].ready and inventory.nodes["node-a"].cpu_capacity == 8
            assert set(inventory.placements.values()) == {"node-a"}
        finally:
            await agent.stop()
            await local.close()
            await plane.stop()

    run(scenario())
