"""Iteration-level continuous batching: which requests run in the next step, and how many tokens each.

In the spirit of vLLM v1's scheduler: every step, running requests get their next tokens first (one for a
decode, the rest of the prompt for a chunked prefill), then waiting requests are admitted in arrival order
while the token budget, the sequence limit and the free KV blocks allow. When a running request cannot get
a block, the most recently admitted running request is preempted: its blocks are freed and it goes back to
the front of the queue, to be recomputed from its prompt and the tokens it already produced.
"""

from __future__ import annotations

import enum
import time
from collections import deque
from dataclasses import dataclass, field

from services.pipelive.block_pool import BlockPool
from services.pipelive.params import SamplingParams


class RequestState(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


@dataclass
class Request:
    """A generation request and its progress."""

    request_id: str
    prompt_token_ids: list[int]
    params: SamplingParams
    arrival_time: float = field(default_factory=time.monotonic)
    output_token_ids: list[int] = field(default_factory=list)
    num_computed_tokens: int = 0
    state: RequestState = RequestState.WAITING
    finish_reason: str | None = None
    num_preemptions: int = 0
    scheduled_time: float | None = None  # first admitted
    first_token_time: float | None = None
    last_token_time: float | None = None

    @property
    def num_tokens(self) -> int:
        return len(self.prompt_token_ids) + len(self.output_token_ids)

    def token_at(self, start: int, count: int) -> list[int]:
        prompt_len = len(self.prompt_token_ids)
        tokens = self.prompt_token_ids[start : start + count]
        if start + count > prompt_len:
            tokens = tokens + self.output_token_ids[max(0, start - prompt_len) : start + count - prompt_len]
        return tokens


class KVCacheManager:
    """Per-request block tables over the shared `BlockPool`; tables only ever grow at the end."""

    def __init__(self, pool: BlockPool, block_size: int) -> None:
        self.pool = pool
        self.block_size = block_size
        self._tables: dict[str, list[int]] = {}

    def blocks_needed(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)

    def allocate_slots(self, request: Request, num_new_tokens: int) -> bool:
        """Make room for `num_new_tokens` more tokens; False (and no change) when blocks run out."""
        table = self._tables.setdefault(request.request_id, [])
        missing = self.blocks_needed(request.num_computed_tokens + num_new_tokens) - len(table)
        if missing <= 0:
            return True
        if missing > self.pool.num_free:
            if not table:
                del self._tables[request.request_id]
            return False
        table.extend(self.pool.allocate(missing))
        return True

    def blocks_to_finish(self, request: Request) -> int:
        """Blocks this request may still add before it reaches max_tokens."""
        total = self.blocks_needed(len(request.prompt_token_ids) + request.params.max_tokens)
        return max(0, total - len(self._tables.get(request.request_id, ())))

    def free(self, request: Request) -> None:
        table = self._tables.pop(request.request_id, None)
        if table:
            self.pool.free(table)

    def block_table(self, request_id: str) -> list[int]:
        return self._tables.get(request_id, [])

    def slots(self, request_id: str) -> list[int]:
        return [self.pool.slot_index(block) for block in self._tables.get(request_id, [])]


@dataclass
class ScheduledWork:
    request: Request
    num_new_tokens: int

    @property
    def completes_known_tokens(self) -> bool:
        return self.request.num_computed_tokens + self.num_new_tokens == self.request.num_tokens


@dataclass
class SchedulerOutput:
    work: list[ScheduledWork]
    preempted: list[Request]

    @property
    def num_tokens(self) -> int:
        return sum(w.num_new_tokens for w in self.work)


class Scheduler:
    """FCFS continuous batching with a token budget per step and recompute preemption."""

    def __init__(self, kv: KVCacheManager, max_num_batched_tokens: int, max_num_seqs: int) -> None:
        self.kv = kv
        self.max_num_batched_tokens = max_num_batched_tokens
        self.max_num_seqs = max_num_seqs
        self.waiting: deque[Request] = deque()
        self.running: list[Request] = []
        self.requests: dict[str, Request] = {}
        self.num_preemptions = 0
        # While a live reconfiguration holds the pool small, admit a request only if every running request
        # can still finish, so that nobody is preempted (reconfigure.py admits the change on that basis).
        self.reserve_for_running = False

    def add(self, request: Request) -> None:
        self.requests[request.request_id] = request
        self.waiting.append(request)

    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def schedule(self) -> SchedulerOutput:
        budget = self.max_num_batched_tokens
        work: list[ScheduledWork] = []
        preempted: list[Request] = []
        index = 0
        while index < len(self.running) and budget > 0:
            request = self.running[index]
            count = min(request.num_tokens - request.num_computed_tokens, budget)
            while not self.kv.allocate_slots(request, count):
                victim = self.running.pop()  # the most recently admitted
                self._preempt(victim)
                preempted.append(victim)
                if victim is request:
                    break
            else:
                work.append(ScheduledWork(request, count))
                budget -= count
                index += 1
        if not preempted:
            while self.waiting and budget > 0 and len(self.running) < self.max_num_seqs:
                request = self.waiting[0]
                count = min(request.num_tokens - request.num_computed_tokens, budget)
                if self.reserve_for_running and not self._leaves_room_to_finish(request):
                    break
                if not self.kv.allocate_slots(request, count):
                    break  # first come, first served: nobody overtakes the head of the queue
                self.waiting.popleft()
                request.state = RequestState.RUNNING
                if request.scheduled_time is None:
                    request.scheduled_time = time.monotonic()
                self.running.append(request)
                work.append(ScheduledWork(request, count))
                budget -= count
        return SchedulerOutput(work, preempted)

    def blocks_to_finish(self) -> int:
        """Blocks the running requests may still add before they all reach max_tokens."""
        return sum(self.kv.blocks_to_finish(request) for request in self.running)

    def _leaves_room_to_finish(self, request: Request) -> bool:
        return self.kv.pool.num_free - self.kv.blocks_to_finish(request) >= self.blocks_to_finish()

    def preempt_newest(self) -> Request | None:
        """Preempt the most recently admitted running request (recompute later); None if none runs."""
        if not self.running:
            return None
        victim = self.running.pop()
        self._preempt(victim)
        return victim

    def _preempt(self, request: Request) -> None:
        self.kv.free(request)
        request.num_computed_tokens = 0
        request.state = RequestState.WAITING
        request.num_preemptions += 1
        self.num_preemptions += 1
        self.waiting.appendleft(request)

    def finish(self, request: Request, reason: str) -> None:
        """Mark finished (or aborted) and free its blocks, wherever it is."""
        if request.state == RequestState.FINISHED:
            return
        request.state = RequestState.FINISHED
        request.finish_reason = reason
        self.kv.free(request)
        if request in self.running:
            self.running.remove(request)
        elif request in self.waiting:
            self.waiting.remove(request)
        self.requests.pop(request.request_id, None)
