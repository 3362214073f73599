"""The `controlplane serve` process: OTLP receivers, the ingest worker and the gRPC API on one event loop.

gRPC (OTLP TraceService, the ControlPlane API, health checking and reflection) runs on one `grpc.aio`
server listening on every configured gRPC address; OTLP/HTTP runs on aiohttp. Ports given as 0 are chosen
by the OS and reported in `ports` (tests use that).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
from aiohttp import web
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2  # registers TraceService for reflection

from controlplane import (
    Actuator,
    ActuatorContext,
    ActuatorRegistry,
    ControllerRegistry,
    Decision,
    Mode,
    default_actuator_registry,
    default_registry,
)
from controlplane.engine.controllers_config import load_controllers
from controlplane.engine.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from controlplane.engine.metrics import ControlPlaneMetrics
from controlplane.engine.runtime import ControlLoop
from controlplane.engine.store import DecisionStore
from controlplane.serve.api import ControlPlaneApi
from controlplane.serve.config import Config
from protos.controlplane.v1 import controlplane_pb2, controlplane_pb2_grpc
from telemetry import TelemetryModel
from telemetry.ingest import Ingestor
from telemetry.otlp_grpc import trace_service_handler
from telemetry.otlp_http import trace_receiver_app
from telemetry.otlp_status import TRACE_SERVICE

log = logging.getLogger(__name__)
# How often old decisions are deleted (age and count limits from the config).
RETENTION_SECONDS = 3600.0

API_SERVICE = controlplane_pb2.DESCRIPTOR.services_by_name["ControlPlane"].full_name
assert trace_service_pb2.DESCRIPTOR.services_by_name["TraceService"].full_name == TRACE_SERVICE


@dataclass(frozen=True, slots=True)
class BoundPorts:
    otlp_grpc: int
    otlp_http: int
    api: int


def split_address(address: str) -> tuple[str, int]:
    """'host:port' (or '[v6]:port') into its parts; raises ValueError on anything else."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"address must be HOST:PORT, got {address!r}")
    return host.strip("[]"), int(port)


def tune_interpreter() -> None:
    """Process-wide settings the control plane needs; every process that serves calls this."""
    # The linker holds millions of small long-lived tuples; with the default thresholds the cyclic
    # GC rescans them so often that ingest loses about a sixth of its throughput (measured with
    # `controlplane bench ingest`). Nothing in the model makes reference cycles.
    gc.set_threshold(100_000, 50, 1000)
    gc.freeze()
    # Controllers run in worker threads; one that spins on the CPU holds the GIL for a whole switch
    # interval each time the event loop needs it back. 1 ms instead of 5 ms keeps Export answering
    # fast while a controller misbehaves, at a negligible cost when controllers are idle.
    sys.setswitchinterval(0.001)


