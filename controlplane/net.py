"""Loopback networking helpers shared by the servers, benchmarks and tests that start processes."""

from __future__ import annotations

import socket


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on `host` that is free now (the caller binds it soon after; another process could take it
    in between, which is why servers that can bind port 0 themselves should)."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]
