"""The router process: every call between services, and every user request, goes through it.

    python -m services.live.router --port P [--seed N] [--parent-pid PID]

`POST /call/<service>` is sent on to one ready replica of `<service>` (weights, balancing and isolation
from `services.live.routing`), with the request-type and trace-context headers passed through untouched,
and the replica's status comes back. No ready replica, or a call shed by isolation, is a 503 at once; a
replica that does not answer (it crashed) is a 502. The router makes no spans: like a mesh proxy that
does not trace, it is invisible in the dependency graph, which shows caller -> callee as the application
sees it.

`PUT /admin/services/<service>` replaces a service's routing table (the `LocalProcessActuator` is the only
writer; each update carries a generation so a late, older one is ignored). `GET /admin/stats` reports
what was sent where, for tests and for people.

Why a process of its own (see docs/benchmark-live.md): it keeps the proxying CPU off the control plane's
event loop, whose tick and ingest latencies are part of what the benchmark measures, and it is what a
service mesh's gateway is, a separate hop with its own table pushed by the control plane.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import sys
import time
from collections import Counter
from collections.abc import Sequence

from aiohttp import ClientError, ClientSession, ClientTimeout, TCPConnector, web

from services.live.lifecycle import die_with_parent, stop_event_on_signals
from services.live.protocol import CALL_PREFIX, HEALTH_PATH, REFUSED_HEADER, ROUTER_STATS_PATH, ROUTES_PREFIX
from services.live.routing import Endpoint, Isolation, ServiceRoutes

FORWARD_TIMEOUT_SECONDS = 120.0
# Headers the replica needs; hop-by-hop ones (connection, content-length...) are the client's business.
FORWARDED_HEADERS = ("x-request-type", "traceparent", "tracestate")


class Router:
    """Routing tables by service, the forwarding itself, and counters."""

    def __init__(self, seed: int) -> None:
        self.routes: dict[str, ServiceRoutes] = {}
        self.rng = random.Random(seed)
        self.forwarded: Counter[str] = Counter()  # by replica
        self.refused: Counter[str] = Counter()  # by service
        self.unreachable: Counter[str] = Counter()  # by replica
        self.session: ClientSession | None = None

    def table(self, service: str) -> ServiceRoutes:
        routes = self.routes.get(service)
        if routes is None:
            routes = self.routes[service] = ServiceRoutes(service)
        return routes

    async def call(self, request: web.Request) -> web.Response:
        service = request.match_info["service"]
        routes = self.table(service)
        refusal = routes.refusal(time.monotonic())
        endpoint = routes.pick(self.rng) if refusal is None else None
        if endpoint is None:
            self.refused[service] += 1
            return web.Response(status=503, headers={REFUSED_HEADER: refusal or "no ready replica"})
        headers = {name: request.headers[name] for name in FORWARDED_HEADERS if name in request.headers}
        routes.started(endpoint)
        assert self.session is not None
        try:
            url = f"http://127.0.0.1:{endpoint.port}/serve"
            async with self.session.post(url, headers=headers) as reply:
                body = await reply.read()
                self.forwarded[endpoint.replica] += 1
                return web.Response(status=reply.status, body=body)
        except (TimeoutError, ClientError):
            self.unreachable[endpoint.replica] += 1
            return web.Response(status=502, headers={REFUSED_HEADER: f"{endpoint.replica} did not answer"})
        finally:
            routes.finished(endpoint)

    async def set_routes(self, request: web.Request) -> web.Response:
        service = request.match_info["service"]
        body = await request.json()
        endpoints = [
            Endpoint(str(item["replica"]), str(item["version"]), int(item["port"]))
            for item in body.get("endpoints", ())
        ]
        weights = {str(key): float(value) for key, value in dict(body.get("weights", {})).items()}
        isolation = Isolation.from_dict(body.get("isolation", {}))
        applied = self.table(service).update(endpoints, weights, isolation, int(body.get("generation", 0)))
        return web.json_response({"applied": applied})

    async def stats(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "forwarded": dict(self.forwarded),
                "refused": dict(self.refused),
                "unreachable": dict(self.unreachable),
                "in_flight": {name: routes.in_flight for name, routes in self.routes.items()},
            }
        )


def build_app(router: Router) -> web.Application:
    async def health(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    application = web.Application()
    application.router.add_post(CALL_PREFIX + "{service}", router.call)
    application.router.add_put(ROUTES_PREFIX + "{service}", router.set_routes)
    application.router.add_get(ROUTER_STATS_PATH, router.stats)
    application.router.add_get(HEALTH_PATH, health)
    return application


async def run(port: int, seed: int) -> None:
    """Serve until SIGTERM/SIGINT."""
    router = Router(seed)
    stopping = stop_event_on_signals()
    connector = TCPConnector(limit=0)
    async with ClientSession(
        connector=connector, timeout=ClientTimeout(total=FORWARD_TIMEOUT_SECONDS)
    ) as session:
        router.session = session
        runner = web.AppRunner(build_app(router), access_log=None, handle_signals=False)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        await stopping.wait()
        await runner.cleanup()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m services.live.router", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--parent-pid", type=int, default=None, help="exit when this process is gone")
    arguments = parser.parse_args(argv)
    die_with_parent(arguments.parent_pid)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run(arguments.port, arguments.seed))


if __name__ == "__main__":
    sys.exit(main())
