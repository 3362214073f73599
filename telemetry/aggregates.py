"""The mergeable state of the model: window statistics per service, per operation and per edge.

Everything here adds up: two `TelemetryAggregates` built from two shards of the traffic merge into the
aggregates of all of it (`merge`), which is how several receiver processes or hosts feed one control plane.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Iterable

from telemetry.caps import (
    DEFAULT_MAX_OPERATIONS_PER_SERVICE,
    OTHER_OPERATION,
    OTHER_PEERS,
    OTHER_SERVICES,
    CardinalityLimits,
)
from telemetry.linker import Call
from telemetry.windows import WindowedStats

__all__ = ["DEFAULT_MAX_OPERATIONS_PER_SERVICE", "OTHER_OPERATION", "TelemetryAggregates"]


class TelemetryAggregates:
    """Per-operation and per-edge `WindowedStats` (services merge their operations), and which nodes exist.

    Bounded by `CardinalityLimits` (telemetry/caps.py): past them, new services, operations, external peers
    and edges are counted under overflow names, and `folded` counts how many observations were.
    """

    def __init__(
        self,
        bucket_seconds: float,
        bucket_count: int,
        relative_accuracy: float,
        max_operations_per_service: int = DEFAULT_MAX_OPERATIONS_PER_SERVICE,
        limits: CardinalityLimits | None = None,
    ) -> None:
        self.limits = limits or CardinalityLimits(max_operations_per_service=max_operations_per_service)
        self.max_operations_per_service = self.limits.max_operations_per_service
        self.folded: Counter[str] = Counter()
        self._operation_counts: dict[str, int] = {}
        self.bucket_seconds = bucket_seconds
        self.bucket_count = bucket_count
        self.relative_accuracy = relative_accuracy
        self.operations: dict[tuple[str, str], WindowedStats] = {}
        self.edges: dict[tuple[str, str], WindowedStats] = {}
        # Every service that sent spans, and when it last did (a service may serve no entry spans).
        self.service_last_seen: dict[str, float] = {}
        # The latest `service.version` resource attribute per service, and when it first appeared.
        self.service_versions: dict[str, tuple[str, float]] = {}
        # External nodes (uninstrumented peers) and the system they run, if known.
        self.externals: dict[str, str] = {}
        self.external_last_seen: dict[str, float] = {}
        # Bumped whenever a node, operation, edge or service version appears or goes: a snapshot kept
        # since the last bump still has the same shape (see TelemetryModel.complete_snapshot).
        self.layout_version = 0

    def _stats(self, table: dict, key: Hashable, now: float) -> WindowedStats:
        stats = table.get(key)
        if stats is None:
            stats = table[key] = WindowedStats(
                self.bucket_seconds, self.bucket_count, self.relative_accuracy, now
            )
            self.layout_version += 1
        stats.last_seen = max(stats.last_seen, now)
        return stats

    def record_served(
        self,
        latencies: dict[tuple[str, str], list[float]],
        errors: dict[tuple[str, str], int],
        bucket_index: int,
        now: float,
        weighted: dict[tuple[str, str], list[tuple[float, int]]] | None = None,
    ) -> None:
        """Add one batch of served requests, keyed by (service, operation), to bucket `bucket_index`.

        Only operations are recorded: a service's window is the merge of its operations' windows, made
        when a snapshot is taken, which keeps one sketch update per span on the hot path. `weighted` holds
        (latency, weight) of sampled spans that stand for several requests; `errors` counts by weight.
        """
        weighted = weighted or {}
        # Insertion order, not a set: iteration order must not depend on string hashing (reproducible runs).
        for key in [*latencies, *(key for key in weighted if key not in latencies)]:
            service, operation = key
            stats = self._stats(self.operations, self._operation_key(service, operation), now)
            stats.record_batch(bucket_index, latencies.get(key, ()), errors.get(key, 0), weighted.get(key))

    def _operation_key(self, service: str, operation: str) -> tuple[str, str]:
        key = (service, operation)
        if key in self.operations:
            return key
        count = self._operation_counts.get(service, 0)
        if count >= self.max_operations_per_service or len(self.operations) >= self.limits.max_operations:
            self.folded["operations"] += 1
            return (service, OTHER_OPERATION)
        self._operation_counts[service] = count + 1
        return key

    def service_key(self, service: str) -> str:
        """`service`, or `OTHER_SERVICES` once `max_services` other services are known (the caller counts
        what it folds in `folded["services"]`: spans when ingesting, services when merging)."""
        if service in self.service_last_seen or len(self.service_last_seen) < self.limits.max_services:
            return service
        return OTHER_SERVICES

    def _peer_key(self, peer: str) -> str:
        if peer in self.externals or len(self.externals) < self.limits.max_external_peers:
            return peer
        self.folded["external_peers"] += 1
        return OTHER_PEERS

    def _edge_key(self, caller: str, callee: str, external: bool) -> tuple[str, str]:
        key = (caller, callee)
        if key in self.edges or len(self.edges) < self.limits.max_edges:
            return key
        self.folded["edges"] += 1
        # One overflow edge per caller at most: the count of edges stays bounded by the count of services.
        return (caller, OTHER_PEERS if external else OTHER_SERVICES)

    def empty_stats(self, now: float) -> WindowedStats:
        return WindowedStats(self.bucket_seconds, self.bucket_count, self.relative_accuracy, now)

    def saw_service(self, service: str, now: float, version: str = "") -> None:
        seen = self.service_last_seen.get(service)
        if seen is None:
            self.layout_version += 1
        self.service_last_seen[service] = now if seen is None else max(seen, now)
        if version:
            known = self.service_versions.get(service)
            if known is None or known[0] != version:
                self.layout_version += 1
                # A new version (a rollout, or a rollback) is an event remediation correlates anomalies with.
                self.service_versions[service] = (version, now)

    def record_calls(self, calls: Iterable[Call], bucket_index: int, now: float) -> None:
        """Add caller -> callee observations (from the linker) to the edge windows."""
        latencies: dict[tuple[str, str], list[float]] = {}
        weighted: dict[tuple[str, str], list[tuple[float, int]]] = {}
        errors: dict[tuple[str, str], int] = {}
        for caller, callee, latency_ms, error, external, system, weight in calls:
            if external:
                callee = self._peer_key(callee)
            key = self._edge_key(caller, callee, external)
            callee = key[1]
            if weight == 1:
                values = latencies.get(key)
                if values is None:
                    values = latencies[key] = []
                values.append(latency_ms)
            else:
                weighted.setdefault(key, []).append((latency_ms, weight))
            if error:
                errors[key] = errors.get(key, 0) + weight
            if external:
                if callee not in self.externals:
                    self.layout_version += 1
                if system or callee not in self.externals:
                    self.externals[callee] = system
                self.external_last_seen[callee] = now
        for key in [*latencies, *(key for key in weighted if key not in latencies)]:
            self._stats(self.edges, key, now).record_batch(
                bucket_index, latencies.get(key, ()), errors.get(key, 0), weighted.get(key)
            )

    def forget_before(self, cutoff: float) -> None:
        """Drop services, operations, edges and external nodes last seen before `cutoff`."""
        forgotten = 0
        for table in (self.operations, self.edges):
            for key in [key for key, stats in table.items() if stats.last_seen < cutoff]:
                del table[key]
                forgotten += 1
        self._operation_counts = Counter(service for service, _ in self.operations)
        for key in [key for key, seen in self.service_last_seen.items() if seen < cutoff]:
            del self.service_last_seen[key]
            self.service_versions.pop(key, None)
            forgotten += 1
        for key in [key for key, seen in self.external_last_seen.items() if seen < cutoff]:
            del self.external_last_seen[key]
            self.externals.pop(key, None)
            forgotten += 1
        if forgotten:
            self.layout_version += 1

    def merge(self, other: TelemetryAggregates) -> None:
        """Add another shard's aggregates into these (same bucket width and accuracy)."""
        if (other.bucket_seconds, other.relative_accuracy) != (self.bucket_seconds, self.relative_accuracy):
            raise ValueError("cannot merge aggregates kept with different buckets or accuracy")
        self.layout_version += 1
        # The other shard's names go through the same caps as spans do (a report is input like any other).
        services = {service: self.service_key(service) for service in other.service_last_seen}
        self.folded["services"] += sum(1 for name, key in services.items() if key != name)
        for service, seen in other.service_last_seen.items():
            self.saw_service(services[service], seen)
        for (service, operation), stats in other.operations.items():
            service = services.get(service) or self.service_key(service)
            self._merge_series(self.operations, self._operation_key(service, operation), stats)
        peers = {name: self._peer_key(name) for name in other.externals}
        for (caller, callee), stats in other.edges.items():
            caller = services.get(caller) or self.service_key(caller)
            key = self._edge_key(caller, peers.get(callee, callee), callee in peers)
            self._merge_series(self.edges, key, stats)
        self._operation_counts = Counter(service for service, _ in self.operations)
        for service, (version, since) in other.service_versions.items():
            service = services.get(service, service)
            known = self.service_versions.get(service)
            if known is None or since > known[1]:
                self.service_versions[service] = (version, since)
        for name, system in other.externals.items():
            name = peers[name]
            if system or name not in self.externals:
                self.externals[name] = system
        for name, seen in other.external_last_seen.items():
            name = peers.get(name, name)
            self.external_last_seen[name] = max(self.external_last_seen.get(name, seen), seen)

    def _merge_series(self, table: dict, key: tuple[str, str], stats: WindowedStats) -> None:
        target = table.get(key)
        if target is None:
            target = table[key] = self.empty_stats(stats.first_seen)
        target.merge(stats)
