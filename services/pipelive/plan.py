"""What one micro-batch asks of every stage: the tokens, their positions, and where their KV lives.

The driver builds a `StepPlan` from the scheduler's decisions and the block pool's indirection table, and
the same plan travels down the pipeline (each stage reads its own layers' KV through the same rows).
Decodes (one new token with a cached context) are batched into one padded attention call; every other
sequence chunk (a prompt, or part of one under chunked prefill) is attended on its own.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class SequenceWork:
    """One sequence's part of a step: new tokens from position `start`, and its blocks' physical slots."""

    request_id: str
    token_ids: list[int]
    start: int
    slots: list[int]
    sample: bool  # the last new token completes the known tokens, so its logits pick the next one

    @property
    def is_decode(self) -> bool:
        return len(self.token_ids) == 1 and self.start > 0


@dataclass(frozen=True)
class PrefillSpan:
    """Tokens `[token_start, token_start + length)` of the batch: positions `start ...` of one sequence."""

    token_start: int
    length: int
    start: int
    context_rows: torch.Tensor  # rows of positions 0 .. start + length - 1


@dataclass(frozen=True)
class StepPlan:
    """A micro-batch, laid out flat: decode tokens first, then each prefill span."""

    token_ids: torch.Tensor  # [N]
    positions: torch.Tensor  # [N]
    write_rows: torch.Tensor  # [N] physical row of each new token's KV
    decode_rows: torch.Tensor | None  # [B, T] rows of each decode's context, padded with a valid row
    decode_lengths: torch.Tensor | None  # [B] context length of each decode, new token included
    prefills: tuple[PrefillSpan, ...]
    sample_index: torch.Tensor  # [S] which tokens' logits the last stage returns
    sample_request_ids: tuple[str, ...]

    @property
    def num_tokens(self) -> int:
        return int(self.token_ids.numel())

    @property
    def num_decodes(self) -> int:
        return 0 if self.decode_lengths is None else int(self.decode_lengths.numel())


def _context_rows(slots: torch.Tensor, length: int, block_size: int) -> torch.Tensor:
    positions = torch.arange(length)
    return slots[positions // block_size] * block_size + positions % block_size


def build_plan(work: list[SequenceWork], block_size: int) -> StepPlan:
    """Lay out one micro-batch; `work` may mix decodes and prefills in any order."""
    decodes = [w for w in work if w.is_decode]
    prefills = [w for w in work if not w.is_decode]
    ordered = decodes + prefills
    token_ids: list[int] = []
    positions: list[int] = []
    write_rows: list[torch.Tensor] = []
    sample_index: list[int] = []
    sample_ids: list[str] = []
    spans: list[PrefillSpan] = []
    for item in ordered:
        slots = torch.tensor(item.slots, dtype=torch.long)
        end = item.start + len(item.token_ids)
        token_start = len(token_ids)
        token_ids.extend(item.token_ids)
        positions.extend(range(item.start, end))
        rows = _context_rows(slots, end, block_size)
        write_rows.append(rows[item.start :])
        if not item.is_decode:
            spans.append(PrefillSpan(token_start, len(item.token_ids), item.start, rows))
        if item.sample:
            sample_index.append(len(token_ids) - 1)
            sample_ids.append(item.request_id)
    decode_rows = decode_lengths = None
    if decodes:
        lengths = [d.start + 1 for d in decodes]
        width = max(lengths)
        max_blocks = (width + block_size - 1) // block_size
        # Pad each slot list with its own first slot: padded rows stay valid addresses and are masked out.
        table = torch.tensor([d.slots + [d.slots[0]] * (max_blocks - len(d.slots)) for d in decodes])
        columns = torch.arange(width)
        decode_rows = table[:, columns // block_size] * block_size + columns % block_size
        decode_lengths = torch.tensor(lengths)
    return StepPlan(
        token_ids=torch.tensor(token_ids, dtype=torch.long),
        positions=torch.tensor(positions, dtype=torch.long),
        write_rows=torch.cat(write_rows) if write_rows else torch.zeros(0, dtype=torch.long),
        decode_rows=decode_rows,
        decode_lengths=decode_lengths,
        prefills=tuple(spans),
        sample_index=torch.tensor(sample_index, dtype=torch.long),
        sample_request_ids=tuple(sample_ids),
    )
