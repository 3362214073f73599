"""Guardrails: the limits every active proposal must pass before the coordinator lets it be applied.

`GuardrailConfig` holds the limits (cool-down per target and knob, maximum scaling step, replica and CPU
budgets, a rate limit on disruptive actions). `Guardrails` holds the state that outlives one round: when
each (target, knob) last changed and when disruptive actions were applied. That state changes only through
`Guardrails.record_applied`, which the runtime calls once the actuator has succeeded, so a failed, shadow or
rejected action never starts a cool-down or uses up the rate limit.

Within one round, `Guardrails.begin_round` gives a `RoundGuard`: the state at the start of the round plus
what the round has accepted so far (replicas added, disruptive actions taken), so that two proposals in the
same round share one budget. A `RoundGuard` never changes the `Guardrails` it came from.
"""

from __future__ import annotations

import bisect
import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass

from controlplane.actions import Action, Place, ReconfigurePipeline, Route, Scale
from controlplane.decisions import Decision, DecisionStatus
from controlplane.view import Inventory


@dataclass(frozen=True, slots=True)
class GuardrailConfig:
    """The limits; `None` switches a limit off."""

    # Seconds after a change to (target, knob) during which further changes to it are refused.
    cooldown_seconds: float = 30.0
    # Most replicas one Scale may add or remove; larger steps are clamped, not refused.
    max_scale_step: int | None = 10
    # Most replicas one Scale may add or remove as a fraction of the current count (at least one).
    max_scale_step_ratio: float | None = None
    # Replicas across all services.
    max_total_replicas: int | None = None
    # Sum over services of replicas * cpu_request (cores).
    max_total_cpu: float | None = None
    # Disruptive actions (Action.disruptive) applied across the plane within the sliding window.
    max_disruptive_per_window: int | None = 5
    disruptive_window_seconds: float = 60.0

    def __post_init__(self) -> None:
        for name in ("cooldown_seconds", "max_scale_step_ratio", "max_total_cpu"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"GuardrailConfig.{name} must be >= 0, got {value!r}")
        for name in ("max_scale_step", "max_total_replicas", "max_disruptive_per_window"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise ValueError(f"GuardrailConfig.{name} must be a whole number >= 0, got {value!r}")
        if self.max_scale_step == 0:
            raise ValueError("GuardrailConfig.max_scale_step must be >= 1 (use None for no limit)")
        if self.disruptive_window_seconds <= 0:
            raise ValueError("GuardrailConfig.disruptive_window_seconds must be > 0")


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the guardrails make of one action: allowed (possibly clamped, with notes) or refused (why)."""

    ok: bool
    action: Action
    why: str = ""
    notes: tuple[str, ...] = ()


class Guardrails:
    """Guardrail limits plus the state they need across rounds (last change per knob, disruptive log)."""

    def __init__(self, config: GuardrailConfig | None = None) -> None:
        self.config = config or GuardrailConfig()
        self._last_change: dict[tuple[str, str], float] = {}
        # Sorted: actuators may report completions out of order.
        self._disruptive_times: list[float] = []

    def last_change(self, target: str, knob: str) -> float | None:
        return self._last_change.get((target, knob))

    def cooldown_remaining(self, target: str, knob: str, now: float) -> float:
        """Seconds until (target, knob) may change again; 0 when it may change now."""
        last = self._last_change.get((target, knob))
        if last is None:
            return 0.0
        return max(0.0, last + self.config.cooldown_seconds - now)

    def disruptive_recent(self, now: float) -> int:
        """Disruptive actions applied within the window ending at `now`."""
        start = now - self.config.disruptive_window_seconds
        # Strictly after the window's start: an action exactly one window old no longer counts.
        return len(self._disruptive_times) - bisect.bisect_right(self._disruptive_times, start)

    def record_applied(self, decision: Decision, now: float) -> None:
        """The actuator carried `decision` out at `now`: start its cool-down, count it if disruptive."""
        if decision.status is not DecisionStatus.APPLIED:
            raise ValueError(f"only applied decisions change guardrail state, got {decision.status.value}")
        action = decision.action
        self._last_change[action.target, action.knob] = now
        if action.disruptive:
            bisect.insort(self._disruptive_times, now)
        self._forget_before(now)

    def begin_round(self, inventory: Inventory, now: float) -> RoundGuard:
        return RoundGuard(self, inventory, now)

    def _forget_before(self, now: float) -> None:
        # Entries older than both limits can no longer refuse anything; dropping them bounds memory.
        cutoff = now - self.config.disruptive_window_seconds
        del self._disruptive_times[: bisect.bisect_right(self._disruptive_times, cutoff)]
        expired = [
            key for key, last in self._last_change.items() if last + self.config.cooldown_seconds <= now
        ]
        for key in expired:
            del self._last_change[key]


class RoundGuard:
    """One round's guardrails: `check` an action, then `accept` it if the round goes ahead with it."""

    def __init__(self, guardrails: Guardrails, inventory: Inventory, now: float) -> None:
        self.guardrails = guardrails
        self.config = guardrails.config
        self.inventory = inventory
        self.now = now
        self.replicas = {name: service.replicas for name, service in inventory.services.items()}
        self.cpu_per_replica = {name: service.cpu_request for name, service in inventory.services.items()}
        self.total_replicas = sum(self.replicas.values())
        self.total_cpu = sum(count * self.cpu_per_replica[name] for name, count in self.replicas.items())
        self.disruptive_accepted = 0

    def check(self, action: Action) -> Verdict:
        """Whether `action` may be applied this round, possibly clamped; changes nothing."""
        unchanged = self.no_change(action)
        if unchanged:
            return Verdict(False, action, f"no change: {unchanged}")
        remaining = self.guardrails.cooldown_remaining(action.target, action.knob, self.now)
        if remaining > 0:
            return Verdict(
                False,
                action,
                f"cool-down: {action.knob} of {action.target} changed "
                f"{self.config.cooldown_seconds - remaining:.1f} s ago; may change again in "
                f"{remaining:.1f} s (cooldown_seconds {self.config.cooldown_seconds:g})",
            )
        notes: tuple[str, ...] = ()
        if isinstance(action, Scale):
            verdict = self._clamp_scale(action)
            if not verdict.ok:
                return verdict
            action, notes = verdict.action, verdict.notes
        limit = self.config.max_disruptive_per_window
        if action.disruptive and limit is not None:
            used = self.guardrails.disruptive_recent(self.now) + self.disruptive_accepted
            if used >= limit:
                return Verdict(
                    False,
                    action,
                    f"rate limit: {used} disruptive action(s) in the last "
                    f"{self.config.disruptive_window_seconds:g} s (max_disruptive_per_window {limit})",
                )
        return Verdict(True, action, notes=notes)

    def accept(self, action: Action) -> None:
        """Count `action` (as `check` returned it) against this round's budgets."""
        if isinstance(action, Scale):
            current = self.replicas.get(action.target, 0)
            cpu = self.cpu_per_replica.get(action.target, 0.0)
            self.total_replicas += action.replicas - current
            self.total_cpu += (action.replicas - current) * cpu
            self.replicas[action.target] = action.replicas
        if action.disruptive:
            self.disruptive_accepted += 1

    def no_change(self, action: Action) -> str:
        """Why `action` would leave the inventory as it is, or "" if it changes something (or may)."""
        inventory = self.inventory
        if isinstance(action, Scale) and action.target in inventory.services:
            current = self.replicas[action.target]
            if action.replicas == current:
                return f"{action.target} already has {current} replicas"
        elif isinstance(action, Place) and action.replica:
            if inventory.placements.get(action.replica) == action.node:
                return f"{action.replica} already runs on {action.node}"
        elif isinstance(action, Route) and action.target in inventory.routing:
            if _same_weights(inventory.routing[action.target], action.weights):
                return f"{action.target} already routes with these weights"
        elif isinstance(action, ReconfigurePipeline) and action.target in inventory.pipelines:
            pipeline = inventory.pipelines[action.target]
            same_devices = not action.devices or action.devices == tuple(pipeline.devices)
            if same_devices and action.layers_per_stage == tuple(pipeline.layers_per_stage):
                return f"{action.target} already has this layout"
        # Isolate is not in the inventory and Remediate is an event, so neither is ever a no-op.
        return ""

    def _clamp_scale(self, action: Scale) -> Verdict:
        """Bounds, then step, then budgets; clamping keeps the direction the controller asked for."""
        target = action.target
        known = self.inventory.services.get(target)
        current = self.replicas.get(target, 0)
        wanted = action.replicas
        replicas = wanted
        notes: list[str] = []
        if known is not None:
            if replicas < known.min_replicas:
                replicas = known.min_replicas
                notes.append(f"raised to min_replicas {known.min_replicas}")
            elif replicas > known.max_replicas:
                replicas = known.max_replicas
                notes.append(f"lowered to max_replicas {known.max_replicas}")
            # The step limit is relative to the current count, so it needs the service to be known.
            step = self._max_step(current)
            if step is not None and abs(replicas - current) > step:
                replicas = current + step if replicas > current else current - step
                notes.append(f"step limited to {step} replica(s) from {current}")
        if replicas > current:
            config = self.config
            if config.max_total_replicas is not None:
                room = config.max_total_replicas - (self.total_replicas - current)
                if room <= current:
                    return Verdict(
                        False,
                        action,
                        f"replica budget: {self.total_replicas} replicas in total, "
                        f"max_total_replicas {config.max_total_replicas}",
                    )
                if replicas > room:
                    replicas = room
                    notes.append(f"replica budget (max_total_replicas {config.max_total_replicas})")
            cpu = self.cpu_per_replica.get(target, 0.0)
            if config.max_total_cpu is not None and cpu > 0:
                # The small epsilon keeps 0.1 * 30 == 3.0000000000000004 from costing a replica.
                room = current + math.floor((config.max_total_cpu - self.total_cpu) / cpu + 1e-9)
                if room <= current:
                    return Verdict(
                        False,
                        action,
                        f"cpu budget: {self.total_cpu:g} cores in use, "
                        f"max_total_cpu {config.max_total_cpu:g}",
                    )
                if replicas > room:
                    replicas = room
                    notes.append(f"cpu budget (max_total_cpu {config.max_total_cpu:g}, {cpu:g} per replica)")
        if (wanted - current) * (replicas - current) < 0:
            return Verdict(
                False, action, f"{target} has {current} replicas, outside its bounds; asked for {wanted}"
            )
        if known is not None and replicas == current:
            return Verdict(
                False,
                action,
                f"no change: {wanted} replicas became {replicas} ({'; '.join(notes)}), the current count",
            )
        if replicas == wanted:
            return Verdict(True, action)
        clamped = dataclasses.replace(action, replicas=replicas)
        return Verdict(
            True, clamped, notes=(f"clamped from {wanted} to {replicas} replicas: {'; '.join(notes)}",)
        )

    def _max_step(self, current: int) -> int | None:
        limits = []
        if self.config.max_scale_step is not None:
            limits.append(self.config.max_scale_step)
        if self.config.max_scale_step_ratio is not None and current > 0:
            limits.append(max(1, math.floor(current * self.config.max_scale_step_ratio)))
        return min(limits) if limits else None


def _same_weights(current: Mapping[str, float], proposed: Mapping[str, float]) -> bool:
    """Equal after normalizing to fractions; a destination missing on one side counts as weight 0."""
    current_total = sum(current.values())
    proposed_total = sum(proposed.values())
    if current_total <= 0 or proposed_total <= 0:
        return False
    return all(
        math.isclose(
            current.get(key, 0.0) / current_total, proposed.get(key, 0.0) / proposed_total, abs_tol=1e-9
        )
        for key in set(current) | set(proposed)
    )
