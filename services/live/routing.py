"""One service's routing table as the router keeps it: ready endpoints, weights, isolation, the pick.

Pure bookkeeping, no I/O, so it can be read and tested on its own; `services.live.router` serves it.
The semantics are the simulator's:

* **Weights** map destinations to shares (`controlplane.actions.Route.weights`). A destination names a
  replica id, a version (`v2`) or `<service>-<version>`; a replica belongs to every destination that names
  it. Destinations with weight 0 or no ready replica get nothing; without weights, or when no weighted
  destination has a ready replica, every ready replica is a candidate.
* **Within a destination** the router picks the less loaded of two random replicas (power of two choices,
  by the requests it has in flight to each), as Envoy's least-request balancer does.
* **Isolation** at the caller's side: an open circuit breaker sheds every call, a concurrency limit sheds
  calls beyond that many in flight to the service, a rate limit (token bucket, requests per second) sheds
  calls beyond it. A shed call fails at once, as does a call to a service with no ready replica.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One ready replica the router may send to."""

    replica: str
    version: str
    port: int


@dataclass(slots=True)
class Isolation:
    """Limits on calls to one service; None means no limit of that kind."""

    concurrency_limit: int | None = None
    breaker_open: bool = False
    rate_limit: float | None = None  # requests per second

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> Isolation:
        limit = values.get("concurrency_limit")
        rate = values.get("rate_limit")
        return cls(
            concurrency_limit=None if limit is None else int(limit),
            breaker_open=bool(values.get("breaker_open", False)),
            rate_limit=None if rate is None else float(rate),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "concurrency_limit": self.concurrency_limit,
            "breaker_open": self.breaker_open,
            "rate_limit": self.rate_limit,
        }


@dataclass(slots=True)
class ServiceRoutes:
    """The routing state of one service, and the counters the balancer and the limits need."""

    service: str
    endpoints: list[Endpoint] = field(default_factory=list)
    weights: dict[str, float] = field(default_factory=dict)
    isolation: Isolation = field(default_factory=Isolation)
    generation: int = -1  # the actuator numbers its updates; an older one arriving late is ignored
    in_flight: int = 0
    in_flight_by_replica: dict[str, int] = field(default_factory=dict)
    tokens: float = 0.0
    tokens_at: float = 0.0
    _groups: list[tuple[float, list[Endpoint]]] = field(default_factory=list)

    def update(
        self,
        endpoints: list[Endpoint],
        weights: Mapping[str, float],
        isolation: Isolation,
        generation: int,
    ) -> bool:
        """Replace the table (False when `generation` is older than the one in place)."""
        if generation < self.generation:
            return False
        self.generation = generation
        self.endpoints = list(endpoints)
        self.weights = dict(weights)
        if isolation.rate_limit != self.isolation.rate_limit:
            self.tokens = isolation.rate_limit or 0.0  # a new bucket starts full
        self.isolation = isolation
        self._groups = self._weighted_groups()
        return True

    def _weighted_groups(self) -> list[tuple[float, list[Endpoint]]]:
        """(cumulative weight, members) per destination with weight and ready members."""
        everyone = [(1.0, self.endpoints)] if self.endpoints else []
        if not self.weights:
            return everyone
        groups, total = [], 0.0
        for destination, weight in self.weights.items():
            members = [
                endpoint
                for endpoint in self.endpoints
                if destination in (endpoint.replica, endpoint.version, f"{self.service}-{endpoint.version}")
            ]
            if members and weight > 0:
                total += weight
                groups.append((total, members))
        return groups or everyone

    def refusal(self, now: float) -> str | None:
        """Why a call now must fail at once, or None when it may go ahead (takes a rate-limit token)."""
        isolation = self.isolation
        if not self.endpoints:
            return "no ready replica"
        if isolation.breaker_open:
            return "circuit breaker open"
        if isolation.concurrency_limit is not None and self.in_flight >= isolation.concurrency_limit:
            return f"concurrency limit {isolation.concurrency_limit} reached"
        if isolation.rate_limit is not None:
            rate = isolation.rate_limit
            self.tokens = min(rate, self.tokens + (now - self.tokens_at) * rate)
            self.tokens_at = now
            if self.tokens < 1.0:
                return f"rate limit {rate:g}/s reached"
            self.tokens -= 1.0
        return None

    def pick(self, rng: random.Random) -> Endpoint | None:
        """The endpoint for one call: a weighted destination, then the less loaded of two of its replicas."""
        groups = self._groups
        if not groups:
            return None
        members = groups[0][1]
        if len(groups) > 1:
            draw = rng.random() * groups[-1][0]
            members = next(group for limit, group in groups if draw < limit)
        if len(members) == 1:
            return members[0]
        first, second = rng.sample(members, 2)
        load = self.in_flight_by_replica
        return first if load.get(first.replica, 0) <= load.get(second.replica, 0) else second

    def started(self, endpoint: Endpoint) -> None:
        self.in_flight += 1
        self.in_flight_by_replica[endpoint.replica] = self.in_flight_by_replica.get(endpoint.replica, 0) + 1

    def finished(self, endpoint: Endpoint) -> None:
        self.in_flight -= 1
        left = self.in_flight_by_replica.get(endpoint.replica, 1) - 1
        if left > 0:
            self.in_flight_by_replica[endpoint.replica] = left
        else:
            self.in_flight_by_replica.pop(endpoint.replica, None)
