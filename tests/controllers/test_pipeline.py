"""The `pipeline` controller on hand-built views: it proposes on a budget shrink, a device joining or
leaving and a load shift, not under noise; hysteresis; and the coordinator and guardrails around it."""

import asyncio
import random

from controllers.pipeline import PipelineReconfiguration
from controlplane import (
    DeviceInventory,
    Inventory,
    Outcome,
    PipelineInventory,
    Place,
    ReconfigurePipeline,
    TelemetryView,
)
from controlplane.decisions import DecisionStatus
from controlplane.engine.coordinator import Coordinator, Submitted
from telemetry import GraphSnapshot

GIB = 1024**3
EMPTY = GraphSnapshot(
    taken_at=0.0, window_seconds=60.0, nodes=(), edges=(), spans_accepted=0, spans_rejected=0
)
PERIOD = 5.0
# Prompt tokens/s, generated tokens/s, engine iterations/s: a busy pipeline (bottleneck ~ fully busy).
BUSY = (1000.0, 800.0, 30.0)


def devices(*specs) -> dict[str, DeviceInventory]:
    """(name, budget GiB[, prefill speed, decode speed][, ready]) -> the pool."""
    pool = {}
    for name, budget, *rest in specs:
        prefill, decode = rest[:2] if len(rest) >= 2 else (1.0, 1.0)
        ready = rest[2] if len(rest) == 3 else True
        pool[name] = DeviceInventory(name, int(budget * GIB), prefill, decode, ready)
    return pool


class Harness:
    """Feeds the controller one view per period, with cumulative counters at the given rates."""

    def __init__(self, layers, stage_devices, pool, params=None, block_size: int = 16) -> None:
        self.block_size = block_size  # tokens per KV block; 16 KiB of KV per token and layer
        self.controller = PipelineReconfiguration(PipelineReconfiguration.build_parameters(params or {}))
        self.layers, self.devices, self.pool = tuple(layers), tuple(stage_devices), pool
        self.now = 1000.0
        self.tick = 0
        self.counters = {"prompt": 0.0, "generation": 0.0, "iterations": 0.0}
        self.used, self.running, self.waiting = 600, 20, 0

    def view(self, rates=BUSY) -> TelemetryView:
        self.tick += 1
        self.now += PERIOD
        for key, rate in zip(self.counters, rates, strict=True):
            self.counters[key] += rate * PERIOD
        pipeline = PipelineInventory(
            "llm",
            self.layers,
            self.devices,
            pool=self.pool,
            layer_weight_bytes=int(0.4 * GIB),
            kv_block_bytes_per_layer=self.block_size * 16 * 1024,
            kv_blocks_used=self.used,
            block_size=self.block_size,
            metrics={
                "vllm:prompt_tokens_total": self.counters["prompt"],
                "vllm:generation_tokens_total": self.counters["generation"],
                "vllm:iteration_tokens_total_count": self.counters["iterations"],
                "vllm:num_requests_waiting": float(self.waiting),
                "vllm:num_requests_running": float(self.running),
                "vllm:gpu_cache_usage_perc": 0.4,
            },
        )
        return TelemetryView(self.tick, self.now, EMPTY, Inventory(pipelines={"llm": pipeline}).frozen())

    def round(self, rates=BUSY) -> list:
        return asyncio.run(self.controller.decide(self.view(rates)))

    def apply(self, action: ReconfigurePipeline) -> None:
        self.layers, self.devices = action.layers_per_stage, action.devices


FOUR = ("gpu-0", "gpu-1", "gpu-2", "gpu-3")


def test_a_balanced_pipeline_is_left_alone_and_a_budget_shrink_moves_layers_off_the_device() -> None:
    harness = Harness((8, 8, 8, 8), FOUR, devices(*((name, 10) for name in FOUR)))
    for _ in range(6):
        assert harness.round() == []
    harness.pool = devices(("gpu-0", 4.5), *((name, 10) for name in FOUR[1:]))
    assert harness.round() == []  # hysteresis: the same answer must come out twice in a row
    (action,) = harness.round()
    assert isinstance(action, ReconfigurePipeline) and action.target == "llm"
    assert action.evidence["trigger"] == "memory" and action.reason.startswith("memory: stage 0 on gpu-0")
    assert action.devices == FOUR and sum(action.layers_per_stage) == 32
    assert action.layers_per_stage[0] < 8  # layers leave the shrunk device
    # Weights and KV (600 blocks in use plus 25 %) fit each device's budget in the new layout.
    per_layer = 0.4 * GIB + 750 * 256 * 1024
    budgets = [4.5, 10, 10, 10]
    assert all(
        count * per_layer <= budget * GIB
        for count, budget in zip(action.layers_per_stage, budgets, strict=True)
    )
    assert action.evidence["kv_blocks_planned"] == 750 and action.method == ""
    # Once applied, the new layout is the controller's answer: nothing more to do.
    harness.apply(action)
    assert all(harness.round() == [] for _ in range(5))


