"""PipeLive: a pipeline-parallel LLM serving engine with a paged KV cache that can be resized while it runs.

Modules, each with one job: `config` (model and engine settings), `model` (the Llama-style layer math and
seeded weights), `checkpoint` (Llama-layout safetensors), `block_pool` (block ids and the indirection to
physical slots), `kv_cache` (one stage's KV tensors in chunks), `plan` and `attention` (paged attention),
`stage` and `pipeline` (stages as threads or processes), `scheduler` (continuous batching), `engine` (one
iteration at a time), `reference` (dense oracle), and the serving side: `async_engine`, `http_api`,
`grpc_api`, `server`, `metrics`, `bench`, `cli`.
"""

from services.pipelive.block_pool import BlockPool, NoFreeBlocks, ResizeRefused
from services.pipelive.config import PRESETS, EngineConfig, ModelConfig
from services.pipelive.engine import LLMEngine, TokenOutput
from services.pipelive.params import InvalidRequest, SamplingParams

__all__ = [
    "PRESETS",
    "BlockPool",
    "EngineConfig",
    "InvalidRequest",
    "LLMEngine",
    "ModelConfig",
    "NoFreeBlocks",
    "ResizeRefused",
    "SamplingParams",
    "TokenOutput",
]
