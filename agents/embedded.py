"""The embedded broker (amqtt) that `serve` and `agent` use when no broker is configured.

It listens on 127.0.0.1 only, explicitly: a default that opened an unauthenticated broker on every
interface would hand the fleet to anyone on the network. It is meant for one machine and first steps;
fleets use a real broker (Mosquitto with the shipped ACLs, see docs/agents.md).
"""

from __future__ import annotations

import logging
import socket
from typing import Any

from amqtt.broker import Broker

from controlplane import (
    free_port,
)

LOOPBACK = "127.0.0.1"


class EmbeddedBroker:
    """An amqtt broker on 127.0.0.1:port (port 0: a free one, reported in `port` and `url`)."""

    def __init__(self, port: int = 0) -> None:
        self.port = port or free_port(LOOPBACK)
        self._broker: Broker | None = None

    @property
    def url(self) -> str:
        return f"mqtt://{LOOPBACK}:{self.port}"

    def _config(self) -> dict[str, Any]:
        return {
            "listeners": {"default": {"type": "tcp", "bind": f"{LOOPBACK}:{self.port}"}},
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
        }

    async def start(self) -> str:
        # amqtt logs every packet at INFO; the plane's own log is what an operator reads.
        logging.getLogger("amqtt").setLevel(logging.WARNING)
        self._broker = Broker(self._config())
        await self._broker.start()
        return self.url

    async def stop(self) -> None:
        if self._broker is not None:
            await self._broker.shutdown()
            self._broker = None

    def listening_addresses(self) -> list[tuple[str, int]]:
        """Where the broker's sockets are bound (tests check it is loopback only)."""
        addresses = []
        for server in self._broker._servers.values() if self._broker else ():  # noqa: SLF001
            for sock in getattr(server.instance, "sockets", ()):
                if sock.family in (socket.AF_INET, socket.AF_INET6):
                    addresses.append(sock.getsockname()[:2])
        return addresses
