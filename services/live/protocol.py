"""What the live processes agree on: header names, URL paths, the router's admin payload, free ports.

The load generator, the replicas, the router and the actuator are separate processes that talk HTTP on
127.0.0.1; this module is the one place their wire conventions are written down.
"""

from __future__ import annotations

import zlib

# The request type travels with every call, as a header, so each replica knows which stages it runs.
REQUEST_TYPE_HEADER = "x-request-type"
# Why the router refused a call (no ready replica, circuit breaker, ...); for people reading logs.
REFUSED_HEADER = "x-refused-by-router"

HEALTH_PATH = "/healthz"
SERVE_PATH = "/serve"
BEHAVIOUR_PATH = "/admin/behaviour"  # replica: change its slowdown at run time (a noisy neighbour)
STATS_PATH = "/stats"  # replica: requests served so far
CALL_PREFIX = "/call/"  # router: POST /call/<service> reaches one replica of <service>
ROUTES_PREFIX = "/admin/services/"  # router: PUT /admin/services/<service> sets its routing table
ROUTER_STATS_PATH = "/admin/stats"

# A replica refuses (503) beyond this many waiting requests per worker, as the simulator does.
MAX_QUEUE_PER_WORKER = 50
# The version every service starts with (the simulator's name for it too).
INITIAL_VERSION = "v1"


def replica_seed(seed: int, replica_id: str) -> int:
    """The seed of one replica's random numbers: the run's seed and a stable hash of the replica id."""
    return (seed * 1_000_003 + zlib.crc32(replica_id.encode())) % (2**63)
