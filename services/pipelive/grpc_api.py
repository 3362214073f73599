"""The `pipelive.v1.PipeLive` gRPC service: Generate (a token stream), Status, ResizeKvPool, Reconfigure."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import grpc

from protos.pipelive.v1 import pipelive_pb2 as pb
from protos.pipelive.v1 import pipelive_pb2_grpc as pb_grpc
from services.pipelive.async_engine import AsyncEngine
from services.pipelive.block_pool import ResizeRefused
from services.pipelive.engine import EngineStatus, LLMEngine, ResizeResult
from services.pipelive.live_migration import ReconfigureResult
from services.pipelive.params import InvalidRequest, validate
from services.pipelive.reconfigure import (
    InvalidPartition,
    ReconfigureFailed,
    ReconfigureRefused,
    validate_method,
    validate_partition,
)
from services.pipelive.tokenizer import ByteTokenizer


def status_message(status: EngineStatus) -> pb.StatusResponse:
    kv = status.kv
    return pb.StatusResponse(
        model=status.model_name,
        num_layers=status.num_layers,
        block_size=kv.block_size,
        blocks_per_chunk=kv.blocks_per_chunk,
        layers_per_unit=kv.layers_per_unit,
        num_requests_running=status.running,
        num_requests_waiting=status.waiting,
        kv_blocks_total=kv.total_blocks,
        kv_blocks_used=kv.used_blocks,
        kv_blocks_free=kv.free_blocks,
        stages=[
            pb.StageStatus(
                index=stage.index,
                first_layer=stage.first_layer,
                end_layer=stage.end_layer,
                device=stage.device,
                budget_bytes=stage.budget_bytes,
                usable_bytes=stage.usable_bytes,
                weight_bytes=stage.weight_bytes,
                kv_bytes=stage.kv_bytes,
                # One block-id space for all stages: each holds every block (for its own layers).
                kv_blocks_total=stage.num_chunks * kv.blocks_per_chunk,
                kv_blocks_used=kv.used_blocks,
                kv_blocks_free=stage.num_chunks * kv.blocks_per_chunk - kv.used_blocks,
                kv_chunks=stage.num_chunks,
                kv_chunk_bytes=stage.chunk_bytes,
                kv_blocks_capacity=stage.max_blocks,
            )
            for stage in status.stages
        ],
        max_stages=status.max_stages,
    )


class PipeLiveService(pb_grpc.PipeLiveServicer):
    def __init__(self, engine: AsyncEngine, tokenizer: ByteTokenizer) -> None:
        self.engine = engine
        self.tokenizer = tokenizer

    async def Generate(  # noqa: N802 - the gRPC method name
        self, request: pb.GenerateRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.GenerateResponse]:
        if request.prompt and request.prompt_token_ids:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "prompt: give prompt or prompt_token_ids, not both"
            )
        prompt_ids = list(request.prompt_token_ids) or self.tokenizer.encode(request.prompt)
        try:
            params = validate(
                self.engine.engine.limits(),
                prompt_ids,
                request.max_tokens if request.HasField("max_tokens") else None,
                request.temperature if request.HasField("temperature") else None,
                request.model,
                request.seed if request.HasField("seed") else None,
                request.top_p if request.HasField("top_p") else None,
                request.top_k if request.HasField("top_k") else None,
            )
        except InvalidRequest as error:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{error.field}: {error}")
        decoder = self.tokenizer.stream_decoder()
        index = 0
        # Cancellation (client gone) closes the stream, which aborts the request and frees its blocks.
        async with contextlib.aclosing(self.engine.generate(prompt_ids, params)) as outputs:
            async for output in outputs:
                text = decoder.push(output.token_id) + (decoder.flush() if output.finished else "")
                yield pb.GenerateResponse(
                    request_id=output.request_id,
                    token_id=output.token_id,
                    text=text,
                    finish_reason=output.finish_reason or "",
                    index=index,
                )
                index += 1

    async def Status(self, request: pb.StatusRequest, context: grpc.aio.ServicerContext) -> pb.StatusResponse:  # noqa: N802
        return status_message(await self.engine.call(LLMEngine.status))

    async def ResizeKvPool(  # noqa: N802
        self, request: pb.ResizeKvPoolRequest, context: grpc.aio.ServicerContext
    ) -> pb.ResizeKvPoolResponse:
        if request.target_blocks < 1:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "target_blocks: must be at least 1")
        try:
            result: ResizeResult = await self.engine.call(
                lambda engine: engine.resize_kv(request.target_blocks)
            )
        except ResizeRefused as error:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(error))
        return pb.ResizeKvPoolResponse(
            kv_blocks_total=result.total_blocks,
            added_chunks=result.added_chunks,
            released_chunks=result.released_chunks,
        )

    async def Reconfigure(  # noqa: N802
        self, request: pb.ReconfigureRequest, context: grpc.aio.ServicerContext
    ) -> pb.ReconfigureResponse:
        engine = self.engine.engine
        ranges = [range(stage.first_layer, stage.end_layer) for stage in request.stages]
        budgets = list(request.budget_bytes) or None
        try:
            validate_partition(ranges, engine.model.num_hidden_layers)
            method = validate_method(request.method)
            if request.devices:
                if len(request.devices) != len(ranges):
                    raise InvalidPartition(
                        "devices", f"give one device per stage ({len(ranges)}), not {len(request.devices)}"
                    )
                other = [d for d in request.devices if d and d != engine.config.device]
                if other:
                    raise InvalidPartition(
                        "devices",
                        f"device {other[0]!r}: this engine runs every stage on {engine.config.device!r}; "
                        "moving a stage to another device is not supported yet",
                    )
        except InvalidPartition as error:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{error.field}: {error}")
        try:
            reconfiguration = await self.engine.call(
                lambda llm: llm.begin_reconfigure(ranges, method, budgets=budgets)
            )
            result: ReconfigureResult = await asyncio.wrap_future(reconfiguration.future)
        except InvalidPartition as error:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{error.field}: {error}")
        except ReconfigureRefused as error:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(error))
        except ReconfigureFailed as error:
            await context.abort(grpc.StatusCode.ABORTED, str(error))
        return reconfigure_response(result)


def reconfigure_response(result: ReconfigureResult) -> pb.ReconfigureResponse:
    return pb.ReconfigureResponse(
        stages=[pb.LayerRange(first_layer=r.start, end_layer=r.stop) for r in result.stages],
        method=result.method,
        pause_ms=result.pause_ms,
        total_ms=result.total_ms,
        weight_bytes_copied=result.weight_bytes_copied,
        kv_bytes_copied=result.kv_bytes_copied,
        patch_rounds=result.patch_rounds,
        final_dirty_blocks=result.final_dirty_blocks,
        preempted=result.preempted,
        dropped=result.dropped,
        pause_kv_bytes=result.pause_kv_bytes,
        dirty_blocks_per_round=result.dirty_per_round,
    )
