"""PipeLive: a pipeline-parallel LLM serving engine with a paged KV cache that can be resized while it runs.

Modules, each with one job: `config` (model and engine settings), `model` (the Llama-style layer math and
seeded weights), `checkpoint` (Llama-layout safetensors), `block_pool` (block ids and the indirection to
physical slots), `kv_cache` (one stage's KV tensors in chunks), `plan` and `attention` (paged attention),
`stage` and `pipeline` (stages as threads or processes), `transport` (messages between stage processes,
gloo or NCCL), `scheduler` (continuous batching), `engine` (one iteration at a time), `sampling`
(temperature, top_k, top_p), `reference` (dense oracle), `pool_control` (what a reconfiguration may do to
the engine), and the serving side: `async_engine`, `http_api`, `grpc_api`, `server`, `metrics`, `cli`. The
benchmarks are in the `bench` subpackage.
"""

from importlib import import_module
from typing import Any

# Imported on first use, so that `controlplane` commands other than `pipelive` never load torch.
_EXPORTS = {
    "PRESETS": "config",
    "EngineConfig": "config",
    "ModelConfig": "config",
    "BlockPool": "block_pool",
    "NoFreeBlocks": "block_pool",
    "ResizeRefused": "block_pool",
    "LLMEngine": "engine",
    "TokenOutput": "engine",
    "InvalidRequest": "params",
    "SamplingParams": "params",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"services.pipelive.{_EXPORTS[name]}"), name)
