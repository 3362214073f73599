"""One stage's KV tensors, in PipeLive's resizable layout, and the paged read/write through physical rows.

The stage's layers are grouped k at a time (`layers_per_unit`, k = 4 as the PipeLive paper settles on):
the keys and values of the k layers of a group, for one chunk of blocks, are one tensor
`[k, 2, kv_heads, blocks_per_chunk * block_size, head_dim]` — one physical allocation unit. Chunks are
allocated and released whole (`add_chunk`, `release_chunk`), so the pool grows and shrinks without copying;
a layer group can later be dropped or added on its own when layers move between stages.

When layers move in (live reconfiguration), they get units of their own (`add_layers`); when layers move
out (`drop_layers`), a unit's memory is released once none of its layers is left on the stage — a unit
that keeps one staying layer keeps its memory, which is the price of stacking k layers (the paper's
trade-off between KV utilization and how finely memory can be released).

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
        self.layers_per_unit = layers_per_unit
        # Unit u holds layers `units[u]`; a released unit leaves None, so unit indices stay stable.
        self.units: list[range | None] = list(layer_units(layers, layers_per_unit))
        self.device = torch.device(device)
        self._unit_of_layer = {
            layer: (u, layer - unit.start) for u, unit in enumerate(self.units) if unit for layer in unit
        }
        self._chunks: dict[int, list[torch.Tensor | None]] = {}

    @property
    def bytes_per_block_per_layer(self) -> int:
        return self.block_size * self.config.kv_bytes_per_token_per_layer()

    def layer_slots(self) -> int:
        """Layers whose KV memory is allocated per block: every layer of every unit still held."""
        return sum(len(unit) for unit in self.units if unit is not None)

    def held_layers(self) -> list[int]:
        """Layers whose KV this cache can be read and written for (owned and incoming)."""
        return sorted(self._unit_of_layer)

    def chunk_nbytes(self) -> int:
        return self.blocks_per_chunk * self.bytes_per_block_per_layer * self.layer_slots()

    def nbytes(self) -> int:
        return sum(
            t.numel() * t.element_size()
            for tensors in self._chunks.values()
            for t in tensors
            if t is not None
        )

    def _new_unit(self, unit: range) -> torch.Tensor:
        # Head-major rows: a gathered context is [kv_heads, tokens, head_dim], each head's rows contiguous,
        # the layout attention wants, so no transposing copy follows the gather.
        shape = (self.config.num_key_value_heads, self.rows_per_chunk, self.config.head_dim)
        return torch.zeros((len(unit), 2, *shape), dtype=self.config.torch_dtype, device=self.device)

    def add_layers(self, layers: range) -> None:
        """Allocate units for incoming layers (k at a time) in every chunk; their KV starts as zeros."""
        clash = [layer for layer in layers if layer in self._unit_of_layer]
        if clash:
            raise ValueError(f"layers {clash} already have KV on this stage")
        for unit in layer_units(layers, self.layers_per_unit):
            index = len(self.units)
            self.units.append(unit)
            for tensors in self._chunks.values():
                tensors.append(self._new_unit(unit))
            for layer in unit:
                self._unit_of_layer[layer] = (index, layer - unit.start)

    def drop_layers(self, layers: list[int]) -> int:
        """Forget these layers' KV; release each unit none of whose layers is left. Returns bytes freed."""
        before = self.nbytes()
        for layer in layers:
            del self._unit_of_layer[layer]
        held = {unit for unit, _ in self._unit_of_layer.values()}
        for index, unit in enumerate(self.units):
            if unit is not None and index not in held:
                self.units[index] = None
                for tensors in self._chunks.values():
                    tensors[index] = None
        return before - self.nbytes()

    def block_rows(self, slots: torch.Tensor) -> RowGroups:
        """Every row of these physical slots (whole blocks), split by chunk."""
        offsets = torch.arange(self.block_size)
        rows = (slots.view(-1, 1) * self.block_size + offsets).reshape(-1)
        return group_rows(rows, self.rows_per_chunk)

    def read_rows(self, layer: int, rows: RowGroups) -> torch.Tensor:
        """A copy of one layer's KV at these rows: [2, kv_heads, N, head_dim]."""
        return self.gather(layer, rows).clone()

    def write_rows(self, layer: int, rows: RowGroups, kv: torch.Tensor) -> None:
        """Store [2, kv_heads, N, head_dim] (as `read_rows` returns it) at these rows of one layer."""
        for chunk_id, positions, local in rows.groups:
            part = kv if positions is None else kv.index_select(2, positions)
            self._layer_view(chunk_id, layer).index_copy_(2, local, part.to(self.device))

    def chunk_ids(self) -> list[int]:
        return sorted(self._chunks)

    def add_chunk(self, chunk_id: int) -> None:
        if chunk_id in self._chunks:
            raise ValueError(f"chunk {chunk_id} already exists on this stage")
        self._chunks[chunk_id] = [None if unit is None else self._new_unit(unit) for unit in self.units]

    def release_chunk(self, chunk_id: int) -> None:
        # Dropping the last reference frees the memory (on CUDA it returns to the caching allocator).
        del self._chunks[chunk_id]

    def _layer_view(self, chunk_id: int, layer: int) -> torch.Tensor:
        unit, index = self._unit_of_layer[layer]
        tensor = self._chunks[chunk_id][unit]
        assert tensor is not None
        return tensor[index]  # [2, kv_heads, rows, head_dim]

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
