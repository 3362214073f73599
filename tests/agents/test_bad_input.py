"""Bad input over MQTT: malformed payloads and messages on topics the sender does not own are refused,
counted, and lose nothing; broker ACLs keep agents inside their own subtree."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiomqtt
import pytest

from actuators.memory import InMemoryActuator
from agents import topics
from agents.connection import BrokerSettings, MqttLink
from agents.mosquitto import CENTRAL_USER
from agents.node import AgentConfig, NodeAgent
from agents.plane import CentralConfig, MqttActuator
from agents.wire import action_pb
from controlplane.actions import Scale
from protos.controlplane.v1 import agent_pb2 as apb
from telemetry import TelemetryModel
from tests.agents.conftest import PASSWORDS, agent_settings, central_settings, run, telemetry_context

Kind = topics.Kind


def _client(broker, user: str, password: str | None = None) -> aiomqtt.Client:
    return aiomqtt.Client(
        "127.0.0.1",
        broker.port,
        username=user,
        password=password or PASSWORDS[user],
        identifier=f"raw-{user}",
    )


async def _until(condition, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def test_agent_counts_malformed_and_misaddressed_actions_and_keeps_working(broker, tmp_path: Path) -> None:
    async def scenario() -> None:
        local = InMemoryActuator()
        agent = NodeAgent(AgentConfig("node-a", agent_settings(broker, "node-a"), tmp_path), local)
        plane = MqttActuator(CentralConfig(central_settings(broker)))
        await plane.start()
        await agent.start()
        try:
            await plane.wait_for_nodes(["node-a"], 10)
            actions = topics.topic("node-a", Kind.ACTIONS)
            async with _client(broker, CENTRAL_USER) as raw:
                await raw.publish(actions, b"\x08\x96\x01garbage\xff", 1)
                # A valid request for node-b published on node-a's topic.
                stray = apb.ActionRequest(
                    decision_key="k-stray", node="node-b", action=action_pb(Scale(target="api", replicas=9))
                )
                await raw.publish(actions, stray.SerializeToString(), 1)
                # Names no action at all: answered as failed, so the plane need not wait for a timeout.
                empty = apb.ActionRequest(
                    decision_key="k-empty", node="node-a", action=apb.ActionSpec(target="api")
                )
                await raw.publish(actions, empty.SerializeToString(), 1)
            await _until(lambda: sum(agent.rejected.values()) == 3)
            assert agent.rejected == {"malformed payload": 2, "topic not owned": 1}
            assert local.applied == []
            assert agent.applied.get("k-empty").detail.startswith(
                "malformed action: the action names no settings"
            )
            assert agent.applied.get("k-stray") is None
            # Still serving.
            outcome = await plane.apply(Scale(target="api", replicas=2))
            assert outcome.ok and local.applied == [Scale(target="api", replicas=2)]
        finally:
            await agent.stop()
            await plane.stop()

    run(scenario())


def test_plane_counts_malformed_and_spoofed_reports_and_ignores_them(broker, tmp_path: Path) -> None:
    async def scenario() -> None:
        plane = MqttActuator(
            CentralConfig(central_settings(broker)), telemetry_context(model := TelemetryModel())
        )
        await plane.start()
        try:
            async with _client(broker, "node-a") as node_a:
                await node_a.publish(topics.topic("node-a", Kind.STATE), b"\xff\xff not protobuf", 1)
                # node-a, on its own topic, claims to be node-b: refused as a topic node-a does not own.
                spoof = apb.NodeState(node="node-b", online=True, session="s", cpu_capacity=64)
                await node_a.publish(topics.topic("node-a", Kind.STATE), spoof.SerializeToString(), 1)
                spoofed = apb.ActionOutcome(decision_key="x", node="node-b", ok=True)
                await node_a.publish(topics.topic("node-a", Kind.OUTCOMES), spoofed.SerializeToString(), 1)
                bad = apb.TelemetryReport(node="node-a", seq=1, bucket_seconds=7.0, relative_accuracy=0.01)
                await node_a.publish(topics.topic("node-a", Kind.TELEMETRY), bad.SerializeToString(), 0)
            await _until(lambda: sum(plane.rejected.values()) == 4)
            assert plane.rejected == {"topic not owned": 2, "malformed payload": 2}
            assert plane.fleet.states == {}
            assert plane.telemetry_reports == 0 and model.snapshot().nodes == ()
        finally:
            await plane.stop()

    run(scenario())


def test_broker_acls_confine_an_agent_to_its_own_topics(broker, tmp_path: Path) -> None:
    async def scenario() -> None:
        plane = MqttActuator(CentralConfig(central_settings(broker)))
        local = InMemoryActuator()
        victim = NodeAgent(AgentConfig("node-a", agent_settings(broker, "node-a"), tmp_path), local)
        await plane.start()
        await victim.start()
        try:
            await plane.wait_for_nodes(["node-a"], 10)
            async with _client(broker, "node-b") as intruder:
                # node-b may neither speak for node-a nor give it actions: the broker drops both.
                fake = apb.NodeState(node="node-a", online=False, session=victim.session)
                await intruder.publish(topics.topic("node-a", Kind.STATE), fake.SerializeToString(), 1)
                order = apb.ActionRequest(
                    decision_key="k-intruder",
                    node="node-a",
                    action=action_pb(Scale(target="api", replicas=50)),
                )
                await intruder.publish(topics.topic("node-a", Kind.ACTIONS), order.SerializeToString(), 1)
                # Nor read node-a's actions.
                await intruder.subscribe(topics.topic("node-a", Kind.ACTIONS), 1)
                outcome = await plane.apply(Scale(target="api", replicas=1))
                assert outcome.ok
                with pytest.raises(TimeoutError):
                    async with asyncio.timeout(0.3):
                        await anext(aiter(intruder.messages))
            assert plane.fleet.online("node-a")
            assert local.applied == [Scale(target="api", replicas=1)]
            assert agent_settings(broker, "node-a").username == "node-a"
        finally:
            await victim.stop()
            await plane.stop()

    run(scenario())


def test_a_wrong_password_is_refused_by_the_broker(broker) -> None:
    async def scenario() -> None:
        link = MqttLink(BrokerSettings(broker.url, "node-a", "wrong"), "agent-node-a", [], on_message=_ignore)
        link.start()
        try:
            with pytest.raises(TimeoutError, match="no connection to the MQTT broker"):
                await link.wait_connected(1.0)
            assert "Not authorized" in link.last_error or "authoriz" in link.last_error.lower()
        finally:
            await link.stop()

    run(scenario())


async def _ignore(message: aiomqtt.Message) -> None:
    return None