class ControlPlaneServer:
    """Builds and runs everything `serve` listens on, around one `TelemetryModel`."""

    def __init__(
        self,
        config: Config | None = None,
        model: TelemetryModel | None = None,
        actuator: Actuator | None = None,
        registry: ControllerRegistry | None = None,
        actuators: ActuatorRegistry | None = None,
    ) -> None:
        self.config = config or Config()
        self.model = model or TelemetryModel(self.config.model)
        server = self.config.server
        self.ingestor = Ingestor(self.model, server.max_queue_bytes, server.retry_after_seconds)
        self._grpc: grpc.aio.Server | None = None
        self._http: web.AppRunner | None = None
        self.health = health.aio.HealthServicer()
        if registry is None:
            registry = default_registry
            registry.discover()
        self.registry = registry
        self.store = DecisionStore(server.decision_store)
        # An actuator handed in is started and stopped by whoever made it; one built here, by the server.
        self._owns_actuator = actuator is None
        self.actuator = actuator or self._configured_actuator(actuators)
        self.metrics = ControlPlaneMetrics(
            span_counts=lambda: (self.model.spans_accepted, self.model.spans_rejected),
            queue_bytes=lambda: self.ingestor.queued_bytes,
            refused_requests=lambda: self.ingestor.requests_refused,
            controller_health=lambda: self.loop.health(),
            caps_counts=self.model.caps_counts,
        )
        controllers = load_controllers(self.config.controllers, registry)
        self.loop = ControlLoop(
            self.model,
            controllers,
            self.actuator,
            self.store,
            self.config.guardrails,
            tick_seconds=server.tick_seconds,
            metrics=self.metrics,
            origins={item.cls.name: registry.origin(item.cls.name) for item in controllers},
            quarantine_after=server.quarantine_after,
        )
        self.api_token = os.environ.get("CONTROLPLANE_API_TOKEN", server.api_token)
        self.ports: BoundPorts | None = None
        self._retention_task: asyncio.Task | None = None

    async def start(self) -> BoundPorts:
        tune_interpreter()
        server = self.config.server
        limit = server.max_request_bytes
        self._grpc = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", limit),
                ("grpc.max_send_message_length", limit),
                ("grpc.so_reuseport", 0),
            ]
        )
        self._grpc.add_generic_rpc_handlers((trace_service_handler(self.ingestor),))
        api = ControlPlaneApi(self.model, self.loop, self.store, self.api_token)
        controlplane_pb2_grpc.add_ControlPlaneServicer_to_server(api, self._grpc)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._grpc)
        reflection.enable_server_reflection(
            (TRACE_SERVICE, API_SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME), self._grpc
        )
        grpc_ports: dict[str, int] = {}
        credentials = self._tls_credentials()
        for address in dict.fromkeys((server.otlp_grpc, server.api)):
            split_address(address)
            if credentials is None:
                grpc_ports[address] = self._grpc.add_insecure_port(address)
            else:
                grpc_ports[address] = self._grpc.add_secure_port(address, credentials)
        self.ingestor.start()
        if self._owns_actuator:
            await self.actuator.start()
        self._retention()
        self._retention_task = asyncio.create_task(self._retention_every(RETENTION_SECONDS))
        self.loop.start()
        await self._grpc.start()
        host, port = split_address(server.otlp_http)
        app = trace_receiver_app(self.ingestor, limit)
        app.router.add_get("/metrics", self._metrics_page)
        app.router.add_get("/healthz", self._health_page)
        self._http = web.AppRunner(app, access_log=None)
        await self._http.setup()
        site = web.TCPSite(self._http, host, port, reuse_port=False)
        await site.start()
        http_port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        for name in ("", TRACE_SERVICE, API_SERVICE):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        self.ports = BoundPorts(grpc_ports[server.otlp_grpc], http_port, grpc_ports[server.api])
        log.info("listening: %s", self.ports)
        self._warn_if_acting_on_nothing()
        return self.ports

    def _warn_if_acting_on_nothing(self) -> None:
        """Say it loudly when controllers would act but the only actuator is the in-memory one."""
        acting = sorted(
            name for name, managed in self.loop.controllers.items() if managed.runner.mode is Mode.ACTIVE
        )
        if acting and self._owns_actuator and self.actuator.name == "memory":
            log.warning(
                "controllers %s are active but no substrate is configured (no [mqtt] agents): their "
                "decisions go to the in-memory actuator and change nothing real",
                ", ".join(acting),
            )

    def _configured_actuator(self, actuators: ActuatorRegistry | None) -> Actuator:
        """The actuator the configuration names, built by its plugin: node agents over MQTT when `[mqtt]`
        is enabled, else the in-memory one (which changes nothing real)."""
        actuators = actuators or default_actuator_registry
        context = ActuatorContext(
            submit_report=self.ingestor.submit_report,
            record_decisions=self._record_decisions,
            state_dir=Path(self.config.server.decision_store).resolve().parent,
        )
        if self.config.mqtt_enabled:
            return actuators.load("mqtt").from_config(self.config.mqtt, context)
        return actuators.load("memory").from_config({}, context)

    async def _record_decisions(self, decisions: Sequence[Decision]) -> None:
        """Decisions made outside a tick (node agents' own): the control loop stores them."""
        await self.loop.record_decisions(decisions)

    async def _metrics_page(self, request: web.Request) -> web.Response:
        return web.Response(body=self.metrics.exposition(), headers={"Content-Type": METRICS_CONTENT_TYPE})

    async def _health_page(self, request: web.Request) -> web.Response:
        # Serving means: receivers up and the ingest worker alive (a dead worker would accept nothing).
        healthy = self.ingestor.running
        return web.json_response(
            {"status": "ok" if healthy else "ingest stopped"}, status=200 if healthy else 503
        )

    def _tls_credentials(self) -> grpc.ServerCredentials | None:
        server = self.config.server
        if not (server.tls_cert or server.tls_key):
            return None
        if not (server.tls_cert and server.tls_key):
            raise ValueError("TLS needs both tls_cert and tls_key")
        with open(server.tls_key, "rb") as key, open(server.tls_cert, "rb") as cert:
            return grpc.ssl_server_credentials([(key.read(), cert.read())])

    def _retention(self) -> None:
        server = self.config.server
        self.store.apply_retention(
            server.decision_retention_days * 86_400 or None,
            server.decision_retention_count or None,
            time.time(),
        )

    async def _retention_every(self, seconds: float) -> None:
        while True:
            await asyncio.sleep(seconds)
            try:
                await asyncio.to_thread(self._retention)
            except Exception:  # a failed clean-up is retried next time; serving goes on
                log.exception("decision retention failed")

    async def stop(self, grace_seconds: float = 1.0) -> None:
        if self._retention_task is not None:
            self._retention_task.cancel()
        await self.loop.stop()
        if self._owns_actuator:
            await self.actuator.stop()
        await self.health.enter_graceful_shutdown()
        if self._http is not None:
            await self._http.cleanup()
        if self._grpc is not None:
            await self._grpc.stop(grace_seconds)
        await self.ingestor.stop()
        self.store.close()

    async def serve_forever(self) -> None:
        """Run until SIGINT/SIGTERM."""
        await self.start()
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(signum, stopping.set)
        await stopping.wait()
        await self.stop()
