"""The coordinator: turns one round's proposals into decisions and the ordered plan of what to apply.

`Coordinator.plan` gives every proposal exactly one `Decision`, in four steps:

1. **Mode.** A controller in shadow mode, or a learning controller (`Taxonomy.learning`) that an operator
   has not promoted, gets `SHADOW`: recorded, never applied. Shadow proposals take no part in conflicts
   and use no budget, so a learner can never displace or starve an active controller; their `why` says what
   the guardrails would have made of them, for the operator deciding on promotion.
2. **Conflicts.** Active proposals on the same target and knob (`Action.knob`) conflict: the highest
   `priority` wins, ties broken by layer order, then controller name, then the action itself, so the result
   does not depend on the order proposals arrived in. Losers are `SUPERSEDED`, naming the winner; a Scale up
   against a Scale down (relative to the current replicas), or enable against disable, is called
   contradictory.
3. **Order and coupling.** Winners are taken in apply order: `LAYER_ORDER` (infrastructure, then model
   serving, which follows the placement of its nodes, then platform, then application), remediation before
   the rest of the platform layer, then higher priority first. A no-op (the inventory already says so) is
   `REJECTED` as "no change". An action for a node that is not ready (a Place onto it, a Remediate of a
   replica on it: its agent is offline) is `REJECTED`, and so is one outside the `bounds` a central plane
   set for a node's local controllers (hierarchical control, `agents.bounds`). An action
   coupled with one accepted earlier in the round is `REJECTED` (deferred to a later round): a Scale of
   a service being remediated, a Route with weights on a replica a Place is moving, a pipeline
   reconfiguration on a node a Place moves something onto or off. Only accepted actions couple: a
   remediation the rate limit refused does not hold back a Scale.
4. **Guardrails.** `guardrails.RoundGuard.check`: cool-down, Scale bounds, step and budgets (clamped
   where possible, refused otherwise), and the rate limit on disruptive actions. Budgets and the rate limit
   are shared by the round: what an earlier action used, a later one cannot.

What passes gets status `APPLIED` and is listed in `Plan.to_apply`; the status is provisional until the
actuator reports. The runtime then calls `Coordinator.settle(decision, outcome, now)`, which keeps `APPLIED`
(recording the outcome and starting the guardrails' cool-down) or turns it into `FAILED` (leaving guardrail
state alone, so a failed action neither starts a cool-down nor uses up the rate limit). `plan` itself never
changes guardrail state.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from controlplane.actions import (
    LAYER_ORDER,
    Action,
    Isolate,
    Place,
    ReconfigurePipeline,
    Remediate,
    Route,
    Scale,
)
from controlplane.actuator import Outcome
from controlplane.controller import Controller, Mode
from controlplane.decisions import Decision, DecisionStatus
from controlplane.engine.guardrails import Guardrails, RoundGuard, Verdict
from controlplane.taxonomy import Taxonomy
from controlplane.view import Inventory, TelemetryView


@dataclass(frozen=True, slots=True, kw_only=True)
class Submitted:
    """One proposal as the runtime hands it to the coordinator: the action and who proposed it, how."""

    controller: str
    taxonomy: Taxonomy
    action: Action
    priority: int = 0
    mode: Mode = Mode.ACTIVE
    # Set by the runtime once an operator has promoted a learning controller out of shadow mode.
    promoted: bool = False
    # A controller's own word that its decisions may be applied (Controller.ready_to_apply), e.g. a
    # learning controller whose live prediction error is still above its threshold says no.
    ready: bool = True

    @classmethod
    def of(
        cls,
        controller: Controller | type[Controller],
        action: Action,
        mode: Mode = Mode.ACTIVE,
        promoted: bool = False,
    ) -> Submitted:
        """The submission of `action` by `controller` (its name, taxonomy and priority)."""
        return cls(
            controller=controller.name,
            taxonomy=controller.taxonomy,
            action=action,
            priority=controller.priority,
            mode=Mode(mode),
            promoted=promoted,
        )


@dataclass(frozen=True, slots=True)
class Plan:
    """One round's outcome: a decision per proposal (in proposal order) and those to apply, in order.

    Every decision in `to_apply` is the same object as its entry in `decisions`, so a runtime can match
    the two by identity when it replaces them with their settled versions.
    """

    tick: int
    created_at: float
    decisions: tuple[Decision, ...]
    to_apply: tuple[Decision, ...]

    def with_status(self, status: DecisionStatus) -> list[Decision]:
        return [decision for decision in self.decisions if decision.status is status]


@dataclass
class _Entry:
    """A proposal being decided on: where it came in, and notes for its decision's why."""

    index: int
    submitted: Submitted
    notes: list[str] = field(default_factory=list)

    @property
    def action(self) -> Action:
        return self.submitted.action


