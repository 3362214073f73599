"""The PipeLive actuator over real gRPC: Reconfigure against a loopback server that records the request (what
goes on the wire), against the real engine (the layout changes, a refusal changes nothing), and the inventory
read from a real PipeLive server's Status and /metrics."""

import asyncio

import grpc
import pytest

from actuators.pipelive import PipeLiveActuator, PipeLiveTarget, pipeline_from_status
from controlplane.actions import ReconfigurePipeline
from controlplane.decisions import DecisionStatus
from controlplane.engine.coordinator import Coordinator, Submitted
from controlplane.taxonomy import Taxonomy
from controlplane.view import DeviceInventory, Inventory, PipelineInventory, TelemetryView
from protos.pipelive.v1 import pipelive_pb2 as pb
from protos.pipelive.v1 import pipelive_pb2_grpc as pb_grpc
from telemetry import GraphSnapshot
from tests.services.pipelive.reconf_support import MODEL8, config
from tests.services.pipelive.support import TINY, engine_config, running_pipelive


class RecordingPipeLive(pb_grpc.PipeLiveServicer):
    """The remote end of the actuator: answers Reconfigure only, and keeps what it was asked."""

    def __init__(self) -> None:
        self.requests: list[pb.ReconfigureRequest] = []
        self.refuse = ""

    async def Reconfigure(self, request, context):  # noqa: N802
        self.requests.append(request)
        if self.refuse:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, self.refuse)
        return pb.ReconfigureResponse(
            stages=request.stages,
            method=request.method or "live",
            pause_ms=3.5,
            total_ms=420.0,
            weight_bytes_copied=1024,
            kv_bytes_copied=2048,
            patch_rounds=2,
            final_dirty_blocks=5,
        )


async def _serve(servicer: RecordingPipeLive) -> tuple[grpc.aio.Server, str]:
    server = grpc.aio.server()
    pb_grpc.add_PipeLiveServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, f"127.0.0.1:{port}"


def test_reconfigure_sends_layer_ranges_devices_and_method_and_reports_the_figures() -> None:
    async def scenario():
        remote = RecordingPipeLive()
        server, address = await _serve(remote)
        spare = DeviceInventory("c", budget_bytes=3 * 2**30)
        actuator = PipeLiveActuator(
            [PipeLiveTarget("llm", address, spare_devices=(spare,))], timeout_seconds=10
        )
        try:
            with_budget = await actuator.apply(
                ReconfigurePipeline(target="llm", layers_per_stage=(10,), devices=("c",))
            )
            live = await actuator.apply(
                ReconfigurePipeline(target="llm", layers_per_stage=(3, 5, 2), devices=("a", "cpu#1", "c"))
            )
            redeploy = await actuator.apply(
                ReconfigurePipeline(target="llm", layers_per_stage=(10,), method="stop_and_redeploy")
            )
            unknown = await actuator.apply(ReconfigurePipeline(target="other", layers_per_stage=(10,)))
        finally:
            await actuator.stop()
            await server.stop(None)
        return remote.requests, with_budget, live, redeploy, unknown

    requests, with_budget, live, redeploy, unknown = asyncio.run(scenario())
    spare_request, first, second = requests
    # A declared spare device's budget goes with it; devices whose budget is not known send none.
    assert with_budget.ok and list(spare_request.budget_bytes) == [3 * 2**30]
    assert not first.budget_bytes
    assert [(r.first_layer, r.end_layer) for r in first.stages] == [(0, 3), (3, 8), (8, 10)]
    assert list(first.devices) == ["a", "cpu", "c"] and first.method == ""
    assert [(r.first_layer, r.end_layer) for r in second.stages] == [
        (0, 10)
    ] and second.method == "stop_and_redeploy"
    assert not second.devices
    assert live.ok and "stages now [0-2, 3-7, 8-9] by live" in live.detail and "pause 3.50 ms" in live.detail
    assert "2 patch round(s)" in live.detail
    assert redeploy.ok and "by stop_and_redeploy" in redeploy.detail
    assert not unknown.ok and "no PipeLive service named 'other'" in unknown.detail
    assert len(requests) == 3  # the unknown target never reached the wire


def test_a_refusal_becomes_a_failed_decision_with_the_engines_reason() -> None:
    reason = "stage 1: during the change 9 layers and 300 KV blocks need 5.1 GiB of its 4.5 GiB budget"

    async def scenario():
        remote = RecordingPipeLive()
        remote.refuse = reason
        server, address = await _serve(remote)
        actuator = PipeLiveActuator([PipeLiveTarget("llm", address)], timeout_seconds=10)
        view = TelemetryView(
            1,
            100.0,
            GraphSnapshot(
                taken_at=0.0, window_seconds=60.0, nodes=(), edges=(), spans_accepted=0, spans_rejected=0
            ),
            Inventory(pipelines={"llm": PipelineInventory("llm", (4, 4), ("a", "b"))}),
        )
        coordinator = Coordinator()
        taxonomy = Taxonomy.of("centralized", "model_based", actions=["reconfiguration"])
        action = ReconfigurePipeline(target="llm", layers_per_stage=(2, 6), devices=("a", "b"))
        plan = coordinator.plan([Submitted(controller="pipeline", taxonomy=taxonomy, action=action)], view)
        try:
            outcome = await actuator.apply_decision(plan.to_apply[0])
        finally:
            await actuator.stop()
            await server.stop(None)
        return coordinator, coordinator.settle(plan.to_apply[0], outcome, 101.0)

    coordinator, decision = asyncio.run(scenario())
    assert decision.status is DecisionStatus.FAILED
    assert "FAILED_PRECONDITION" in decision.outcome and reason in decision.outcome
    # A refused change starts no cool-down: the controller may propose another layout at once.
    assert coordinator.guardrails.cooldown_remaining("llm", "reconfigure_pipeline", 101.0) == 0.0


