"""The simulated cluster's state: nodes, replicas, versions, and the per-service knobs actions turn.

Plain mutable records with slots; `Simulator` (engine.py) moves requests through them and `SimActuator`
(actuator.py) changes them. Nothing here knows about time-ordered events.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

from services.demo.app import ServiceSpec

STARTING, READY, DRAINING, DOWN = "starting", "ready", "draining", "down"
BREAKER_PROBE_SECONDS = 0.05


@dataclass(slots=True)
class Node:
    name: str
    cpu: float
    memory_mb: float
    up: bool = True
    cordoned: bool = False  # no new replicas (drained, leaving)
    slowdown: float = 1.0  # a noisy neighbour multiplies service times here
    cpu_used: float = 0.0
    memory_used: float = 0.0

    def fits(self, spec: ServiceSpec) -> bool:
        return (
            self.up
            and not self.cordoned
            and self.cpu_used + spec.cpu <= self.cpu + 1e-9
            and self.memory_used + spec.memory_mb <= self.memory_mb + 1e-9
        )


@dataclass(slots=True)
class Version:
    """How one version of a service behaves (a bad rollout fails and slows requests)."""

    name: str
    error_rate: float = 0.0
    slowdown: float = 1.0


@dataclass(eq=False, slots=True)
class Replica:
    name: str
    service: str
    node: Node | None  # None while pending (nothing fits)
    version: Version
    concurrency: int
    state: str = STARTING
    ready_at: float = 0.0
    busy: int = 0
    queue: deque = field(default_factory=deque)
    # Visits being served, to fail them on a crash: a dict, not a set, so they fail in the order they came
    # (a set of objects iterates by memory address, which would make a seeded run's spans differ).
    active: dict = field(default_factory=dict)
    recover_at: float | None = None  # a crashed replica the platform restarts at this time
    replaces: Replica | None = None  # the replica this one takes over from once ready


@dataclass(slots=True)
class ServiceState:
    """A service at run time: its replicas, current version, and what routing and isolation say."""

    spec: ServiceSpec
    version: Version
    versions: dict[str, Version]
    replicas: list[Replica] = field(default_factory=list)
    previous_versions: list[str] = field(default_factory=list)  # oldest first, for rollback
    weights: dict[str, float] = field(default_factory=dict)  # destination (version or replica) -> weight
    in_flight: int = 0
    concurrency_limit: int | None = None
    breaker_open: bool = False
    probe_at: float = 0.0  # an open breaker lets one call through at this time (half-open probe)
    rate_limit: float | None = None  # requests per second
    tokens: float = 0.0
    tokens_at: float = 0.0
    # Precomputed log-normal parameters of the service time.
    mu: float = 0.0
    sigma: float = 0.0
    next_replica: int = 0
    # Routing groups: (cumulative weight, ready replicas) per destination; see Simulator._routes_changed.
    groups: list = field(default_factory=list)
    # Request type -> the stages of calls this service makes for it (see Simulator.__init__).
    plans: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        cv = self.spec.service_time_cv
        self.sigma = math.sqrt(math.log(1.0 + cv * cv))
        self.mu = math.log(max(self.spec.service_time_ms, 1e-6)) - self.sigma * self.sigma / 2.0

    def admit(self, now: float) -> bool:
        """Isolation at the caller's side: False sheds the call at once (it fails fast)."""
        if self.breaker_open:
            # Half-open probes, as Envoy and Hystrix send after their sleep window: without them an open
            # breaker would hide the callee's recovery from whoever decides to close it.
            if now < self.probe_at:
                return False
            self.probe_at = now + BREAKER_PROBE_SECONDS
            return True
        if self.concurrency_limit is not None and self.in_flight >= self.concurrency_limit:
            return False
        if self.rate_limit is not None:
            self.tokens = min(self.rate_limit, self.tokens + (now - self.tokens_at) * self.rate_limit)
            self.tokens_at = now
            if self.tokens < 1.0:
                return False
            self.tokens -= 1.0
        return True