class Bounds(Protocol):
    """Limits a higher-level plane sets on this coordinator's proposals (hierarchical control)."""

    def refuses(self, action: Action, inventory: Inventory) -> str:
        """Why `action` is outside the bounds, or "" if it is within them."""


class Coordinator:
    """Decides on each round's proposals; holds the `Guardrails` whose state lasts across rounds."""

    def __init__(self, guardrails: Guardrails | None = None, bounds: Bounds | None = None) -> None:
        self.guardrails = guardrails or Guardrails()
        # Set on a node agent's local loop by the plane above it; None for the top-level plane.
        self.bounds = bounds

    def plan(
        self,
        proposals: Sequence[Submitted],
        view: TelemetryView,
        now: float | None = None,
        tick: int | None = None,
    ) -> Plan:
        """Decide on one round's proposals; `now` and `tick` default to the view's."""
        now = view.now if now is None else now
        tick = view.tick if tick is None else tick
        inventory = view.inventory
        decided: dict[int, Decision] = {}

        def decide(entry: _Entry, status: DecisionStatus, why: str, action: Action | None = None) -> Decision:
            submitted = entry.submitted
            decision = Decision(
                controller=submitted.controller,
                taxonomy=submitted.taxonomy,
                action=submitted.action if action is None else action,
                status=status,
                why=why,
                tick=tick,
                created_at=now,
            )
            decided[entry.index] = decision
            return decision

        # 1. Mode.
        active: list[_Entry] = []
        shadow: list[tuple[_Entry, str]] = []
        for index, submitted in enumerate(proposals):
            entry = _Entry(index, submitted)
            mode = Mode(submitted.mode)
            if mode is Mode.DISABLED:
                decide(entry, DecisionStatus.REJECTED, f"controller {submitted.controller} is disabled")
            elif mode is Mode.SHADOW:
                shadow.append((entry, f"shadow mode: controller {submitted.controller} runs in shadow mode"))
            elif submitted.taxonomy.learning and not submitted.promoted:
                shadow.append((entry, "shadow mode: learning controller not yet promoted by an operator"))
            elif not submitted.ready:
                shadow.append((entry, f"shadow mode: {submitted.controller} says it is not ready to act yet"))
            else:
                active.append(entry)

        # 2. Conflicts on the same target and knob.
        groups: dict[tuple[str, str], list[_Entry]] = {}
        for entry in active:
            groups.setdefault((entry.action.target, entry.action.knob), []).append(entry)
        winners: dict[tuple[str, str], _Entry] = {}
        for key, group in groups.items():
            ranked = sorted(group, key=_conflict_rank)
            winner, losers = ranked[0], ranked[1:]
            winners[key] = winner
            for loser in losers:
                decide(loser, DecisionStatus.SUPERSEDED, _superseded_why(loser, winner, inventory))
            if losers:
                names = {loser.submitted.controller for loser in losers}
                beaten = ", ".join(
                    "another proposal of its own" if name == winner.submitted.controller else name
                    for name in sorted(names)
                )
                winner.notes.append(
                    f"won a conflict on {winner.action.knob} of {winner.action.target} over {beaten}"
                )

        # 3 and 4. Coupling, then guardrails, in apply order.
        round_guard = self.guardrails.begin_round(inventory, now)
        coupling = _Coupling(inventory)
        to_apply: list[Decision] = []
        for entry in sorted(winners.values(), key=_apply_order):
            # A no-op says more than a coupling would: it would not change anything in any round.
            unchanged = round_guard.no_change(entry.action)
            if unchanged:
                decide(entry, DecisionStatus.REJECTED, f"no change: {unchanged}")
                continue
            refused = _offline_node(entry.action, inventory) or (
                self.bounds.refuses(entry.action, inventory) if self.bounds is not None else ""
            )
            if refused:
                decide(entry, DecisionStatus.REJECTED, refused)
                continue
            coupled = coupling.blocks(entry.action)
            if coupled:
                decide(entry, DecisionStatus.REJECTED, coupled)
                continue
            verdict = round_guard.check(entry.action)
            if not verdict.ok:
                decide(entry, DecisionStatus.REJECTED, verdict.why)
                continue
            round_guard.accept(verdict.action)
            coupling.add(verdict.action)
            why = "; ".join(["accepted", *verdict.notes, *entry.notes])
            to_apply.append(decide(entry, DecisionStatus.APPLIED, why, verdict.action))

        # Shadow proposals last, against everything the round accepted, without counting against it.
        for entry, why in shadow:
            rival = winners.get((entry.action.target, entry.action.knob))
            preview = _preview(entry, rival, round_guard, coupling)
            decide(entry, DecisionStatus.SHADOW, f"{why}; not applied; {preview}")

        decisions = tuple(decided[index] for index in range(len(proposals)))
        return Plan(tick=tick, created_at=now, decisions=decisions, to_apply=tuple(to_apply))

    def settle(self, decision: Decision, outcome: Outcome, now: float) -> Decision:
        """Record the actuator's `outcome` of a decision from `Plan.to_apply`: APPLIED or FAILED."""
        if decision.status is not DecisionStatus.APPLIED:
            raise ValueError(
                f"only decisions a plan marked to apply can be settled, not {decision.status.value}"
            )
        if not outcome.ok:
            return decision.with_outcome(DecisionStatus.FAILED, outcome.detail)
        self.guardrails.record_applied(decision, now)
        return decision.with_outcome(DecisionStatus.APPLIED, outcome.detail)


