"""One replica of one service of an application description, as a real process with a real HTTP server.

    python -m services.live.replica --app FILE --service NAME --port P --otlp HOST:PORT \
        --router HOST:PORT --replica-id ID --version V [--seed N] [--time-scale X] ...

A request (`POST /serve`) names its request type in a header and carries W3C trace context. The replica
admits at most `concurrency` requests at once (the service's worker pool, an asyncio.Semaphore); the others
wait in a bounded queue and beyond `MAX_QUEUE_PER_WORKER * concurrency` of them it answers 503 at once. An
admitted request spends the service's own time, log-normal with the spec's mean and coefficient of
variation, times `time_scale` (so a laptop can play the application at a lower rate with the same
utilization) and any slowdown; then it makes its request type's calls for this service stage by stage
(the calls of one stage in parallel, each with its probability) through the router, and fails with the
service's error rate (plus its version's). A failed call fails the request, after its remaining stages,
as in the simulator. The worker is held during the calls, as a thread-per-request server holds its thread.

The own time is an `asyncio.sleep`, not CPU work: these replicas stand in for I/O-bound services (a cache,
a database, a service waiting on one), and thirty processes burning CPU would measure the two cores of
this machine, not the application. The CPU each process does spend is real: HTTP, JSON-free headers,
OpenTelemetry spans and their export.

Every request gets a SERVER span (named by the entry operation for the first service of a trace, by the
request type elsewhere, as the simulator names them) and every call a CLIENT span with `peer.service`,
exported with the OpenTelemetry SDK over OTLP/gRPC. Random numbers come from one `random.Random` per
replica seeded with the run's seed and the replica id.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

from aiohttp import ClientError, ClientSession, ClientTimeout, TCPConnector, web
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from services.demo.app import AppSpec, Call, RequestType, ServiceSpec, load_app
from services.live.lifecycle import die_with_parent, stop_event_on_signals
from services.live.protocol import (
    BEHAVIOUR_PATH,
    CALL_PREFIX,
    HEALTH_PATH,
    MAX_QUEUE_PER_WORKER,
    REQUEST_TYPE_HEADER,
    SERVE_PATH,
    STATS_PATH,
    replica_seed,
)
from services.live.tracing import PROPAGATOR, tracer_provider

# How long a stopping replica lets requests in progress finish before it exits anyway.
STOP_GRACE_SECONDS = 5.0
# A call that takes longer than this is failed by the caller (wall seconds; the app is time-scaled).
CALL_TIMEOUT_SECONDS = 60.0


@dataclass(slots=True)
class Behaviour:
    """What makes this replica slower or less reliable than the spec: its version, and its neighbours."""

    version_error_rate: float = 0.0
    version_slowdown: float = 1.0
    interference_slowdown: float = 1.0


class Replica:
    """The request handling of one replica: admission, own time, calls, errors, spans."""

    def __init__(
        self,
        app: AppSpec,
        service: str,
        router: str,
        tracer: trace.Tracer,
        rng: random.Random,
        time_scale: float,
        behaviour: Behaviour,
    ) -> None:
        self.app = app
        self.spec: ServiceSpec = app.services[service]
        self.router = router
        self.tracer = tracer
        self.rng = rng
        self.time_scale = time_scale
        self.behaviour = behaviour
        self.workers = asyncio.Semaphore(self.spec.concurrency)
        self.queue_limit = MAX_QUEUE_PER_WORKER * self.spec.concurrency
        self.waiting = 0
        self.in_progress = 0
        self.served = 0
        self.failed = 0
        cv = self.spec.service_time_cv
        self._sigma = math.sqrt(math.log(1.0 + cv * cv))
        self._mu = math.log(max(self.spec.service_time_ms, 1e-6)) - self._sigma * self._sigma / 2.0
        self.session: ClientSession | None = None

    def own_time_seconds(self) -> float:
        """One draw of the service's own time, in wall seconds (time-scaled and slowed down)."""
        behaviour = self.behaviour
        slowdown = behaviour.version_slowdown * behaviour.interference_slowdown
        return self.rng.lognormvariate(self._mu, self._sigma) * self.time_scale * slowdown / 1000.0

    def fails(self) -> bool:
        rng, behaviour = self.rng, self.behaviour
        version_fails = behaviour.version_error_rate > 0 and rng.random() < behaviour.version_error_rate
        return version_fails or (self.spec.error_rate > 0 and rng.random() < self.spec.error_rate)

    async def serve(self, request: web.Request) -> web.Response:
        try:
            request_type = self.app.request(request.headers.get(REQUEST_TYPE_HEADER, ""))
        except KeyError as error:
            return web.Response(status=400, text=str(error))
        parent = PROPAGATOR.extract(dict(request.headers))
        has_parent = trace.get_current_span(parent).get_span_context().is_valid
        name = request_type.name if has_parent else request_type.operation
        attributes = {
            "http.request.method": request.method,
            "url.path": request.path,
            "app.request_type": request_type.name,
        }
        with self.tracer.start_as_current_span(
            name, context=parent, kind=SpanKind.SERVER, attributes=attributes, record_exception=False
        ) as span:
            status = await self._admit_and_handle(request_type, span)
            span.set_attribute("http.response.status_code", status)
            if status >= 500:
                span.set_status(Status(StatusCode.ERROR))
        if status >= 500:
            self.failed += 1
        return web.Response(status=status)

    async def _admit_and_handle(self, request_type: RequestType, span: trace.Span) -> int:
        if self.waiting >= self.queue_limit:
            return 503
        self.waiting += 1
        try:
            await self.workers.acquire()
        finally:
            self.waiting -= 1
        self.in_progress += 1
        try:
            await asyncio.sleep(self.own_time_seconds())
            ok = await self._make_calls(request_type, span)
            self.served += 1
            return 200 if ok and not self.fails() else 500
        finally:
            self.in_progress -= 1
            self.workers.release()

    async def _make_calls(self, request_type: RequestType, span: trace.Span) -> bool:
        ok = True
        for stage in request_type.calls.get(self.spec.name, ()):
            chosen = [
                call for call in stage if call.probability >= 1.0 or self.rng.random() < call.probability
            ]
            if chosen:
                results = await asyncio.gather(*(self._call(request_type, call, span) for call in chosen))
                ok = ok and all(results)
        return ok

    async def _call(self, request_type: RequestType, call: Call, parent: trace.Span) -> bool:
        assert self.session is not None
        context = trace.set_span_in_context(parent)
        with self.tracer.start_as_current_span(
            f"POST {call.service}",
            context=context,
            kind=SpanKind.CLIENT,
            attributes={"peer.service": call.service, "http.request.method": "POST"},
            record_exception=False,
        ) as span:
            headers = {REQUEST_TYPE_HEADER: request_type.name}
            PROPAGATOR.inject(headers, context=trace.set_span_in_context(span))
            try:
                async with self.session.post(
                    f"http://{self.router}{CALL_PREFIX}{call.service}", headers=headers
                ) as reply:
                    await reply.read()
                    status = reply.status
            except (TimeoutError, ClientError) as error:
                span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}"))
                return False
            span.set_attribute("http.response.status_code", status)
            if status >= 500:
                span.set_status(Status(StatusCode.ERROR))
            return status < 500