def test_a_device_joining_a_busy_pipeline_gets_layers() -> None:
    harness = Harness((11, 11, 10), FOUR[:3], devices(*((name, 10) for name in FOUR[:3])))
    assert harness.round() == [] and harness.round() == []
    harness.pool = devices(*((name, 10) for name in FOUR))
    assert harness.round() == []
    (action,) = harness.round()
    assert action.evidence["trigger"] == "device_joined" and "gpu-3 joined" in action.reason
    assert action.devices == FOUR and action.layers_per_stage == (8, 8, 8, 8)
    assert action.evidence["improvement"] >= 0.25


def test_a_spare_device_is_not_worth_a_change_when_the_pipeline_is_idle() -> None:
    harness = Harness((8, 8, 8, 8), FOUR, devices(*((name, 10) for name in (*FOUR, "gpu-4"))))
    idle = (10.0, 10.0, 0.5)
    assert all(harness.round(idle) == [] for _ in range(6))


def test_a_device_that_leaves_is_replaced_at_once() -> None:
    harness = Harness((8, 8, 8, 8), FOUR, devices(*((name, 10) for name in FOUR)))
    harness.round()
    harness.pool = devices(("gpu-0", 10), ("gpu-1", 10), ("gpu-2", 10), ("gpu-3", 10, 1.0, 1.0, False))
    (action,) = harness.round()  # no confirmation round: the pipeline cannot serve without the stage
    assert action.evidence["trigger"] == "device_left" and "gpu-3" in action.reason
    assert action.devices == FOUR[:3] and sorted(action.layers_per_stage) == [10, 11, 11]


def test_a_shift_from_prefill_to_decode_moves_layers_to_the_decode_devices() -> None:
    # gpu-0/1 compute-rich (fast prefill), gpu-2/3 bandwidth-rich (fast decode).
    pool = devices(
        ("gpu-0", 16, 3.0, 1.0), ("gpu-1", 16, 3.0, 1.0), ("gpu-2", 16, 1.0, 3.0), ("gpu-3", 16, 1.0, 3.0)
    )
    harness = Harness((8, 8, 8, 8), FOUR, pool, {"min_improvement": 0.1})
    prefill_heavy = (8000.0, 200.0, 20.0)
    decode_heavy = (300.0, 1500.0, 40.0)
    proposals = [action for _ in range(4) for action in harness.round(prefill_heavy)]
    assert len(proposals) == 1 and proposals[0].evidence["trigger"] == "imbalance"
    harness.apply(proposals[0])
    prefill_layout = proposals[0].layers_per_stage
    assert prefill_layout[0] > prefill_layout[3]  # the compute-rich devices take more layers
    shifted = [action for _ in range(8) for action in harness.round(decode_heavy)]
    assert len(shifted) == 1
    action = shifted[0]
    assert action.evidence["trigger"] == "load_shift" and "decode-heavier" in action.reason
    assert action.layers_per_stage[3] > prefill_layout[3] and action.layers_per_stage[0] < prefill_layout[0]


def test_noise_in_the_load_does_not_make_it_flap() -> None:
    pool = devices(
        ("gpu-0", 16, 3.0, 1.0), ("gpu-1", 16, 3.0, 1.0), ("gpu-2", 16, 1.0, 3.0), ("gpu-3", 16, 1.0, 3.0)
    )
    harness = Harness((8, 8, 8, 8), FOUR, pool)
    rng = random.Random(3)
    mixed = (2000.0, 900.0, 30.0)
    proposals = []
    for _ in range(60):
        noisy = tuple(rate * rng.uniform(0.8, 1.2) for rate in mixed)
        for action in harness.round(noisy):
            proposals.append(action)
            harness.apply(action)
    # At most the first rebalancing for this mix; noise around it never moves the layout back and forth.
    assert len(proposals) <= 1, [action.layers_per_stage for action in proposals]


