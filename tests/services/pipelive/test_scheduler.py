"""Continuous batching: token budget, FCFS admission, sequence limit, chunked prefill, preemption order."""

from services.pipelive.block_pool import BlockPool
from services.pipelive.params import SamplingParams
from services.pipelive.scheduler import KVCacheManager, Request, RequestState, Scheduler


def make(blocks: int, budget: int = 16, seqs: int = 8) -> Scheduler:
    pool = BlockPool(blocks_per_chunk=blocks, num_chunks=1)
    return Scheduler(KVCacheManager(pool, block_size=4), max_num_batched_tokens=budget, max_num_seqs=seqs)


def request(name: str, tokens: int, max_tokens: int = 8) -> Request:
    return Request(name, list(range(tokens)), SamplingParams(max_tokens=max_tokens))


def run(scheduler: Scheduler) -> dict[str, int]:
    """One step as the engine does it: count tokens, append a fake sampled token where one is due."""
    output = scheduler.schedule()
    for work in output.work:
        done = work.completes_known_tokens
        work.request.num_computed_tokens += work.num_new_tokens
        if done:
            work.request.output_token_ids.append(0)
    return {w.request.request_id: w.num_new_tokens for w in output.work}


def test_token_budget_and_chunked_prefill() -> None:
    scheduler = make(blocks=32, budget=16)
    for name, size in (("a", 10), ("b", 10), ("c", 3)):
        scheduler.add(request(name, size))
    assert run(scheduler) == {"a": 10, "b": 6}  # b's prompt is split; c waits its turn
    assert run(scheduler) == {"a": 1, "b": 4, "c": 3}
    assert run(scheduler) == {"a": 1, "b": 1, "c": 1}


def test_first_come_first_served_when_blocks_run_short() -> None:
    scheduler = make(blocks=4, budget=64)  # 16 tokens of KV
    scheduler.add(request("big", 12))
    scheduler.add(request("huge", 9))
    scheduler.add(request("small", 2))
    assert run(scheduler) == {"big": 12}  # huge does not fit; small may not overtake it
    assert [r.request_id for r in scheduler.waiting] == ["huge", "small"]


def test_sequence_limit() -> None:
    scheduler = make(blocks=32, budget=64, seqs=2)
    for name in "abc":
        scheduler.add(request(name, 2))
    assert set(run(scheduler)) == {"a", "b"}


def test_preemption_takes_the_latest_admitted_and_recomputes_it() -> None:
    scheduler = make(blocks=4, budget=64)  # 16 tokens
    scheduler.add(request("first", 8))
    scheduler.add(request("second", 8))
    assert run(scheduler) == {"first": 8, "second": 8}  # pool full: 4 blocks
    output = scheduler.schedule()  # both need a fifth block for their next token
    assert [r.request_id for r in output.preempted] == ["second"]
    assert [w.request.request_id for w in output.work] == ["first"]
    second = scheduler.requests["second"]
    assert second.state == RequestState.WAITING and second.num_computed_tokens == 0
    assert second.num_tokens == 9  # its sampled token is kept and will be recomputed with the prompt
    assert scheduler.waiting[0] is second and scheduler.num_preemptions == 1
    assert scheduler.kv.block_table("second") == []


def test_finish_frees_blocks_wherever_the_request_is() -> None:
    scheduler = make(blocks=8)
    scheduler.add(request("a", 6))
    scheduler.add(request("b", 6))
    run(scheduler)
    pool = scheduler.kv.pool
    assert pool.num_used == 4
    scheduler.finish(scheduler.requests["a"], "abort")
    assert pool.num_used == 2
    scheduler.add(request("c", 40))
    scheduler.finish(scheduler.requests["c"], "abort")  # still waiting
    assert not scheduler.waiting and pool.num_used == 2
