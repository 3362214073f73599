"""Actions from the plane to node agents: delivery, outcome, idempotency, offline nodes."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from actuators.memory import InMemoryActuator
from agents.local_actuator import NodeSpec, ProcessActuator
from agents.node import AgentConfig, NodeAgent
from agents.plane import CentralConfig, MqttActuator
from controlplane import ACTION_TYPES, Action, Inventory, NodeInventory, Scale, ServiceInventory
from tests.agents.conftest import agent_settings, central_settings, run


def test_scale_reaches_the_agent_starts_processes_and_reports_the_outcome(broker, tmp_path: Path) -> None:
    async def scenario() -> None:
        local = ProcessActuator(NodeSpec("node-a", cpu_capacity=8))
        agent = NodeAgent(AgentConfig("node-a", agent_settings(broker, "node-a"), tmp_path), local)
        plane = MqttActuator(CentralConfig(central_settings(broker)))
        await plane.start()
        await agent.start()
        try:
            await plane.wait_for_nodes(["node-a"], 10)
            outcome = await plane.apply(Scale(target="api", replicas=2))
            assert outcome.ok, outcome
            assert "api has 2 replicas on node-a" in outcome.detail
            assert sum(replica.running for replica in local.replicas.values()) == 2
            inventory = await plane.inventory()
            assert inventory.replicas_of("api") == 2
            assert inventory.nodes["node-a"].ready and inventory.nodes["node-a"].cpu_capacity == 8
            assert set(inventory.placements.values()) == {"node-a"}
        finally:
            await agent.stop()
            await local.stop()
            await plane.stop()

    run(scenario())


def test_an_action_type_without_a_wire_form_is_refused_with_the_reason(broker, tmp_path: Path) -> None:
    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Resize(Action):
        name = "resize_test_only"
        kind = Scale.kind
        layer = Scale.layer

    async def scenario() -> None:
        local = InMemoryActuator(Inventory(services={"api": ServiceInventory("api", 1)}))
        agent = NodeAgent(AgentConfig("node-a", agent_settings(broker, "node-a"), tmp_path), local)
        plane = MqttActuator(CentralConfig(central_settings(broker)))
        await plane.start()
        await agent.start()
        try:
            await plane.wait_for_nodes(["node-a"], 10)
            outcome = await plane.apply(Resize(target="api"))  # node-a runs api: it routes there
            assert not outcome.ok
            assert "node agents cannot be sent resize_test_only actions" in outcome.detail
            assert local.applied == [] and plane.pending == {}
        finally:
            await agent.stop()
            await plane.stop()

    try:
        run(scenario())
    finally:
        del ACTION_TYPES["resize_test_only"]


async def _raw_client(broker, user: str, password: str):
    import aiomqtt

    return aiomqtt.Client(
        "127.0.0.1", broker.port, username=user, password=password, identifier=f"raw-{user}"
    )


def test_a_repeated_decision_key_is_applied_once_even_after_the_agent_restarts(
    broker, tmp_path: Path
) -> None:
    from agents import topics
    from agents.mosquitto import CENTRAL_USER
    from agents.wire import action_pb
    from protos.controlplane.v1 import agent_pb2 as apb
    from tests.agents.conftest import PASSWORDS

    request = apb.ActionRequest(
        decision_key="decision-42", node="node-a", action=action_pb(Scale(target="api", replicas=3))
    )

    async def deliver_twice(local: InMemoryActuator) -> list:
        agent = NodeAgent(AgentConfig("node-a", agent_settings(broker, "node-a"), tmp_path), local)
        await agent.start()
        outcomes = []
        try:
            async with await _raw_client(broker, CENTRAL_USER, PASSWORDS[CENTRAL_USER]) as plane:
                await plane.subscribe(topics.topic("node-a", topics.Kind.OUTCOMES), 1)
                await agent.link.wait_connected(5)
                for _ in range(2):
                    await plane.publish(
                        topics.topic("node-a", topics.Kind.ACTIONS), request.SerializeToString(), 1
                    )
                async for message in plane.messages:
                    outcomes.append(apb.ActionOutcome.FromString(message.payload))
                    if len(outcomes) == 2:
                        break
        finally:
            await agent.stop()
        return outcomes

    async def scenario() -> None:
        first = InMemoryActuator()
        outcomes = await deliver_twice(first)
        assert [outcome.duplicate for outcome in outcomes] == [False, True]
        assert all(outcome.ok and outcome.decision_key == "decision-42" for outcome in outcomes)
        assert outcomes[0].detail == outcomes[1].detail == "api now has 3 replicas"
        assert len(first.applied) == 1
        # A new agent process on the same state directory still knows the key (SQLite survives it).
        second = InMemoryActuator()
        again = await deliver_twice(second)
        assert [outcome.duplicate for outcome in again] == [True, True]
        assert second.applied == []

    run(scenario())


def test_an_action_past_its_deadline_is_refused_not_applied(broker, tmp_path: Path) -> None:
    from agents import topics
    from agents.mosquitto import CENTRAL_USER
    from agents.wire import action_pb
    from protos.controlplane.v1 import agent_pb2 as apb
    from tests.agents.conftest import PASSWORDS

    async def scenario() -> None:
        local = InMemoryActuator()
        agent = NodeAgent(AgentConfig("node-a", agent_settings(broker, "node-a"), tmp_path), local)
        await agent.start()
        try:
            async with await _raw_client(broker, CENTRAL_USER, PASSWORDS[CENTRAL_USER]) as plane:
                await plane.subscribe(topics.topic("node-a", topics.Kind.OUTCOMES), 1)
                await agent.link.wait_connected(5)
                late = apb.ActionRequest(
                    decision_key="late-1",
                    node="node-a",
                    action=action_pb(Scale(target="api", replicas=3)),
                    deadline_unix=1.0,
                )
                await plane.publish(topics.topic("node-a", topics.Kind.ACTIONS), late.SerializeToString(), 1)
                async for message in plane.messages:
                    outcome = apb.ActionOutcome.FromString(message.payload)
                    break
        finally:
            await agent.stop()
        assert not outcome.ok and "after its deadline" in outcome.detail
        assert local.applied == []

    run(scenario())


def test_an_agent_that_does_not_answer_in_time_fails_the_decision_with_the_reason(
    broker, tmp_path: Path
) -> None:
    async def scenario() -> None:
        slow = InMemoryActuator(delay_seconds=1.0)
        agent = NodeAgent(AgentConfig("node-a", agent_settings(broker, "node-a"), tmp_path), slow)
        plane = MqttActuator(CentralConfig(central_settings(broker), action_timeout_seconds=0.3))
        await plane.start()
        await agent.start()
        try:
            await plane.wait_for_nodes(["node-a"], 10)
            outcome = await plane.apply(Scale(target="api", replicas=1))
            assert not outcome.ok
            assert "no outcome from node node-a within 0.3 s" in outcome.detail
            assert plane.pending == {}
        finally:
            await agent.stop()
            await plane.stop()

    run(scenario())


def test_a_node_that_went_offline_gets_no_actions(broker, tmp_path: Path) -> None:
    from controlplane.actions import Place
    from controlplane.decisions import DecisionStatus
    from controlplane.engine.coordinator import Coordinator, Submitted
    from controlplane.taxonomy import Taxonomy
    from controlplane.view import TelemetryView
    from telemetry import TelemetryModel

    async def scenario() -> None:
        local = InMemoryActuator(Inventory(nodes={"node-a": NodeInventory("node-a", 4, 4096)}))
        await local.apply(Scale(target="api", replicas=1))
        agent = NodeAgent(AgentConfig("node-a", agent_settings(broker, "node-a"), tmp_path), local)
        plane = MqttActuator(CentralConfig(central_settings(broker)))
        await plane.start()
        await agent.start()
        try:
            await plane.wait_for_nodes(["node-a"], 10)
            await agent.stop()  # graceful: it says it goes offline
            await plane.wait_for_nodes(["node-a"], 10, online=False)
            outcome = await plane.apply(Scale(target="api", replicas=2))
            assert not outcome.ok and "api runs only on offline node(s) node-a; not sent" in outcome.detail
            outcome = await plane.apply(Place(target="api", node="node-a"))
            assert not outcome.ok and "node node-a is offline; the action was not sent" in outcome.detail
            inventory = await plane.inventory()
            assert not inventory.nodes["node-a"].ready
            view = TelemetryView(1, 0.0, TelemetryModel().snapshot(), inventory)
            taxonomy = Taxonomy.of("centralized", "rule")
            place = Submitted(
                controller="mover", taxonomy=taxonomy, action=Place(target="api", node="node-a")
            )
            (decision,) = Coordinator().plan([place], view).decisions
            assert decision.status is DecisionStatus.REJECTED
            assert "node node-a is not ready (its agent is offline)" in decision.why
            assert len(local.applied) == 1  # only the Scale made before the agent started
        finally:
            await plane.stop()

    run(scenario())


def test_the_control_loop_delivers_with_the_decision_id_as_the_idempotency_key(
    broker, tmp_path: Path
) -> None:
    from controlplane.decisions import Decision, DecisionStatus
    from controlplane.taxonomy import Taxonomy

    decision = Decision(
        controller="hpa",
        taxonomy=Taxonomy.of("centralized", "rule"),
        action=Scale(target="api", replicas=2),
        status=DecisionStatus.APPLIED,
        why="accepted",
        created_at=1234.5,
        id=7,
    )

    async def scenario() -> None:
        local = InMemoryActuator()
        agent = NodeAgent(AgentConfig("node-a", agent_settings(broker, "node-a"), tmp_path), local)
        plane = MqttActuator(CentralConfig(central_settings(broker)))
        await plane.start()
        await agent.start()
        try:
            await plane.wait_for_nodes(["node-a"], 10)
            first = await plane.apply_decision(decision)
            again = await plane.apply_decision(decision)  # the same decision delivered twice
            assert first.ok and "[decision key 7@1234.500000]" in first.detail
            record = agent.applied.get("7@1234.500000")
            assert record is not None
            assert again.ok and len(local.applied) == 1  # answered from the record, not applied twice
        finally:
            await agent.stop()
            await plane.stop()

    run(scenario())