def test_a_proposal_that_was_not_applied_is_not_repeated_before_retry_seconds() -> None:
    harness = Harness((8, 8, 8, 8), FOUR, devices(("gpu-0", 4.5), *((name, 10) for name in FOUR[1:])))
    rounds = [harness.round() for _ in range(14)]  # 70 s; the layout never changes (say it failed)
    proposed = [index for index, actions in enumerate(rounds) if actions]
    assert proposed == [1, 13]  # confirmed in round 2, again once retry_seconds (60 s) have passed


def test_the_stop_and_redeploy_variant_names_its_method_and_ignores_transition_room() -> None:
    # A live change would need gpu-1 to hold its old and new layers at once, which its budget does not allow.
    pool = devices(("gpu-0", 10), ("gpu-1", 4.0), ("gpu-2", 10))
    live = Harness((4, 6, 22), ("gpu-0", "gpu-1", "gpu-2"), pool)
    redeploy = Harness((4, 6, 22), ("gpu-0", "gpu-1", "gpu-2"), pool, {"method": "stop_and_redeploy"})
    live_actions = [a for _ in range(3) for a in live.round()]
    redeploy_actions = [a for _ in range(3) for a in redeploy.round()]
    assert redeploy_actions and redeploy_actions[0].method == "stop_and_redeploy"
    best = redeploy_actions[0].layers_per_stage
    assert max(best) < 22
    for action in live_actions:
        assert action.method == "" and action.layers_per_stage != best


def test_the_coordinator_serializes_it_after_placement_on_the_same_node_and_cools_it_down() -> None:
    stage_devices = ("node-a/gpu0", "node-b/gpu0", "node-c/gpu0", "node-d/gpu0")
    harness = Harness(
        (8, 8, 8, 8), stage_devices, devices(("node-a/gpu0", 4.5), *((d, 10) for d in stage_devices[1:]))
    )
    harness.round()
    view = harness.view()
    (action,) = asyncio.run(harness.controller.decide(view))
    controller = PipelineReconfiguration
    place = Place(target="cache", node="node-a")
    from controllers.placement import GraphAwarePlacement

    coordinator = Coordinator()
    plan = coordinator.plan(
        [Submitted.of(controller, action), Submitted.of(GraphAwarePlacement, place)], view
    )
    reconfigure, placed = plan.decisions
    assert placed.status is DecisionStatus.APPLIED
    assert (
        reconfigure.status is DecisionStatus.REJECTED
        and "serialized after placement on node node-a" in reconfigure.why
    )
    # Alone, it goes through; once applied, the same target cannot be reconfigured again during the cool-down.
    plan = coordinator.plan([Submitted.of(controller, action)], view)
    assert plan.decisions[0].status is DecisionStatus.APPLIED
    coordinator.settle(plan.to_apply[0], Outcome(True, "done"), view.now)
    other = ReconfigurePipeline(target="llm", layers_per_stage=(2, 10, 10, 10), devices=stage_devices)
    again = coordinator.plan([Submitted.of(controller, other)], view)
    assert again.decisions[0].status is DecisionStatus.REJECTED and "cool-down" in again.decisions[0].why


def test_waiting_requests_count_as_kv_demand_only_while_the_cache_is_full() -> None:
    def planned(usage: float) -> int:
        harness = Harness((8, 8, 8, 8), FOUR, devices(("gpu-0", 4.5), *((name, 10) for name in FOUR[1:])))
        harness.used, harness.running, harness.waiting = 400, 20, 10
        views = []
        for _ in range(2):
            view = harness.view()
            pipeline = view.inventory.pipelines["llm"]
            metrics = {**pipeline.metrics, "vllm:gpu_cache_usage_perc": usage}
            views.append(
                TelemetryView(
                    view.tick,
                    view.now,
                    EMPTY,
                    Inventory(
                        pipelines={"llm": PipelineInventory(**{**_fields(pipeline), "metrics": metrics})}
                    ),
                )
            )
        actions = [a for view in views for a in asyncio.run(harness.controller.decide(view))]
        return actions[0].evidence["kv_blocks_planned"] if actions else 0

    # 400 in use fit gpu-0's 8 layers (500 planned); 10 waiting for memory would need 200 more: 750 planned.
    assert planned(0.5) == 0
    assert planned(0.95) == 750


