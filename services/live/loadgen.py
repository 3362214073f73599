"""The load generator: open-loop Poisson arrivals of request types, sent to their entry service.

Open loop, as users are: a request is sent when its arrival time comes, whether or not earlier ones have
been answered, so a slow application meets the same load a fast one does (a closed loop would hide
overload behind its own back-off). Each second's rate is given by the caller (the scenario's curve, times
the run's scale and any `load` event); request types are drawn by the mix's weights (the application's,
unless the workload or a `mix` event says otherwise). Every answer is recorded with its end-to-end
latency as the client saw it, divided by `time_scale` so that it is in the application's own time (see
docs/benchmark-live.md), and its outcome (a status below 500 is a success; a timeout is a failure).
"""

from __future__ import annotations

import asyncio
import bisect
import random
import time
from collections.abc import Mapping
from itertools import accumulate

from aiohttp import ClientError, ClientSession, ClientTimeout, TCPConnector

from services.demo.app import AppSpec, RequestType
from services.demo.results import RunRecorder
from services.live.protocol import CALL_PREFIX, REQUEST_TYPE_HEADER

REQUEST_TIMEOUT_SECONDS = 30.0


class LoadGenerator:
    """Sends requests through the router and records each answer in a `RunRecorder`."""

    def __init__(
        self,
        app: AppSpec,
        router_address: str,
        recorder: RunRecorder,
        rng: random.Random,
        time_scale: float = 1.0,
        timeout_seconds: float = REQUEST_TIMEOUT_SECONDS,
    ) -> None:
        self.app = app
        self.router_address = router_address
        self.recorder = recorder
        self.rng = rng
        self.time_scale = time_scale
        self.timeout = ClientTimeout(total=timeout_seconds)
        self.started_at = time.monotonic()
        self.sent = 0
        self.answered = 0
        self.rate_factor = 1.0
        self._tasks: set[asyncio.Task] = set()
        self._session: ClientSession | None = None
        self.set_mix({})

    def set_mix(self, weights: Mapping[str, float]) -> None:
        """Request-type weights (empty: the application's own); unknown names raise KeyError."""
        for name in weights:
            self.app.request(name)
        self.mix = dict(weights)
        self._types = list(self.app.requests)
        self._cumulative = list(
            accumulate(weights.get(r.name, 0.0) if weights else r.weight for r in self._types)
        )

    async def __aenter__(self) -> LoadGenerator:
        self._session = ClientSession(connector=TCPConnector(limit=0), timeout=self.timeout)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    def draw(self) -> RequestType:
        total = self._cumulative[-1]
        return self._types[bisect.bisect_right(self._cumulative, self.rng.random() * total)]

    async def run_second(self, second: int, rate: float) -> None:
        """Send this second's Poisson arrivals at `rate` (times the load factor), each on time."""
        rate *= self.rate_factor
        start = self.started_at + second
        end = start + 1.0
        if rate > 0:
            arrival = start + self.rng.expovariate(rate)
            while arrival < end:
                request_type = self.draw()  # drawn in arrival order: the run's seed fixes the sequence
                delay = arrival - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                task = asyncio.create_task(self._send(request_type))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
                arrival += self.rng.expovariate(rate)
        delay = end - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)

    async def drain(self, timeout_seconds: float) -> int:
        """Wait up to `timeout_seconds` for requests still out; returns how many were left unanswered."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout_seconds)
        return len(self._tasks)

    async def _send(self, request_type: RequestType) -> None:
        assert self._session is not None
        self.sent += 1
        sent_at = time.monotonic()
        url = f"http://{self.router_address}{CALL_PREFIX}{request_type.entry}"
        try:
            async with self._session.post(url, headers={REQUEST_TYPE_HEADER: request_type.name}) as reply:
                await reply.read()
                ok = reply.status < 500
        except (TimeoutError, ClientError):
            ok = False
        now = time.monotonic()
        self.answered += 1
        latency_ms = (now - sent_at) * 1000.0 / self.time_scale
        self.recorder.record_request(now - self.started_at, latency_ms, ok)