def test_an_unreachable_service_is_left_out_of_the_inventory_and_a_reconfigure_fails_cleanly() -> None:
    async def scenario():
        server = grpc.aio.server()
        port = server.add_insecure_port("127.0.0.1:0")  # bound, then stopped: nobody answers there
        await server.start()
        await server.stop(None)
        actuator = PipeLiveActuator([PipeLiveTarget("llm", f"127.0.0.1:{port}")], timeout_seconds=2)
        try:
            return await actuator.inventory(), await actuator.apply(
                ReconfigurePipeline(target="llm", layers_per_stage=(2, 2))
            )
        finally:
            await actuator.stop()

    inventory, outcome = asyncio.run(scenario())
    assert dict(inventory.pipelines) == {}
    assert not outcome.ok and "UNAVAILABLE" in outcome.detail


def test_the_inventory_comes_from_a_real_pipelive_status_and_its_vllm_metrics() -> None:
    spare = DeviceInventory("gpu-9", budget_bytes=32 * 2**20, prefill_speed=2.0, decode_speed=1.5)
    with running_pipelive(TINY, engine_config(num_stages=2)) as running:
        target = PipeLiveTarget(
            "tiny",
            running.grpc_target,
            metrics_url=f"{running.base_url}/metrics",
            device_speeds={},
            spare_devices=(spare,),
        )

        async def read():
            actuator = PipeLiveActuator([target], timeout_seconds=10)
            try:
                return await actuator.inventory()
            finally:
                await actuator.stop()

        inventory = asyncio.run(read())
    pipeline = inventory.pipelines["tiny"]
    assert pipeline.address == running.grpc_target
    assert len(pipeline.stages) == 2 and sum(pipeline.layers_per_stage) == pipeline.num_layers
    assert (
        pipeline.stages[0].first_layer == 0 and pipeline.stages[1].first_layer == pipeline.stages[0].end_layer
    )
    # Per-layer figures derived from Status agree with the stage totals.
    first = pipeline.stages[0]
    assert pipeline.layer_weight_bytes * first.layers == first.weight_bytes
    assert pipeline.kv_block_bytes_per_layer > 0
    assert set(pipeline.pool) == {*pipeline.devices, "gpu-9"} and pipeline.pool["gpu-9"] == spare
    assert pipeline.pool[pipeline.devices[0]].budget_bytes == first.budget_bytes
    for name in ("vllm:num_requests_waiting", "vllm:gpu_cache_usage_perc", "vllm:prompt_tokens_total"):
        assert name in pipeline.metrics, sorted(pipeline.metrics)
    # The tiny engine runs every stage on "cpu", each with its own budget: the stages get names of their own.
    assert pipeline.devices == ("cpu#0", "cpu#1")


def test_spare_devices_are_capped_by_the_stage_processes_a_process_pipeline_started() -> None:
    spares = tuple(DeviceInventory(f"gpu-{index}", 32 * 2**20, 1.0, 1.0) for index in (7, 8, 9))
    target = PipeLiveTarget("llm", "127.0.0.1:1", spare_devices=spares)
    stages = [
        pb.StageStatus(index=index, first_layer=4 * index, end_layer=4 * index + 4, device=f"gpu-{index}")
        for index in range(2)
    ]
    bounded = pipeline_from_status(target, pb.StatusResponse(num_layers=8, stages=stages, max_stages=3), {})
    assert set(bounded.pool) == {"gpu-0", "gpu-1", "gpu-7"}  # one standby process: one spare
    unbounded = pipeline_from_status(target, pb.StatusResponse(num_layers=8, stages=stages), {})
    assert set(unbounded.pool) == {"gpu-0", "gpu-1", "gpu-7", "gpu-8", "gpu-9"}


@pytest.mark.parametrize("bad", [("same", "same")])
def test_two_targets_may_not_share_a_name(bad) -> None:
    with pytest.raises(ValueError, match="share a name"):
        PipeLiveActuator([PipeLiveTarget(bad[0], "127.0.0.1:1"), PipeLiveTarget(bad[1], "127.0.0.1:2")])


def test_the_actuator_reconfigures_the_real_engine_and_reports_a_refusal() -> None:
    # 2.25 MiB per stage: four layers' weights (~1.3 MB) and their KV fit, five fit, seven do not.
    with running_pipelive(MODEL8, config(stage_memory_bytes=9 * 2**18)) as running:

        async def scenario():
            actuator = PipeLiveActuator([PipeLiveTarget("llm", running.grpc_target)], timeout_seconds=60)
            try:
                before = await actuator.inventory()
                moved = await actuator.apply(ReconfigurePipeline(target="llm", layers_per_stage=(3, 5)))
                after = await actuator.inventory()
                # Seven layers' weights alone (~2.3 MB) leave no room for KV in the first stage's budget.
                refused = await actuator.apply(ReconfigurePipeline(target="llm", layers_per_stage=(7, 1)))
                unchanged = await actuator.inventory()
            finally:
                await actuator.stop()
            return before, moved, after, refused, unchanged

        before, moved, after, refused, unchanged = asyncio.run(scenario())
    assert before.pipelines["llm"].layers_per_stage == (4, 4)
    assert moved.ok, moved.detail
    assert "stages now [0-2, 3-7] by live" in moved.detail
    assert after.pipelines["llm"].layers_per_stage == (3, 5)
    assert unchanged.pipelines["llm"].layers_per_stage == (3, 5)
    assert not refused.ok and "FAILED_PRECONDITION" in refused.detail and "stage 0" in refused.detail
