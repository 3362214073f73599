"""MQTT over TLS: with certificates configured, the broker listens TLS-only and agents and plane use it."""

from __future__ import annotations

from pathlib import Path

import aiomqtt
import pytest

from actuators.memory import InMemoryActuator
from agents.connection import BrokerSettings
from agents.mosquitto import CENTRAL_USER, MosquittoBroker
from agents.node import AgentConfig, NodeAgent
from agents.plane import CentralConfig, MqttActuator
from controlplane.actions import Scale
from tests.agents.conftest import PASSWORDS, run
from tests.support import self_signed_certificate


@pytest.fixture
def tls_broker(tmp_path: Path):
    key, cert = self_signed_certificate(tmp_path)
    broker = MosquittoBroker(
        tmp_path / "broker", PASSWORDS, tls={"cafile": str(cert), "certfile": str(cert), "keyfile": str(key)}
    )
    broker.start()
    try:
        yield broker, cert
    finally:
        broker.kill()


def test_actions_round_trip_over_tls_and_a_plaintext_client_is_refused(tls_broker, tmp_path: Path) -> None:
    broker, cert = tls_broker
    assert broker.url.startswith("mqtts://")

    async def scenario() -> None:
        local = InMemoryActuator()
        agent_link = BrokerSettings(broker.url, "node-a", PASSWORDS["node-a"], tls_ca=str(cert))
        agent = NodeAgent(AgentConfig("node-a", agent_link, tmp_path / "agent"), local)
        plane = MqttActuator(
            CentralConfig(BrokerSettings(broker.url, CENTRAL_USER, PASSWORDS[CENTRAL_USER], tls_ca=str(cert)))
        )
        await plane.start()
        await agent.start()
        try:
            await plane.wait_for_nodes(["node-a"], 10)
            outcome = await plane.apply(Scale(target="api", replicas=2))
            assert outcome.ok, outcome
            assert local.state.replicas_of("api") == 2
        finally:
            await agent.stop()
            await plane.stop()
        # The listener speaks TLS only: a plaintext client (right password) cannot connect.
        plaintext = aiomqtt.Client(
            "127.0.0.1", broker.port, username="node-a", password=PASSWORDS["node-a"], timeout=3
        )
        with pytest.raises(aiomqtt.MqttError):
            async with plaintext:
                pass

    run(scenario())


def test_a_client_that_does_not_trust_the_brokers_certificate_cannot_connect(
    tls_broker, tmp_path: Path
) -> None:
    broker, _ = tls_broker
    (tmp_path / "other").mkdir()
    _, other_ca = self_signed_certificate(tmp_path / "other")

    async def scenario() -> None:
        settings = BrokerSettings(broker.url, "node-a", PASSWORDS["node-a"], tls_ca=str(other_ca))
        client = aiomqtt.Client(**settings.client_options(), timeout=3)
        with pytest.raises(aiomqtt.MqttError):
            async with client:
                pass

    run(scenario())