def build_app(replica: Replica, ready_at: float = 0.0) -> web.Application:
    """The replica's HTTP routes: serve, health, stats and the behaviour knob."""

    async def health(request: web.Request) -> web.Response:
        # Not ready before `ready_at`: a replica of a service that takes seconds to warm up (the spec's
        # startup_seconds) answers its readiness probe only then, as a Kubernetes pod does.
        if time.time() < ready_at:
            return web.json_response({"status": "starting"}, status=503)
        return web.json_response({"status": "ok"})

    async def stats(request: web.Request) -> web.Response:
        return web.json_response(
            {
                "served": replica.served,
                "failed": replica.failed,
                "in_progress": replica.in_progress,
                "waiting": replica.waiting,
            }
        )

    async def behaviour(request: web.Request) -> web.Response:
        body = await request.json()
        replica.behaviour.interference_slowdown = float(body.get("slowdown", 1.0))
        return web.json_response({"slowdown": replica.behaviour.interference_slowdown})

    application = web.Application()
    application.router.add_post(SERVE_PATH, replica.serve)
    application.router.add_get(HEALTH_PATH, health)
    application.router.add_get(STATS_PATH, stats)
    application.router.add_post(BEHAVIOUR_PATH, behaviour)
    return application


def parse_arguments(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m services.live.replica", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--app", required=True, help="application description (TOML)")
    parser.add_argument("--service", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--otlp", required=True, help="OTLP/gRPC endpoint, HOST:PORT")
    parser.add_argument("--router", required=True, help="the router, HOST:PORT")
    parser.add_argument("--replica-id", required=True)
    parser.add_argument("--version", default="v1")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--time-scale", type=float, default=1.0, help="multiplies every service time")
    parser.add_argument("--error-rate", type=float, default=0.0, help="extra error rate of this version")
    parser.add_argument("--slowdown", type=float, default=1.0, help="service-time factor of this version")
    parser.add_argument("--ready-at", type=float, default=0.0, help="unix time before which /healthz is 503")
    parser.add_argument("--parent-pid", type=int, default=None, help="exit when this process is gone")
    return parser.parse_args(argv)


async def run(arguments: argparse.Namespace) -> None:
    """Serve until SIGTERM/SIGINT, then let requests in progress finish and flush the spans."""
    app = load_app(arguments.app)
    if arguments.service not in app.services:
        raise SystemExit(f"{arguments.app}: no service named {arguments.service!r}")
    provider = tracer_provider(arguments.service, arguments.version, arguments.replica_id, arguments.otlp)
    behaviour = Behaviour(arguments.error_rate, arguments.slowdown)
    rng = random.Random(replica_seed(arguments.seed, arguments.replica_id))
    replica = Replica(
        app,
        arguments.service,
        arguments.router,
        provider.get_tracer("services.live.replica"),
        rng,
        arguments.time_scale,
        behaviour,
    )
    stopping = stop_event_on_signals()
    connector = TCPConnector(limit=0, force_close=False)
    async with ClientSession(
        connector=connector, timeout=ClientTimeout(total=CALL_TIMEOUT_SECONDS)
    ) as session:
        replica.session = session
        runner = web.AppRunner(build_app(replica, arguments.ready_at), access_log=None, handle_signals=False)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", arguments.port).start()
        await stopping.wait()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + STOP_GRACE_SECONDS
        while (replica.in_progress or replica.waiting) and loop.time() < deadline:
            await asyncio.sleep(0.05)
        await runner.cleanup()
    provider.shutdown()


def main(argv: Sequence[str] | None = None) -> None:
    arguments = parse_arguments(argv)
    die_with_parent(arguments.parent_pid)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run(arguments))


if __name__ == "__main__":
    sys.exit(main())
