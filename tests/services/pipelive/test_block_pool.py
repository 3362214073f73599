"""Block pool and block tables under random allocate / append / free / grow / shrink sequences (stateful)."""

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from services.pipelive.block_pool import BlockPool, NoFreeBlocks, ResizeRefused
from services.pipelive.params import SamplingParams
from services.pipelive.scheduler import KVCacheManager, Request

BLOCK_SIZE = 4
PER_CHUNK = 4


class PoolMachine(RuleBasedStateMachine):
    """Requests grow their block tables, share blocks and finish while the pool is resized under them."""

    def __init__(self) -> None:
        super().__init__()
        self.pool = BlockPool(PER_CHUNK, num_chunks=2)
        self.kv = KVCacheManager(self.pool, BLOCK_SIZE)
        self.requests: dict[str, Request] = {}
        self.tables: dict[str, list[int]] = {}  # what each table looked like last time
        self.shared: list[int] = []  # extra references taken with incref
        self.counter = 0

    def _expected_refs(self) -> dict[int, int]:
        refs: dict[int, int] = {}
        for request_id in self.requests:
            for block in self.kv.block_table(request_id):
                refs[block] = refs.get(block, 0) + 1
        for block in self.shared:
            refs[block] = refs.get(block, 0) + 1
        return refs

    @rule(tokens=st.integers(1, 12))
    def new_request(self, tokens: int) -> None:
        request = Request(f"r{self.counter}", [1] * tokens, SamplingParams())
        self.counter += 1
        free = self.pool.num_free
        if self.kv.allocate_slots(request, tokens):
            request.num_computed_tokens = tokens
            self.requests[request.request_id] = request
            self.tables[request.request_id] = list(self.kv.block_table(request.request_id))
            assert self.pool.num_free == free - self.kv.blocks_needed(tokens)
        else:
            assert self.kv.blocks_needed(tokens) > free
            assert self.pool.num_free == free and not self.kv.block_table(request.request_id)

    @precondition(lambda self: self.requests)
    @rule(data=st.data(), tokens=st.integers(1, 6))
    def append(self, data: st.DataObject, tokens: int) -> None:
        request = self.requests[data.draw(st.sampled_from(sorted(self.requests)))]
        before = list(self.kv.block_table(request.request_id))
        if self.kv.allocate_slots(request, tokens):
            request.num_computed_tokens += tokens
        assert self.kv.block_table(request.request_id)[: len(before)] == before

    @precondition(lambda self: self.requests)
    @rule(data=st.data())
    def finish(self, data: st.DataObject) -> None:
        request_id = data.draw(st.sampled_from(sorted(self.requests)))
        self.kv.free(self.requests.pop(request_id))
        del self.tables[request_id]

    @precondition(lambda self: self.requests)
    @rule(data=st.data())
    def share(self, data: st.DataObject) -> None:
        request_id = data.draw(st.sampled_from(sorted(self.requests)))
        block = data.draw(st.sampled_from(self.kv.block_table(request_id)))
        self.pool.incref(block)
        self.shared.append(block)

    @precondition(lambda self: self.shared)
    @rule()
    def unshare(self) -> None:
        self.pool.free([self.shared.pop()])

    @rule(count=st.integers(1, 3))
    def grow(self, count: int) -> None:
        total = self.pool.num_total
        added = self.pool.grow(count)
        assert len(added) == count and self.pool.num_total == total + count * PER_CHUNK

    @rule(count=st.integers(1, 4))
    def shrink(self, count: int) -> None:
        live = self.pool.live_blocks()
        free_chunks = self.pool.free_chunk_ids()
        total = self.pool.num_total
        if count > len(free_chunks):
            with pytest.raises(ResizeRefused, match="never moved"):
                self.pool.shrink(count)
            assert self.pool.num_total == total
        else:
            released = self.pool.shrink(count)
            assert set(released) <= set(free_chunks)
            assert self.pool.num_total == total - count * PER_CHUNK
        assert self.pool.live_blocks() == live  # no live block freed or moved

    @rule(count=st.integers(1, 40))
    def allocate_too_many(self, count: int) -> None:
        if count > self.pool.num_free:
            free = self.pool.num_free
            with pytest.raises(NoFreeBlocks):
                self.pool.allocate(count)
            assert self.pool.num_free == free

    @invariant()
    def accounting_adds_up(self) -> None:
        assert self.pool.num_free + self.pool.num_used == self.pool.num_total
        assert self.pool.num_free >= 0

    @invariant()
    def every_block_owned_once_and_counted(self) -> None:
        expected = self._expected_refs()
        live = self.pool.live_blocks()
        assert set(live) == set(expected)  # nothing leaked, nothing lost
        for block, count in expected.items():
            assert self.pool.refcount(block) == count > 0
        slots = list(live.values())
        assert len(set(slots)) == len(slots)  # no physical slot holds two blocks
        chunks = set(self.pool.chunk_ids())
        assert all(slot.chunk in chunks and 0 <= slot.offset < PER_CHUNK for slot in slots)
        tables = [self.kv.block_table(r) for r in self.requests]
        flat = [b for table in tables for b in table]
        assert len(set(flat)) == len(flat)  # a block belongs to one table

    @invariant()
    def tables_are_append_only(self) -> None:
        for request_id, before in self.tables.items():
            now = self.kv.block_table(request_id)
            assert now[: len(before)] == before
            self.tables[request_id] = list(now)


TestBlockPoolStateMachine = PoolMachine.TestCase
TestBlockPoolStateMachine.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)


def test_allocation_packs_live_blocks_into_the_oldest_chunks() -> None:
    pool = BlockPool(blocks_per_chunk=4, num_chunks=3)
    first = pool.allocate(6)
    assert sorted(pool.slot(b).chunk for b in first) == [0, 0, 0, 0, 1, 1]
    pool.free(first[:4])  # chunk 0 empties
    again = pool.allocate(3)
    assert {pool.slot(b).chunk for b in again} == {0}
    assert pool.free_chunk_ids() == [2]
    assert pool.shrink(1) == [2]
    with pytest.raises(ResizeRefused) as refused:
        pool.shrink(1)
    assert "only 0 of 2 chunks hold no live block" in str(refused.value)


def test_double_free_and_unknown_blocks_are_errors() -> None:
    pool = BlockPool(blocks_per_chunk=2, num_chunks=1)
    (block,) = pool.allocate(1)
    pool.free([block])
    with pytest.raises(KeyError, match="double free"):
        pool.free([block])
    with pytest.raises(KeyError):
        pool.incref(block)
