"""Incremental KV patching for live reconfiguration, in the manner of pre-copy live VM migration.

While decoding continues, the KV blocks of the layers that move are copied from their source stage to
their target stage; every write the source makes meanwhile is recorded in a dirty bitmap over
(layer, physical slot), and the dirty blocks are copied again, round after round, until few enough are left
(`threshold` blocks, 16 by default as in Llumnix) or `max_rounds` rounds have run (3 by default). The rest —
the final dirty tail — is copied inside the pause at the switch, so the pause grows with that tail and not
with the total KV size.

Migration traffic runs on a channel of its own beside inference traffic. Each stage has one migration
endpoint that carries one transfer at a time; a transfer takes its own endpoint with a try-lock and then
asks the peer's (acknowledge, or reject when the peer is busy), never blocking while holding a lock, so
two stages migrating to each other at the same moment cannot deadlock: one is rejected, backs off for a
random moment and retries.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from services.pipelive.kv_cache import StageKVCache

DEFAULT_DIRTY_THRESHOLD = 16  # blocks (Llumnix's figure)
DEFAULT_MAX_ROUNDS = 3


class DirtyBitmap:
    """Which blocks of the leaving layers the source stage wrote since they were last taken for copying.

    A numpy array rather than a tensor: it is marked inside the stage's inference mode and cleared outside.
    """

    def __init__(self, layers: Sequence[int], block_size: int) -> None:
        self.layers = list(layers)
        self.block_size = block_size
        self._row = {layer: index for index, layer in enumerate(self.layers)}
        self._bits = np.zeros((len(self.layers), 0), dtype=bool)
        self._lock = threading.Lock()

    def mark_rows(self, rows: torch.Tensor, layers: Sequence[int] | None = None) -> None:
        """A micro-batch wrote these physical rows in `layers` (default: every tracked layer)."""
        if rows.numel() == 0:
            return
        slots = np.unique(rows.numpy() // self.block_size)
        which = slice(None) if layers is None else [self._row[layer] for layer in layers]
        with self._lock:
            needed = int(slots[-1]) + 1
            if needed > self._bits.shape[1]:
                grown = np.zeros((len(self.layers), max(needed, 2 * self._bits.shape[1])), dtype=bool)
                grown[:, : self._bits.shape[1]] = self._bits
                self._bits = grown
            self._bits[which, slots] = True

    def count(self, layers: Sequence[int]) -> int:
        """Blocks dirty in any of these layers."""
        rows = [self._row[layer] for layer in layers]
        with self._lock:
            return int(self._bits[rows].any(axis=0).sum())

    def take(self, layers: Sequence[int]) -> torch.Tensor:
        """Slots dirty in any of these layers (sorted), their bits cleared: they are about to be copied."""
        rows = [self._row[layer] for layer in layers]
        with self._lock:
            dirty = self._bits[rows].any(axis=0)
            self._bits[rows] = False
        return torch.from_numpy(np.nonzero(dirty)[0].astype(np.int64))


def copy_blocks(
    source: StageKVCache,
    target: StageKVCache,
    layers: Sequence[int],
    slots: torch.Tensor,
    batch_blocks: int = 64,
) -> int:
    """Copy whole blocks of these layers' KV from source to target; returns the bytes copied."""
    copied = 0
    for start in range(0, slots.numel(), batch_blocks):
        rows = source.block_rows(slots[start : start + batch_blocks])
        for layer in layers:
            data = source.read_rows(layer, rows)
            target.write_rows(layer, rows, data)
            copied += data.numel() * data.element_size()
    return copied


class MigrationEndpoint:
    """A stage's migration channel: one transfer at a time, taken without ever blocking."""

    def __init__(self, stage: int) -> None:
        self.stage = stage
        self._lock = threading.Lock()

    def try_lock(self) -> bool:
        return self._lock.acquire(blocking=False)

    def unlock(self) -> None:
        self._lock.release()


@dataclass
class ChannelStats:
    transfers: int = 0
    rejections: int = 0


class MigrationFabric:
    """The migration channels of all stages and the try-lock / acknowledge / reject handshake."""

    def __init__(self, backoff_seconds: float = 0.0005, timeout_seconds: float = 60.0) -> None:
        self.backoff_seconds = backoff_seconds
        self.timeout_seconds = timeout_seconds
        self._endpoints: dict[int, MigrationEndpoint] = {}
        self._guard = threading.Lock()
        self.stats = ChannelStats()

    def endpoint(self, stage: int) -> MigrationEndpoint:
        with self._guard:
            return self._endpoints.setdefault(stage, MigrationEndpoint(stage))

    def transfer(self, source: int, target: int, move: Callable[[], int]) -> int:
        """Run `move` (the copy) holding both stages' channels; returns what it returns (bytes copied)."""
        own, peer = self.endpoint(source), self.endpoint(target)
        deadline = time.monotonic() + self.timeout_seconds
        while True:
            if own.try_lock():
                if source == target or peer.try_lock():  # the peer acknowledges
                    try:
                        with self._guard:
                            self.stats.transfers += 1
                        return move()
                    finally:
                        if source != target:
                            peer.unlock()
                        own.unlock()
                own.unlock()  # the peer rejected: it is busy, perhaps migrating towards us
            with self._guard:
                self.stats.rejections += 1
            if time.monotonic() > deadline:
                raise TimeoutError(f"migration channel {source} -> {target} stayed busy")
            time.sleep(self.backoff_seconds * (1 + random.random()))
