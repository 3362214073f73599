"""The `controlplane.v1.ControlPlane` gRPC service: answers questions from snapshots of the live model."""

from __future__ import annotations

import math

import grpc

from protos.controlplane.v1 import controlplane_pb2 as pb
from protos.controlplane.v1 import controlplane_pb2_grpc as pb_grpc
from telemetry import GraphSnapshot, TelemetryModel, WindowSummary
from telemetry.snapshot import EXTERNAL

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


def graph_pb(snapshot: GraphSnapshot) -> pb.GetGraphResponse:
    """The wire form of a graph snapshot."""
    return pb.GetGraphResponse(
        nodes=[
            pb.Node(
                name=node.name,
                kind=_NODE_KINDS.get(node.kind, pb.NODE_KIND_SERVICE),
                system=node.system,
                stats=window_stats_pb(node.stats),
                requests_total=node.requests_total,
                errors_total=node.errors_total,
                last_seen_unix=node.last_seen,
            )
            for node in snapshot.nodes
        ],
        edges=[
            pb.Edge(
                source=edge.source,
                target=edge.target,
                stats=window_stats_pb(edge.stats),
                calls_total=edge.calls_total,
                errors_total=edge.errors_total,
                last_seen_unix=edge.last_seen,
            )
            for edge in snapshot.edges
        ],
        spans_accepted=snapshot.spans_accepted,
        spans_rejected=snapshot.spans_rejected,
        generated_unix=snapshot.taken_at,
    )


class ControlPlaneApi(pb_grpc.ControlPlaneServicer):
    """Read-only queries over the model, on the ingest event loop, so snapshots are consistent."""

    def __init__(self, model: TelemetryModel) -> None:
        self.model = model

    async def _window(self, requested: float, context: grpc.aio.ServicerContext) -> float | None:
        if math.isnan(requested) or requested < 0 or math.isinf(requested):
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"window_seconds must be >= 0, got {requested}"
            )
        return requested or None

    async def GetGraph(
        self, request: pb.GetGraphRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetGraphResponse:
        window = await self._window(request.window_seconds, context)
        return graph_pb(self.model.snapshot(window))

    async def GetServiceStats(
        self, request: pb.GetServiceStatsRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetServiceStatsResponse:
        window = await self._window(request.window_seconds, context)
        snapshot = self.model.snapshot(window)
        services = [node for node in snapshot.nodes if node.kind != EXTERNAL]
        if request.services:
            known = {node.name for node in services}
            missing = sorted(set(request.services) - known)
            if missing:
                await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service(s): {', '.join(missing)}")
            services = [node for node in services if node.name in set(request.services)]
        response = pb.GetServiceStatsResponse()
        for node in services:
            entry = response.services.add(
                service=node.name,
                stats=window_stats_pb(node.stats),
                requests_total=node.requests_total,
                errors_total=node.errors_total,
            )
            if request.include_operations:
                for operation in node.operations:
                    entry.operations.add(
                        operation=operation.operation,
                        stats=window_stats_pb(operation.stats),
                        requests_total=operation.requests_total,
                        errors_total=operation.errors_total,
                    )
        return response
