"""One stage's KV tensors, in PipeLive's resizable layout, and the paged read/write through physical rows.

The stage's layers are grouped k at a time (`layers_per_unit`, k = 4 as the PipeLive paper settles on):
the keys and values of the k layers of a group, for one chunk of blocks, are one tensor
`[k, 2, kv_heads, blocks_per_chunk * block_size, head_dim]` — one physical allocation unit. Chunks are
allocated and released whole (`add_chunk`, `release_chunk`), so the pool grows and shrinks without copying;
a layer group can later be dropped or added on its own when layers move between stages.

Addressing: physical slot `s` (from `BlockPool.slot_index`) holds token rows
`s * block_size ... s * block_size + block_size - 1`;
row `r` lives in chunk `r // rows_per_chunk` at local row `r % rows_per_chunk`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from services.pipelive.config import ModelConfig


@dataclass
class RowGroups:
    """Rows of one read or write, split by the chunk they live in (computed once, used by every layer)."""

    groups: list[
        tuple[int, torch.Tensor | None, torch.Tensor]
    ]  # (chunk id, positions in the batch, local rows)
    count: int


def group_rows(rows: torch.Tensor, rows_per_chunk: int) -> RowGroups:
    chunks = torch.div(rows, rows_per_chunk, rounding_mode="floor")
    local = rows - chunks * rows_per_chunk
    distinct = torch.unique(chunks).tolist()
    if len(distinct) == 1:
        return RowGroups([(int(distinct[0]), None, local)], rows.numel())
    groups = []
    for chunk_id in distinct:
        positions = torch.nonzero(chunks == chunk_id).squeeze(1)
        groups.append((int(chunk_id), positions, local[positions]))
    return RowGroups(groups, rows.numel())


def layer_units(layers: range, layers_per_unit: int) -> list[range]:
    """Consecutive groups of at most `layers_per_unit` layers: the stage's physical allocation units."""
    return [
        range(start, min(start + layers_per_unit, layers.stop))
        for start in range(layers.start, layers.stop, layers_per_unit)
    ]


class StageKVCache:
    """The KV tensors of one stage's layers, one tensor per (chunk, layer group)."""

    def __init__(
        self,
        config: ModelConfig,
        layers: range,
        block_size: int,
        blocks_per_chunk: int,
        layers_per_unit: int,
        device: str | torch.device,
    ) -> None:
        self.config = config
        self.layers = layers
        self.block_size = block_size
        self.blocks_per_chunk = blocks_per_chunk
        self.rows_per_chunk = block_size * blocks_per_chunk
        self.units = layer_units(layers, layers_per_unit)
        self.device = torch.device(device)
        self._unit_of_layer = {
            layer: (u, layer - unit.start) for u, unit in enumerate(self.units) for layer in unit
        }
        self._chunks: dict[int, list[torch.Tensor]] = {}

    @property
    def bytes_per_block_per_layer(self) -> int:
        return self.block_size * self.config.kv_bytes_per_token_per_layer()

    def chunk_nbytes(self) -> int:
        return self.blocks_per_chunk * self.bytes_per_block_per_layer * len(self.layers)

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for tensors in self._chunks.values() for t in tensors)

    def chunk_ids(self) -> list[int]:
        return sorted(self._chunks)

    def add_chunk(self, chunk_id: int) -> None:
        if chunk_id in self._chunks:
            raise ValueError(f"chunk {chunk_id} already exists on this stage")
        # Head-major rows: a gathered context is [kv_heads, tokens, head_dim], each head's rows contiguous,
        # the layout attention wants, so no transposing copy follows the gather.
        shape = (self.config.num_key_value_heads, self.rows_per_chunk, self.config.head_dim)
        self._chunks[chunk_id] = [
            torch.zeros((len(unit), 2, *shape), dtype=self.config.torch_dtype, device=self.device)
            for unit in self.units
        ]

    def release_chunk(self, chunk_id: int) -> None:
        # Dropping the last reference frees the memory (on CUDA it returns to the caching allocator).
        del self._chunks[chunk_id]

    def _layer_view(self, chunk_id: int, layer: int) -> torch.Tensor:
        unit, index = self._unit_of_layer[layer]
        return self._chunks[chunk_id][unit][index]  # [2, kv_heads, rows, head_dim]

    def write(self, layer: int, rows: RowGroups, key: torch.Tensor, value: torch.Tensor) -> None:
        """Store the new tokens' keys and values [N, kv_heads, head_dim] at their rows."""
        key, value = key.transpose(0, 1), value.transpose(0, 1)  # [kv_heads, N, head_dim]
        for chunk_id, positions, local in rows.groups:
            view = self._layer_view(chunk_id, layer)
            view[0].index_copy_(1, local, key if positions is None else key[:, positions])
            view[1].index_copy_(1, local, value if positions is None else value[:, positions])

    def gather(self, layer: int, rows: RowGroups) -> torch.Tensor:
        """Keys and values at `rows`, across however many chunks they span: [2, kv_heads, N, head_dim]."""
        if len(rows.groups) == 1:
            chunk_id, _, local = rows.groups[0]
            return self._layer_view(chunk_id, layer).index_select(2, local)
        shape = (2, self.config.num_key_value_heads, rows.count, self.config.head_dim)
        out = torch.empty(shape, dtype=self.config.torch_dtype, device=self.device)
        for chunk_id, positions, local in rows.groups:
            out.index_copy_(2, positions, self._layer_view(chunk_id, layer).index_select(2, local))
        return out
