"""`PipeLiveActuator`: the control plane's actuator for PipeLive services, over their gRPC API.

It carries `ReconfigurePipeline` out by calling `Reconfigure` on the service's address, mapping
`layers_per_stage` to one `LayerRange` per stage (in pipeline order, covering every layer once), passing
the devices, their budgets when every one is known (from the last `Status` and the declared spare devices),
and the action's method (empty: the engine's default, live), and reporting the outcome: the
engine's figures (pause, total time, bytes copied, patch rounds, preempted and dropped requests) when it
succeeds, its refusal reason (FAILED_PRECONDITION: the plan does not fit; INVALID_ARGUMENT: a bad
partition) when it does not, which the coordinator turns into a FAILED decision with that reason.

Its inventory is what the `pipeline` controller models: `Status` gives the stages (layer ranges, devices,
budgets, weight and KV bytes, KV blocks in use), from which the bytes of one layer's weights and of one KV
block of one layer follow; the service's `/metrics` (vLLM's names, when `metrics_url` is given) gives the
load; the operator declares what no API reports: each device's relative prefill and decode speed, and the
spare devices the pipeline may grow onto.

A stage's device is what the controller balances over, so every stage needs a name of its own: where the
engine reports the same device for several stages (on CPU every stage is a worker with its own budget on
"cpu"), the inventory names them `cpu#0`, `cpu#1`, ... by stage, and `Reconfigure` gets the engine's names
back (the part before `#`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import grpc
from aiohttp import ClientError, ClientSession, ClientTimeout
from prometheus_client.parser import text_string_to_metric_families

from controlplane import (
    Actuator,
    DeviceInventory,
    Inventory,
    Outcome,
    PipelineInventory,
    ReconfigurePipeline,
    StageInventory,
)
from protos.pipelive.v1 import pipelive_pb2 as pb
from protos.pipelive.v1 import pipelive_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PipeLiveTarget:
    """One PipeLive service the actuator manages, and what the operator declares about its devices."""

    name: str
    address: str  # host:port of its gRPC API
    metrics_url: str = ""  # its Prometheus endpoint (http://host:port/metrics); empty: no load metrics
    # Device -> (prefill speed, decode speed), relative to a reference device (1.0, 1.0 when not given).
    device_speeds: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    # Devices not in the pipeline now that it may grow onto.
    spare_devices: Sequence[DeviceInventory] = ()


def reconfigure_request(
    action: ReconfigurePipeline, budgets: Mapping[str, int] | None = None
) -> pb.ReconfigureRequest:
    """The `Reconfigure` request for an action: consecutive layer ranges, devices, method, and the budget of
    every stage's device when all of them are known (`budgets`: device -> bytes), so that a stage on a
    device the engine has not used yet gets its budget."""
    stages, first = [], 0
    for count in action.layers_per_stage:
        stages.append(pb.LayerRange(first_layer=first, end_layer=first + count))
        first += count
    # Stage slots the inventory told apart ("cpu#1") are the engine's device ("cpu").
    devices = [device.split("#", 1)[0] for device in action.devices]
    known = budgets or {}
    stage_budgets = (
        [known[device] for device in action.devices]
        if action.devices and all(device in known for device in action.devices)
        else []
    )
    return pb.ReconfigureRequest(
        stages=stages, method=action.method, devices=devices, budget_bytes=stage_budgets
    )


def describe_response(name: str, response: pb.ReconfigureResponse) -> str:
    """A one-line account of a finished reconfiguration, with the engine's figures."""
    ranges = ", ".join(f"{stage.first_layer}-{stage.end_layer - 1}" for stage in response.stages)
    return (
        f"{name}: stages now [{ranges}] by {response.method or 'live'}: pause {response.pause_ms:.2f} ms, "
        f"total {response.total_ms:.1f} ms, {response.weight_bytes_copied} weight and "
        f"{response.kv_bytes_copied} KV bytes copied in {response.patch_rounds} patch round(s), "
        f"{response.final_dirty_blocks} dirty block(s) at the switch, {response.preempted} preempted, "
        f"{response.dropped} dropped"
    )


