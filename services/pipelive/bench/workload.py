"""Benchmark workload from the Azure LLM inference traces (2023): arrivals and prompt/output token counts.

The traces (shared/data/azure-llm-inference-2023, CC-BY-4.0) hold `TIMESTAMP,ContextTokens,GeneratedTokens`
for production requests. A replay keeps their order, relative gaps and length distribution, scaled to the
model at hand: token counts are multiplied by a factor and capped (a CPU model cannot take 8k-token prompts)
and time is compressed to a target arrival rate.
"""

from __future__ import annotations

import csv
import json
import random
import statistics
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any


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


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile; 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, min(len(ordered), -int(-fraction * len(ordered) // 1)))
    return ordered[rank - 1]


@dataclass
class RequestTiming:
    """What a client of one request sees (perf_counter seconds)."""

    arrival: float
    first: float | None = None
    last: float | None = None
    tokens: int = 0

    def token(self, stamp: float, count: int = 1) -> None:
        self.first = self.first or stamp
        self.last = stamp
        self.tokens += count


@dataclass
class ReplayResult:
    timings: list[RequestTiming]
    seconds: float
    kv_usage: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        ttft = [(t.first - t.arrival) * 1000 for t in self.timings if t.first is not None]
        tpot = [
            (t.last - t.first) * 1000 / (t.tokens - 1)
            for t in self.timings
            if t.first is not None and t.last is not None and t.tokens > 1
        ]
        output_tokens = sum(t.tokens for t in self.timings)
        result = {
            "requests": len(self.timings),
            "output_tokens": output_tokens,
            "seconds": round(self.seconds, 3),
            "ttft_p50_ms": round(percentile(ttft, 0.5), 2),
            "ttft_p99_ms": round(percentile(ttft, 0.99), 2),
            "tpot_p50_ms": round(percentile(tpot, 0.5), 2),
            "tpot_p99_ms": round(percentile(tpot, 0.99), 2),
            "output_tokens_per_second": round(output_tokens / self.seconds, 2) if self.seconds else 0.0,
        }
        if self.kv_usage:
            result["kv_usage_mean"] = round(statistics.fmean(self.kv_usage), 4)
            result["kv_usage_max"] = round(max(self.kv_usage), 4)
        return result


def save_replay(requests: list[ReplayRequest], path: str | Path) -> None:
    Path(path).write_text(json.dumps([asdict(r) for r in requests]))


def load_replay(path: str | Path) -> list[ReplayRequest]:
    return [ReplayRequest(**item) for item in json.loads(Path(path).read_text())]
