"""The PipeLive server: one engine behind the OpenAI-compatible HTTP API and the gRPC API, one event loop."""

from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import dataclass
from pathlib import Path

import grpc
from aiohttp import web

from protos.pipelive.v1 import pipelive_pb2_grpc as pb_grpc
from services.pipelive.async_engine import AsyncEngine
from services.pipelive.config import EngineConfig, ModelConfig
from services.pipelive.engine import LLMEngine
from services.pipelive.grpc_api import PipeLiveService
from services.pipelive.http_api import build_app
from services.pipelive.metrics import PrometheusMetrics
from services.pipelive.tokenizer import ByteTokenizer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BoundPorts:
    http: int
    grpc: int


def _split(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host or "127.0.0.1", int(port)


class PipeLiveServer:
    """Builds the engine, then serves it over HTTP and gRPC until stopped."""

    def __init__(
        self,
        model: ModelConfig,
        engine: EngineConfig | None = None,
        checkpoint: str | Path | None = None,
        mode: str = "thread",
    ) -> None:
        engine = engine or EngineConfig()
        self.tokenizer = ByteTokenizer(model.vocab_size)
        cache_info = {
            "block_size": str(engine.block_size),
            "blocks_per_chunk": str(engine.blocks_per_chunk),
            "layers_per_unit": str(engine.layers_per_unit),
            "gpu_memory_utilization": str(engine.gpu_memory_utilization),
            "cache_dtype": model.dtype,
            "num_stages": str(engine.num_stages),
        }
        self.metrics = PrometheusMetrics(model.name, cache_info)
        # host_weights: keep the host-memory copy live reconfiguration copies moving layers from.
        llm = LLMEngine(
            model, engine, checkpoint=checkpoint, mode=mode, metrics=self.metrics, host_weights=True
        )
        self.engine = AsyncEngine(llm)
        self._runner: web.AppRunner | None = None
        self._grpc: grpc.aio.Server | None = None

    async def start(
        self, http_address: str = "127.0.0.1:8000", grpc_address: str = "127.0.0.1:50051"
    ) -> BoundPorts:
        self.engine.start()
        # handler_cancellation: a client that disconnects cancels its handler, streaming or not (aiohttp's
        # default only notices at the next write, which a whole completion makes after the last token);
        # closing the request's stream aborts it and frees its KV blocks.
        self._runner = web.AppRunner(
            build_app(self.engine, self.metrics, self.tokenizer), access_log=None, handler_cancellation=True
        )
        await self._runner.setup()
        host, port = _split(http_address)
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        http_port = self._runner.addresses[0][1]
        self._grpc = grpc.aio.server()
        pb_grpc.add_PipeLiveServicer_to_server(PipeLiveService(self.engine, self.tokenizer), self._grpc)
        grpc_port = self._grpc.add_insecure_port(grpc_address)
        if grpc_port == 0:
            raise OSError(f"cannot bind gRPC to {grpc_address}")
        await self._grpc.start()
        log.info(
            "PipeLive serving %s: HTTP on port %d, gRPC on port %d",
            self.engine.engine.model.name,
            http_port,
            grpc_port,
        )
        return BoundPorts(http_port, grpc_port)

    async def stop(self) -> None:
        if self._grpc is not None:
            await self._grpc.stop(grace=1)
        if self._runner is not None:
            await self._runner.cleanup()
        await asyncio.to_thread(self.engine.stop)

    async def serve_forever(self, http_address: str, grpc_address: str) -> None:
        stopped = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            # Stop cleanly on a signal: the stage processes are shut down, not orphaned.
            loop.add_signal_handler(signum, stopped.set)
        ports = await self.start(http_address, grpc_address)
        host = _split(http_address)[0]
        print(f"PipeLive: HTTP http://{host}:{ports.http}/v1, gRPC port {ports.grpc}", flush=True)
        try:
            await stopped.wait()
        finally:
            await self.stop()
