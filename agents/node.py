"""`NodeAgent`: the control plane's agent on one node, speaking MQTT.

On every connection it publishes its retained state (capacity, the replicas it runs) and leaves a
retained last will that marks it offline. It applies the actions the plane sends through its local
actuator exactly once per decision key (`applied_log`), answers each with an outcome, and re-announces its
state after every change. It reports what its replicas served as mergeable telemetry aggregates (every
report period the same delta goes to the plane and, through an Ingestor of its own, to its local model),
and runs its own controllers in a `ControlLoop` of its own (decentralized control) whose coordinator
refuses what falls outside the bounds the plane sets (hierarchical control); their decisions go up to the
plane's decision store until the plane acknowledges them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt

from agents import topics
from agents.applied_log import RETENTION_SECONDS, AppliedLog
from agents.bounds import Bounds, NoBoundsYet, bounds_from_pb
from agents.connection import BrokerSettings, MqttLink
from agents.fleet import node_state_pb
from agents.wire import (
    MalformedPayload,
    NotOwned,
    action_from_pb,
    check_owner,
    decode,
    local_decision_pb,
)
from controlplane import (
    Actuator,
    ControllerRegistry,
    Outcome,
    default_registry,
)
from controlplane.engine.controllers_config import load_controllers
from controlplane.engine.guardrails import GuardrailConfig
from controlplane.engine.runtime import ControlLoop
from controlplane.engine.store import DecisionStore
from protos.controlplane.v1 import agent_pb2 as apb
from telemetry import ModelConfig, TelemetryModel
from telemetry.ingest import Ingestor
from telemetry.reports import ReportBuffer, report_pb

log = logging.getLogger(__name__)
Kind = topics.Kind
# Local decisions sent upward in one report at most.
DECISIONS_PER_REPORT = 500


@dataclass(frozen=True, slots=True)
class AgentConfig:
    """One agent: its node, its broker, where it keeps state, how often it reports and decides."""

    node: str
    broker: BrokerSettings = field(default_factory=BrokerSettings)
    state_dir: Path = Path(".")
    telemetry_seconds: float = 1.0
    tick_seconds: float = 1.0
    # The [controllers] table of the agent's own controllers (same format as `serve`'s); empty: none.
    controllers: Mapping[str, Any] = field(default_factory=dict)
    guardrails: GuardrailConfig = field(default_factory=GuardrailConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    keepalive_seconds: int = 5


class NodeAgent:
    """Connects one node to the plane; `start`, then `stop` (graceful: it says it goes offline)."""

    def __init__(
        self,
        config: AgentConfig,
        actuator: Actuator,
        registry: ControllerRegistry | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.node = topics.check_node_name(config.node)
        self.config = config
        self.actuator = actuator
        self.clock = clock
        state_dir = Path(config.state_dir)
        state_dir.mkdir(parents=True, exist_ok=True)
        self.applied = AppliedLog(state_dir / f"{self.node}-applied.db")
        self.applied.forget_before(clock() - RETENTION_SECONDS)
        # The local model feeds local controllers, written only through its Ingestor; each buffer holds
        # what was recorded since it was last taken (the plane's survives a broken link; the local one is
        # merged at every record).
        self.model = TelemetryModel(config.model, clock=clock)
        self.ingestor = Ingestor(self.model)
        self._for_plane = ReportBuffer(config.model)
        self._for_local = ReportBuffer(config.model)
        self.store = DecisionStore(state_dir / f"{self.node}-decisions.db")
        controllers = []
        if config.controllers:
            if registry is None:
                registry = default_registry
                registry.discover()
            controllers = load_controllers(dict(config.controllers), registry)
        self.loop = ControlLoop(
            self.model, controllers, actuator, self.store, config.guardrails, config.tick_seconds, clock=clock
        )
        self.bounds: Bounds | NoBoundsYet = NoBoundsYet()
        self.loop.coordinator.bounds = self.bounds
        self.session = ""
        self.link = MqttLink(
            config.broker,
            identifier=f"agent-{self.node}",
            subscriptions=[(topics.topic(self.node, kind), 1) for kind in topics.AGENT_RECEIVES],
            on_message=self._on_message,
            on_connect=self._on_connect,
            will=self._will,
            keepalive_seconds=config.keepalive_seconds,
        )
        self.rejected: Counter[str] = Counter()  # reason -> messages refused
        self.applied_actions = 0
        self.duplicate_deliveries = 0
        self.telemetry_reports = 0
        self._telemetry_seq = 0
        self._decisions_sent = self.applied.acked_decisions()
        self._tasks: list[asyncio.Task] = []

    # --- lifecycle ----------------------------------------------------------------------------------

    async def start(self) -> None:
        self.link.start()
        self._tasks = [
            asyncio.create_task(self._report_telemetry_every(self.config.telemetry_seconds)),
            asyncio.create_task(self._report_decisions()),
        ]
        if self.loop.controllers:
            self.loop.start()

    async def stop(self) -> None:
        """Say the node goes offline (a graceful disconnect sends no will), then stop."""
        if self.link.connected.is_set():
            with contextlib.suppress(aiomqtt.MqttError):
                offline = apb.NodeState(node=self.node, online=False, session=self.session)
                await self.link.publish(self._topic(Kind.STATE), offline.SerializeToString(), 1, retain=True)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.loop.stop()
        await self.link.stop()
        self.store.close()
        self.applied.close()

    def _topic(self, kind: topics.Kind) -> str:
        return topics.topic(self.node, kind)

    def _will(self) -> aiomqtt.Will:
        # A new session per connection: the plane ignores a will that belongs to an older one.
        self.session = uuid.uuid4().hex[:16]
        offline = apb.NodeState(node=self.node, online=False, session=self.session)
        return aiomqtt.Will(self._topic(Kind.STATE), offline.SerializeToString(), qos=1, retain=True)

    async def _on_connect(self) -> None:
        await self.publish_state()
        # Anything the plane has not acknowledged is sent again.
        self._decisions_sent = self.applied.acked_decisions()

    async def publish_state(self) -> None:
        """Announce what the node runs now (retained): the birth message, and after every change."""
        inventory = await self.actuator.inventory()
        exited = self.actuator.exited_replicas() if hasattr(self.actuator, "exited_replicas") else set()
        state = node_state_pb(self.node, self.session, inventory, exited, self.clock())
        await self.link.publish(self._topic(Kind.STATE), state.SerializeToString(), 1, retain=True)

    # --- telemetry ----------------------------------------------------------------------------------

    def record(self, service: str, operation: str, latencies_ms: list[float], errors: int = 0) -> None:
        """Requests served on this node (from a local proxy or receiver): into the local model at once,
        through its Ingestor (local controllers see them at their next tick), and into the next report."""
        now = self.clock()
        for buffer in (self._for_plane, self._for_local):
            buffer.record(service, operation, latencies_ms, errors, now)
        self.ingestor.submit_aggregates(self._for_local.take())

    async def report_telemetry(self) -> bool:
        """Send what was recorded since the last report (QoS 0); False if there was nothing or no link."""
        if self._for_plane.empty or not self.link.connected.is_set():
            return False
        self._telemetry_seq += 1
        delta = self._for_plane.take()
        report = report_pb(self.node, self._telemetry_seq, delta, self.clock())
        try:
            await self.link.publish(self._topic(Kind.TELEMETRY), report.SerializeToString(), qos=0)
        except aiomqtt.MqttError:
            self._for_plane.put_back(delta)  # the next report carries it
            return False
        self.telemetry_reports += 1
        return True

    async def _report_telemetry_every(self, seconds: float) -> None:
        while True:
            await asyncio.sleep(seconds)
            await self.report_telemetry()

    # --- local decisions upward ---------------------------------------------------------------------

    async def _report_decisions(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with self.loop.decided:
                    await asyncio.wait_for(self.loop.decided.wait(), 1.0)
            await self.report_decisions()

    async def report_decisions(self) -> int:
        """Send local decisions the plane has not acknowledged; how many were sent."""
        if not self.link.connected.is_set():
            return 0
        decisions = await asyncio.to_thread(self.store.after, self._decisions_sent, DECISIONS_PER_REPORT)
        if not decisions:
            return 0
        report = apb.DecisionReport(node=self.node, decisions=[local_decision_pb(item) for item in decisions])
        try:
            await self.link.publish(self._topic(Kind.DECISIONS), report.SerializeToString(), qos=1)
        except aiomqtt.MqttError:
            return 0
        self._decisions_sent = decisions[-1].id
        return len(decisions)

    # --- messages from the plane --------------------------------------------------------------------

    def _reject(self, reason: str, detail: str) -> None:
        self.rejected[reason] += 1
        log.warning("agent %s rejected a message (%s): %s", self.node, reason, detail)

    async def _on_message(self, message: aiomqtt.Message) -> None:
        name = str(message.topic)
        parsed = topics.parse(name)
        if parsed is None or parsed.node != self.node or parsed.kind not in topics.AGENT_RECEIVES:
            self._reject("topic not owned", f"{name} is not one of {self.node}'s topics")
            return
        payload = message.payload if isinstance(message.payload, bytes | bytearray) else b""
        try:
            if parsed.kind is Kind.ACTIONS:
                await self._on_action(decode(apb.ActionRequest, bytes(payload)))
            elif parsed.kind is Kind.BOUNDS:
                self._on_bounds(decode(apb.NodeBounds, bytes(payload)))
            elif parsed.kind is Kind.DECISIONS_ACK:
                ack = decode(apb.DecisionAck, bytes(payload))
                check_owner(self.node, ack.node)
                self.applied.set_acked_decisions(ack.up_to_local_id)
        except NotOwned as error:
            self._reject("topic not owned", f"{name}: {error}")
        except MalformedPayload as error:
            self._reject("malformed payload", f"{name}: {error}")

    def _on_bounds(self, message: apb.NodeBounds) -> None:
        check_owner(self.node, message.node)
        self.bounds = bounds_from_pb(message)
        self.loop.coordinator.bounds = self.bounds
        log.info("agent %s: bounds version %d from the plane", self.node, self.bounds.version)

    async def _on_action(self, request: apb.ActionRequest) -> None:
        key = request.decision_key
        if not key:
            raise MalformedPayload("an action request needs a decision_key")
        check_owner(self.node, request.node)
        known = self.applied.get(key)  # a primary-key read: shorter than a hop to a thread
        if known is not None:
            self.duplicate_deliveries += 1
            if known.finished:
                await self._answer(key, known.ok, known.detail, duplicate=True)
            else:
                detail = "interrupted on the node (agent restarted while applying); not applied again"
                await asyncio.to_thread(self.applied.finish, key, False, detail, self.clock())
                await self._answer(key, False, detail, duplicate=True)
            return
        now = self.clock()
        try:
            action = action_from_pb(request.action)
        except MalformedPayload as error:
            # Answered, so that the plane records why at once instead of waiting for its timeout.
            await asyncio.to_thread(self.applied.finish, key, False, f"malformed action: {error}", now)
            self._reject("malformed payload", f"action {key}: {error}")
            await self._answer(key, False, f"malformed action: {error}")
            return
        if request.deadline_unix and now > request.deadline_unix:
            detail = f"arrived {now - request.deadline_unix:.1f} s after its deadline; not applied"
            await asyncio.to_thread(self.applied.finish, key, False, detail, now)
            await self._answer(key, False, detail)
            return
        await asyncio.to_thread(self.applied.begin, key, now)
        try:
            outcome = await self.actuator.apply(action)
        except Exception as error:  # an actuator bug fails this action, not the agent
            log.exception("agent %s: actuator failed on %s", self.node, action.describe())
            outcome = Outcome(False, f"actuator error: {type(error).__name__}: {error}")
        await asyncio.to_thread(self.applied.finish, key, outcome.ok, outcome.detail, self.clock())
        self.applied_actions += outcome.ok
        # State before outcome, both at once: the broker forwards one client's messages in the order they
        # were sent, so when the plane reads the outcome its inventory already shows the change, and
        # neither waits for the other's acknowledgement.
        await asyncio.gather(self._publish_state_quietly(), self._answer(key, outcome.ok, outcome.detail))

    async def _publish_state_quietly(self) -> None:
        try:
            await self.publish_state()
        except aiomqtt.MqttError as error:
            log.info("agent %s: state not sent now (%s); it is sent on reconnection", self.node, error)

    async def _answer(self, key: str, ok: bool, detail: str, duplicate: bool = False) -> None:
        outcome = apb.ActionOutcome(
            decision_key=key,
            node=self.node,
            ok=ok,
            detail=detail,
            duplicate=duplicate,
            finished_at_unix=self.clock(),
        )
        try:
            await self.link.publish(self._topic(Kind.OUTCOMES), outcome.SerializeToString(), qos=1)
        except aiomqtt.MqttError as error:
            # Recorded on disk: the plane re-sends the action after it reconnects and gets this answer then.
            log.info("agent %s: outcome of %s not sent now (%s)", self.node, key, error)
