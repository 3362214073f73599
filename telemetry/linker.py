"""Turns spans arriving in any order and any batching into caller -> callee observations.

A span's parent (or, for a CONSUMER span, a linked producer span) may arrive before it, after it, or in
another request. Recent spans are indexed by (trace id, span id) in two generations that rotate every
`ttl_seconds`, so each span stays findable for at least one TTL and at most two: lookups are O(1) and
expiry drops a whole generation at once. Three things wait in those generations:

* `spans`: every recent span, so a late child finds its parent;
* `orphans`: children whose parent has not arrived yet, so the parent finds them;
* `unanswered`: client/producer spans naming a peer that no instrumented callee has answered yet; when
  their generation expires they become calls to an `external` node.

A hard cap on the spans held rotates early under overload, so memory stays bounded whatever the rate.
"""

from __future__ import annotations

from dataclasses import dataclass

from telemetry.semconv import KIND_CLIENT, KIND_PRODUCER

# A span as the linker remembers it: (service, kind, latency_ms, error, weight); weight is how many
# spans a sampled span stands for (telemetry/sampling.py), 1 when unsampled.
SpanInfo = tuple[str, int, float, bool, int]
# One span handed to the linker: (key, parent_key, info, peer, link_keys); see `add_all`.
SpanRecord = tuple[bytes, bytes | None, SpanInfo, tuple[str, str] | None, list[bytes] | None]
# An observed call: (caller, callee, latency_ms, error, callee_is_external, external_system, weight).
Call = tuple[str, str, float, bool, bool, str, int]


@dataclass(slots=True)
class _Generation:
    spans: dict[bytes, SpanInfo]
    orphans: dict[bytes, list[SpanInfo]]
    unanswered: dict[bytes, tuple[str, str, str, float, bool, int]]

    @classmethod
    def empty(cls) -> _Generation:
        return cls({}, {}, {})


class DependencyLinker:
    """Matches spans to their parents across services and emits one `Call` per cross-service pair."""

    def __init__(self, ttl_seconds: float, max_spans: int, now: float) -> None:
        if ttl_seconds <= 0 or max_spans <= 0:
            raise ValueError("ttl_seconds and max_spans must be positive")
        self.ttl_seconds = ttl_seconds
        self.max_spans_per_generation = max(1, max_spans // 2)
        self._current = _Generation.empty()
        self._previous = _Generation.empty()
        self._rotated_at = now
        self.calls: list[Call] = []
        self.orphans_expired = 0
        self.early_rotations = 0

    def add(
        self,
        key: bytes,
        parent_key: bytes | None,
        info: SpanInfo,
        peer: tuple[str, str] | None,
        link_keys: list[bytes] | None = None,
    ) -> None:
        """Index one span and emit the calls it completes (see `add_all`)."""
        self.add_all([(key, parent_key, info, peer, link_keys)])

    def add_all(self, records: list[SpanRecord]) -> None:
        """Index spans and emit the calls they complete.

        Each record is (key, parent_key, info, peer, link_keys): `key` is trace id + span id, `parent_key`
        trace id + parent span id (None for a root), `peer` the (name, system) a client/producer span
        names, `link_keys` the producers a CONSUMER span links to.
        """
        calls = self.calls
        attach = self._attach
        cap = self.max_spans_per_generation
        current, previous = self._current, self._previous
        spans = current.spans
        orphans, old_orphans = current.orphans, previous.orphans
        for key, parent_key, info, peer, link_keys in records:
            spans[key] = info
            service = info[0]
            answered = False
            if orphans or old_orphans:
                children = orphans.pop(key, None)
                older = old_orphans.pop(key, None)
                if older:
                    children = older + children if children else older
                if children:
                    for child in children:
                        if child[0] != service:
                            calls.append(_call(info, child))
                            answered = True
            if peer is not None and not answered and info[1] in (KIND_CLIENT, KIND_PRODUCER):
                current.unanswered[key] = (service, peer[0], peer[1], info[2], info[3], info[4])
            if parent_key is not None:
                attach(parent_key, info)
            if link_keys:
                for link_key in link_keys:
                    if link_key != parent_key:
                        attach(link_key, info)
            if len(spans) >= cap:
                self.early_rotations += 1
                self._rotate()
                current, previous = self._current, self._previous
                spans = current.spans
                orphans, old_orphans = current.orphans, previous.orphans

    def _attach(self, parent_key: bytes, child: SpanInfo) -> None:
        parent = self._current.spans.get(parent_key) or self._previous.spans.get(parent_key)
        if parent is None:
            self._current.orphans.setdefault(parent_key, []).append(child)
        elif parent[0] != child[0]:
            self.calls.append(_call(parent, child))
            if self._current.unanswered.pop(parent_key, None) is None:
                self._previous.unanswered.pop(parent_key, None)

    def expire(self, now: float) -> None:
        """Rotate generations once a TTL has passed; what times out becomes external calls or orphans."""
        if now - self._rotated_at >= self.ttl_seconds:
            self._rotate()
            self._rotated_at = now

    def flush(self) -> None:
        """Time everything out now (end of a replay, shutdown, or a test that wants the final graph)."""
        self._rotate()
        self._rotate()

    def _rotate(self) -> None:
        expired = self._previous
        calls = self.calls
        for service, peer, system, latency_ms, error, weight in expired.unanswered.values():
            calls.append((service, peer, latency_ms, error, True, system, weight))
        self.orphans_expired += sum(len(children) for children in expired.orphans.values())
        self._previous = self._current
        self._current = _Generation.empty()

    def take_calls(self) -> list[Call]:
        """The calls emitted since the last take."""
        calls, self.calls = self.calls, []
        return calls

    @property
    def spans_held(self) -> int:
        return len(self._current.spans) + len(self._previous.spans)


def _call(parent: SpanInfo, child: SpanInfo) -> Call:
    # A client span measures the call as the caller saw it (network included); without one, the
    # callee's own span is the best measure there is.
    if parent[1] in (KIND_CLIENT, KIND_PRODUCER):
        return (parent[0], child[0], parent[2], parent[3] or child[3], False, "", parent[4])
    return (parent[0], child[0], child[2], child[3], False, "", child[4])
