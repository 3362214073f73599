"""Shared pieces of the PipeLive tests: the tiny float64 model, engine settings, a server on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from services.pipelive.config import EngineConfig, ModelConfig
from services.pipelive.server import BoundPorts, PipeLiveServer

# float64 so that the paged engine and the dense reference pick the same argmax every time.
TINY = ModelConfig(name="pipelive-tiny", dtype="float64", seed=7)
PROMPTS = [[(5 + 3 * i + j * j) % 256 for j in range(n)] for i, n in enumerate((3, 17, 40, 9, 1, 26))]


def engine_config(**overrides: Any) -> EngineConfig:
    """Small blocks and chunks, so a few requests span several chunks and prefills get chunked."""
    settings: dict[str, Any] = {
        "block_size": 4,
        "blocks_per_chunk": 8,
        "initial_kv_blocks": 64,
        "max_num_batched_tokens": 32,
        "stage_memory_bytes": 16 * 2**20,
        "device": "cpu",
    }
    settings.update(overrides)
    return EngineConfig(**settings)


@dataclass
class RunningPipeLive:
    server: PipeLiveServer
    ports: BoundPorts
    loop: asyncio.AbstractEventLoop

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.http}"

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.ports.grpc}"


@contextlib.contextmanager
def running_pipelive(
    model: ModelConfig = TINY, config: EngineConfig | None = None
) -> Iterator[RunningPipeLive]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    server = PipeLiveServer(model, config or engine_config(num_stages=2))
    try:
        ports = asyncio.run_coroutine_threadsafe(server.start("127.0.0.1:0", "127.0.0.1:0"), loop).result(30)
        yield RunningPipeLive(server, ports, loop)
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
