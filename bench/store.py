"""Decision store benchmark: bulk insert rate, `list(service=...)` latency, and the cost of synchronous=FULL.

`measure_store` fills a fresh file with N decisions spread over ~1000 services (batches of 1000 through
`DecisionStore.append`, as the coordinator would write a tick's decisions), then times
`list(service=...)` for 1000 random services. `measure_commit_latency` times single-decision commits
(`set_outcome`) and 1000-decision `append` batches with `synchronous=FULL` and `NORMAL`, the trade-off the
store's docstring describes.

`controlplane bench loop` runs both as part of the control-loop benchmark.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Iterator
from typing import Any

from bench.percentiles import percentile
from controlplane.actions import Action, Place, Route, Scale
from controlplane.decisions import Decision, DecisionStatus
from controlplane.engine.store import DecisionStore, Synchronous
from controlplane.taxonomy import Taxonomy

TAXONOMIES = (
    Taxonomy.of(
        "centralized", "rule", ["workload"], ["emulation"], ["latency_slo"], ["metrics"], ["autoscaling"]
    ),
    Taxonomy.of(
        "hierarchical", "optimization", ["interference"], ["simulation"], ["cost"], ["traces"], ["placement"]
    ),
    Taxonomy.of(
        "centralized", "learning", ["request_path"], ["production_trace"], ["latency_slo"], ["traces"]
    ),
)
STATUSES = (DecisionStatus.APPLIED,) * 6 + (
    DecisionStatus.REJECTED,
    DecisionStatus.SHADOW,
    DecisionStatus.SUPERSEDED,
)


def _action(index: int, service: str) -> Action:
    evidence = {"p99_ms": 100.0 + index % 97, "rps": float(index % 1000), "window": "30s"}
    match index % 3:
        case 0:
            return Scale(target=service, replicas=1 + index % 20, reason="p99 above SLO", evidence=evidence)
        case 1:
            return Place(
                target=service, node=f"node-{index % 50}", replica=f"{service}-{index % 4}", evidence=evidence
            )
        case _:
            return Route(target=service, weights={"v1": 0.9, "v2": 0.1}, reason="canary", evidence=evidence)


def _batches(decisions: int, services: int, batch: int, start: float) -> Iterator[list[Decision]]:
    for first in range(0, decisions, batch):
        out = []
        for index in range(first, min(first + batch, decisions)):
            service = f"svc-{(index * 7919) % services:04d}"
            out.append(
                Decision(
                    controller=f"controller-{index % 8}",
                    taxonomy=TAXONOMIES[index % len(TAXONOMIES)],
                    action=_action(index, service),
                    status=STATUSES[index % len(STATUSES)],
                    why="within step limit and cool-down",
                    tick=index // batch,
                    created_at=start + index * 0.01,
                )
            )
        yield out


def _file_size(path: str) -> int:
    return sum(os.path.getsize(path + suffix) for suffix in ("", "-wal") if os.path.exists(path + suffix))


def measure_store(
    path: str,
    decisions: int = 1_000_000,
    services: int = 1000,
    batch: int = 1000,
    queries: int = 1000,
    seed: int = 1,
    synchronous: Synchronous = "FULL",
) -> dict[str, Any]:
    """Bulk-insert `decisions` into a new store at `path`, then time `list(service=...)` per random service.

    Returns `inserts_per_second` (time spent in `append` only), `store_list_p50_ms` / `store_list_p99_ms`
    (first page of 100, newest first) and supporting figures. Refuses to overwrite an existing file.
    """
    if path != ":memory:" and os.path.exists(path):
        raise FileExistsError(f"{path} exists; measure_store writes a new store")
    rng = random.Random(seed)
    start = time.time() - decisions * 0.01
    append_seconds = 0.0
    wall = time.perf_counter()
    with DecisionStore(path, synchronous=synchronous) as store:
        for chunk in _batches(decisions, services, batch, start):
            began = time.perf_counter()
            store.append(chunk)
            append_seconds += time.perf_counter() - began
        wall = time.perf_counter() - wall

        names = [f"svc-{rng.randrange(services):04d}" for _ in range(queries)]
        list_ms: list[float] = []
        returned = 0
        for name in names:
            began = time.perf_counter()
            page, _ = store.list(service=name, page_size=100)
            list_ms.append((time.perf_counter() - began) * 1000)
            returned += len(page)
        get_ms: list[float] = []
        last = store.last_id()
        for _ in range(queries):
            began = time.perf_counter()
            store.get(rng.randint(1, last))
            get_ms.append((time.perf_counter() - began) * 1000)
        page_ms: list[float] = []
        token = ""
        for _ in range(min(queries, 100)):
            began = time.perf_counter()
            _, token = store.list(status="applied", page_size=100, page_token=token)
            page_ms.append((time.perf_counter() - began) * 1000)
        plan = store.explain_list(service=names[0])
        stored = store.count()
    return {
        "decisions": stored,
        "services": services,
        "batch": batch,
        "synchronous": synchronous,
        "append_seconds": round(append_seconds, 2),
        "insert_wall_seconds": round(wall, 2),
        "inserts_per_second": round(decisions / append_seconds),
        "store_list_p50_ms": round(percentile(list_ms, 0.50), 3),
        "store_list_p99_ms": round(percentile(list_ms, 0.99), 3),
        "store_list_max_ms": round(max(list_ms), 3),
        "store_list_mean_rows": round(returned / len(names), 1),
        "store_get_p99_ms": round(percentile(get_ms, 0.99), 3),
        "store_list_status_page_p99_ms": round(percentile(page_ms, 0.99), 3),
        "list_service_plan": plan,
        "file_mb": round(_file_size(path) / 1e6, 1) if path != ":memory:" else 0.0,
    }


def measure_commit_latency(directory: str, commits: int = 500, batch: int = 1000) -> dict[str, Any]:
    """Per-commit cost of `set_outcome` and of one `append` batch, with synchronous=FULL and NORMAL."""
    results: dict[str, Any] = {}
    for mode in ("FULL", "NORMAL"):
        path = os.path.join(directory, f"commit-{mode.lower()}.db")
        with DecisionStore(path, synchronous=mode) as store:  # type: ignore[arg-type]
            (first,) = store.append(next(_batches(1, 10, 1, time.time())))
            samples = []
            for index in range(commits):
                began = time.perf_counter()
                store.set_outcome(first.id, DecisionStatus.APPLIED, f"outcome {index}")
                samples.append((time.perf_counter() - began) * 1000)
            batch_seconds = []
            for chunk in _batches(batch * 10, 100, batch, time.time()):
                began = time.perf_counter()
                store.append(chunk)
                batch_seconds.append(time.perf_counter() - began)
        key = mode.lower()
        results[f"set_outcome_{key}_mean_ms"] = round(sum(samples) / len(samples), 3)
        results[f"set_outcome_{key}_p99_ms"] = round(percentile(samples, 0.99), 3)
        results[f"set_outcome_{key}_per_second"] = round(len(samples) / (sum(samples) / 1000))
        results[f"append_{batch}_{key}_per_second"] = round(batch * len(batch_seconds) / sum(batch_seconds))
    return results
