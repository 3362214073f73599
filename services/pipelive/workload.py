"""Benchmark workload from the Azure LLM inference traces (2023): arrivals and prompt/output token counts.

The traces (shared/data/azure-llm-inference-2023, CC-BY-4.0) hold `TIMESTAMP,ContextTokens,GeneratedTokens`
for production requests. A replay keeps their order, relative gaps and length distribution, scaled to the
model at hand: token counts are multiplied by a factor and capped (a CPU model cannot take 8k-token prompts)
and time is compressed to a target arrival rate.
"""

from __future__ import annotations

import csv
import random
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path


@dataclass(frozen=True)
class TraceRequest:
    arrival: float  # seconds after the first request
    prompt_tokens: int
    output_tokens: int


@dataclass(frozen=True)
class ReplayRequest:
    arrival: float
    prompt_token_ids: list[int]
    max_tokens: int


def read_trace(path: str | Path, limit: int | None = None) -> list[TraceRequest]:
    rows: list[TraceRequest] = []
    first: datetime | None = None
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            # Seven fractional digits: more than datetime parses, so cut to microseconds.
            stamp = datetime.fromisoformat(row["TIMESTAMP"][:26])
            first = first or stamp
            rows.append(
                TraceRequest(
                    (stamp - first).total_seconds(), int(row["ContextTokens"]), int(row["GeneratedTokens"])
                )
            )
            if limit is not None and len(rows) >= limit:
                break
    return rows


def scale_trace(
    trace: list[TraceRequest],
    *,
    rate: float,
    token_scale: float,
    max_prompt: int,
    max_output: int,
    vocab_size: int,
    seed: int = 0,
) -> list[ReplayRequest]:
    """Compress time to `rate` requests/s on average, scale and cap token counts; prompts are seeded ids."""
    if not trace:
        return []
    span = trace[-1].arrival - trace[0].arrival
    time_scale = (len(trace) / rate) / span if span > 0 else 1.0
    generator = random.Random(seed)
    replay = []
    for item in trace:
        prompt = max(1, min(max_prompt, round(item.prompt_tokens * token_scale)))
        output = max(1, min(max_output, round(item.output_tokens * token_scale)))
        ids = [generator.randrange(vocab_size) for _ in range(prompt)]
        replay.append(ReplayRequest((item.arrival - trace[0].arrival) * time_scale, ids, output))
    return replay
