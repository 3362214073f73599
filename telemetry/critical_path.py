"""Critical paths of the slowest traces per entry operation, from a deterministic sample of whole traces.

A trace is sampled when the last byte of its trace id falls below a threshold (the ids are random, so this
is a uniform sample and every span of a sampled trace is kept, whichever service sends it). A sampled trace
is assembled once no span of it has arrived for `quiet_seconds`; its critical path is the chain, from the
root, of the child that finished last at each level (what the root had to wait for), each step with its
self time (duration not covered by its own critical child). Per entry operation (root service and
operation) the `keep` slowest traces of the last `window_seconds` are kept.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

# (service, operation, span_id, parent_span_id, start_ns, end_ns)
SampledSpan = tuple[str, str, bytes, bytes, int, int]


@dataclass(frozen=True, slots=True)
class PathStep:
    service: str
    operation: str
    duration_ms: float
    self_ms: float


@dataclass(frozen=True, slots=True)
class CriticalPath:
    """The critical path of one trace, root first."""

    trace_id: str
    entry_service: str
    entry_operation: str
    duration_ms: float
    steps: tuple[PathStep, ...]
    seen_at: float


def critical_path(trace_id: bytes, spans: list[SampledSpan], seen_at: float) -> CriticalPath | None:
    """The path from the root through the last-finishing child at each level; None without a root."""
    by_id = {span[2]: span for span in spans}
    roots = [span for span in spans if not span[3] or span[3] not in by_id]
    if not roots:
        return None
    root = max(roots, key=lambda span: span[5] - span[4])
    children: dict[bytes, list[SampledSpan]] = {}
    for span in spans:
        if span[3]:
            children.setdefault(span[3], []).append(span)
    steps = []
    current: SampledSpan | None = root
    visited = set()
    while current is not None and current[2] not in visited:  # ids may repeat in broken traces
        visited.add(current[2])
        kids = children.get(current[2], [])
        last = max(kids, key=lambda span: span[5], default=None)
        duration = current[5] - current[4]
        covered = (min(last[5], current[5]) - max(last[4], current[4])) if last else 0
        steps.append(
            PathStep(current[0], current[1], duration / 1e6, max(0, duration - max(0, covered)) / 1e6)
        )
        current = last
    return CriticalPath(trace_id.hex(), root[0], root[1], (root[5] - root[4]) / 1e6, tuple(steps), seen_at)


class TraceSampler:
    """Keeps whole sampled traces until they go quiet, then their critical paths, slowest first."""

    def __init__(
        self,
        sample_per_256: int = 4,
        quiet_seconds: float = 10.0,
        window_seconds: float = 60.0,
        keep: int = 5,
        max_traces: int = 20_000,
        max_spans_per_trace: int = 2_000,
    ) -> None:
        if not 0 <= sample_per_256 <= 256:
            raise ValueError("sample_per_256 must be within 0..256")
        self.threshold = sample_per_256
        self.quiet_seconds = quiet_seconds
        self.window_seconds = window_seconds
        self.keep = keep
        self.max_traces = max_traces
        self.max_spans_per_trace = max_spans_per_trace
        self._open: dict[bytes, tuple[float, list[SampledSpan]]] = {}
        self._slowest: dict[tuple[str, str], list[tuple[float, int, CriticalPath]]] = {}
        self._sequence = 0
        self.traces_dropped = 0

    def add(self, trace_id: bytes, span: SampledSpan, now: float) -> None:
        """Keep one span of a sampled trace (callers test `sampled` first: it is the cheap part)."""
        entry = self._open.get(trace_id)
        if entry is None:
            if len(self._open) >= self.max_traces:
                self.traces_dropped += 1
                return
            entry = self._open[trace_id] = (now, [])
        spans = entry[1]
        if len(spans) < self.max_spans_per_trace:
            spans.append(span)
        self._open[trace_id] = (now, spans)

    def expire(self, now: float) -> None:
        """Assemble traces quiet for `quiet_seconds`; forget paths older than the window."""
        quiet = [key for key, (last, _) in self._open.items() if now - last >= self.quiet_seconds]
        for trace_id in quiet:
            _, spans = self._open.pop(trace_id)
            path = critical_path(trace_id, spans, now)
            if path is not None:
                self._remember(path)
        cutoff = now - self.window_seconds
        for key in list(self._slowest):
            kept = [item for item in self._slowest[key] if item[2].seen_at >= cutoff]
            heapq.heapify(kept)
            if kept:
                self._slowest[key] = kept
            else:
                del self._slowest[key]

    def flush(self, now: float) -> None:
        """Assemble every open trace now."""
        for trace_id, (_, spans) in list(self._open.items()):
            path = critical_path(trace_id, spans, now)
            if path is not None:
                self._remember(path)
        self._open.clear()

    def _remember(self, path: CriticalPath) -> None:
        heap = self._slowest.setdefault((path.entry_service, path.entry_operation), [])
        self._sequence += 1
        item = (path.duration_ms, self._sequence, path)  # a min-heap of the slowest: the fastest is evicted
        if len(heap) < self.keep:
            heapq.heappush(heap, item)
        elif item[0] > heap[0][0]:
            heapq.heapreplace(heap, item)

    def slowest(self) -> dict[tuple[str, str], tuple[CriticalPath, ...]]:
        """Per (entry service, entry operation): the critical paths of the slowest traces, slowest first."""
        return {
            key: tuple(item[2] for item in sorted(heap, key=lambda item: (-item[0], item[1])))
            for key, heap in sorted(self._slowest.items())
        }
