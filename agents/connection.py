"""Broker settings and one long-lived MQTT connection that reconnects with backoff (aiomqtt).

`BrokerSettings` is where to connect and how (URL, credentials, TLS files). `MqttLink` keeps one client
connected: on every (re)connection it makes a fresh last will (so a will names the session it belongs
to), subscribes again and calls `on_connect` (an agent re-announces itself, the plane re-sends what is
still unanswered); each received message goes to `on_message`. aiomqtt clients cannot be reused after a
disconnect, so each attempt builds a new one; the broker keeps the session (`clean_session=False`) and with
it the QoS 1 messages queued while the link was down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import aiomqtt

log = logging.getLogger(__name__)

DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}


class NotConnected(aiomqtt.MqttError):
    """The link is down at the moment; the caller retries after the next connection."""


@dataclass(frozen=True, slots=True)
class BrokerSettings:
    """How to reach a broker: `mqtt://host:port` or `mqtts://host:port` (TLS), credentials, TLS files."""

    url: str = "mqtt://127.0.0.1:1883"
    username: str = ""
    password: str = ""
    # PEM files: the CA that signed the broker's certificate, and this client's certificate and key.
    tls_ca: str = ""
    tls_cert: str = ""
    tls_key: str = ""

    def __post_init__(self) -> None:
        self.address()  # raises on a bad URL
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ValueError("a client certificate needs both tls_cert and tls_key")

    def address(self) -> tuple[str, int, bool]:
        """Host, port and whether TLS is on; ValueError naming the URL if it is not one of ours."""
        parts = urlsplit(self.url)
        if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
            raise ValueError(
                f"broker URL must be mqtt://HOST[:PORT] or mqtts://HOST[:PORT], got {self.url!r}"
            )
        try:
            port = parts.port or DEFAULT_PORTS[parts.scheme]
        except ValueError:
            raise ValueError(f"broker URL {self.url!r} has an invalid port") from None
        return parts.hostname, port, parts.scheme == "mqtts" or bool(self.tls_ca)

    def client_options(self) -> dict:
        """Keyword arguments for `aiomqtt.Client` (host, port, credentials, TLS)."""
        host, port, tls = self.address()
        parts = urlsplit(self.url)
        username = self.username or unquote(parts.username or "")
        password = self.password or unquote(parts.password or "")
        options: dict = {"hostname": host, "port": port}
        if username:
            options["username"] = username
            options["password"] = password
        if tls:
            options["tls_params"] = aiomqtt.TLSParameters(
                ca_certs=self.tls_ca or None, certfile=self.tls_cert or None, keyfile=self.tls_key or None
            )
        return options


MessageHandler = Callable[[aiomqtt.Message], Awaitable[None]]
ConnectHandler = Callable[[], Awaitable[None]]


class MqttLink:
    """One client identity kept connected to the broker, reconnecting with exponential backoff."""

    def __init__(
        self,
        settings: BrokerSettings,
        identifier: str,
        subscriptions: Sequence[tuple[str, int]],
        on_message: MessageHandler,
        on_connect: ConnectHandler | None = None,
        will: Callable[[], aiomqtt.Will | None] | None = None,
        keepalive_seconds: int = 5,
        min_backoff_seconds: float = 0.05,
        max_backoff_seconds: float = 2.0,
    ) -> None:
        self.settings = settings
        self.identifier = identifier
        self.subscriptions = list(subscriptions)
        self.on_message = on_message
        self.on_connect = on_connect
        self.will = will
        self.keepalive_seconds = keepalive_seconds
        self.min_backoff_seconds = min_backoff_seconds
        self.max_backoff_seconds = max_backoff_seconds
        self.connected = asyncio.Event()
        self.connections = 0
        self.last_error = ""
        self._client: aiomqtt.Client | None = None
        # Done when the current connection is lost: publishes waiting for a PUBACK give up at once.
        self._lost: asyncio.Future[None] | None = None
        # Messages are handled by a worker of their own, so that a handler waiting for a publish never
        # keeps the link from noticing that the connection dropped.
        self._inbox: asyncio.Queue[aiomqtt.Message] = asyncio.Queue()
        self._tasks: list[asyncio.Task] = []

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._run(), name=f"mqtt {self.identifier}"),
            asyncio.create_task(self._work(), name=f"mqtt {self.identifier} handler"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    async def wait_connected(self, timeout: float) -> None:
        """Until the link is up; TimeoutError after `timeout` seconds (with the last error)."""
        try:
            await asyncio.wait_for(self.connected.wait(), timeout)
        except TimeoutError:
            raise TimeoutError(
                f"no connection to the MQTT broker at {self.settings.url} within {timeout:g} s"
                + (f": {self.last_error}" if self.last_error else "")
            ) from None

    async def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        """Publish now; NotConnected (an MqttError) while the link is down, MqttError if it drops."""
        client, lost = self._client, self._lost
        if client is None or lost is None or lost.done():
            raise NotConnected(f"not connected to {self.settings.url}")
        if qos == 0:
            await client.publish(topic, payload, qos=qos, retain=retain)
            return
        publishing = asyncio.ensure_future(client.publish(topic, payload, qos=qos, retain=retain))
        await asyncio.wait((publishing, lost), return_when=asyncio.FIRST_COMPLETED)
        if publishing.done():
            publishing.result()
            return
        publishing.cancel()
        raise NotConnected(f"connection to {self.settings.url} lost before the broker confirmed")

    async def _run(self) -> None:
        delay = self.min_backoff_seconds
        while True:
            client = aiomqtt.Client(
                **self.settings.client_options(),
                identifier=self.identifier,
                will=self.will() if self.will else None,
                clean_session=False,
                keepalive=self.keepalive_seconds,
                timeout=10.0,
                max_inflight_messages=1000,
                # Small messages, sent at once: Nagle's algorithm would hold them back for delayed ACKs.
                socket_options=((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),),
            )
            try:
                async with client:
                    self._client = client
                    self._lost = asyncio.get_running_loop().create_future()
                    for name, qos in self.subscriptions:
                        await client.subscribe(name, qos)
                    self.connected.set()
                    self.connections += 1
                    self.last_error = ""
                    delay = self.min_backoff_seconds
                    if self.on_connect is not None:
                        await self.on_connect()
                    async for message in client.messages:
                        self._inbox.put_nowait(message)
            except aiomqtt.MqttError as error:
                self.last_error = str(error)
                log.info("MQTT link %s down: %s; reconnecting in %.2f s", self.identifier, error, delay)
            finally:
                self._client = None
                self.connected.clear()
                if self._lost is not None and not self._lost.done():
                    self._lost.set_result(None)
            # Jitter spreads the reconnections of many agents after a broker restart.
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, self.max_backoff_seconds)

    async def _work(self) -> None:
        while True:
            message = await self._inbox.get()
            await self._handle(message)

    async def _handle(self, message: aiomqtt.Message) -> None:
        try:
            await self.on_message(message)
        except aiomqtt.MqttError as error:
            log.info("MQTT link %s: a reply to %s was not sent: %s", self.identifier, message.topic, error)
        except Exception:  # a bug in one handler must not take the link down
            log.exception("MQTT link %s: handling a message on %s failed", self.identifier, message.topic)
