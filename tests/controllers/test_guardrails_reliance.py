"""Built-in controllers' proposals through the real coordinator: the guardrails each one relies on."""

import asyncio
from dataclasses import replace

from controllers.hpa import HorizontalPodAutoscaler
from controllers.learned import LearnedAutoscaler
from controlplane import (
    DecisionStatus,
    Inventory,
    Remediate,
    RemediationOperation,
    Scale,
    ServiceInventory,
    TelemetryView,
)
from controlplane.engine.coordinator import Coordinator, Submitted
from controlplane.engine.guardrails import GuardrailConfig, Guardrails
from telemetry import GraphSnapshot, NodeSnapshot, WindowSummary


def _stats(concurrency: float) -> WindowSummary:
    return WindowSummary(
        window_seconds=60.0,
        requests=6000,
        errors=0,
        request_rate=100.0,
        error_rate=0.0,
        p50_ms=10.0,
        p95_ms=20.0,
        p99_ms=30.0,
        mean_ms=12.0,
        concurrency=concurrency,
    )


def _view(replicas: int, concurrency: float, now: float = 1000.0) -> TelemetryView:
    node = NodeSnapshot("api", "service", "", _stats(concurrency), 6000, 0, now)
    snapshot = GraphSnapshot(now, 60.0, (node,), (), 0, 0)
    inventory = Inventory(services={"api": ServiceInventory("api", replicas, replicas, max_replicas=500)})
    return TelemetryView(1, now, snapshot, inventory)


def test_hpa_scale_up_is_clamped_by_the_coordinators_step_limit() -> None:
    view = _view(replicas=20, concurrency=200.0)  # 10 in flight per replica against a target of 1
    hpa = HorizontalPodAutoscaler()
    (proposal,) = asyncio.run(hpa.decide(view))
    assert proposal.replicas == 40  # the HPA's own default policy: at most +100% (or +4 pods) per 15 s
    coordinator = Coordinator(Guardrails(GuardrailConfig(max_scale_step=10)))
    plan = coordinator.plan([Submitted.of(hpa, proposal)], view, view.now, view.tick)
    (decision,) = plan.decisions
    assert decision.status is DecisionStatus.APPLIED
    assert decision.action.replicas == 30 and "clamped from 40 to 30" in decision.why


def test_remediation_restarts_are_held_by_the_disruptive_action_rate_limit() -> None:
    from controllers.remediation import DetectLocalizeAct

    view = _view(replicas=3, concurrency=3.0)
    # Hybrid (it learns with an IsolationForest): its decisions apply only once an operator promoted it.
    restarts = [
        Submitted.of(
            DetectLocalizeAct,
            Remediate(target=f"svc-{index}", operation=RemediationOperation.RESTART),
            promoted=True,
        )
        for index in range(4)
    ]
    coordinator = Coordinator(Guardrails(GuardrailConfig(max_disruptive_per_window=2)))
    plan = coordinator.plan(restarts, view, view.now, view.tick)
    statuses = [decision.status for decision in plan.decisions]
    assert statuses.count(DecisionStatus.APPLIED) == 2
    assert statuses.count(DecisionStatus.REJECTED) == 2
    assert all("rate limit" in d.why for d in plan.decisions if d.status is DecisionStatus.REJECTED)


def test_learned_controller_proposals_stay_in_shadow_until_promoted_and_ready() -> None:
    learned = LearnedAutoscaler()
    assert not learned.ready_to_apply  # untrained: no live prediction error yet
    proposal = Scale(target="api", replicas=5, reason="model")
    view = _view(replicas=3, concurrency=3.0)
    coordinator = Coordinator(Guardrails(GuardrailConfig()))
    for promoted in (False, True):
        submitted = replace(Submitted.of(learned, proposal, promoted=promoted), ready=learned.ready_to_apply)
        (decision,) = coordinator.plan([submitted], view, view.now, view.tick).decisions
        assert decision.status is DecisionStatus.SHADOW, promoted
    ready = replace(Submitted.of(learned, proposal, promoted=True), ready=True)
    (decision,) = coordinator.plan([ready], view, view.now, view.tick).decisions
    assert decision.status is DecisionStatus.APPLIED
