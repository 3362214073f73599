"""Helper for the kill -9 durability test: append decisions and mark them applied, one by one.

Usage: `python store_writer.py DB_PATH [MAX_DECISIONS] [MAX_SECONDS]`. Each decision is appended (status
failed, outcome "pending"), then `set_outcome(id, applied, "applied <id>")`; only after `set_outcome` has
returned is the id printed (and flushed) on its own line. The test kills this process with SIGKILL at an
arbitrary point and checks that every printed id is stored as applied. The loop is bounded by a count and a
duration, and ends quietly if the reader has gone away.
"""

from __future__ import annotations

import sys
import time

from controlplane.actions import Scale
from controlplane.decisions import Decision, DecisionStatus
from controlplane.engine.store import DecisionStore
from controlplane.taxonomy import Taxonomy

TAXONOMY = Taxonomy.of(
    "centralized", "rule", ["workload"], ["simulation"], ["latency_slo"], ["traces"], ["autoscaling"]
)


def main(argv: list[str]) -> int:
    path = argv[1]
    max_decisions = int(argv[2]) if len(argv) > 2 else 100_000
    deadline = time.monotonic() + (float(argv[3]) if len(argv) > 3 else 60.0)
    with DecisionStore(path) as store:
        for tick in range(max_decisions):
            if time.monotonic() > deadline:
                break
            action = Scale(target=f"svc-{tick % 7}", replicas=tick % 10 + 1, evidence={"tick": tick})
            decision = Decision(
                "writer", TAXONOMY, action, DecisionStatus.FAILED, "durability test", tick=tick
            )
            (stored,) = store.append([decision])
            store.set_outcome(stored.id, DecisionStatus.APPLIED, f"applied {stored.id}")
            try:
                print(stored.id, flush=True)
            except BrokenPipeError:
                break
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
