"""The simulated PipeLive pipeline: its serving model, reconfiguration methods and costs, the scenario
file, and the pipeline-devices scenario end to end (deterministic; the pipeline controller beats static)."""

import asyncio

import pytest

from bench.scenarios import controller_set
from bench.sim_run import run_scenario
from controllers.pipeline import PipelineReconfiguration
from controlplane.actions import Place, ReconfigurePipeline
from controlplane.registry import ControllerRegistry
from services.demo.scenario import load_scenario, parse_scenario
from services.demo.serving import GIB, parse_pipeline
from services.sim.pipeline import PipelineRecorder, PipelineSim
from services.sim.pipeline_actuator import PipelineSimActuator


def registry() -> ControllerRegistry:
    """Installed controllers plus `pipeline` itself: these tests are about its behaviour, not its entry point
    (tests/controllers/test_registration.py checks that)."""
    found = ControllerRegistry()
    found.discover()
    found.register(PipelineReconfiguration)
    return found


def small_pipeline(**overrides) -> dict:
    table = {
        "name": "llm",
        "num_layers": 8,
        "layers": [4, 4],
        "stage_devices": ["a", "b"],
        "devices": [
            {"name": "a", "budget_gib": 4},
            {"name": "b", "budget_gib": 4},
            {"name": "c", "budget_gib": 4},
        ],
        "requests": [{"name": "chat", "prompt_tokens": 64, "output_tokens": 32}],
    }
    table.update(overrides)
    return table


def loaded_sim(seconds: float = 10.0, rate: float = 20.0, **overrides) -> PipelineSim:
    sim = PipelineSim(parse_pipeline(small_pipeline(**overrides)), seed=5, recorder=PipelineRecorder(600))
    for second in range(int(seconds)):
        sim.schedule_arrivals(float(second), rate)
        sim.run_until(second + 1.0)
    return sim


def test_the_pipeline_serves_its_requests_and_reports_vllm_metrics() -> None:
    sim = loaded_sim()
    sim.run_until(60.0)
    metrics = sim.metrics()
    assert sim.requests_started > 150
    assert metrics["vllm:request_success_total"] == sim.requests_started  # all served, none lost
    assert metrics["vllm:generation_tokens_total"] == 32 * sim.requests_started
    assert metrics["vllm:prompt_tokens_total"] == 64 * sim.requests_started
    assert metrics["vllm:time_to_first_token_seconds_count"] == sim.requests_started
    assert metrics["vllm:num_requests_running"] == metrics["vllm:num_requests_waiting"] == 0
    assert sim.used_blocks == 0 and sim.recorder.dropped == 0


def test_a_budget_shrink_shrinks_the_pool_and_preempts() -> None:
    sim = loaded_sim(seconds=5, rate=40.0)
    assert sim.used_blocks > 0
    before = sim.capacity()
    sim.set_budget("a", int(2.0 * GIB))
    assert sim.capacity() < before and sim.used_blocks <= sim.capacity()
    assert sim.recorder.preempted > 0 or sim.used_blocks <= sim.capacity()


def test_live_reconfiguration_pauses_milliseconds_and_redeploy_seconds() -> None:
    live = loaded_sim(seconds=3)
    ok, detail = live.reconfigure((3, 5), ("a", "b"), "live")
    assert ok and detail.startswith("live: copying 1 layer(s)")
    assert live.recorder.reconfigurations[0]["pause_s"] == pytest.approx(0.01)
    live.run_until(live.now + 2.0)
    assert live.stages == [("a", 3), ("b", 5)]
    redeploy = loaded_sim(seconds=3)
    held = len(redeploy.running) + len(redeploy.waiting)
    ok, detail = redeploy.reconfigure((3, 5), ("a", "b"), "stop_and_redeploy")
    assert ok and "re-prefill" in detail and redeploy.running == [] and len(redeploy.waiting) == held
    # Startup plus reloading 8 x 0.4 GiB at 2 GiB/s.
    assert redeploy.paused_until - redeploy.now == pytest.approx(5.0 + 3.2 / 2.0)


