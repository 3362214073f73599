"""Paged attention: each layer writes the new tokens' KV into the stage's chunks and attends through rows.

Keys and values are gathered through the plan's physical rows (so they may span any number of chunks) and
fed to PyTorch's scaled-dot-product attention with grouped-query heads. The row-to-chunk split is computed
once per micro-batch and reused by every layer of the stage.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from services.pipelive.kv_cache import RowGroups, StageKVCache, group_rows
from services.pipelive.model import AttendFn
from services.pipelive.plan import StepPlan


class PagedAttention:
    """Attention of one micro-batch on one stage; `for_layer(layer)` is what the decoder layer calls."""

    def __init__(self, plan: StepPlan, cache: StageKVCache) -> None:
        self.plan = plan
        self.cache = cache
        device = cache.device
        self._write = group_rows(plan.write_rows.to(device), cache.rows_per_chunk)
        self._decode: RowGroups | None = None
        self._decode_mask: torch.Tensor | None = None
        if plan.decode_rows is not None and plan.decode_lengths is not None:
            batch, width = plan.decode_rows.shape
            self._decode = group_rows(plan.decode_rows.reshape(-1).to(device), cache.rows_per_chunk)
            columns = torch.arange(width, device=device)
            self._decode_mask = (columns[None, :] < plan.decode_lengths.to(device)[:, None]).view(
                batch, 1, 1, width
            )
        self._prefill: list[tuple[RowGroups | None, torch.Tensor | None]] = []
        for span in plan.prefills:
            if span.start == 0:
                self._prefill.append((None, None))  # no cached context: attend to the fresh keys, causally
                continue
            context = span.start + span.length
            keys = torch.arange(context, device=device)
            queries = torch.arange(span.start, context, device=device)
            mask = (keys[None, :] <= queries[:, None]).view(1, 1, span.length, context)
            self._prefill.append((group_rows(span.context_rows.to(device), cache.rows_per_chunk), mask))

    def for_layer(self, layer: int) -> AttendFn:
        def attend(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
            return self._attend(layer, query, key, value)

        return attend

    def _attend(
        self, layer: int, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor
    ) -> torch.Tensor:
        self.cache.write(layer, self._write, key, value)
        out = torch.empty_like(query)
        if self._decode is not None:
            batch = self.plan.num_decodes
            kv = self.cache.gather(layer, self._decode)  # [2, kv_heads, B*T, d]
            kv = kv.view(2, kv.shape[1], batch, -1, kv.shape[-1]).transpose(1, 2)  # [2, B, kv_heads, T, d]
            q = query[:batch].unsqueeze(2)  # [B, heads, 1, d]
            attended = F.scaled_dot_product_attention(
                q, kv[0], kv[1], attn_mask=self._decode_mask, enable_gqa=True
            )
            out[:batch] = attended.squeeze(2)
        for span, (rows, mask) in zip(self.plan.prefills, self._prefill, strict=True):
            tokens = slice(span.token_start, span.token_start + span.length)
            q = query[tokens].transpose(0, 1).unsqueeze(0)  # [1, heads, L, d]
            if rows is None:
                k = key[tokens].transpose(0, 1).unsqueeze(0)
                v = value[tokens].transpose(0, 1).unsqueeze(0)
                attended = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
            else:
                kv = self.cache.gather(layer, rows).unsqueeze(1)  # [2, 1, kv_heads, C, d]
                attended = F.scaled_dot_product_attention(q, kv[0], kv[1], attn_mask=mask, enable_gqa=True)
            out[tokens] = attended.squeeze(0).transpose(0, 1)
        return out