class _Coupling:
    """Actions accepted earlier in the round that later, coupled actions must wait for."""

    def __init__(self, inventory: Inventory) -> None:
        self.inventory = inventory
        self.remediations: dict[str, Remediate] = {}
        self.moving: dict[tuple[str, str], Place] = {}  # (service, replica) -> the Place moving it
        self.nodes: dict[str, Place] = {}  # node -> a Place that changes what runs on it

    def add(self, action: Action) -> None:
        # Apply order puts these before the actions coupled with them, so one pass sees them first.
        if isinstance(action, Remediate):
            self.remediations.setdefault(action.target, action)
        elif isinstance(action, Place):
            self.nodes.setdefault(action.node, action)
            if action.replica:
                self.moving.setdefault((action.target, action.replica), action)
                source = self.inventory.placements.get(action.replica)
                if source:
                    self.nodes.setdefault(source, action)

    def blocks(self, action: Action) -> str:
        """Why `action` must wait for an action accepted earlier this round, or "" if it need not."""
        if isinstance(action, Scale) and action.target in self.remediations:
            remediation = self.remediations[action.target]
            return (
                f"coupled with remediation ({remediation.operation.value}) of {action.target} in progress; "
                "scaling deferred to a later round"
            )
        if isinstance(action, Route):
            moving = sorted(replica for replica in action.weights if (action.target, replica) in self.moving)
            if moving:
                nodes = ", ".join(self.moving[action.target, replica].node for replica in moving)
                return (
                    f"coupled with placement: {', '.join(moving)} of {action.target} moving to {nodes} this "
                    "round; routing deferred until the move is done"
                )
        if isinstance(action, ReconfigurePipeline):
            known = self.inventory.pipelines.get(action.target)
            devices = (*(known.devices if known else ()), *action.devices)
            nodes = sorted(node for node in self.nodes if any(_on_node(device, node) for device in devices))
            if nodes:
                return f"serialized after placement on node {', '.join(nodes)}; reconfiguration deferred"
        return ""


def _offline_node(action: Action, inventory: Inventory) -> str:
    """Why `action` must not be sent: it is for a node the inventory knows to be not ready; else ""."""
    node = ""
    if isinstance(action, Place):
        node = action.node
    elif isinstance(action, Remediate) and action.replica:
        node = inventory.placements.get(action.replica, "")
    known = inventory.nodes.get(node)
    if known is not None and not known.ready:
        return f"node {node} is not ready (its agent is offline); no actions are sent to it"
    return ""