def test_a_live_change_that_needs_more_room_than_the_budget_is_refused_and_nothing_changes() -> None:
    devices = [
        {"name": "a", "budget_gib": 4},
        {"name": "b", "budget_gib": 2.6},
        {"name": "c", "budget_gib": 4},
    ]
    sim = loaded_sim(seconds=3, devices=devices)
    # b would end with layers 1-5 (2 GiB of weights, fits) but hold 1-7 while they move (2.8 GiB).
    ok, why = sim.reconfigure((1, 5, 2), ("a", "b", "c"), "live")
    assert not ok and "during the change b would hold 7 layers" in why
    # Stopping and redeploying holds nothing twice: the same layout is admitted that way.
    assert sim.stage_capacity("b", 5) > 0
    assert sim.stages == [("a", 4), ("b", 4)] and not sim.recorder.reconfigurations
    bad = [
        ((3, 4), ("a", "b"), "live", "must cover the 8 layers"),
        ((4, 4), ("a", "a"), "live", "one distinct device per stage"),
        ((4, 4), ("a", "zz"), "live", "device zz is not in the pool"),
        ((4, 4), ("a", "b"), "teleport", "not simulated"),
    ]
    for layers, devices, method, message in bad:
        ok, why = sim.reconfigure(layers, devices, method)
        assert not ok and message in why


def test_the_actuator_refuses_other_actions_and_reports_the_pipeline() -> None:
    sim = loaded_sim(seconds=2)
    actuator = PipelineSimActuator(sim)
    refused = asyncio.run(actuator.apply(Place(target="llm", node="n")))
    assert not refused.ok and "does not carry out place actions" in refused.detail
    other = asyncio.run(actuator.apply(ReconfigurePipeline(target="other", layers_per_stage=(8,))))
    assert not other.ok and "no serving pipeline named 'other'" in other.detail
    pipeline = asyncio.run(actuator.inventory()).pipelines["llm"]
    assert pipeline.layers_per_stage == (4, 4) and set(pipeline.pool) == {"a", "b", "c"}
    assert pipeline.kv_blocks_used == sim.used_blocks and pipeline.stages[1].first_layer == 4
    assert pipeline.metrics["vllm:num_requests_running"] == len(sim.running)
    done = asyncio.run(
        actuator.apply(ReconfigurePipeline(target="llm", layers_per_stage=(2, 3, 3), devices=("a", "b", "c")))
    )
    assert done.ok and actuator.applied == 1


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"layers": [4, 3]}, "pipeline.layers"),
        ({"stage_devices": ["a", "x"]}, "pipeline.stage_devices"),
        ({"devices": [{"name": "a"}]}, r"pipeline.devices\[0\].budget_gib"),
        ({"requests": []}, "pipeline.requests"),
        ({"colour": "blue"}, "unknown field"),
    ],
)
def test_a_wrong_pipeline_table_names_the_field(change, message) -> None:
    with pytest.raises(ValueError, match=message):
        parse_pipeline(small_pipeline(**change))


def test_device_events_name_known_devices_and_numbers() -> None:
    with pytest.raises(ValueError, match=r"events\[0\].device: 'zz' is not a device"):
        parse_scenario(
            {"pipeline": small_pipeline(), "events": [{"at": 1, "kind": "device_leave", "device": "zz"}]}, "x"
        )
    with pytest.raises(ValueError, match=r"events\[0\].budget_gib"):
        parse_scenario(
            {
                "pipeline": small_pipeline(),
                "events": [{"at": 1, "kind": "device_budget", "device": "a", "budget_gib": -1}],
            },
            "x",
        )
    joined = [
        {"at": 1, "kind": "device_join", "device": "new", "budget_gib": 4},
        {"at": 2, "kind": "device_leave", "device": "new"},
    ]
    assert len(parse_scenario({"pipeline": small_pipeline(), "events": joined}, "x").events) == 2


def test_device_events_need_a_pipeline_and_a_pipeline_takes_no_app_events() -> None:
    with pytest.raises(ValueError, match="needs a \\[pipeline\\] table"):
        parse_scenario({"events": [{"at": 1, "kind": "device_leave", "device": "a"}]}, "x")
    with pytest.raises(ValueError, match="needs the microservice application"):
        parse_scenario(
            {"pipeline": small_pipeline(), "events": [{"at": 1, "kind": "crash", "service": "s"}]}, "x"
        )


