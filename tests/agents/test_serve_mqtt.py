"""`serve` with MQTT: the embedded broker (amqtt, loopback only) when none is configured; config checks."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from actuators.memory import InMemoryActuator
from agents.connection import BrokerSettings
from agents.local_controllers import CrashRestarter
from agents.node import AgentConfig, NodeAgent
from agents.plane import MqttActuator
from agents.settings import MqttConfig
from controlplane import free_port
from controlplane.actions import Scale
from controlplane.registry import ControllerRegistry
from controlplane.serve.config import Config
from tests.support import running_server


def test_serve_with_mqtt_and_no_broker_runs_an_embedded_broker_on_loopback(tmp_path: Path) -> None:
    port = free_port()
    with running_server(
        config_sections={"mqtt": {"enabled": True, "embedded_port": port}},
        server_parts={"registry": ControllerRegistry()},
    ) as server:
        plane = server.server.actuator
        assert isinstance(plane, MqttActuator) and plane.embedded is not None
        assert plane.broker_url == f"mqtt://127.0.0.1:{port}"
        addresses = server.call(plane.embedded.listening_addresses)
        assert addresses and all(host == "127.0.0.1" for host, _ in addresses)

        async def agent_round_trip() -> None:
            local = InMemoryActuator()
            agent = NodeAgent(AgentConfig("node-a", BrokerSettings(plane.broker_url), tmp_path), local)
            await agent.start()
            try:
                await plane.wait_for_nodes(["node-a"], 10)
                outcome = await server.server.actuator.apply(Scale(target="api", replicas=4))
                assert outcome.ok and "api now has 4 replicas" in outcome.detail
                assert (await server.server.actuator.inventory()).replicas_of("api") == 4
            finally:
                await agent.stop()

        asyncio.run_coroutine_threadsafe(agent_round_trip(), server.loop).result(timeout=30)


def test_serve_without_mqtt_acts_in_memory_and_says_so_when_controllers_are_active(caplog) -> None:
    with running_server(server_parts={"registry": ControllerRegistry()}) as server:
        assert isinstance(server.server.actuator, InMemoryActuator)
    assert "change nothing real" not in caplog.text  # no controller: nothing to warn about
    registry = ControllerRegistry()
    registry.register(CrashRestarter)
    with (
        caplog.at_level(logging.WARNING, logger="controlplane.serve.server"),
        running_server(
            config_sections={"controllers": {"crash-restarter": {"mode": "active"}}},
            server_parts={"registry": registry},
        ),
    ):
        pass
    assert "controllers crash-restarter are active but no substrate is configured" in caplog.text


def test_mqtt_config_errors_are_clear(tmp_path: Path) -> None:
    path = tmp_path / "plane.toml"
    path.write_text('[mqtt]\nenabled = true\nbroker = "http://broker"\n')
    with pytest.raises(ValueError, match="broker URL must be mqtt://"):
        Config.load(path)
    path.write_text("[mqtt]\nenable = true\n")
    with pytest.raises(ValueError, match=r"\[mqtt\]: unknown key\(s\) \['enable'\]"):
        Config.load(path)
    path.write_text('[mqtt]\nenabled = true\nlocal_allowed_actions = ["scale", "teleport"]\n')
    with pytest.raises(ValueError, match="unknown action"):
        Config.load(path)
    path.write_text('[mqtt]\nenabled = true\nbroker = "mqtts://broker"\nlocal_allowed_actions = ["scale"]\n')
    loaded = MqttConfig.from_table(Config.load(path).mqtt)
    assert Config.load(path).mqtt_enabled and loaded.bounds().allowed_actions == {"scale"}
    assert loaded.broker_settings(loaded.broker).address() == ("broker", 8883, True)
