"""The `controlplane.v1.ControlPlane` gRPC service: answers questions from snapshots of the live model."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import math
from functools import lru_cache
from typing import TYPE_CHECKING

import grpc
from google.protobuf import struct_pb2

from controlplane.actions import ACTION_TYPES
from controlplane.controller import Mode
from controlplane.decisions import Decision, DecisionStatus
from controlplane.serve.paging import MAX_PAGE_ITEMS, BadPageToken, Listings, fill_page, next_token
from controlplane.taxonomy import Taxonomy
from protos.controlplane.v1 import controlplane_pb2 as pb
from protos.controlplane.v1 import controlplane_pb2_grpc as pb_grpc
from telemetry import EdgeSnapshot, GraphSnapshot, NodeSnapshot, TelemetryModel, WindowSummary
from telemetry.snapshot import EXTERNAL

if TYPE_CHECKING:
    from controlplane.engine.runtime import ControlLoop, ManagedController
    from controlplane.engine.store import DecisionStore

_MODES = {
    Mode.ACTIVE: pb.CONTROLLER_MODE_ACTIVE,
    Mode.SHADOW: pb.CONTROLLER_MODE_SHADOW,
    Mode.DISABLED: pb.CONTROLLER_MODE_DISABLED,
}
_MODES_BACK = {value: key for key, value in _MODES.items()}
_STATUSES = {
    DecisionStatus.APPLIED: pb.DECISION_STATUS_APPLIED,
    DecisionStatus.SHADOW: pb.DECISION_STATUS_SHADOW,
    DecisionStatus.REJECTED: pb.DECISION_STATUS_REJECTED,
    DecisionStatus.SUPERSEDED: pb.DECISION_STATUS_SUPERSEDED,
    DecisionStatus.FAILED: pb.DECISION_STATUS_FAILED,
}
_STATUSES_BACK = {value: key for key, value in _STATUSES.items()}
MAX_PAGE_SIZE = 1000
WATCH_BATCH = 1000
WATCH_POLL_SECONDS = 1.0

_NODE_KINDS = {EXTERNAL: pb.NODE_KIND_EXTERNAL}


def window_stats_pb(summary: WindowSummary) -> pb.WindowStats:
    return pb.WindowStats(
        window_seconds=summary.window_seconds,
        requests=summary.requests,
        errors=summary.errors,
        request_rate=summary.request_rate,
        error_rate=summary.error_rate,
        p50_ms=summary.p50_ms,
        p95_ms=summary.p95_ms,
        p99_ms=summary.p99_ms,
        mean_ms=summary.mean_ms,
        concurrency=summary.concurrency,
    )


def node_pb(node: NodeSnapshot) -> pb.Node:
    return pb.Node(
        name=node.name,
        kind=_NODE_KINDS.get(node.kind, pb.NODE_KIND_SERVICE),
        system=node.system,
        stats=window_stats_pb(node.stats),
        requests_total=node.requests_total,
        errors_total=node.errors_total,
        last_seen_unix=node.last_seen,
    )


def edge_pb(edge: EdgeSnapshot) -> pb.Edge:
    return pb.Edge(
        source=edge.source,
        target=edge.target,
        stats=window_stats_pb(edge.stats),
        calls_total=edge.calls_total,
        errors_total=edge.errors_total,
        last_seen_unix=edge.last_seen,
    )


def service_stats_pb(node: NodeSnapshot, include_operations: bool) -> pb.ServiceStats:
    entry = pb.ServiceStats(
        service=node.name,
        stats=window_stats_pb(node.stats),
        requests_total=node.requests_total,
        errors_total=node.errors_total,
    )
    if include_operations:
        for operation in node.operations:
            entry.operations.add(
                operation=operation.operation,
                stats=window_stats_pb(operation.stats),
                requests_total=operation.requests_total,
                errors_total=operation.errors_total,
            )
    return entry


@lru_cache(maxsize=1024)
def _taxonomy_bytes(taxonomy: Taxonomy) -> bytes:
    return pb.TaxonomyInfo(**taxonomy.as_dict()).SerializeToString()


def taxonomy_pb(taxonomy: Taxonomy) -> pb.TaxonomyInfo:
    # Cached as bytes (messages are mutable): decision pages repeat the same few taxonomies.
    return pb.TaxonomyInfo.FromString(_taxonomy_bytes(taxonomy))


def _set_value(target: struct_pb2.Value, value: object) -> None:
    """Fill a protobuf Value from plain JSON-like data (what Struct.update does, without its overhead)."""
    if isinstance(value, bool):
        target.bool_value = value
    elif isinstance(value, int | float):
        target.number_value = value
    elif isinstance(value, str):
        target.string_value = value
    elif value is None:
        target.null_value = struct_pb2.NULL_VALUE
    elif isinstance(value, dict):
        fields = target.struct_value.fields
        target.struct_value.SetInParent()
        for key, item in value.items():
            _set_value(fields[str(key)], item)
    elif isinstance(value, list | tuple):
        values = target.list_value.values
        target.list_value.SetInParent()
        for item in value:
            _set_value(values.add(), item)
    else:
        target.string_value = str(value)


def decision_pb(decision: Decision) -> pb.DecisionInfo:
    action = struct_pb2.Struct()
    fields = action.fields
    for key, value in decision.action.to_dict().items():
        _set_value(fields[key], value)
    return pb.DecisionInfo(
        id=decision.id,
        tick=decision.tick,
        created_unix=decision.created_at,
        controller=decision.controller,
        taxonomy=taxonomy_pb(decision.taxonomy),
        action_kind=decision.action.name,
        target=decision.action.target,
        layer=decision.action.layer.value,
        action=action,
        status=_STATUSES[decision.status],
        why=decision.why,
        outcome=decision.outcome,
    )


def controller_pb(managed: ManagedController) -> pb.ControllerInfo:
    cls = managed.configured.cls
    status = managed.runner.status()
    parameters = struct_pb2.Struct()
    parameters.update(
        {key: value for key, value in vars(managed.configured.instance.params).items() if _jsonable(value)}
    )
    return pb.ControllerInfo(
        name=cls.name,
        description=cls.description or ((cls.__doc__ or "").strip().splitlines() or [""])[0],
        taxonomy=taxonomy_pb(cls.taxonomy),
        mode=_MODES[status.mode],
        period_seconds=managed.configured.instance.period_seconds,
        time_budget_seconds=managed.configured.instance.time_budget_seconds,
        priority=managed.configured.priority,
        healthy=status.healthy,
        quarantined=status.quarantined,
        faults_total=status.faults_total,
        consecutive_faults=status.consecutive_faults,
        last_error=status.last_error or "",
        last_duration_seconds=status.last_duration_seconds or 0.0,
        last_run_unix=status.last_run_at or 0.0,
        runs_total=status.runs_total,
        origin=managed.origin,
        parameters=parameters,
        promoted=managed.promoted,
    )


def _jsonable(value: object) -> bool:
    return isinstance(value, str | int | float | bool | list | dict) or value is None


class ControlPlaneApi(pb_grpc.ControlPlaneServicer):
    """The ControlPlane service, on the ingest event loop, so model snapshots are consistent.

    Mutating calls (SetControllerMode) need `authorization: Bearer TOKEN` metadata when a token is set.
    """

    def __init__(
        self,
        model: TelemetryModel,
        loop: ControlLoop | None = None,
        store: DecisionStore | None = None,
        api_token: str = "",
    ) -> None:
        self.model = model
        self.loop = loop
        self.store = store
        self.api_token = api_token
        # Snapshots of paged listings in progress (GetGraph, GetServiceStats).
        self._listings: Listings[GraphSnapshot] = Listings()

    async def _authorize(self, context: grpc.aio.ServicerContext) -> None:
        if not self.api_token:
            return
        metadata = dict(context.invocation_metadata() or ())
        header = metadata.get("authorization", "")
        if not header:
            await context.abort(
                grpc.StatusCode.UNAUTHENTICATED, "this call needs `authorization: Bearer TOKEN`"
            )
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.encode(), self.api_token.encode()):
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, "the bearer token is not valid")

    async def _require_loop(self, context: grpc.aio.ServicerContext) -> ControlLoop:
        if self.loop is None:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "this server runs no control loop")
        return self.loop

    async def _require_store(self, context: grpc.aio.ServicerContext) -> DecisionStore:
        if self.store is None:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "this server keeps no decision store")
        return self.store

    async def ListControllers(
        self, request: pb.ListControllersRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListControllersResponse:
        loop = await self._require_loop(context)
        managed = [loop.controllers[name] for name in sorted(loop.controllers)]
        return pb.ListControllersResponse(controllers=[controller_pb(item) for item in managed])

    async def SetControllerMode(
        self, request: pb.SetControllerModeRequest, context: grpc.aio.ServicerContext
    ) -> pb.ControllerInfo:
        await self._authorize(context)
        loop = await self._require_loop(context)
        if not request.name:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "name: required")
        mode = _MODES_BACK.get(request.mode)
        if mode is None:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "mode: must be ACTIVE, SHADOW or DISABLED")
        if request.name not in loop.controllers:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"name: no controller named {request.name!r}")
        return controller_pb(loop.set_mode(request.name, mode, promote=request.promote))

    async def ListDecisions(
        self, request: pb.ListDecisionsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListDecisionsResponse:
        store = await self._require_store(context)
        problem = _check_list_request(request)
        if problem:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, problem)
        try:
            decisions, token = await asyncio.to_thread(
                store.list,
                service=request.service or None,
                controller=request.controller or None,
                action_kind=request.action_kind or None,
                status=_STATUSES_BACK.get(request.status),
                since=request.since_unix or None,
                until=request.until_unix or None,
                page_size=request.page_size or 100,
                page_token=request.page_token,
            )
        except ValueError as error:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
        return pb.ListDecisionsResponse(
            decisions=[decision_pb(item) for item in decisions], next_page_token=token
        )

    async def GetDecision(
        self, request: pb.GetDecisionRequest, context: grpc.aio.ServicerContext
    ) -> pb.DecisionInfo:
        store = await self._require_store(context)
        if request.id == 0:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "id: required (decision ids start at 1)")
        decision = await asyncio.to_thread(store.get, request.id)
        if decision is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"id: no decision {request.id}")
        return decision_pb(decision)

    async def WatchDecisions(self, request: pb.WatchDecisionsRequest, context: grpc.aio.ServicerContext):
        """Stream decisions by increasing id: a reconnecting client passes the last id it saw."""
        store = await self._require_store(context)
        last = request.after_id
        if not last and not request.from_start:
            last = await asyncio.to_thread(store.last_id)
        while True:
            batch = await asyncio.to_thread(store.after, last, WATCH_BATCH)
            for decision in batch:
                last = decision.id
                if request.service and decision.service != request.service:
                    continue
                if request.controller and decision.controller != request.controller:
                    continue
                yield decision_pb(decision)
            if len(batch) < WATCH_BATCH:
                await self._wait_for_decisions()

    async def _wait_for_decisions(self) -> None:
        # Woken when a tick stores decisions; the timeout covers a wake-up missed between read and wait.
        if self.loop is None:
            await asyncio.sleep(WATCH_POLL_SECONDS)
            return
        async with self.loop.decided:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.loop.decided.wait(), WATCH_POLL_SECONDS)

    async def _window(self, requested: float, context: grpc.aio.ServicerContext) -> float | None:
        if math.isnan(requested) or requested < 0 or math.isinf(requested):
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"window_seconds must be >= 0, got {requested}"
            )
        return requested or None

    async def _page_start(
        self, token: str, page_size: int, window: float | None, context: grpc.aio.ServicerContext
    ) -> tuple[int, GraphSnapshot, int]:
        if page_size > MAX_PAGE_ITEMS:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"page_size: at most {MAX_PAGE_ITEMS}, got {page_size}"
            )
        try:
            return self._listings.resolve(token, lambda: self.model.snapshot(window))
        except BadPageToken as error:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
            raise  # not reached: abort raises

    async def GetGraph(
        self, request: pb.GetGraphRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetGraphResponse:
        window = await self._window(request.window_seconds, context)
        listing, snapshot, offset = await self._page_start(
            request.page_token, request.page_size, window, context
        )
        # One sequence: the nodes, then the edges, each page a slice of it.
        nodes, edges = snapshot.nodes, snapshot.edges
        items: list[NodeSnapshot | EdgeSnapshot] = [*nodes, *edges]
        page, end = fill_page(items, offset, request.page_size, _graph_item_pb)
        response = pb.GetGraphResponse(
            nodes=[item for item in page if isinstance(item, pb.Node)],
            edges=[item for item in page if isinstance(item, pb.Edge)],
            spans_accepted=snapshot.spans_accepted,
            spans_rejected=snapshot.spans_rejected,
            generated_unix=snapshot.taken_at,
            next_page_token=next_token(listing, end, len(items)),
            total_nodes=len(nodes),
            total_edges=len(edges),
        )
        response.folded.update(self.model.aggregates.folded)
        return response

    async def GetServiceStats(
        self, request: pb.GetServiceStatsRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetServiceStatsResponse:
        window = await self._window(request.window_seconds, context)
        listing, snapshot, offset = await self._page_start(
            request.page_token, request.page_size, window, context
        )
        services = [node for node in snapshot.nodes if node.kind != EXTERNAL]
        if request.services:
            known = {node.name for node in services}
            missing = sorted(set(request.services) - known)
            if missing:
                shown = ", ".join(name[:80] for name in missing[:10])
                more = f" and {len(missing) - 10} more" if len(missing) > 10 else ""
                await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service(s): {shown}{more}")
            wanted = set(request.services)
            services = [node for node in services if node.name in wanted]
        page, end = fill_page(
            services,
            offset,
            request.page_size,
            lambda node: service_stats_pb(node, request.include_operations),
        )
        return pb.GetServiceStatsResponse(
            services=page,
            next_page_token=next_token(listing, end, len(services)),
            total_services=len(services),
        )


def _graph_item_pb(item: NodeSnapshot | EdgeSnapshot) -> pb.Node | pb.Edge:
    return node_pb(item) if isinstance(item, NodeSnapshot) else edge_pb(item)


def _check_list_request(request: pb.ListDecisionsRequest) -> str:
    """The first problem with a ListDecisions request, naming the field, or ''."""
    if request.page_size > MAX_PAGE_SIZE:
        return f"page_size: at most {MAX_PAGE_SIZE}, got {request.page_size}"
    if request.action_kind and request.action_kind not in ACTION_TYPES:
        return f"action_kind: one of {sorted(ACTION_TYPES)}, got {request.action_kind!r}"
    if request.status and request.status not in _STATUSES_BACK:
        return f"status: unknown value {request.status}"
    for name in ("since_unix", "until_unix"):
        value = getattr(request, name)
        if math.isnan(value) or value < 0:
            return f"{name}: must be a time in seconds since the epoch, got {value}"
    if request.since_unix and request.until_unix and request.since_unix > request.until_unix:
        return "since_unix: must not be after until_unix"
    return ""