def _run(name: str, seed: int = 1):
    scenario = load_scenario("pipeline-devices")
    return asyncio.run(run_scenario(scenario, controller_set(name), seed, name, registry=registry()))


def test_the_scenario_is_deterministic_and_the_pipeline_controller_beats_static() -> None:
    static, live, live_again = _run("static"), _run("pipeline-live"), _run("pipeline-live")
    assert live.score == live_again.score and live.extra == live_again.extra
    assert live.score.slo_violation_fraction < static.score.slo_violation_fraction - 0.1
    assert live.score.p99_ms < static.score.p99_ms / 5
    assert live.extra["dropped"] == 0 and live.extra["reconfigurations"] >= 2
    # It reacted to both events: the shrunk device holds fewer layers, the new device holds some.
    layout = dict(item.split("@")[::-1] for item in live.extra["final_layout"])
    assert int(layout["gpu-0"]) < 8 and "gpu-4" in layout
    assert static.extra["reconfigurations"] == 0 and static.extra["preempted"] > live.extra["preempted"]


def test_on_alternating_phases_the_controller_follows_the_load_and_beats_static() -> None:
    scenario = load_scenario("pipeline-phases")
    static = asyncio.run(run_scenario(scenario, controller_set("static"), 1, "static", registry=registry()))
    live = asyncio.run(
        run_scenario(scenario, controller_set("pipeline-live"), 1, "pipeline-live", registry=registry())
    )
    assert live.score.slo_violation_fraction < static.score.slo_violation_fraction - 0.1
    assert live.extra["reconfigurations"] == 2  # to the decode layout and back, nothing in between
    assert live.extra["final_layout"] == ["8@gpu-0", "8@gpu-1", "8@gpu-2", "8@gpu-3"]


def test_a_device_that_leaves_mid_run_is_routed_around() -> None:
    document = {
        "name": "leave",
        "duration_seconds": 150,
        "warmup_seconds": 10,
        "slo_p99_ms": 2000,
        "workload": {"mean_rps": 4.0},
        "pipeline": small_pipeline(),
        "events": [{"at": 60, "kind": "device_leave", "device": "b"}],
    }
    scenario = parse_scenario(document, "leave")
    static = asyncio.run(run_scenario(scenario, controller_set("static"), 2, "static", registry=registry()))
    live = asyncio.run(
        run_scenario(scenario, controller_set("pipeline-live"), 2, "pipeline-live", registry=registry())
    )
    # Without stage b the static pipeline serves nothing more. The controller first spreads onto the spare
    # device c (the pipeline is busy), and when b leaves moves its layers at once: nothing is dropped.
    assert static.extra["dropped"] > 100
    assert live.extra["reconfigurations"] == 2 and live.extra["dropped"] == 0
    assert live.extra["final_layout"] == ["4@a", "4@c"]
    assert live.score.slo_violation_fraction < static.score.slo_violation_fraction


def test_the_block_size_is_one_knob_block_bytes_and_counts_follow_it() -> None:
    """Doubling `block_size` doubles every block's bytes and halves the pool's block count: the tokens the
    pool holds stay the same (to a whole block), and the inventory tells the controller the block size."""
    tokens, reported = {}, {}
    for block_size in (16, 32):
        sim = PipelineSim(
            parse_pipeline(small_pipeline(block_size=block_size)), seed=5, recorder=PipelineRecorder(60)
        )
        assert sim.spec.kv_block_bytes_per_layer == block_size * 16 * 1024
        tokens[block_size] = sim.capacity() * block_size
        inventory = asyncio.run(PipelineSimActuator(sim).inventory()).pipelines["llm"]
        reported[block_size] = (inventory.block_size, inventory.kv_block_bytes_per_layer)
    assert tokens[16] > 0 and 0 <= tokens[16] - tokens[32] < 32
    assert reported == {16: (16, 256 * 1024), 32: (32, 512 * 1024)}
