"""Scheduler-side KV block accounting: block ids, reference counts, and the indirection to physical slots.

One block-id space is valid on every stage (each stage holds only its own layers' tensors for a block).
Unlike vLLM's pool, block ids are not physical positions: an indirection table maps each id to a physical
slot `(chunk, offset)` in a separately allocated chunk, so the pool can grow by adding chunks and shrink by
releasing chunks while requests run. Allocation always takes the free slot in the oldest chunk, which keeps
live blocks packed into the chunks that stay; a shrink only ever releases chunks that hold no live block,
and refuses (with the reason) when there are not enough of them. Live blocks are never moved.

No tensors here: `kv_cache.StageKVCache` holds the data, addressed by the slots this pool hands out.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass


class NoFreeBlocks(RuntimeError):
    """More blocks were asked for than are free."""


class ResizeRefused(RuntimeError):
    """A grow or shrink of the pool that cannot be carried out; `str(error)` says why."""


@dataclass(frozen=True)
class PhysicalSlot:
    """Where a block's data lives: block `offset` of chunk `chunk`."""

    chunk: int
    offset: int


@dataclass
class _Chunk:
    free_offsets: list[int]  # a stack; any free offset of a chunk is as good as another
    used: int = 0


class BlockPool:
    """Block ids with reference counts over a set of fixed-size chunks of physical slots."""

    def __init__(self, blocks_per_chunk: int, num_chunks: int = 0) -> None:
        if blocks_per_chunk < 1:
            raise ValueError("blocks_per_chunk must be at least 1")
        self.blocks_per_chunk = blocks_per_chunk
        self._chunks: dict[int, _Chunk] = {}
        self._next_chunk_id = 0
        self._chunks_with_room: list[int] = []  # min-heap of chunk ids, stale entries skipped lazily
        self._slot_of: dict[int, PhysicalSlot] = {}  # the indirection table: block id -> physical slot
        self._refcount: dict[int, int] = {}
        self._free_ids: list[int] = []  # min-heap of recycled block ids
        self._next_block_id = 0
        self._num_free = 0
        if num_chunks:
            self.grow(num_chunks)

    # sizes
    @property
    def num_chunks(self) -> int:
        return len(self._chunks)

    @property
    def num_total(self) -> int:
        return len(self._chunks) * self.blocks_per_chunk

    @property
    def num_free(self) -> int:
        return self._num_free

    @property
    def num_used(self) -> int:
        return len(self._slot_of)

    def usage(self) -> float:
        return self.num_used / self.num_total if self.num_total else 0.0

    def chunk_ids(self) -> list[int]:
        return sorted(self._chunks)

    def free_chunk_ids(self) -> list[int]:
        """Chunks holding no live block: the ones a shrink may release."""
        return sorted(chunk_id for chunk_id, chunk in self._chunks.items() if chunk.used == 0)

    # allocation
    def allocate(self, count: int) -> list[int]:
        """`count` new block ids, each with reference count 1; all or nothing."""
        if count > self._num_free:
            raise NoFreeBlocks(f"asked for {count} KV blocks, {self._num_free} free")
        return [self._allocate_one() for _ in range(count)]

    def _allocate_one(self) -> int:
        while True:
            chunk_id = self._chunks_with_room[0]
            chunk = self._chunks.get(chunk_id)
            if chunk is not None and chunk.free_offsets:
                break
            heapq.heappop(self._chunks_with_room)  # released or full since it was pushed
        offset = chunk.free_offsets.pop()
        chunk.used += 1
        if not chunk.free_offsets:
            heapq.heappop(self._chunks_with_room)
        block_id = heapq.heappop(self._free_ids) if self._free_ids else self._take_new_id()
        self._slot_of[block_id] = PhysicalSlot(chunk_id, offset)
        self._refcount[block_id] = 1
        self._num_free -= 1
        return block_id

    def _take_new_id(self) -> int:
        self._next_block_id += 1
        return self._next_block_id - 1

    def incref(self, block_id: int) -> None:
        """Another owner shares this block (e.g. a forked sequence)."""
        if block_id not in self._refcount:
            raise KeyError(f"block {block_id} is not allocated")
        self._refcount[block_id] += 1

    def free(self, block_ids: list[int]) -> None:
        """Drop one reference to each block; a block whose count reaches zero returns to the pool."""
        for block_id in block_ids:
            count = self._refcount.get(block_id)
            if count is None:
                raise KeyError(f"block {block_id} is not allocated (double free?)")
            if count > 1:
                self._refcount[block_id] = count - 1
                continue
            del self._refcount[block_id]
            slot = self._slot_of.pop(block_id)
            chunk = self._chunks[slot.chunk]
            if not chunk.free_offsets:
                heapq.heappush(self._chunks_with_room, slot.chunk)
            chunk.free_offsets.append(slot.offset)
            chunk.used -= 1
            heapq.heappush(self._free_ids, block_id)
            self._num_free += 1

    def refcount(self, block_id: int) -> int:
        return self._refcount.get(block_id, 0)

    def slot(self, block_id: int) -> PhysicalSlot:
        return self._slot_of[block_id]

    def slot_index(self, block_id: int) -> int:
        """The block's physical slot as one integer, `chunk * blocks_per_chunk + offset` (what stages use)."""
        slot = self._slot_of[block_id]
        return slot.chunk * self.blocks_per_chunk + slot.offset

    def live_blocks(self) -> dict[int, PhysicalSlot]:
        return dict(self._slot_of)

    # resizing
    def grow(self, num_chunks: int) -> list[int]:
        """Add `num_chunks` empty chunks; returns their ids (the stages allocate tensors for these)."""
        if num_chunks < 0:
            raise ValueError("num_chunks must not be negative")
        added = []
        for _ in range(num_chunks):
            chunk_id = self._next_chunk_id
            self._next_chunk_id += 1
            # Offsets popped from the end: reversed so a fresh chunk fills from offset 0 upwards.
            self._chunks[chunk_id] = _Chunk(free_offsets=list(reversed(range(self.blocks_per_chunk))))
            heapq.heappush(self._chunks_with_room, chunk_id)
            self._num_free += self.blocks_per_chunk
            added.append(chunk_id)
        return added

    def plan_shrink(self, num_chunks: int) -> list[int]:
        """The chunks a shrink by `num_chunks` would release (newest free chunks first), or ResizeRefused."""
        if num_chunks < 0:
            raise ValueError("num_chunks must not be negative")
        free = self.free_chunk_ids()
        if num_chunks > len(free):
            raise ResizeRefused(
                f"cannot release {num_chunks} KV chunks ({num_chunks * self.blocks_per_chunk} blocks): only "
                f"{len(free)} of {self.num_chunks} chunks hold no live block "
                f"({self.num_used} blocks in use); "
                "live KV blocks are never moved, so retry when requests finish"
            )
        return free[len(free) - num_chunks :]

    def shrink(self, num_chunks: int) -> list[int]:
        """Release `num_chunks` chunks that hold no live block; returns their ids, or raises ResizeRefused."""
        released = self.plan_shrink(num_chunks)
        for chunk_id in released:
            del self._chunks[chunk_id]
            self._num_free -= self.blocks_per_chunk
        return released