def pipeline_from_status(
    target: PipeLiveTarget, status: pb.StatusResponse, metrics: Mapping[str, float]
) -> PipelineInventory:
    """The inventory's view of one service from its `Status` and its scraped metrics."""
    reported = [stage.device for stage in status.stages]
    names = [
        f"{device}#{index}" if reported.count(device) > 1 else device for index, device in enumerate(reported)
    ]
    stages = tuple(
        StageInventory(
            index=stage.index,
            first_layer=stage.first_layer,
            end_layer=stage.end_layer,
            device=names[position],
            budget_bytes=stage.budget_bytes,
            weight_bytes=stage.weight_bytes,
            kv_bytes=stage.kv_bytes,
            kv_blocks_used=stage.kv_blocks_used,
            kv_blocks_capacity=stage.kv_blocks_capacity,
        )
        for position, stage in enumerate(status.stages)
    )
    layer_weight = kv_block_layer = 0
    for stage in status.stages:
        layers = stage.end_layer - stage.first_layer
        if layers > 0 and not layer_weight:
            layer_weight = stage.weight_bytes // layers
        if layers > 0 and not kv_block_layer and status.blocks_per_chunk and stage.kv_chunk_bytes:
            # A chunk holds `blocks_per_chunk` blocks of every layer of the stage.
            kv_block_layer = stage.kv_chunk_bytes // (status.blocks_per_chunk * layers)
    pool: dict[str, DeviceInventory] = {}
    for name, stage in zip(names, status.stages, strict=True):
        prefill, decode = target.device_speeds.get(name, target.device_speeds.get(stage.device, (1.0, 1.0)))
        pool[name] = DeviceInventory(name, stage.budget_bytes, prefill, decode)
    # A process pipeline can grow only onto the stage processes it started: no more spares than that.
    room = status.max_stages - len(status.stages) if status.max_stages else len(target.spare_devices)
    for device in [d for d in target.spare_devices if d.name not in pool][: max(0, room)]:
        pool[device.name] = device
    values = dict(metrics)
    # Status knows the queue even when no metrics endpoint is configured.
    values.setdefault("vllm:num_requests_waiting", float(status.num_requests_waiting))
    values.setdefault("vllm:num_requests_running", float(status.num_requests_running))
    return PipelineInventory(
        name=target.name,
        layers_per_stage=tuple(stage.layers for stage in stages),
        devices=tuple(stage.device for stage in stages),
        address=target.address,
        stages=stages,
        pool=pool,
        layer_weight_bytes=layer_weight,
        kv_block_bytes_per_layer=kv_block_layer,
        kv_blocks_used=status.kv_blocks_used,
        metrics=values,
        block_size=status.block_size,
    )


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text as {sample name: value}, summed over label sets; histogram buckets are left out."""
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.endswith("_bucket") or sample.name.endswith("_created"):
                continue
            values[sample.name] = values.get(sample.name, 0.0) + float(sample.value)
    return values


class PipeLiveActuator(Actuator):
    """Reconfigures PipeLive services over gRPC and reports their pipelines as the inventory."""

    name = "pipelive"
    description = "PipeLive serving services over their gRPC API and /metrics"

    def __init__(self, targets: Sequence[PipeLiveTarget], timeout_seconds: float = 120.0) -> None:
        names = [target.name for target in targets]
        if len(set(names)) != len(names):
            raise ValueError(f"PipeLiveActuator: two targets share a name: {names}")
        self.targets = {target.name: target for target in targets}
        self.timeout_seconds = timeout_seconds
        self._channels: dict[str, grpc.aio.Channel] = {}
        # Per target: device -> budget bytes, from its last Status and its declared spare devices.
        self._budgets: dict[str, dict[str, int]] = {
            target.name: {device.name: device.budget_bytes for device in target.spare_devices}
            for target in targets
        }

    def _stub(self, target: PipeLiveTarget) -> pb_grpc.PipeLiveStub:
        channel = self._channels.get(target.name)
        if channel is None:
            channel = self._channels[target.name] = grpc.aio.insecure_channel(target.address)
        return pb_grpc.PipeLiveStub(channel)

    async def stop(self) -> None:
        """Close the gRPC channels (the services keep running)."""
        channels, self._channels = self._channels, {}
        for channel in channels.values():
            await channel.close()

    async def apply_reconfigure_pipeline(self, action: ReconfigurePipeline) -> Outcome:
        target = self.targets.get(action.target)
        if target is None:
            return Outcome(
                False, f"no PipeLive service named {action.target!r}; known: {sorted(self.targets)}"
            )
        try:
            response = await self._stub(target).Reconfigure(
                reconfigure_request(action, self._budgets[target.name]), timeout=self.timeout_seconds
            )
        except grpc.aio.AioRpcError as error:
            return Outcome(
                False, f"{target.name} refused the reconfiguration ({error.code().name}): {error.details()}"
            )
        return Outcome(True, describe_response(target.name, response))

    async def inventory(self) -> Inventory:
        found = await asyncio.gather(*(self._pipeline(target) for target in self.targets.values()))
        return Inventory(pipelines={pipeline.name: pipeline for pipeline in found if pipeline is not None})

    async def _pipeline(self, target: PipeLiveTarget) -> PipelineInventory | None:
        try:
            status = await self._stub(target).Status(pb.StatusRequest(), timeout=self.timeout_seconds)
        except grpc.aio.AioRpcError as error:
            # An unreachable service is left out of this tick's inventory, not a failed tick.
            log.warning("PipeLive %s at %s: Status failed: %s", target.name, target.address, error.details())
            return None
        metrics: dict[str, float] = {}
        if target.metrics_url:
            try:
                async with (
                    ClientSession(timeout=ClientTimeout(total=self.timeout_seconds)) as session,
                    session.get(target.metrics_url) as response,
                ):
                    response.raise_for_status()
                    metrics = parse_metrics(await response.text())
            except (ClientError, TimeoutError, ValueError) as error:
                log.warning("PipeLive %s: cannot read %s: %s", target.name, target.metrics_url, error)
        pipeline = pipeline_from_status(target, status, metrics)
        self._budgets[target.name].update(
            {name: device.budget_bytes for name, device in pipeline.pool.items()}
        )
        return pipeline
