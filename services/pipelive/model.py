"""The Llama-style transformer's weights and math: RMSNorm, rotary embeddings, GQA attention, SwiGLU.

Weights are built per layer from a seed (so that a stage can build just its own layers and still get the
same model as every other stage) or come from a checkpoint (`checkpoint.py`). Attention is passed in as a
function, so the paged engine and the dense reference run the very same layer code.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from services.pipelive.config import ModelConfig

# attend(q [N, heads, d], k [N, kv_heads, d], v [N, kv_heads, d]) -> [N, heads, d], for one layer
AttendFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class LayerWeights:
    """One decoder layer; q/k/v and gate/up projections are fused so each is one matmul."""

    input_norm: torch.Tensor
    qkv_proj: torch.Tensor
    o_proj: torch.Tensor
    post_attention_norm: torch.Tensor
    gate_up_proj: torch.Tensor
    down_proj: torch.Tensor

    def tensors(self) -> list[torch.Tensor]:
        return [
            self.input_norm,
            self.qkv_proj,
            self.o_proj,
            self.post_attention_norm,
            self.gate_up_proj,
            self.down_proj,
        ]

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors())


@dataclass
class StageWeights:
    """What one pipeline stage holds: its layers, plus the embedding (first stage) and head (last stage)."""

    layers: dict[int, LayerWeights]
    embed_tokens: torch.Tensor | None = None
    final_norm: torch.Tensor | None = None
    lm_head: torch.Tensor | None = None
    extra: dict[str, torch.Tensor] = field(default_factory=dict)

    def nbytes(self) -> int:
        total = sum(layer.nbytes() for layer in self.layers.values())
        seen: set[int] = set()
        for tensor in (self.embed_tokens, self.final_norm, self.lm_head):
            if tensor is not None and tensor.data_ptr() not in seen:
                seen.add(tensor.data_ptr())
                total += tensor.numel() * tensor.element_size()
        return total


def _generator(config: ModelConfig, stream: int) -> torch.Generator:
    return torch.Generator().manual_seed(config.seed * 1_000_003 + stream)


def _normal(generator: torch.Generator, shape: tuple[int, ...], std: float) -> torch.Tensor:
    return torch.randn(shape, generator=generator, dtype=torch.float32) * std


def seeded_layer(config: ModelConfig, index: int) -> LayerWeights:
    """Layer `index` of the seeded model: always the same tensors for the same config and seed.

    Weights are drawn in float32 and then cast, so float32 and float64 builds are the same model.
    """
    generator = _generator(config, index + 1)
    h, d, inter = config.hidden_size, config.head_dim, config.intermediate_size
    q_out = config.num_attention_heads * d
    kv_out = config.num_key_value_heads * d
    weights = LayerWeights(
        input_norm=1.0 + _normal(generator, (h,), 0.1),
        qkv_proj=_normal(generator, (q_out + 2 * kv_out, h), h**-0.5),
        o_proj=_normal(generator, (h, q_out), q_out**-0.5),
        post_attention_norm=1.0 + _normal(generator, (h,), 0.1),
        gate_up_proj=_normal(generator, (2 * inter, h), h**-0.5),
        down_proj=_normal(generator, (h, inter), inter**-0.5),
    )
    return cast_layer(weights, config.torch_dtype, "cpu")


def seeded_embedding(config: ModelConfig) -> torch.Tensor:
    return _normal(_generator(config, 0), (config.vocab_size, config.hidden_size), 1.0).to(config.torch_dtype)


def seeded_head(config: ModelConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Final norm and LM head (the head is the embedding when the config ties them)."""
    generator = _generator(config, 10_000_000)
    norm = (1.0 + _normal(generator, (config.hidden_size,), 0.1)).to(config.torch_dtype)
    if config.tie_word_embeddings:
        return norm, seeded_embedding(config)
    head = _normal(generator, (config.vocab_size, config.hidden_size), config.hidden_size**-0.5)
    return norm, head.to(config.torch_dtype)


def cast_layer(weights: LayerWeights, dtype: torch.dtype, device: str | torch.device) -> LayerWeights:
    return LayerWeights(*(t.to(device=device, dtype=dtype).contiguous() for t in weights.tensors()))


def seeded_stage_weights(
    config: ModelConfig, layers: range, first: bool, last: bool, device: str | torch.device = "cpu"
) -> StageWeights:
    """The weights one stage needs, built from the seed without building the rest of the model."""
    weights = StageWeights(
        layers={i: cast_layer(seeded_layer(config, i), config.torch_dtype, device) for i in layers}
    )
    if first:
        weights.embed_tokens = seeded_embedding(config).to(device)
    if last:
        norm, head = seeded_head(config)
        weights.final_norm, weights.lm_head = norm.to(device), head.to(device)
    return weights


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    variance = x.pow(2).mean(-1, keepdim=True)
    return x * torch.rsqrt(variance + eps) * weight


class RotaryEmbedding:
    """Rotary position embeddings in Hugging Face Llama's rotate-half layout (so real checkpoints work)."""

    def __init__(self, config: ModelConfig, device: str | torch.device) -> None:
        d = config.head_dim
        inv_freq = 1.0 / (config.rope_theta ** (torch.arange(0, d, 2, dtype=torch.float64) / d))
        positions = torch.arange(config.max_position_embeddings, dtype=torch.float64)
        angles = torch.outer(positions, inv_freq)
        angles = torch.cat([angles, angles], dim=-1)
        self.cos = angles.cos().to(device=device, dtype=config.torch_dtype)
        self.sin = angles.sin().to(device=device, dtype=config.torch_dtype)

    def tables(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and sin for these positions, shaped to broadcast over heads: [N, 1, d]."""
        return self.cos[positions].unsqueeze(1), self.sin[positions].unsqueeze(1)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    return x * cos + _rotate_half(x) * sin


def decoder_layer(
    config: ModelConfig,
    weights: LayerWeights,
    hidden: torch.Tensor,
    rotary: tuple[torch.Tensor, torch.Tensor],
    attend: AttendFn,
) -> torch.Tensor:
    """One pre-norm decoder layer over a flat batch of tokens `hidden` [N, hidden_size]."""
    tokens = hidden.shape[0]
    d = config.head_dim
    q_out = config.num_attention_heads * d
    kv_out = config.num_key_value_heads * d
    x = rms_norm(hidden, weights.input_norm, config.rms_norm_eps)
    qkv = F.linear(x, weights.qkv_proj)
    q = qkv[:, :q_out].view(tokens, config.num_attention_heads, d)
    k = qkv[:, q_out : q_out + kv_out].view(tokens, config.num_key_value_heads, d)
    v = qkv[:, q_out + kv_out :].view(tokens, config.num_key_value_heads, d)
    cos, sin = rotary
    q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
    attention = attend(q, k, v).reshape(tokens, q_out)
    hidden = hidden + F.linear(attention, weights.o_proj)
    x = rms_norm(hidden, weights.post_attention_norm, config.rms_norm_eps)
    gate, up = F.linear(x, weights.gate_up_proj).chunk(2, dim=-1)
    return hidden + F.linear(F.silu(gate) * up, weights.down_proj)


def final_logits(config: ModelConfig, weights: StageWeights, hidden: torch.Tensor) -> torch.Tensor:
    assert weights.final_norm is not None and weights.lm_head is not None
    return F.linear(rms_norm(hidden, weights.final_norm, config.rms_norm_eps), weights.lm_head)
