"""`MqttActuator`: the plane's side of the node agents, an `Actuator` like any other.

`apply` picks the node an action is for (a Place names it; a replica's node; otherwise the online node
running most of the service's replicas), refuses at once if that node is offline, and publishes the action
at QoS 1 with its decision's id as the idempotency key the agent records (`apply_decision`, what the control
loop calls; a bare `apply` gets a random key). It then waits for the outcome,
up to a timeout after which the decision fails with the reason; the request carries that deadline, and the
agent refuses an action past it, so a decision recorded failed for lack of an answer is never applied
later. Whatever is still unanswered is published again whenever the plane reconnects or the node announces
a new session (an agent answers a repeat from its record, never applying twice).

`inventory` is built from the agents' retained state (`Fleet`). The actuator writes neither the telemetry
model nor the decision store: agents' telemetry reports go to the plane's Ingestor
(`ActuatorContext.submit_report`, the same model OTLP feeds), and the decisions of the agents' own
controllers to the control loop (`ActuatorContext.record_decisions`), after which they are acknowledged
(retained) so that an agent stops sending them. Without a context, reports are counted and dropped and
decisions acknowledged unrecorded.

`controlplane serve` builds it from its `[mqtt]` table (`from_config`, see `agents.settings`); with no broker
configured it runs an embedded one (amqtt) on 127.0.0.1, started and stopped with the actuator.

Every incoming message is checked: a payload that does not parse, or that names another node than the
topic it came on (a node writing on a topic it does not own), is refused and counted in `rejected`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiomqtt

from agents import topics
from agents.bounds import Bounds, bounds_pb
from agents.connection import BrokerSettings, MqttLink
from agents.embedded import EmbeddedBroker
from agents.fleet import Fleet
from agents.settings import MqttConfig
from agents.wire import (
    MalformedPayload,
    NotOwned,
    action_pb,
    check_owner,
    decision_from_local,
    decode,
)
from controlplane import (
    Action,
    Actuator,
    ActuatorContext,
    Decision,
    Inventory,
    Outcome,
    Place,
    ReconfigurePipeline,
    Remediate,
    Scale,
)
from protos.controlplane.v1 import agent_pb2 as apb

log = logging.getLogger(__name__)
Kind = topics.Kind


@dataclass(frozen=True, slots=True)
class CentralConfig:
    """The plane's MQTT side: broker, client id, how long to wait for an outcome, bounds for agents."""

    broker: BrokerSettings = field(default_factory=BrokerSettings)
    client_id: str = "controlplane"
    action_timeout_seconds: float = 5.0
    # An action still unanswered after this long is published again (the agent answers a repeat from
    # its record): a safety net for a message lost in a reconnection that nothing else noticed.
    resend_seconds: float = 1.0
    # Bounds of every node's local controllers, unless `node_bounds` names the node.
    bounds: Bounds | None = None
    node_bounds: Mapping[str, Bounds] = field(default_factory=dict)


@dataclass
class _Pending:
    node: str
    payload: bytes
    answer: asyncio.Future[apb.ActionOutcome]
    sends: int = 0
    sent_at: float = 0.0  # monotonic