def _fields(pipeline: PipelineInventory) -> dict:
    return {name: getattr(pipeline, name) for name in PipelineInventory.__dataclass_fields__}


def test_layers_do_not_move_back_onto_a_relieved_device_until_its_kv_peak_is_long_past() -> None:
    harness = Harness((2, 10, 10, 10), FOUR, devices(("gpu-0", 4.5), *((name, 10) for name in FOUR[1:])))
    harness.used, harness.running = 700, 20
    assert [a for _ in range(3) for a in harness.round()] == []
    harness.used = 100  # the demand dips: (8, 8, 8, 8) would now be 20 % faster, and fit this round
    quiet = [harness.round() for _ in range(20)]
    assert all(actions == [] for actions in quiet)  # the 700-block peak is within rebalance_peak_rounds
    later = [a for _ in range(8) for a in harness.round()]
    assert len(later) == 1 and later[0].layers_per_stage == (8, 8, 8, 8)
    assert later[0].evidence["trigger"] == "imbalance"


def test_when_a_lost_stage_leaves_no_admissible_live_change_it_asks_for_a_redeploy() -> None:
    # Three 6.5 GiB devices can hold the model once gpu-3 is gone, but gpu-2 cannot hold its old layers
    # (16-23) and its new ones (the last ten or eleven) at once: no live change is admissible.
    harness = Harness((8, 8, 8, 8), FOUR, devices(*((name, 6.5) for name in FOUR)))
    harness.round()
    harness.pool = devices(*((name, 6.5) for name in FOUR[:3]), ("gpu-3", 6.5, 1.0, 1.0, False))
    (action,) = harness.round()
    assert action.evidence["trigger"] == "device_left" and action.method == "stop_and_redeploy"
    assert action.devices == FOUR[:3] and sum(action.layers_per_stage) == 32


class TtftHarness(Harness):
    """Ten first tokens per round, each `ttft` seconds after its request arrived."""

    ttft = 0.0

    def view(self, rates=BUSY) -> TelemetryView:
        view = super().view(rates)
        pipeline = view.inventory.pipelines["llm"]
        metrics = {
            **pipeline.metrics,
            "vllm:time_to_first_token_seconds_sum": 10 * self.ttft * self.tick,
            "vllm:time_to_first_token_seconds_count": 10.0 * self.tick,
        }
        replaced = PipelineInventory(**{**_fields(pipeline), "metrics": metrics})
        return TelemetryView(view.tick, view.now, EMPTY, Inventory(pipelines={"llm": replaced}))


def test_a_ttft_above_its_slo_makes_one_round_enough() -> None:
    def rounds_to_propose(ttft_seconds: float) -> int:
        harness = TtftHarness(
            (8, 8, 8, 8), FOUR, devices(*((name, 10) for name in FOUR)), {"ttft_slo_seconds": 2.0}
        )
        harness.ttft = ttft_seconds
        assert harness.round() == []
        harness.pool = devices(("gpu-0", 4.5), *((name, 10) for name in FOUR[1:]))
        for count in range(1, 5):
            actions = harness.round()
            if actions:
                assert actions[0].evidence["ttft_mean_s"] == ttft_seconds
                assert actions[0].evidence["urgent"] is (ttft_seconds > 2.0)
                return count
        return 0

    assert rounds_to_propose(0.5) == 2  # within the SLO: the usual confirmation round
    assert rounds_to_propose(6.0) == 1  # the symptom is there: no waiting


def test_the_block_size_is_one_knob_the_plan_is_the_same_in_any_block_size() -> None:
    """The same pipeline, described with 16-token and with 64-token KV blocks (so a quarter as many blocks,
    each four times the bytes), gets the same layout: the minimum KV room is in tokens, not blocks."""
    answers = {}
    for block_size in (16, 64):
        harness = Harness((8, 8, 8, 8), FOUR, devices(*((name, 10) for name in FOUR)), block_size=block_size)
        harness.used = 512 // block_size  # 512 tokens in use: the 1,024-token minimum is what is planned
        harness.round()
        harness.pool = devices(("gpu-0", 3.0), *((name, 10) for name in FOUR[1:]))
        harness.round()
        (action,) = harness.round()
        planned = action.evidence["kv_blocks_planned"]
        answers[block_size] = (action.layers_per_stage, planned * block_size)
    assert answers[16] == answers[64]
    assert answers[16][1] == 1024  # tokens of KV room planned per layer
