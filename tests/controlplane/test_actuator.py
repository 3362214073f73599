"""The actuator API: one dispatch on action type, refusals with reasons, and every registered actuator
answering every action type (applying it or refusing it with a reason), each built for real."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from actuators.memory import InMemoryActuator
from actuators.pipelive import PipeLiveActuator, PipeLiveTarget
from agents.connection import BrokerSettings
from agents.local_actuator import NodeSpec as AgentNodeSpec
from agents.local_actuator import ProcessActuator
from agents.plane import CentralConfig, MqttActuator
from controlplane import (
    ACTION_TYPES,
    Action,
    Actuator,
    ActuatorContext,
    ActuatorRegistry,
    Inventory,
    Isolate,
    Outcome,
    Place,
    ReconfigurePipeline,
    Remediate,
    Route,
    Scale,
    default_actuator_registry,
    free_port,
)
from controlplane.registry import ACTUATOR_ENTRY_POINT_GROUP
from services.demo.app import DEMO_APP, load_app
from services.demo.results import RunRecorder
from services.demo.scenario import ClusterSpec, NodeSpec
from services.demo.serving import parse_pipeline
from services.live.actuator import LocalProcessActuator
from services.sim.actuator import SimActuator
from services.sim.engine import Simulator
from services.sim.pipeline import PipelineRecorder, PipelineSim
from services.sim.pipeline_actuator import PipelineSimActuator

# One action of every type, on a target no substrate here knows: each must be refused with a reason or
# applied, never raise. `SAMPLES` must name every registered action type (checked below).
SAMPLES: dict[str, Action] = {
    "scale": Scale(target="nowhere", replicas=2),
    "place": Place(target="nowhere", node="no-node"),
    "route": Route(target="nowhere", weights={"v1": 1.0}),
    "isolate": Isolate(target="nowhere", mechanism="rate_limit", limit=10.0),
    "remediate": Remediate(target="nowhere", operation="restart"),
    "reconfigure_pipeline": ReconfigurePipeline(target="nowhere", layers_per_stage=(2, 2)),
}


def _simulator() -> SimActuator:
    cluster = ClusterSpec(nodes=(NodeSpec("node-0", 16.0, 65536.0),))
    return SimActuator(Simulator(load_app(), cluster, 1, RunRecorder(10)))


def _pipeline() -> PipelineSimActuator:
    table = {
        "name": "llm",
        "num_layers": 4,
        "layers": [2, 2],
        "stage_devices": ["a", "b"],
        "devices": [{"name": "a", "budget_gib": 4}, {"name": "b", "budget_gib": 4}],
        "requests": [{"name": "chat", "prompt_tokens": 16, "output_tokens": 8}],
    }
    return PipelineSimActuator(PipelineSim(parse_pipeline(table), seed=1, recorder=PipelineRecorder(10)))


# Registered name -> a real instance. A port nothing listens on stands for an unreachable substrate.
FACTORIES: dict[str, Callable[[Path], Actuator]] = {
    "memory": lambda tmp: InMemoryActuator(),
    "pipelive": lambda tmp: PipeLiveActuator([PipeLiveTarget("llm", f"127.0.0.1:{free_port()}")], 2.0),
    "mqtt": lambda tmp: MqttActuator(CentralConfig(BrokerSettings(f"mqtt://127.0.0.1:{free_port()}"))),
    "local-processes": lambda tmp: LocalProcessActuator(DEMO_APP, "127.0.0.1:1", workdir=tmp),
    "simulator": lambda tmp: _simulator(),
    "simulated-pipeline": lambda tmp: _pipeline(),
    "node-processes": lambda tmp: ProcessActuator(AgentNodeSpec("node-a")),
}


def test_samples_cover_every_action_type_and_the_base_class_refuses_each() -> None:
    assert set(SAMPLES) == set(ACTION_TYPES)
    for name in ACTION_TYPES:
        assert callable(getattr(Actuator, f"apply_{name}", None)), f"Actuator has no apply_{name}"


def test_every_actuator_this_project_registers_has_a_factory_here() -> None:
    registry = ActuatorRegistry()
    registry.discover()
    assert registry.load_errors == {}
    ours = {
        entry.name
        for entry in entry_points(group=ACTUATOR_ENTRY_POINT_GROUP)
        if entry.dist is not None and entry.dist.name == "controlplane"
    }
    # A third party's installed actuator may join the registry; this project's must all be tested here.
    assert ours == set(FACTORIES) and ours <= set(registry.names())


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_every_registered_actuator_answers_every_action_type(name: str, tmp_path: Path) -> None:
    default_actuator_registry.discover()
    actuator = FACTORIES[name](tmp_path)
    assert type(actuator) is default_actuator_registry.get(name)

    async def answers() -> dict[str, Outcome]:
        try:
            return {kind: await actuator.apply(action) for kind, action in SAMPLES.items()}
        finally:
            await actuator.stop()

    outcomes = asyncio.run(answers())
    for kind, outcome in outcomes.items():
        assert isinstance(outcome, Outcome), f"{name} answered {kind} with {outcome!r}"
        assert outcome.ok or outcome.detail.strip(), f"{name} refused {kind} without a reason"
    # No real substrate here has a pipeline called "nowhere" (the in-memory one records whatever it is told).
    assert outcomes["reconfigure_pipeline"].ok is (name == "memory")


class ScalesOnly(Actuator):
    name = "scales-only"

    def __init__(self) -> None:
        self.replicas: dict[str, int] = {}

    async def inventory(self) -> Inventory:
        return Inventory()

    async def apply_scale(self, action: Scale) -> Outcome:
        self.replicas[action.target] = action.replicas
        return Outcome(True, f"{action.target}: {action.replicas}")


def test_dispatch_reaches_the_method_for_the_type_and_refuses_the_rest_by_name() -> None:
    actuator = ScalesOnly()
    assert asyncio.run(actuator.apply(Scale(target="api", replicas=3))) == Outcome(True, "api: 3")
    assert actuator.replicas == {"api": 3}
    refused = asyncio.run(actuator.apply(Route(target="api", weights={"v2": 1.0})))
    assert refused == Outcome(False, "the scales-only actuator does not carry out route actions")


def test_a_new_action_type_is_refused_by_actuators_that_do_not_know_it() -> None:
    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Migrate(Action):
        name = "migrate_test_only"
        kind = Scale.kind
        layer = Scale.layer

    try:
        assert ACTION_TYPES["migrate_test_only"] is Migrate  # registered by being defined
        outcome = asyncio.run(InMemoryActuator().apply(Migrate(target="api")))
        assert not outcome.ok and "does not carry out migrate_test_only actions" in outcome.detail
    finally:
        del ACTION_TYPES["migrate_test_only"]


def test_an_actuator_made_in_code_says_so_when_a_configuration_asks_for_it() -> None:
    with pytest.raises(ValueError, match="cannot be built from a configuration file"):
        SimActuator.from_config({}, ActuatorContext())
    built = InMemoryActuator.from_config({"delay_seconds": 0.5}, ActuatorContext())
    assert built.delay_seconds == 0.5
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['delay'\]"):
        InMemoryActuator.from_config({"delay": 1}, ActuatorContext())


def test_a_context_without_ports_fails_loudly_instead_of_dropping() -> None:
    context = ActuatorContext()
    with pytest.raises(RuntimeError, match="no telemetry intake"):
        context.submit_report(None)  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="no way to record decisions"):
        asyncio.run(context.record_decisions([]))
