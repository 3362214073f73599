"""Fixtures for the MQTT suite: a real Mosquitto on a free loopback port, from the shipped configuration."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest

from agents.connection import BrokerSettings
from agents.mosquitto import CENTRAL_USER, MosquittoBroker
from controlplane import ActuatorContext
from telemetry import TelemetryModel
from telemetry.ingest import Ingestor

NODES = ("node-a", "node-b", "node-c")
PASSWORDS = {CENTRAL_USER: "plane-secret", **{node: f"{node}-secret" for node in NODES}}


def run(coroutine: Coroutine[Any, Any, Any], timeout: float = 30.0) -> Any:
    """Run a scenario on a fresh event loop, failing (not hanging) after `timeout` seconds."""

    async def bounded() -> Any:
        return await asyncio.wait_for(coroutine, timeout)

    return asyncio.run(bounded())


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[MosquittoBroker]:
    mosquitto = MosquittoBroker(tmp_path / "broker", PASSWORDS)
    mosquitto.start()
    try:
        yield mosquitto
    finally:
        mosquitto.kill()


def central_settings(broker: MosquittoBroker) -> BrokerSettings:
    return BrokerSettings(broker.url, CENTRAL_USER, PASSWORDS[CENTRAL_USER])


def agent_settings(broker: MosquittoBroker, node: str) -> BrokerSettings:
    return BrokerSettings(broker.url, node, PASSWORDS[node])


def telemetry_context(model: TelemetryModel) -> ActuatorContext:
    """What `serve` lends the MQTT actuator for telemetry: its model's Ingestor (the model's only writer)."""
    return ActuatorContext(submit_report=Ingestor(model).submit_report)
