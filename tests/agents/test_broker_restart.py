"""A broker restart with actions in flight: nothing lost, nothing applied twice, retained state rebuilt."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from pathlib import Path

from actuators.memory import InMemoryActuator
from agents.node import AgentConfig, NodeAgent
from agents.plane import CentralConfig, MqttActuator
from controlplane.actions import Scale
from controlplane.view import Inventory, NodeInventory, ServiceInventory
from tests.agents.conftest import NODES, agent_settings, central_settings, run

ACTIONS_PER_NODE = 15


def test_actions_in_flight_across_a_broker_restart_are_applied_exactly_once(broker, tmp_path: Path) -> None:
    async def scenario() -> None:
        actuators = {}
        agents = []
        for node in NODES:
            # Each node runs one service of its own; the slow actuator keeps actions in flight longer.
            inventory = Inventory(
                services={
                    f"svc-{node}-{i}": ServiceInventory(f"svc-{node}-{i}", 1) for i in range(ACTIONS_PER_NODE)
                },
                nodes={node: NodeInventory(node, 4, 4096)},
            )
            actuators[node] = InMemoryActuator(inventory, delay_seconds=0.02)
            agents.append(
                NodeAgent(AgentConfig(node, agent_settings(broker, node), tmp_path), actuators[node])
            )
        plane = MqttActuator(CentralConfig(central_settings(broker), action_timeout_seconds=20))
        await plane.start()
        for agent in agents:
            await agent.start()
        try:
            await plane.wait_for_nodes(list(NODES), 10)
            actions = [
                Scale(target=f"svc-{node}-{i}", replicas=2 + i)
                for i in range(ACTIONS_PER_NODE)
                for node in NODES
            ]
            applying = [asyncio.create_task(plane.apply(action)) for action in actions]
            await asyncio.sleep(0.1)  # some applied, some queued, some not yet sent
            in_flight = len(plane.pending)
            restarted = threading.Event()
            # The broker restarts (SIGTERM, 0.5 s down, start on the same port and persistence directory).
            threading.Thread(target=lambda: (broker.restart(down_seconds=0.5), restarted.set())).start()
            outcomes = await asyncio.gather(*applying)
            while not restarted.is_set():
                await asyncio.sleep(0.05)
            assert in_flight > 0, "the restart should happen with actions in flight"
            assert all(outcome.ok for outcome in outcomes), [o.detail for o in outcomes if not o.ok]
            applied = Counter(action.target for actuator in actuators.values() for action in actuator.applied)
            assert set(applied) == {action.target for action in actions}, "an action was lost"
            assert max(applied.values()) == 1, "an action was applied twice"
            assert plane.link.connections >= 2 and all(agent.link.connections >= 2 for agent in agents)
            # Retained state comes back with the broker, and the agents re-announce themselves anyway.
            inventory = await plane.inventory()
            for node in NODES:
                assert inventory.nodes[node].ready
                assert inventory.replicas_of(f"svc-{node}-3") == 5
        finally:
            for agent in agents:
                await agent.stop()
            await plane.stop()

    run(scenario(), timeout=45)