def _on_node(device: str, node: str) -> bool:
    """Whether a pipeline stage's device is, or is on, `node` ("node", "node/gpu0" or "node:cuda:0")."""
    return device == node or device.startswith((f"{node}/", f"{node}:"))


def _canonical(action: Action) -> str:
    return json.dumps(action.to_dict(), sort_keys=True, default=str)


def _layer_rank(action: Action) -> int:
    return LAYER_ORDER.index(action.layer)


def _conflict_rank(entry: _Entry) -> tuple:
    """Lowest wins: higher priority, then earlier layer, then controller name, then the action itself."""
    submitted = entry.submitted
    return (
        -submitted.priority,
        _layer_rank(submitted.action),
        submitted.controller,
        _canonical(submitted.action),
        entry.index,
    )


def _apply_order(entry: _Entry) -> tuple:
    """Layer order; remediation before the rest of its layer; higher priority first; then a fixed order."""
    submitted = entry.submitted
    return (
        _layer_rank(submitted.action),
        0 if isinstance(submitted.action, Remediate) else 1,
        -submitted.priority,
        submitted.controller,
        submitted.action.target,
        submitted.action.knob,
        _canonical(submitted.action),
        entry.index,
    )


def _direction(action: Action, inventory: Inventory) -> str:
    """ "up", "down" or "hold" for a Scale of a known service, "on"/"off" for an Isolate, else ""."""
    if isinstance(action, Scale) and action.target in inventory.services:
        current = inventory.replicas_of(action.target)
        return "up" if action.replicas > current else "down" if action.replicas < current else "hold"
    if isinstance(action, Isolate):
        return "on" if action.enabled else "off"
    return ""


def _superseded_why(loser: _Entry, winner: _Entry, inventory: Inventory) -> str:
    won, lost = winner.submitted, loser.submitted
    if won.priority != lost.priority:
        because = f"higher priority ({won.priority} > {lost.priority})"
    elif _layer_rank(won.action) != _layer_rank(lost.action):
        because = f"equal priority {won.priority}, earlier layer"
    elif won.controller != lost.controller:
        because = f"equal priority {won.priority}, controller name order"
    else:
        because = "the same controller proposed both; a fixed order picks one"
    if _canonical(won.action) == _canonical(lost.action):
        return f"superseded by {won.controller}: duplicate of its {won.action.describe()}"
    lost_direction, won_direction = _direction(lost.action, inventory), _direction(won.action, inventory)
    if {lost_direction, won_direction} in ({"up", "down"}, {"on", "off"}):
        return (
            f"superseded by {won.controller}: contradictory directions on {won.action.knob} of "
            f"{won.action.target} ({lost.controller} wants {lost_direction}, {won.controller} wants "
            f"{won_direction}: {won.action.describe()}); {won.controller} wins by {because}"
        )
    return (
        f"superseded by {won.controller}: both set {won.action.knob} of {won.action.target}; "
        f"{won.controller}'s {won.action.describe()} wins by {because}"
    )


def _preview(entry: _Entry, rival: _Entry | None, round_guard: RoundGuard, coupling: _Coupling) -> str:
    """What the round would have made of a shadow proposal, had it been active; changes nothing."""
    if rival is not None:
        if _conflict_rank(rival) < _conflict_rank(entry):
            return f"would have been superseded by {rival.submitted.controller}'s {rival.action.describe()}"
        # Winning would have displaced the active proposal, whose fate the round already decided.
        return f"would have won a conflict with {rival.submitted.controller}'s {rival.action.describe()}"
    unchanged = round_guard.no_change(entry.action)
    coupled = "" if unchanged else coupling.blocks(entry.action)
    if coupled:
        return f"would have been rejected: {coupled}"
    verdict: Verdict = round_guard.check(entry.action)
    if not verdict.ok:
        return f"would have been rejected: {verdict.why}"
    if verdict.notes:
        return f"would have been applied, {'; '.join(verdict.notes)}"
    return "would have been applied"
