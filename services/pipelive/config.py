"""Model and engine configuration for PipeLive: the Llama-style model's sizes and the engine's knobs."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import torch

from controlplane import DEFAULT_BLOCK_SIZE

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float64": torch.float64,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}


@dataclass(frozen=True)
class ModelConfig:
    """Shape of a Llama-style decoder-only transformer (names follow Hugging Face's LlamaConfig)."""

    name: str = "pipelive-tiny"
    vocab_size: int = 256
    hidden_size: int = 64
    intermediate_size: int = 128
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    head_dim: int = 16
    max_position_embeddings: int = 512
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    tie_word_embeddings: bool = False
    eos_token_id: int | None = None
    dtype: str = "float32"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError("num_attention_heads must be a multiple of num_key_value_heads")
        if self.head_dim % 2:
            raise ValueError("head_dim must be even (rotary embeddings rotate pairs)")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, not {self.dtype!r}")
        if self.num_hidden_layers < 1:
            raise ValueError("num_hidden_layers must be at least 1")

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    @property
    def dtype_bytes(self) -> int:
        return torch.tensor([], dtype=self.torch_dtype).element_size()

    def layer_parameter_count(self) -> int:
        """Parameters of one decoder layer: attention, MLP and two norms."""
        h, d = self.hidden_size, self.head_dim
        attention = h * d * (self.num_attention_heads * 2 + self.num_key_value_heads * 2)
        mlp = 3 * h * self.intermediate_size
        return attention + mlp + 2 * h

    def parameter_count(self) -> int:
        embeddings = self.vocab_size * self.hidden_size
        head = 0 if self.tie_word_embeddings else embeddings
        return embeddings + head + self.hidden_size + self.num_hidden_layers * self.layer_parameter_count()

    def kv_bytes_per_token_per_layer(self) -> int:
        """Keys and values of one token in one layer."""
        return 2 * self.num_key_value_heads * self.head_dim * self.dtype_bytes

    def with_dtype(self, dtype: str) -> ModelConfig:
        return replace(self, dtype=dtype)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_hf_json(self) -> dict[str, Any]:
        """The config.json of a Llama-layout checkpoint with these sizes."""
        return {
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim,
            "max_position_embeddings": self.max_position_embeddings,
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "tie_word_embeddings": self.tie_word_embeddings,
            "eos_token_id": self.eos_token_id,
            "hidden_act": "silu",
            "torch_dtype": self.dtype,
        }

    @classmethod
    def from_hf_json(cls, data: dict[str, Any], name: str = "pipelive-checkpoint") -> ModelConfig:
        """Read a Hugging Face Llama config.json (only the fields this engine uses)."""
        architectures = data.get("architectures") or ["LlamaForCausalLM"]
        if not any("Llama" in arch or "Mistral" in arch for arch in architectures):
            raise ValueError(
                f"unsupported architecture {architectures}: only Llama-layout models are supported"
            )
        if data.get("rope_scaling"):
            raise ValueError("rope_scaling is not supported")
        heads = int(data["num_attention_heads"])
        hidden = int(data["hidden_size"])
        eos = data.get("eos_token_id")
        if isinstance(eos, list):
            eos = eos[0] if eos else None
        dtype = data.get("torch_dtype") or "float32"
        return cls(
            name=name,
            vocab_size=int(data["vocab_size"]),
            hidden_size=hidden,
            intermediate_size=int(data["intermediate_size"]),
            num_hidden_layers=int(data["num_hidden_layers"]),
            num_attention_heads=heads,
            num_key_value_heads=int(data.get("num_key_value_heads") or heads),
            head_dim=int(data.get("head_dim") or hidden // heads),
            max_position_embeddings=int(data.get("max_position_embeddings", 2048)),
            rms_norm_eps=float(data.get("rms_norm_eps", 1e-6)),
            rope_theta=float(data.get("rope_theta", 10000.0)),
            tie_word_embeddings=bool(data.get("tie_word_embeddings", False)),
            eos_token_id=None if eos is None else int(eos),
            dtype=dtype if dtype in DTYPES else "float32",
        )

    @classmethod
    def from_file(cls, path: str | Path) -> ModelConfig:
        """A JSON file holding either this class's fields or a Hugging Face config.json."""
        data = json.loads(Path(path).read_text())
        own = {f.name for f in fields(cls)}
        if "num_hidden_layers" in data and set(data) <= own:
            return cls(**data)
        return cls.from_hf_json(data, name=Path(path).stem)


# Named sizes: tests use "tiny"; the benchmark uses "bench" (82 M parameters, head_dim 64 so that vLLM's CPU
# attention accepts it too); "small" is for quick manual runs; "300m" (336 M) is for larger machines.
PRESETS: dict[str, ModelConfig] = {
    "tiny": ModelConfig(),
    "small": ModelConfig(
        name="pipelive-small",
        vocab_size=256,
        hidden_size=256,
        intermediate_size=688,
        num_hidden_layers=8,
        num_attention_heads=8,
        num_key_value_heads=4,
        head_dim=32,
        max_position_embeddings=2048,
    ),
    "bench": ModelConfig(
        name="pipelive-bench",
        vocab_size=4096,
        hidden_size=768,
        intermediate_size=2048,
        num_hidden_layers=12,
        num_attention_heads=12,
        num_key_value_heads=4,
        head_dim=64,
        max_position_embeddings=2048,
    ),
    "300m": ModelConfig(
        name="pipelive-300m",
        vocab_size=32000,
        hidden_size=1024,
        intermediate_size=2816,
        num_hidden_layers=24,
        num_attention_heads=16,
        num_key_value_heads=4,
        head_dim=64,
        max_position_embeddings=2048,
    ),
}


@dataclass(frozen=True)
class EngineConfig:
    """How the engine is laid out and scheduled: stages, memory budgets, KV paging, batching."""

    num_stages: int = 1
    stage_memory_bytes: int = 256 * 2**20  # stands in for one GPU's memory, per stage
    gpu_memory_utilization: float = 0.9
    block_size: int = DEFAULT_BLOCK_SIZE  # tokens per KV block
    blocks_per_chunk: int = 64  # KV blocks per separately allocated chunk (the unit of grow/shrink)
    layers_per_unit: int = 4  # layers whose KV is stacked into one physical allocation unit (PipeLive's k)
    max_num_batched_tokens: int = 512
    max_num_seqs: int = 64
    max_model_len: int | None = None  # defaults to the model's max_position_embeddings
    num_microbatches: int | None = None  # defaults to the number of stages
    initial_kv_blocks: int | None = None  # defaults to what the budgets allow
    layer_split: tuple[int, ...] | None = None  # layers per stage; defaults to an even split
    stage_budgets: tuple[int, ...] | None = None  # bytes per stage when they differ (heterogeneous devices)
    threads_per_stage: int | None = None  # torch threads of a stage process; default: (cores - 1) / stages
    device: str = field(default_factory=lambda: "cuda" if torch.cuda.is_available() else "cpu")
    transport_backend: str = "auto"  # process mode: "nccl" between stages on distinct GPUs, else "gloo"
    # Process mode: stage processes started, the ones past num_stages on standby, so that live
    # reconfiguration can add stages up to this many (a stage is a torch.distributed rank, fixed at start).
    max_stages: int | None = None

    def __post_init__(self) -> None:
        if self.num_stages < 1:
            raise ValueError("num_stages must be at least 1")
        if not 0 < self.gpu_memory_utilization <= 1:
            raise ValueError("gpu_memory_utilization must be in (0, 1]")
        if self.stage_budgets is not None and (
            len(self.stage_budgets) != self.num_stages or min(self.stage_budgets) < 1
        ):
            raise ValueError(
                f"stage_budgets must give a positive budget for each of {self.num_stages} stages"
            )
        for name in (
            "block_size",
            "blocks_per_chunk",
            "layers_per_unit",
            "max_num_batched_tokens",
            "max_num_seqs",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.max_stages is not None and self.max_stages < self.num_stages:
            raise ValueError(
                f"max_stages ({self.max_stages}) must be at least num_stages ({self.num_stages})"
            )
        if self.transport_backend not in ("auto", "gloo", "nccl"):
            raise ValueError(
                f"transport_backend must be 'auto', 'gloo' or 'nccl', not {self.transport_backend!r}"
            )

    def layer_ranges(self, num_layers: int) -> list[range]:
        """Contiguous layer ranges, one per stage (an even split unless `layer_split` says otherwise)."""
        if self.layer_split is not None:
            counts = list(self.layer_split)
            if len(counts) != self.num_stages or sum(counts) != num_layers or min(counts) < 1:
                raise ValueError(
                    f"layer_split {counts} must give each of {self.num_stages} stages at least one layer "
                    f"and add up to {num_layers}"
                )
        else:
            if self.num_stages > num_layers:
                raise ValueError(
                    f"{self.num_stages} stages need at least as many layers (model has {num_layers})"
                )
            base, extra = divmod(num_layers, self.num_stages)
            counts = [base + (1 if index < extra else 0) for index in range(self.num_stages)]
        ranges, start = [], 0
        for count in counts:
            ranges.append(range(start, start + count))
            start += count
        return ranges


def resolve_model(spec: str | None) -> tuple[ModelConfig, Path | None]:
    """`--model` of the CLI: a preset name, a JSON config file, or a checkpoint directory with config.json."""
    if spec is None:
        return PRESETS["tiny"], None
    if spec in PRESETS:
        return PRESETS[spec], None
    path = Path(spec)
    if path.is_dir():
        config_file = path / "config.json"
        if not config_file.is_file():
            raise ValueError(f"{path} has no config.json")
        return ModelConfig.from_hf_json(json.loads(config_file.read_text()), name=path.name), path
    if path.is_file():
        return ModelConfig.from_file(path), None
    raise ValueError(
        f"--model {spec!r} is neither a preset ({', '.join(PRESETS)}), a JSON file nor a directory"
    )