class MqttActuator(Actuator):
    """Delivers actions to node agents over MQTT and keeps the inventory from their retained state."""

    name = "mqtt"
    description = "node agents over MQTT (docs/agents.md): the plane's side"

    def __init__(
        self,
        config: CentralConfig,
        context: ActuatorContext | None = None,
        clock: Callable[[], float] = time.time,
        embedded: EmbeddedBroker | None = None,
    ) -> None:
        self.config = config
        self.context = context
        self.clock = clock
        # The broker this actuator runs itself (serve with no broker configured), started before the link.
        self.embedded = embedded
        self.fleet = Fleet()
        self.pending: dict[str, _Pending] = {}
        self.rejected: Counter[str] = Counter()
        self.late_outcomes = 0
        self.telemetry_reports = 0
        self.telemetry_dropped = 0  # reports that arrived with no intake to hand them to (no context)
        self.telemetry_gaps = 0
        self.decisions_received = 0
        self._telemetry_seq: dict[str, int] = {}
        self._decisions_stored: dict[str, int] = {}  # node -> highest local decision id stored
        self._bounds_sent: dict[str, tuple[str, int]] = {}  # node -> (session, version)
        self._bounds_version = int(clock())
        self._resender: asyncio.Task | None = None
        subscriptions = [(topics.wildcard(kind), 1) for kind in (*topics.AGENT_PUBLISHES, Kind.DECISIONS_ACK)]
        self.link = MqttLink(
            config.broker,
            identifier=config.client_id,
            subscriptions=subscriptions,
            on_message=self._on_message,
            on_connect=self._resend_all,
        )

    @classmethod
    def from_config(cls, params: Mapping[str, Any], context: ActuatorContext) -> MqttActuator:
        """From `serve`'s `[mqtt]` table (`agents.settings.MqttConfig`); no broker: an embedded one."""
        config = MqttConfig.from_table(params)
        embedded = None if config.broker else EmbeddedBroker(config.embedded_port)
        url = config.broker or (embedded.url if embedded else "")
        central = CentralConfig(
            broker=config.broker_settings(url),
            client_id=config.client_id,
            action_timeout_seconds=config.action_timeout_seconds,
            bounds=config.bounds(),
        )
        return cls(central, context, embedded=embedded)

    @classmethod
    def check_config(cls, params: Mapping[str, Any]) -> None:
        MqttConfig.from_table(params)

    @property
    def broker_url(self) -> str:
        return self.config.broker.url

    async def start(self, timeout: float = 10.0) -> None:
        if self.embedded is not None:
            await self.embedded.start()
        self.link.start()
        self._resender = asyncio.create_task(self._resend_unanswered())
        await self.link.wait_connected(timeout)

    async def stop(self) -> None:
        if self._resender is not None:
            self._resender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._resender
        await self.link.stop()
        for pending in self.pending.values():
            if not pending.answer.done():
                pending.answer.cancel()
        if self.embedded is not None:
            await self.embedded.stop()

    async def wait_for_nodes(self, nodes: list[str], timeout: float, online: bool = True) -> None:
        """Until every node of `nodes` is online (or offline, `online=False`); TimeoutError otherwise."""
        deadline = time.monotonic() + timeout
        while any(self.fleet.online(node) != online for node in nodes):
            if time.monotonic() > deadline:
                waiting = [node for node in nodes if self.fleet.online(node) != online]
                raise TimeoutError(
                    f"nodes {waiting} not {'online' if online else 'offline'} within {timeout:g} s"
                )
            await asyncio.sleep(0.01)

    # --- Actuator -----------------------------------------------------------------------------------

    async def inventory(self) -> Inventory:
        return self.fleet.inventory()

    async def apply_decision(self, decision: Decision) -> Outcome:
        """Deliver a decision's action with the decision's id as its idempotency key.

        The key is `<id>@<created_at>`: the id alone would repeat if the plane started over with a new,
        empty decision store, whose ids begin at 1 again, and an agent would then take a new decision for one
        it had already applied.
        """
        return await self._deliver(decision.action, f"{decision.id}@{decision.created_at:.6f}")

    async def apply(self, action: Action) -> Outcome:
        """An action without a decision (a caller outside the control loop): a fresh random key."""
        return await self._deliver(action, uuid.uuid4().hex)

    async def _deliver(self, action: Action, key: str) -> Outcome:
        node, routed = self._route(action)
        if routed is None:
            return Outcome(False, node)
        if not self.fleet.online(node):
            return Outcome(False, f"node {node} is offline; the action was not sent")
        try:
            wire = action_pb(routed)
        except ValueError as error:  # an action type the agents' wire format does not carry (yet)
            return self.refuse(action, f"node agents cannot be sent {action.name} actions: {error}")
        now = self.clock()
        timeout = self.config.action_timeout_seconds
        request = apb.ActionRequest(
            decision_key=key,
            node=node,
            action=wire,
            issued_at_unix=now,
            deadline_unix=now + timeout,
        )
        pending = _Pending(node, request.SerializeToString(), asyncio.get_running_loop().create_future())
        self.pending[key] = pending
        try:
            await self._send(pending)
            answer = await asyncio.wait_for(asyncio.shield(pending.answer), timeout)
        except TimeoutError:
            return Outcome(
                False,
                f"no outcome from node {node} within {timeout:g} s (decision key {key}); "
                "the agent will not apply it after this deadline",
            )
        finally:
            self.pending.pop(key, None)
        return Outcome(answer.ok, f"{node}: {answer.detail} [decision key {key}]")

    def _route(self, action: Action) -> tuple[str, Action | None]:
        """The node `action` goes to and the action to send it, or (why not, None)."""
        if isinstance(action, Place):
            if action.node not in self.fleet.states:
                return f"no agent for node {action.node}", None
            return action.node, action
        if isinstance(action, Remediate) and action.replica:
            node = self.fleet.node_of_replica(action.replica)
            return (node, action) if node else (f"no node runs replica {action.replica}", None)
        if isinstance(action, ReconfigurePipeline):
            return f"node agents run no serving pipelines ({action.target})", None
        hosts = self.fleet.hosts(action.target)
        if not hosts:
            offline = sorted(self.fleet.hosts(action.target, online_only=False))
            if offline:
                # Not elsewhere: a node that is only unreachable for a moment (a broker restart) still
                # runs them; moving replicas off a node that is really gone is placement's decision.
                return f"{action.target} runs only on offline node(s) {', '.join(offline)}; not sent", None
            if not isinstance(action, Scale):
                return f"no online node runs {action.target}", None
            online = [node for node in self.fleet.states if self.fleet.online(node)]
            if not online:
                return "no node agent is online", None
            load = {node: sum(item.replicas for item in self.fleet.states[node].services) for node in online}
            return min(online, key=lambda node: (load[node], node)), action
        owner = min(hosts, key=lambda node: (-hosts[node], node))
        if isinstance(action, Scale):
            elsewhere = sum(hosts.values()) - hosts[owner]
            local = action.replicas - elsewhere
            if local < 0:
                return (
                    f"{action.target} runs {elsewhere} replicas on nodes other than {owner}; scaling to "
                    f"{action.replicas} needs replicas removed on several nodes (drain them one by one)",
                    None,
                )
            return owner, dataclasses.replace(action, replicas=local)
        return owner, action

    async def _send(self, pending: _Pending) -> None:
        pending.sends += 1
        pending.sent_at = time.monotonic()
        try:
            await self.link.publish(topics.topic(pending.node, Kind.ACTIONS), pending.payload, qos=1)
        except aiomqtt.MqttError as error:
            log.info("action to %s not sent now (%s); it is sent again on reconnection", pending.node, error)

    async def _resend_all(self) -> None:
        for pending in list(self.pending.values()):
            await self._send(pending)

    async def _resend_unanswered(self) -> None:
        period = self.config.resend_seconds
        while True:
            await asyncio.sleep(period / 2)
            if not self.link.connected.is_set():
                continue  # everything pending is sent on reconnection
            stale = time.monotonic() - period
            for pending in list(self.pending.values()):
                if pending.sent_at < stale and not pending.answer.done() and self.fleet.online(pending.node):
                    await self._send(pending)

    # --- bounds -------------------------------------------------------------------------------------

    def bounds_for(self, node: str) -> Bounds | None:
        return self.config.node_bounds.get(node, self.config.bounds)

    async def set_bounds(self, node: str, bounds: Bounds) -> None:
        """Give `node` new bounds now (retained, so a reconnecting agent gets them too)."""
        self.config = dataclasses.replace(self.config, node_bounds={**self.config.node_bounds, node: bounds})
        await self._publish_bounds(node, self.fleet.states[node].session if node in self.fleet.states else "")

    async def _publish_bounds(self, node: str, session: str) -> None:
        bounds = self.bounds_for(node)
        if bounds is None:
            return
        self._bounds_version += 1
        versioned = dataclasses.replace(bounds, version=self._bounds_version)
        try:
            await self.link.publish(
                topics.topic(node, Kind.BOUNDS),
                bounds_pb(node, versioned).SerializeToString(),
                1,
                retain=True,
            )
        except aiomqtt.MqttError as error:
            log.info("bounds for %s not sent now (%s)", node, error)
            return
        self._bounds_sent[node] = (session, versioned.version)

    # --- messages from agents -----------------------------------------------------------------------

    def _reject(self, reason: str, detail: str) -> None:
        self.rejected[reason] += 1
        log.warning("plane rejected a message (%s): %s", reason, detail)

    async def _on_message(self, message: aiomqtt.Message) -> None:
        name = str(message.topic)
        parsed = topics.parse(name)
        if parsed is None:
            self._reject("unknown topic", name)
            return
        payload = bytes(message.payload) if isinstance(message.payload, bytes | bytearray) else b""
        try:
            if parsed.kind is Kind.STATE:
                await self._on_state(parsed.node, decode(apb.NodeState, payload))
            elif parsed.kind is Kind.OUTCOMES:
                self._on_outcome(parsed.node, decode(apb.ActionOutcome, payload))
            elif parsed.kind is Kind.TELEMETRY:
                self._on_telemetry(parsed.node, decode(apb.TelemetryReport, payload))
            elif parsed.kind is Kind.DECISIONS:
                await self._on_decisions(parsed.node, decode(apb.DecisionReport, payload))
            elif parsed.kind is Kind.DECISIONS_ACK:
                ack = decode(apb.DecisionAck, payload)  # our own retained acks: where we left off
                known = self._decisions_stored.get(parsed.node, 0)
                self._decisions_stored[parsed.node] = max(known, ack.up_to_local_id)
        except NotOwned as error:
            self._reject("topic not owned", f"{name}: {error}")
        except MalformedPayload as error:
            self._reject("malformed payload", f"{name}: {error}")

    async def _on_state(self, node: str, state: apb.NodeState) -> None:
        check_owner(node, state.node)
        known = self.fleet.states.get(node)
        born = state.online and (known is None or not known.online or known.session != state.session)
        if not self.fleet.update(state):
            log.info("ignored a stale last will of node %s (session %s)", node, state.session)
            return
        if born:
            log.info("node %s online (session %s)", node, state.session)
            if self._bounds_sent.get(node, ("", 0))[0] != state.session:
                await self._publish_bounds(node, state.session)
            for pending in list(self.pending.values()):
                if pending.node == node:
                    await self._send(pending)
        elif not state.online:
            log.warning("node %s offline (last will or shutdown of session %s)", node, state.session)

    def _on_outcome(self, node: str, outcome: apb.ActionOutcome) -> None:
        check_owner(node, outcome.node)
        pending = self.pending.get(outcome.decision_key)
        if pending is None or pending.answer.done():
            self.late_outcomes += 1  # a repeat answer, or one after the timeout
            return
        if pending.node != node:
            raise NotOwned(f"node {node} answered for an action sent to {pending.node}")
        pending.answer.set_result(outcome)

    def _on_telemetry(self, node: str, report: apb.TelemetryReport) -> None:
        check_owner(node, report.node)
        if self.context is None:
            self.telemetry_dropped += 1
            return
        last = self._telemetry_seq.get(node, 0)
        if report.seq > last + 1 and last:
            self.telemetry_gaps += report.seq - last - 1
        self._telemetry_seq[node] = report.seq
        try:
            # The Ingestor merges it on the event loop, between two ingest batches: one writer at a time.
            self.context.submit_report(report)
        except ValueError as error:  # telemetry.reports.MalformedReport: nothing was merged
            raise MalformedPayload(str(error)) from None
        self.telemetry_reports += 1

    async def _on_decisions(self, node: str, report: apb.DecisionReport) -> None:
        check_owner(node, report.node)
        stored_up_to = self._decisions_stored.get(node, 0)
        fresh = [item for item in report.decisions if item.local_id > stored_up_to]
        if not report.decisions:
            return
        if fresh and self.context is not None:
            decisions = [decision_from_local(node, item) for item in fresh]
            # The control loop stores them and wakes the decision stream's watchers.
            await self.context.record_decisions(decisions)
            self.decisions_received += len(decisions)
        up_to = max(stored_up_to, *(item.local_id for item in report.decisions))
        self._decisions_stored[node] = up_to
        ack = apb.DecisionAck(node=node, up_to_local_id=up_to)
        try:
            await self.link.publish(
                topics.topic(node, Kind.DECISIONS_ACK), ack.SerializeToString(), 1, retain=True
            )
        except aiomqtt.MqttError as error:
            log.info("decision ack for %s not sent now (%s)", node, error)
