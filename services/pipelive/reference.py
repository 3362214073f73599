"""A plain dense-attention forward of the same weights: the engine's correctness oracle and speed baseline.

No paging, no pipeline: all layers in one place, each layer's keys and values in one contiguous tensor
per batch, attention over its prefix. Batches here must have prompts of equal length.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
import torch.nn.functional as F

from services.pipelive.checkpoint import load_stage_weights
from services.pipelive.config import ModelConfig
from services.pipelive.model import RotaryEmbedding, decoder_layer, final_logits, seeded_stage_weights


class DenseReference:
    """The whole model with a contiguous KV cache."""

    def __init__(
        self, config: ModelConfig, checkpoint: str | Path | None = None, device: str = "cpu"
    ) -> None:
        self.config = config
        self.device = torch.device(device)
        layers = range(config.num_hidden_layers)
        if checkpoint:
            self.weights = load_stage_weights(config, checkpoint, layers, True, True, self.device)
        else:
            self.weights = seeded_stage_weights(config, layers, True, True, self.device)
        self.rotary = RotaryEmbedding(config, self.device)

    @torch.inference_mode()
    def generate(self, prompts: list[list[int]], max_tokens: int) -> list[list[int]]:
        """Greedy continuation of equal-length prompts, batched."""
        if len({len(p) for p in prompts}) != 1:
            raise ValueError("the dense reference batches prompts of equal length only")
        config = self.config
        batch, prompt_len = len(prompts), len(prompts[0])
        total = prompt_len + max_tokens
        shape = (batch, config.num_key_value_heads, total, config.head_dim)
        caches = {
            layer: (
                torch.zeros(shape, dtype=config.torch_dtype, device=self.device),
                torch.zeros(shape, dtype=config.torch_dtype, device=self.device),
            )
            for layer in self.weights.layers
        }
        tokens = torch.tensor(prompts, dtype=torch.long, device=self.device)
        outputs: list[list[int]] = [[] for _ in prompts]
        self.step_seconds: list[float] = []  # per iteration, prefill first (the benchmark reads it)
        start = 0
        while True:
            began = time.perf_counter()
            length = tokens.shape[1]
            positions = torch.arange(start, start + length, device=self.device).repeat(batch)
            rotary = self.rotary.tables(positions)
            assert self.weights.embed_tokens is not None
            hidden = self.weights.embed_tokens[tokens.reshape(-1)]
            for layer, weights in self.weights.layers.items():
                attend = self._attend(caches[layer], batch, start, length)
                hidden = decoder_layer(config, weights, hidden, rotary, attend)
            last = hidden.view(batch, length, -1)[:, -1]
            next_tokens = torch.argmax(final_logits(config, self.weights, last).float(), dim=-1)
            for row, token in enumerate(next_tokens.tolist()):
                outputs[row].append(int(token))
            self.step_seconds.append(time.perf_counter() - began)
            start += length
            if len(outputs[0]) == max_tokens:
                return outputs
            tokens = next_tokens.view(batch, 1)

    @staticmethod
    def _attend(cache: tuple[torch.Tensor, torch.Tensor], batch: int, start: int, length: int):  # noqa: ANN205
        keys, values = cache

        def attend(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
            # [B*L, heads, d] -> [B, heads, L, d]
            def to_batch(x: torch.Tensor) -> torch.Tensor:
                return x.view(batch, length, x.shape[1], x.shape[2]).transpose(1, 2)

            keys[:, :, start : start + length] = to_batch(key)
            values[:, :, start : start + length] = to_batch(value)
            q = to_batch(query)
            k, v = keys[:, :, : start + length], values[:, :, : start + length]
            if start == 0:
                out = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
            else:
                columns = torch.arange(start + length, device=q.device)
                rows = torch.arange(start, start + length, device=q.device)
                mask = columns[None, :] <= rows[:, None]
                out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)
            return out.transpose(1, 2).reshape(batch * length, query.shape[1], query.shape[2])

        return attend
