"""Fixtures for the MQTT suite: a real Mosquitto on a free loopback port, from the shipped configuration."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest

from controlplane.mqtt.connection import BrokerSettings
from controlplane.mqtt.mosquitto import CENTRAL_USER, MosquittoBroker

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
