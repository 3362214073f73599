"""The Ingestor: the model's only writer, with one entry per signal, and the bounded queue of OTLP bodies.

Spans: receivers hand over raw request bodies (`submit`); one worker task decodes each and applies it to the
model, in arrival order, and resolves the receiver's future with the partial-success result. The queue is
bounded in bytes: when ingest falls behind, `submit` refuses at once with `Overloaded` (gRPC UNAVAILABLE,
HTTP 503 with Retry-After, both retried by OTLP exporters) instead of letting memory grow.

Pre-aggregated reports (node agents' `TelemetryReport`s, `telemetry.reports`): `submit_report` decodes one
and merges it at once; `submit_aggregates` merges aggregates built in this process. In-process producers
that drive the clock themselves (the simulator, the benchmarks) use `ingest_now`, `expire_now`, `flush_now`.
Every entry runs on the event loop's thread, so the model has one writer at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
from dataclasses import dataclass

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from protos.controlplane.v1.agent_pb2 import TelemetryReport
from telemetry.aggregates import TelemetryAggregates
from telemetry.model import IngestResult, TelemetryModel
from telemetry.otlp_json import MalformedRequest, parse_trace_request
from telemetry.reports import aggregates_from_pb

log = logging.getLogger(__name__)

DEFAULT_MAX_QUEUE_BYTES = 64 * 1024 * 1024
DEFAULT_MAINTENANCE_SECONDS = 1.0


class Encoding(enum.Enum):
    PROTOBUF = "protobuf"
    JSON = "json"


class Overloaded(RuntimeError):
    """The ingest queue is full; the client should retry after `retry_after_seconds`."""

    def __init__(self, retry_after_seconds: float) -> None:
        super().__init__(f"ingest queue is full; retry in {retry_after_seconds:g}s")
        self.retry_after_seconds = retry_after_seconds


@dataclass(slots=True)
class _Pending:
    body: bytes
    encoding: Encoding
    done: asyncio.Future[IngestResult]


def decode_request(body: bytes, encoding: Encoding) -> ExportTraceServiceRequest:
    """Decode an OTLP trace export body; raises MalformedRequest."""
    if encoding is Encoding.JSON:
        return parse_trace_request(body)
    try:
        return ExportTraceServiceRequest.FromString(body)
    except DecodeError as error:
        raise MalformedRequest(f"body is not a protobuf ExportTraceServiceRequest: {error}") from None


class Ingestor:
    """Owns the model's write side: every change to the model goes through its single worker."""

    def __init__(
        self,
        model: TelemetryModel,
        max_queue_bytes: int = DEFAULT_MAX_QUEUE_BYTES,
        retry_after_seconds: float = 1.0,
        maintenance_seconds: float = DEFAULT_MAINTENANCE_SECONDS,
    ) -> None:
        self.model = model
        self.max_queue_bytes = max_queue_bytes
        self.retry_after_seconds = retry_after_seconds
        self.maintenance_seconds = maintenance_seconds
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._queued_bytes = 0
        self._tasks: list[asyncio.Task] = []
        self.requests_refused = 0
        self.reports_merged = 0

    @property
    def queued_bytes(self) -> int:
        return self._queued_bytes

    async def submit(self, body: bytes, encoding: Encoding) -> IngestResult:
        """Queue one body and wait until the model has taken it; raises Overloaded or MalformedRequest."""
        # One oversized body is admitted into an empty queue, so a limit below the request size limit
        # cannot turn a legal request into an endless retry loop.
        if self._queued_bytes and self._queued_bytes + len(body) > self.max_queue_bytes:
            self.requests_refused += 1
            raise Overloaded(self.retry_after_seconds)
        done: asyncio.Future[IngestResult] = asyncio.get_running_loop().create_future()
        self._queued_bytes += len(body)
        self._queue.put_nowait(_Pending(body, encoding, done))
        return await done

    def submit_report(self, report: TelemetryReport) -> None:
        """Merge one pre-aggregated report into the model now; MalformedReport (nothing merged) if invalid."""
        config = self.model.config
        now = self.model.clock()
        self.submit_aggregates(
            aggregates_from_pb(report, config.bucket_seconds, config.relative_accuracy, now)
        )
        self.reports_merged += 1

    def submit_aggregates(self, aggregates: TelemetryAggregates) -> None:
        """Merge aggregates kept with the model's buckets and accuracy (ValueError otherwise) now."""
        self.model.merge(aggregates)

    def ingest_now(self, request: ExportTraceServiceRequest, now: float | None = None) -> IngestResult:
        """Apply one decoded request at once: for an in-process producer that owns the clock (a simulator)."""
        return self.model.ingest(request, now)

    def flush_now(self, now: float | None = None) -> None:
        """Resolve every pending link now (unanswered client calls become calls to external nodes)."""
        self.model.flush(now)

    def expire_now(self, now: float | None = None) -> None:
        """Time out links and forget what is past retention now (the worker does this itself every second)."""
        self.model.expire(now)

    def start(self) -> None:
        """Start the worker and the periodic maintenance (link expiry, retention) on the running loop."""
        self._tasks = [asyncio.create_task(self._work()), asyncio.create_task(self._maintain())]

    @property
    def running(self) -> bool:
        return bool(self._tasks) and not any(task.done() for task in self._tasks)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    async def _work(self) -> None:
        while True:
            pending = await self._queue.get()
            try:
                request = decode_request(pending.body, pending.encoding)
                result = self.model.ingest(request)
            except MalformedRequest as error:
                if not pending.done.done():
                    pending.done.set_exception(error)
            except Exception as error:  # a bug must fail this request, not the receiver
                log.exception("ingest failed")
                if not pending.done.done():
                    pending.done.set_exception(error)
            else:
                if not pending.done.done():
                    pending.done.set_result(result)
            finally:
                self._queued_bytes -= len(pending.body)
            # Let receivers and API calls run between requests.
            await asyncio.sleep(0)
            self._prepare_view()

    async def _maintain(self) -> None:
        while True:
            await asyncio.sleep(self.maintenance_seconds)
            try:
                self.model.expire()
            except Exception:
                log.exception("model maintenance failed")
            self._prepare_view()

    def _prepare_view(self) -> None:
        """Once per bucket, build the control loop's next view here rather than in its tick."""
        try:
            self.model.prepare_complete_snapshot()
        except Exception:  # the tick builds the view itself then
            log.exception("preparing the control loop's view failed")
