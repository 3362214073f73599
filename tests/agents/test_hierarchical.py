"""Hierarchical control: agents' own controllers act within the plane's bounds, and their decisions reach
the plane's decision store and API."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import grpc

from actuators.memory import InMemoryActuator
from agents.bounds import Bounds
from agents.local_actuator import NodeSpec, ProcessActuator
from agents.local_controllers import CrashRestarter
from agents.node import AgentConfig, NodeAgent
from agents.plane import CentralConfig, MqttActuator
from controlplane.actions import Remediate, Scale
from controlplane.controller import Controller
from controlplane.registry import ControllerRegistry
from controlplane.taxonomy import Taxonomy
from controlplane.view import Inventory, NodeInventory, ServiceInventory
from protos.controlplane.v1 import controlplane_pb2 as pb
from protos.controlplane.v1 import controlplane_pb2_grpc as pb_grpc
from tests.agents.conftest import PASSWORDS, agent_settings, central_settings, run
from tests.support import running_server

LOCAL = Taxonomy.of("decentralized", "rule", actions=["autoscaling"])


class LocalScaler(Controller):
    """Proposes one fixed Scale each tick (the test's stand-in for a node-local autoscaler)."""

    name = "local-scaler"
    taxonomy = LOCAL
    period_seconds = 0.05

    @dataclass(frozen=True)
    class Parameters:
        service: str = "api"
        replicas: int = 2

    async def decide(self, view):
        return [Scale(target=self.params.service, replicas=self.params.replicas, reason="local load")]


class GreedyScaler(LocalScaler):
    name = "greedy-scaler"


def _registry() -> ControllerRegistry:
    registry = ControllerRegistry()
    registry.register(LocalScaler)
    registry.register(GreedyScaler)
    return registry


def _wait(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def test_local_decisions_within_bounds_apply_outside_are_refused_and_both_reach_the_plane_api(
    broker, tmp_path: Path
) -> None:
    mqtt = {
        "enabled": True,
        "broker": broker.url,
        "username": "controlplane",
        "password": PASSWORDS["controlplane"],
        "local_allowed_actions": ["scale"],
        "local_max_replicas": 3,
    }
    local = InMemoryActuator(
        Inventory(
            services={"api": ServiceInventory("api", 1), "web": ServiceInventory("web", 1)},
            nodes={"node-a": NodeInventory("node-a", 4, 4096)},
        )
    )
    controllers = {
        "local-scaler": {"params": {"service": "api", "replicas": 2}},
        "greedy-scaler": {"params": {"service": "web", "replicas": 5}},
    }
    config = AgentConfig(
        "node-a", agent_settings(broker, "node-a"), tmp_path, tick_seconds=0.05, controllers=controllers
    )
    agent_loop = asyncio.new_event_loop()

    with running_server(
        config_sections={"mqtt": mqtt}, server_parts={"registry": ControllerRegistry()}
    ) as server:
        agent = NodeAgent(config, local, registry=_registry())
        agent_loop.run_until_complete(agent.start())
        try:
            store = server.server.store

            def local_decisions(controller: str) -> list:
                return server.call(lambda: store.list(controller=f"node-a/{controller}", page_size=100)[0])

            def pump() -> None:  # the agent runs on this thread's loop
                agent_loop.run_until_complete(asyncio.sleep(0.05))

            def applied_and_refused() -> bool:
                pump()
                within = [d for d in local_decisions("local-scaler") if d.status.value == "applied"]
                beyond = [d for d in local_decisions("greedy-scaler") if "outside the bounds" in d.why]
                return bool(within) and bool(beyond)

            _wait(applied_and_refused)
            assert Scale(target="api", replicas=2, reason="local load") in local.applied
            assert all(action.target != "web" for action in local.applied), "a refused decision was applied"
            beyond = [d for d in local_decisions("greedy-scaler") if "outside the bounds" in d.why][0]
            assert beyond.status.value == "rejected"
            assert "5 replicas of web asked, at most 3 allowed on this node" in beyond.why
            assert beyond.taxonomy.locus.value == "decentralized"

            # The same decisions through the plane's gRPC API.
            with grpc.insecure_channel(server.api_target) as channel:
                stub = pb_grpc.ControlPlaneStub(channel)
                listed = stub.ListDecisions(
                    pb.ListDecisionsRequest(controller="node-a/local-scaler"), timeout=5
                )
            statuses = {info.status for info in listed.decisions}
            assert pb.DECISION_STATUS_APPLIED in statuses
            assert all(info.controller == "node-a/local-scaler" for info in listed.decisions)
            assert any("decided on node node-a" in info.why for info in listed.decisions)
        finally:
            agent_loop.run_until_complete(agent.stop())
            agent_loop.close()


def test_crash_restarter_brings_back_an_exited_replica_when_remediation_is_allowed(
    broker, tmp_path: Path
) -> None:
    async def scenario() -> None:
        registry = ControllerRegistry()
        registry.register(CrashRestarter)
        node = ProcessActuator(NodeSpec("node-a"))
        await node.apply(Scale(target="api", replicas=2))
        config = AgentConfig(
            "node-a",
            agent_settings(broker, "node-a"),
            tmp_path,
            tick_seconds=0.05,
            controllers={"crash-restarter": {"period_seconds": 0.05}},
        )
        agent = NodeAgent(config, node, registry=registry)
        plane = MqttActuator(
            CentralConfig(central_settings(broker), bounds=Bounds(allowed_actions=frozenset({"remediate"})))
        )
        await plane.start()
        await agent.start()
        try:
            await plane.wait_for_nodes(["node-a"], 10)
            while agent.bounds.version <= 0:
                await asyncio.sleep(0.01)
            victim = node.replicas["api-node-a-0"].process
            os.kill(victim.pid, signal.SIGKILL)
            deadline = time.monotonic() + 10
            while not (
                len(node.replicas) == 2
                and all(replica.running for replica in node.replicas.values())
                and node.replicas["api-node-a-0"].process is not victim
            ):
                assert time.monotonic() < deadline, "the exited replica was not restarted"
                await asyncio.sleep(0.02)
            applied = []
            while not applied:  # the tick stores its decisions right after applying them
                assert time.monotonic() < deadline, "the restart was not recorded"
                await asyncio.sleep(0.02)
                decisions = agent.store.list(controller="crash-restarter", page_size=10)[0]
                applied = [d for d in decisions if d.status.value == "applied"]
            assert applied and isinstance(applied[0].action, Remediate)
            assert "1 of 2 replicas of api exited" in applied[0].action.reason
        finally:
            await agent.stop()
            await node.stop()
            await plane.stop()

    run(scenario())
