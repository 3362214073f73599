"""Bounds on what senders can make the model keep, and how what goes past them is folded and counted.

Any span, name or attribute may be hostile, so nothing a request says grows the model without bound:

* names (services, operations, peers, versions) longer than `max_name_length` characters are cut, ending
  in `TRUNCATED`;
* a sampled span counts for at most `max_span_weight` spans (its adjusted count, telemetry/sampling.py);
* past `max_services` services, `max_operations` operations (and `max_operations_per_service` per service),
  `max_external_peers` uninstrumented peers and `max_edges` caller -> callee pairs, new ones are counted
  under an overflow node or operation (`OTHER_SERVICES`, `OTHER_PEERS`, `OTHER_OPERATION`), so totals stay
  right while memory, the view the control loop reads and every API answer stay bounded.

`TelemetryAggregates.folded` counts what was folded, per kind (services, operations, external_peers,
edges); the model reports it in OTLP partial success and /metrics.
"""

from __future__ import annotations

from dataclasses import dataclass

OTHER_SERVICES = "(other services)"
OTHER_PEERS = "(other peers)"
OTHER_OPERATION = "(other operations)"
OVERFLOW_NAMES = frozenset({OTHER_SERVICES, OTHER_PEERS})
TRUNCATED = "…"

DEFAULT_MAX_NAME_LENGTH = 256
DEFAULT_MAX_SPAN_WEIGHT = 1_000_000
DEFAULT_MAX_SERVICES = 2_000
DEFAULT_MAX_OPERATIONS = 5_000
DEFAULT_MAX_OPERATIONS_PER_SERVICE = 200
DEFAULT_MAX_EXTERNAL_PEERS = 1_000
DEFAULT_MAX_EDGES = 10_000


@dataclass(frozen=True, slots=True)
class CardinalityLimits:
    """How many series of each kind the model keeps before folding new ones into an overflow."""

    max_services: int = DEFAULT_MAX_SERVICES
    max_operations: int = DEFAULT_MAX_OPERATIONS
    max_operations_per_service: int = DEFAULT_MAX_OPERATIONS_PER_SERVICE
    max_external_peers: int = DEFAULT_MAX_EXTERNAL_PEERS
    max_edges: int = DEFAULT_MAX_EDGES

    def __post_init__(self) -> None:
        for name in ("max_services", "max_operations", "max_operations_per_service", "max_external_peers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.max_edges < 1:
            raise ValueError("max_edges must be at least 1")


def cap_name(name: str, limit: int) -> str:
    """`name`, cut to `limit` characters (the last one `TRUNCATED`) when it is longer."""
    if len(name) <= limit:
        return name
    return name[: limit - 1] + TRUNCATED
