"""Llama-layout safetensors checkpoints: write the seeded model as one, and load a stage's share of one.

The layout is Hugging Face's (`model.embed_tokens.weight`, `model.layers.{i}.self_attn.q_proj.weight`, ...,
`model.norm.weight`, `lm_head.weight`) with a `config.json`, so a user's real Llama weights load as they are
and vLLM can serve the same files. A stage opens the files lazily and reads only its own layers' tensors.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from services.pipelive.config import ModelConfig
from services.pipelive.model import LayerWeights, StageWeights, seeded_embedding, seeded_head, seeded_layer

_LAYER = "model.layers.{}."


def write_checkpoint(config: ModelConfig, directory: str | Path) -> Path:
    """Save the seeded model `config` describes as `model.safetensors` + `config.json` in `directory`."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {"model.embed_tokens.weight": seeded_embedding(config)}
    q_out = config.num_attention_heads * config.head_dim
    kv_out = config.num_key_value_heads * config.head_dim
    for index in range(config.num_hidden_layers):
        layer = seeded_layer(config, index)
        prefix = _LAYER.format(index)
        q, k, v = layer.qkv_proj.split([q_out, kv_out, kv_out])
        gate, up = layer.gate_up_proj.chunk(2)
        tensors |= {
            prefix + "input_layernorm.weight": layer.input_norm,
            prefix + "self_attn.q_proj.weight": q,
            prefix + "self_attn.k_proj.weight": k,
            prefix + "self_attn.v_proj.weight": v,
            prefix + "self_attn.o_proj.weight": layer.o_proj,
            prefix + "post_attention_layernorm.weight": layer.post_attention_norm,
            prefix + "mlp.gate_proj.weight": gate,
            prefix + "mlp.up_proj.weight": up,
            prefix + "mlp.down_proj.weight": layer.down_proj,
        }
    norm, head = seeded_head(config)
    tensors["model.norm.weight"] = norm
    if not config.tie_word_embeddings:
        tensors["lm_head.weight"] = head
    save_file({name: t.contiguous() for name, t in tensors.items()}, str(directory / "model.safetensors"))
    (directory / "config.json").write_text(json.dumps(config.to_hf_json(), indent=2) + "\n")
    return directory


class CheckpointReader:
    """Reads named tensors from every `*.safetensors` file of a checkpoint directory, on demand."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        files = sorted(self.directory.glob("*.safetensors"))
        if not files:
            raise FileNotFoundError(f"no *.safetensors files in {self.directory}")
        self._where: dict[str, Path] = {}
        for file in files:
            with safe_open(str(file), framework="pt") as handle:
                for name in handle.keys():  # noqa: SIM118 - safe_open is not a mapping
                    self._where[name] = file

    def has(self, name: str) -> bool:
        return name in self._where

    def tensor(
        self, name: str, shape: tuple[int, ...], dtype: torch.dtype, device: str | torch.device
    ) -> torch.Tensor:
        if name not in self._where:
            raise KeyError(f"checkpoint {self.directory} has no tensor {name}")
        with safe_open(str(self._where[name]), framework="pt") as handle:
            tensor = handle.get_tensor(name)
        if tuple(tensor.shape) != shape:
            raise ValueError(f"{name} has shape {tuple(tensor.shape)}, config.json implies {shape}")
        return tensor.to(device=device, dtype=dtype).contiguous()


def load_stage_weights(
    config: ModelConfig,
    directory: str | Path,
    layers: range,
    first: bool,
    last: bool,
    device: str | torch.device = "cpu",
) -> StageWeights:
    """The tensors one stage needs from a Llama-layout checkpoint, fused as the engine computes with them."""
    reader = CheckpointReader(directory)
    dtype = config.torch_dtype
    h, inter = config.hidden_size, config.intermediate_size
    q_out = config.num_attention_heads * config.head_dim
    kv_out = config.num_key_value_heads * config.head_dim

    def get(name: str, shape: tuple[int, ...]) -> torch.Tensor:
        return reader.tensor(name, shape, dtype, device)

    weights = StageWeights(layers={})
    for index in layers:
        prefix = _LAYER.format(index)
        qkv = torch.cat(
            [
                get(prefix + "self_attn.q_proj.weight", (q_out, h)),
                get(prefix + "self_attn.k_proj.weight", (kv_out, h)),
                get(prefix + "self_attn.v_proj.weight", (kv_out, h)),
            ]
        )
        gate_up = torch.cat(
            [get(prefix + "mlp.gate_proj.weight", (inter, h)), get(prefix + "mlp.up_proj.weight", (inter, h))]
        )
        weights.layers[index] = LayerWeights(
            input_norm=get(prefix + "input_layernorm.weight", (h,)),
            qkv_proj=qkv,
            o_proj=get(prefix + "self_attn.o_proj.weight", (h, q_out)),
            post_attention_norm=get(prefix + "post_attention_layernorm.weight", (h,)),
            gate_up_proj=gate_up,
            down_proj=get(prefix + "mlp.down_proj.weight", (h, inter)),
        )
    embedding_shape = (config.vocab_size, h)
    if first:
        weights.embed_tokens = get("model.embed_tokens.weight", embedding_shape)
    if last:
        weights.final_norm = get("model.norm.weight", (h,))
        tied = config.tie_word_embeddings or not reader.has("lm_head.weight")
        weights.lm_head = get("model.embed_tokens.weight" if tied else "lm_head.weight", embedding_shape)
    return weights
