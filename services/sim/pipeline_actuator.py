"""`PipelineSimActuator`: the simulated serving pipeline as an actuator, reporting what PipeLive would.

The inventory is the pipeline's `PipelineInventory` (stages, device pool, KV in use, vLLM-named metrics), as
the PipeLive actuator builds it from `Status` and `/metrics`; `ReconfigurePipeline` is carried out on the
simulated engine with the method the action names. Every other action is refused with the reason.
"""

from __future__ import annotations

from controlplane import (
    Actuator,
    DeviceInventory,
    Inventory,
    Outcome,
    PipelineInventory,
    ReconfigurePipeline,
    StageInventory,
)
from services.sim.pipeline import PipelineSim


class PipelineSimActuator(Actuator):
    """Reports a `PipelineSim` as the inventory's pipeline and carries `ReconfigurePipeline` out on it."""

    name = "simulated-pipeline"
    description = "a simulated PipeLive pipeline (controlplane bench); made in code, not from a config file"

    def __init__(self, sim: PipelineSim) -> None:
        self.sim = sim
        self.applied = 0

    async def inventory(self) -> Inventory:
        return Inventory(pipelines={self.sim.spec.name: pipeline_inventory(self.sim)})

    async def apply_reconfigure_pipeline(self, action: ReconfigurePipeline) -> Outcome:
        sim = self.sim
        if action.target != sim.spec.name:
            return Outcome(
                False, f"no serving pipeline named {action.target!r} (this one is {sim.spec.name!r})"
            )
        ok, detail = sim.reconfigure(action.layers_per_stage, action.devices, action.method)
        self.applied += ok
        return Outcome(ok, detail)


def pipeline_inventory(sim: PipelineSim) -> PipelineInventory:
    """What a PipeLive actuator would report: `Status` (stages, memory, KV) and the `/metrics` scrape."""
    spec = sim.spec
    stages, first = [], 0
    for index, (device, layers) in enumerate(sim.stages):
        known = sim.devices[device]
        capacity = max(0, sim.stage_capacity(device, layers))
        stages.append(
            StageInventory(
                index=index,
                first_layer=first,
                end_layer=first + layers,
                device=device,
                budget_bytes=known.budget_bytes,
                weight_bytes=layers * spec.layer_weight_bytes,
                kv_bytes=capacity * layers * spec.kv_block_bytes_per_layer,
                kv_blocks_used=sim.used_blocks,
                kv_blocks_capacity=capacity,
            )
        )
        first += layers
    pool = {
        name: DeviceInventory(name, d.budget_bytes, d.prefill_speed, d.decode_speed, ready=d.ready)
        for name, d in sim.devices.items()
    }
    return PipelineInventory(
        name=spec.name,
        layers_per_stage=tuple(layers for _, layers in sim.stages),
        devices=tuple(device for device, _ in sim.stages),
        address=f"sim://{spec.name}",
        stages=tuple(stages),
        pool=pool,
        layer_weight_bytes=spec.layer_weight_bytes,
        kv_block_bytes_per_layer=spec.kv_block_bytes_per_layer,
        kv_blocks_used=sim.used_blocks,
        metrics=sim.metrics(),
        block_size=spec.block_size,
    )
