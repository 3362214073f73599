"""The coordinator and its guardrails: conflicts, coupling, layer order, cool-downs, clamps, budgets, rate
limits, shadow mode and promotion, on hand-built views."""

import asyncio
import random

import pytest

from actuators.memory import InMemoryActuator
from controlplane import Outcome
from controlplane.actions import (
    Isolate,
    IsolationMechanism,
    Layer,
    Place,
    ReconfigurePipeline,
    Remediate,
    RemediationOperation,
    Route,
    Scale,
)
from controlplane.controller import Controller, Mode
from controlplane.decisions import DecisionStatus
from controlplane.engine.coordinator import Coordinator, Plan, Submitted
from controlplane.engine.guardrails import GuardrailConfig, Guardrails
from controlplane.taxonomy import Taxonomy
from controlplane.view import Inventory, PipelineInventory, ServiceInventory, TelemetryView
from telemetry import GraphSnapshot

APPLIED = DecisionStatus.APPLIED
SHADOW = DecisionStatus.SHADOW
REJECTED = DecisionStatus.REJECTED
SUPERSEDED = DecisionStatus.SUPERSEDED
FAILED = DecisionStatus.FAILED

RULE = Taxonomy.of("centralized", "rule", dynamics=["workload"], actions=["autoscaling"])
LEARNING = Taxonomy.of("centralized", "learning", dynamics=["workload"], actions=["autoscaling"])
EMPTY_GRAPH = GraphSnapshot(
    taken_at=0.0, window_seconds=60.0, nodes=(), edges=(), spans_accepted=0, spans_rejected=0
)
NOW = 1_000.0


def make_view(
    services: dict[str, int] | None = None,
    *,
    cpu: float = 0.0,
    bounds: dict[str, tuple[int, int]] | None = None,
    placements: dict[str, str] | None = None,
    routing: dict[str, dict[str, float]] | None = None,
    pipelines: dict[str, tuple[tuple[int, ...], tuple[str, ...]]] | None = None,
    now: float = NOW,
    tick: int = 7,
) -> TelemetryView:
    bounds = bounds or {}
    inventory = Inventory(
        services={
            name: ServiceInventory(
                name,
                replicas,
                cpu_request=cpu,
                min_replicas=bounds.get(name, (1, 1000))[0],
                max_replicas=bounds.get(name, (1, 1000))[1],
            )
            for name, replicas in (services or {}).items()
        },
        placements=placements or {},
        replica_services={replica: replica.rsplit("-", 1)[0] for replica in placements or {}},
        routing=routing or {},
        pipelines={
            name: PipelineInventory(name, layers, devices)
            for name, (layers, devices) in (pipelines or {}).items()
        },
    ).frozen()
    return TelemetryView(tick, now, EMPTY_GRAPH, inventory)


def sub(controller, action, priority=0, mode=Mode.ACTIVE, taxonomy=RULE, promoted=False) -> Submitted:
    return Submitted(
        controller=controller,
        taxonomy=taxonomy,
        action=action,
        priority=priority,
        mode=mode,
        promoted=promoted,
    )


def scale(target: str, replicas: int, **extra) -> Scale:
    return Scale(target=target, replicas=replicas, **extra)


def plan_of(
    proposals, view, config: GuardrailConfig | None = None, guardrails: Guardrails | None = None
) -> Plan:
    coordinator = Coordinator(guardrails or Guardrails(config or GuardrailConfig()))
    return coordinator.plan(proposals, view)


def summary(plan: Plan) -> list[tuple]:
    return [(d.controller, d.action.describe(), d.status.value, d.why) for d in plan.decisions]


# --- the shape of a plan -------------------------------------------------------------------------------


def test_every_proposal_gets_exactly_one_decision_in_proposal_order():
    view = make_view({"api": 3, "db": 2, "web": 2}, placements={"api-0": "n1"})
    proposals = [
        sub("a", scale("api", 5), priority=1),
        sub("b", scale("api", 2)),
        sub("c", scale("web", 2)),  # no change
        sub("d", Remediate(target="db", operation="restart")),
        sub("e", scale("db", 4)),  # coupled with the restart
        sub("f", scale("api", 6), mode=Mode.SHADOW),
        sub("g", scale("api", 6), taxonomy=LEARNING),
        sub("h", Place(target="api", node="n2", replica="api-0")),
        sub("i", Route(target="api", weights={"api-0": 1.0})),
        sub("j", scale("api", 4), mode=Mode.DISABLED),
        sub("a", scale("api", 5), priority=1),  # duplicate of the first
    ]
    plan = plan_of(proposals, view)
    assert len(plan.decisions) == len(proposals)
    for proposal, decision in zip(proposals, plan.decisions, strict=True):
        assert decision.controller == proposal.controller
        assert decision.taxonomy == proposal.taxonomy
        assert decision.action.target == proposal.action.target
        assert decision.tick == 7 and decision.created_at == NOW
        assert decision.why
    assert all(any(d is applied for d in plan.decisions) for applied in plan.to_apply)
    assert [d for d in plan.decisions if d.status is APPLIED] == sorted(
        plan.to_apply, key=lambda d: plan.decisions.index(d)
    )
    assert [d.status for d in plan.decisions] == [
        APPLIED,
        SUPERSEDED,
        REJECTED,
        APPLIED,
        REJECTED,
        SHADOW,
        SHADOW,
        APPLIED,
        REJECTED,
        REJECTED,
        SUPERSEDED,
    ]
    assert plan.with_status(SHADOW) == [plan.decisions[5], plan.decisions[6]]


def test_empty_round_gives_empty_plan():
    plan = plan_of([], make_view())
    assert plan.decisions == () and plan.to_apply == ()


def test_submitted_of_takes_name_taxonomy_and_priority_from_the_controller():
    class Scaler(Controller):
        name = "scaler"
        taxonomy = RULE
        priority = 4

        async def decide(self, view):
            return []

    submitted = Submitted.of(Scaler, scale("api", 2), mode="shadow")
    assert (submitted.controller, submitted.taxonomy, submitted.priority) == ("scaler", RULE, 4)
    assert submitted.mode is Mode.SHADOW and submitted.promoted is False


# --- conflict rules --------------------------------------------------------------------------------------


def test_same_target_and_knob_higher_priority_wins_and_loser_names_the_winner():
    view = make_view({"api": 3})
    plan = plan_of([sub("low", scale("api", 5), priority=1), sub("high", scale("api", 6), priority=2)], view)
    low, high = plan.decisions
    assert high.status is APPLIED and high.action.replicas == 6
    assert "won a conflict" in high.why and "low" in high.why
    assert low.status is SUPERSEDED
    assert "superseded by high" in low.why and "higher priority (2 > 1)" in low.why
    assert plan.to_apply == (high,)


def test_same_knob_tie_is_broken_by_controller_name_whatever_the_arrival_order():
    view = make_view({"api": 3})
    proposals = [sub("zeta", scale("api", 5)), sub("alpha", scale("api", 4))]
    for ordering in (proposals, proposals[::-1]):
        plan = plan_of(ordering, view)
        by_name = {d.controller: d for d in plan.decisions}
        assert by_name["alpha"].status is APPLIED
        assert by_name["zeta"].status is SUPERSEDED
        assert "controller name order" in by_name["zeta"].why


def test_same_controller_twice_keeps_one_and_marks_an_exact_repeat_as_duplicate():
    view = make_view({"api": 3})
    plan = plan_of([sub("a", scale("api", 5)), sub("a", scale("api", 4)), sub("a", scale("api", 4))], view)
    statuses = [d.status for d in plan.decisions]
    assert statuses.count(APPLIED) == 1 and statuses.count(SUPERSEDED) == 2
    assert any("duplicate" in d.why for d in plan.decisions)
    # Knobs differ per isolation mechanism and per placed replica: these do not conflict.
    plan = plan_of(
        [
            sub("a", Isolate(target="api", mechanism="rate_limit", limit=10)),
            sub("a", Isolate(target="api", mechanism="circuit_breaker")),
            sub("b", Place(target="api", node="n1", replica="api-0")),
            sub("b", Place(target="api", node="n1", replica="api-1")),
        ],
        view,
    )
    assert [d.status for d in plan.decisions] == [APPLIED] * 4


def test_contradictory_scale_directions_are_called_contradictory_and_priority_decides():
    view = make_view({"api": 3})
    plan = plan_of([sub("up", scale("api", 5), priority=1), sub("down", scale("api", 2), priority=3)], view)
    up, down = plan.decisions
    assert down.status is APPLIED and up.status is SUPERSEDED
    assert "contradictory" in up.why and "superseded by down" in up.why
    assert "up wants up" in up.why and "down wants down" in up.why
    # Same direction is a plain conflict, not a contradiction.
    plan = plan_of([sub("a", scale("api", 5), priority=1), sub("b", scale("api", 4))], view)
    assert plan.decisions[1].status is SUPERSEDED and "contradictory" not in plan.decisions[1].why


def test_contradictory_isolation_enable_against_disable():
    view = make_view({"api": 3})
    on = Isolate(target="api", mechanism=IsolationMechanism.CIRCUIT_BREAKER, enabled=True)
    off = Isolate(target="api", mechanism=IsolationMechanism.CIRCUIT_BREAKER, enabled=False)
    plan = plan_of([sub("opener", on, priority=5), sub("closer", off)], view)
    assert plan.decisions[0].status is APPLIED
    assert plan.decisions[1].status is SUPERSEDED and "contradictory" in plan.decisions[1].why


def test_scale_of_a_service_being_remediated_is_deferred_and_remediation_goes_first():
    view = make_view({"api": 3, "web": 2})
    restart = Remediate(target="api", operation=RemediationOperation.RESTART)
    plan = plan_of(
        [
            sub("scaler", scale("api", 5), priority=9),  # higher priority does not jump the remediation
            sub("scaler", scale("web", 3), priority=9),
            sub("healer", restart),
        ],
        view,
    )
    scale_api, scale_web, heal = plan.decisions
    assert heal.status is APPLIED
    assert scale_api.status is REJECTED
    assert "coupled with remediation (restart) of api in progress" in scale_api.why
    assert scale_web.status is APPLIED
    assert plan.to_apply == (heal, scale_web)


def test_scale_proceeds_when_the_remediation_is_itself_refused():
    view = make_view({"api": 3})
    plan = plan_of(
        [
            sub("scaler", scale("api", 5)),
            sub("healer", Remediate(target="api", operation="rollback", version="v1")),
        ],
        view,
        GuardrailConfig(max_disruptive_per_window=0),
    )
    assert plan.decisions[1].status is REJECTED and "rate limit" in plan.decisions[1].why
    assert plan.decisions[0].status is APPLIED


def test_route_to_a_replica_being_moved_is_rejected():
    view = make_view({"api": 2}, placements={"api-0": "n1", "api-1": "n1"})
    move = Place(target="api", node="n2", replica="api-0")
    plan = plan_of(
        [
            sub("router", Route(target="api", weights={"api-0": 0.0, "api-1": 1.0})),
            sub("placer", move),
        ],
        view,
    )
    route, place = plan.decisions
    assert place.status is APPLIED
    assert route.status is REJECTED
    assert "coupled with placement" in route.why and "api-0" in route.why and "n2" in route.why
    # Routing between replicas that stay put, or on another service, is not coupled.
    plan = plan_of(
        [
            sub("router", Route(target="api", weights={"api-1": 1.0, "canary": 0.1})),
            sub("router", Route(target="web", weights={"api-0": 1.0})),
            sub("placer", move),
        ],
        view,
    )
    assert [d.status for d in plan.decisions] == [APPLIED, APPLIED, APPLIED]


def test_pipeline_reconfiguration_is_serialized_after_placement_on_its_node():
    view = make_view(
        placements={"cache-0": "gpu-node-b"},
        pipelines={
            "llm": ((4, 4), ("gpu-node-a/cuda:0", "gpu-node-b:cuda:1")),
            "small": ((2, 2), ("gpu-node-c", "gpu-node-c")),
        },
    )
    plan = plan_of(
        [
            sub("pipelive", ReconfigurePipeline(target="llm", layers_per_stage=(3, 5))),
            sub("pipelive", ReconfigurePipeline(target="small", layers_per_stage=(1, 3))),
            sub("placer", Place(target="cache", node="gpu-node-a")),
        ],
        view,
    )
    llm, small, place = plan.decisions
    assert place.status is APPLIED
    assert llm.status is REJECTED and "serialized after placement on node gpu-node-a" in llm.why
    assert small.status is APPLIED
    # Moving a replica off a node changes that node too; a new device list counts like the current one.
    plan = plan_of(
        [
            sub("pipelive", ReconfigurePipeline(target="small", layers_per_stage=(1, 3))),
            sub(
                "pipelive", ReconfigurePipeline(target="new", layers_per_stage=(2,), devices=("gpu-node-z",))
            ),
            sub("placer", Place(target="cache", node="gpu-node-z", replica="cache-0")),
        ],
        make_view(placements={"cache-0": "gpu-node-c"}, pipelines={"small": ((2, 2), ("gpu-node-c",) * 2)}),
    )
    assert [d.status for d in plan.decisions] == [REJECTED, REJECTED, APPLIED]
    assert "gpu-node-c" in plan.decisions[0].why and "gpu-node-z" in plan.decisions[1].why


# --- ordering and determinism ----------------------------------------------------------------------------


def test_to_apply_is_in_layer_order_then_priority():
    view = make_view(
        {"api": 3, "db": 2}, placements={"db-0": "n1"}, pipelines={"llm": ((2, 2), ("n9", "n9"))}
    )
    proposals = [
        sub("router", Route(target="api", weights={"v1": 1.0, "v2": 1.0})),
        sub("scaler-low", scale("db", 3), priority=1),
        sub("scaler-high", scale("api", 4), priority=5),
        sub("healer", Remediate(target="web", operation="restart")),
        sub("pipelive", ReconfigurePipeline(target="llm", layers_per_stage=(1, 3))),
        sub("placer", Place(target="db", node="n2", replica="db-0")),
        sub("limiter", Isolate(target="api", mechanism="rate_limit", limit=100.0), priority=2),
    ]
    plan = plan_of(proposals, view)
    assert all(d.status is APPLIED for d in plan.decisions)
    assert [d.controller for d in plan.to_apply] == [
        "placer",  # infrastructure
        "pipelive",  # model serving follows the placement of its nodes
        "healer",  # platform: remediation first
        "scaler-high",
        "scaler-low",
        "limiter",  # application, higher priority first
        "router",
    ]
    layers = [d.action.layer for d in plan.to_apply]
    assert layers[0] is Layer.INFRASTRUCTURE and layers[-1] is Layer.APPLICATION


def test_plan_is_deterministic_and_independent_of_arrival_order():
    view = make_view(
        {"api": 3, "db": 2, "web": 1}, placements={"api-0": "n1"}, routing={"api": {"api-0": 1.0}}
    )
    proposals = [
        sub("a", scale("api", 5), priority=1),
        sub("b", scale("api", 2), priority=1),
        sub("c", scale("db", 30)),
        sub("d", Remediate(target="db", operation="drain", replica="db-1")),
        sub("e", Place(target="api", node="n2", replica="api-0")),
        sub("f", Route(target="api", weights={"api-0": 1.0, "api-1": 1.0})),
        sub("g", scale("web", 4), taxonomy=LEARNING),
        *(sub(f"r{i}", Remediate(target=f"svc{i}", operation="restart")) for i in range(6)),
    ]
    config = GuardrailConfig(max_disruptive_per_window=4)
    reference = plan_of(proposals, view, config)
    assert summary(plan_of(proposals, view, config)) == summary(reference)
    expected = sorted(summary(reference))
    rng = random.Random(11)
    for _ in range(10):
        shuffled = proposals[:]
        rng.shuffle(shuffled)
        plan = plan_of(shuffled, view, config)
        assert sorted(summary(plan)) == expected
        assert [d.action for d in plan.to_apply] == [d.action for d in reference.to_apply]


# --- guardrails ------------------------------------------------------------------------------------------


def test_no_op_proposals_are_rejected_as_no_change():
    view = make_view(
        {"api": 3},
        placements={"api-0": "n1"},
        routing={"api": {"v1": 3.0, "v2": 1.0}},
        pipelines={"llm": ((2, 2), ("n1", "n2"))},
    )
    plan = plan_of(
        [
            sub("a", scale("api", 3)),
            sub("b", Place(target="api", node="n1", replica="api-0")),
            sub("c", Route(target="api", weights={"v1": 0.75, "v2": 0.25, "v3": 0.0})),
            sub("d", ReconfigurePipeline(target="llm", layers_per_stage=(2, 2))),
            sub("e", Remediate(target="api", operation="restart")),  # an event, never a no-op
        ],
        view,
    )
    assert [d.status for d in plan.decisions] == [REJECTED] * 4 + [APPLIED]
    assert all(d.why.startswith("no change") for d in plan.decisions[:4])


def test_cooldown_refuses_changes_to_the_same_knob_until_it_expires():
    guardrails = Guardrails(GuardrailConfig(cooldown_seconds=30.0))
    coordinator = Coordinator(guardrails)
    first = coordinator.plan([sub("a", scale("api", 5))], make_view({"api": 3}, now=NOW))
    coordinator.settle(first.to_apply[0], Outcome(True, "api now has 5 replicas"), NOW)

    during = coordinator.plan(
        [sub("a", scale("api", 7)), sub("a", Isolate(target="api", mechanism="rate_limit", limit=5.0))],
        make_view({"api": 5}, now=NOW + 10),
    )
    assert during.decisions[0].status is REJECTED
    assert "cool-down" in during.decisions[0].why and "20.0 s" in during.decisions[0].why
    assert during.decisions[1].status is APPLIED  # another knob of the same target is free
    assert guardrails.cooldown_remaining("api", "scale", NOW + 10) == pytest.approx(20.0)

    after = coordinator.plan([sub("a", scale("api", 7))], make_view({"api": 5}, now=NOW + 30))
    assert after.decisions[0].status is APPLIED


def test_a_failed_action_does_not_start_a_cooldown_or_use_the_rate_limit():
    guardrails = Guardrails(GuardrailConfig(max_disruptive_per_window=1))
    coordinator = Coordinator(guardrails)
    first = coordinator.plan(
        [sub("a", scale("api", 5)), sub("b", Remediate(target="db", operation="restart"))],
        make_view({"api": 3}),
    )
    settled = [coordinator.settle(d, Outcome(False, "refused"), NOW) for d in first.to_apply]
    assert [d.status for d in settled] == [FAILED, FAILED]
    assert settled[0].outcome == "refused"
    again = coordinator.plan(
        [sub("a", scale("api", 5)), sub("b", Remediate(target="db", operation="restart"))],
        make_view({"api": 3}, now=NOW + 1),
    )
    assert [d.status for d in again.decisions] == [APPLIED, APPLIED]


def test_settle_records_the_outcome_and_only_accepts_decisions_to_apply():
    coordinator = Coordinator()
    plan = coordinator.plan(
        [sub("a", scale("api", 5)), sub("b", scale("api", 5), mode=Mode.SHADOW)], make_view({"api": 3})
    )
    done = coordinator.settle(plan.to_apply[0], Outcome(True, "api now has 5 replicas"), NOW)
    assert done.status is APPLIED and done.outcome == "api now has 5 replicas"
    assert coordinator.guardrails.last_change("api", "scale") == NOW
    with pytest.raises(ValueError, match="only decisions"):
        coordinator.settle(plan.decisions[1], Outcome(True), NOW)
    with pytest.raises(ValueError, match="only applied"):
        coordinator.guardrails.record_applied(plan.decisions[1], NOW)


def test_oversized_scale_is_clamped_to_the_max_step_keeping_reason_and_evidence():
    view = make_view({"api": 3, "db": 40})
    up = scale("api", 30, reason="p99 over SLO", evidence={"p99_ms": 812.0})
    plan = plan_of([sub("a", up), sub("b", scale("db", 2))], view, GuardrailConfig(max_scale_step=10))
    grown, shrunk = plan.decisions
    assert grown.status is APPLIED and grown.action.replicas == 13
    assert grown.action.reason == "p99 over SLO" and dict(grown.action.evidence) == {"p99_ms": 812.0}
    assert "clamped from 30 to 13" in grown.why and "step limited to 10" in grown.why
    assert shrunk.status is APPLIED and shrunk.action.replicas == 30
    # The ratio limit: at most half the current count per decision (at least one).
    plan = plan_of(
        [sub("a", scale("api", 30)), sub("b", scale("db", 2))],
        view,
        GuardrailConfig(max_scale_step=None, max_scale_step_ratio=0.5),
    )
    assert [d.action.replicas for d in plan.decisions] == [4, 20]


def test_scale_is_clamped_to_the_service_bounds():
    view = make_view({"api": 3, "db": 8, "web": 4}, bounds={"api": (2, 6), "db": (2, 8), "web": (5, 9)})
    plan = plan_of(
        [
            sub("a", scale("api", 9)),
            sub("a", scale("db", 12)),
            sub("a", scale("web", 2)),
            sub("b", scale("new", 3)),
        ],
        view,
    )
    api, db, web, new = plan.decisions
    assert api.status is APPLIED and api.action.replicas == 6 and "max_replicas 6" in api.why
    assert db.status is REJECTED and db.why.startswith("no change") and "max_replicas 8" in db.why
    # web is below its minimum already: a scale down is clamped to the minimum, which would be a scale up.
    assert web.status is REJECTED and "outside its bounds" in web.why
    assert new.status is APPLIED and new.action.replicas == 3  # unknown services have no bounds or step


def test_replica_budget_is_shared_by_the_round_clamping_then_rejecting():
    view = make_view({"api": 3, "db": 3, "web": 3})
    config = GuardrailConfig(max_total_replicas=14)
    plan = plan_of(
        [
            sub("a", scale("api", 6), priority=2),
            sub("a", scale("db", 6), priority=1),
            sub("a", scale("web", 5)),
        ],
        view,
        config,
    )
    api, db, web = plan.decisions
    assert api.status is APPLIED and api.action.replicas == 6
    assert db.status is APPLIED and db.action.replicas == 5 and "replica budget" in db.why
    assert web.status is REJECTED and "replica budget" in web.why
    # Shrinking is always allowed, even over budget; and it frees room for growth in the same round.
    plan = plan_of(
        [sub("a", scale("api", 1), priority=1), sub("a", scale("db", 5))],
        make_view({"api": 10, "db": 3}),
        config,
    )
    assert [d.status for d in plan.decisions] == [APPLIED, APPLIED]
    assert plan.decisions[1].action.replicas == 5


def test_cpu_budget_counts_replicas_times_cpu_request():
    view = make_view({"api": 4, "db": 2}, cpu=0.5)  # 3 cores in use
    plan = plan_of(
        [sub("a", scale("api", 10), priority=1), sub("a", scale("db", 4))],
        view,
        GuardrailConfig(max_total_cpu=5.0),
    )
    api, db = plan.decisions
    assert api.status is APPLIED and api.action.replicas == 8 and "cpu budget" in api.why
    assert db.status is REJECTED and "cpu budget" in db.why


def test_disruptive_rate_limit_counts_the_round_and_slides_with_time():
    guardrails = Guardrails(GuardrailConfig(max_disruptive_per_window=3, disruptive_window_seconds=60.0))
    coordinator = Coordinator(guardrails)
    restarts = [sub("healer", Remediate(target=f"svc{i}", operation="restart")) for i in range(5)]
    plan = coordinator.plan([*restarts, sub("a", scale("api", 4))], make_view({"api": 3}, now=NOW))
    statuses = [d.status for d in plan.decisions]
    assert statuses == [APPLIED] * 3 + [REJECTED] * 2 + [APPLIED]  # Scale is not disruptive
    assert all("rate limit" in d.why for d in plan.decisions[3:5])
    for decision in plan.to_apply:
        coordinator.settle(decision, Outcome(True), NOW)
    assert guardrails.disruptive_recent(NOW) == 3

    later = [sub("healer", Remediate(target=f"svc{i}", operation="restart")) for i in range(5, 7)]
    assert [d.status for d in coordinator.plan(later, make_view(now=NOW + 59)).decisions] == [REJECTED] * 2
    slid = coordinator.plan(later, make_view(now=NOW + 60))
    assert [d.status for d in slid.decisions] == [APPLIED, APPLIED]
    assert guardrails.disruptive_recent(NOW + 60) == 0


def test_shadow_mode_is_recorded_never_applied_and_never_displaces_an_active_proposal():
    guardrails = Guardrails(GuardrailConfig(max_disruptive_per_window=1))
    view = make_view({"api": 3})
    plan = plan_of(
        [
            sub("shadowy", scale("api", 50), priority=100, mode=Mode.SHADOW),
            sub("active", scale("api", 4)),
            sub("shadowy", Remediate(target="db", operation="restart"), mode=Mode.SHADOW),
            sub("active", Remediate(target="web", operation="restart")),
        ],
        view,
        guardrails=guardrails,
    )
    shadow_scale, active_scale, shadow_restart, active_restart = plan.decisions
    assert shadow_scale.status is SHADOW and shadow_restart.status is SHADOW
    assert "controller shadowy runs in shadow mode" in shadow_scale.why
    assert active_scale.status is APPLIED and active_restart.status is APPLIED  # no budget used by shadows
    assert shadow_scale.action.replicas == 50  # the learner's own proposal is kept, unclamped
    assert "would have won a conflict with active" in shadow_scale.why
    assert "would have been rejected: rate limit" in shadow_restart.why
    assert plan.to_apply == (active_restart, active_scale)


def test_shadow_why_previews_clamps_and_guardrails():
    view = make_view({"api": 3, "db": 2, "cache": 2})
    plan = plan_of(
        [
            sub("s", scale("api", 40), mode=Mode.SHADOW),
            sub("s", scale("cache", 2), mode=Mode.SHADOW),
            sub("s", scale("web", 2), mode=Mode.SHADOW),
            sub("s", scale("db", 9), mode=Mode.SHADOW, priority=-1),
            sub("active", scale("db", 3)),
        ],
        view,
    )
    assert "would have been applied, clamped from 40 to 13" in plan.decisions[0].why
    assert "would have been rejected: no change" in plan.decisions[1].why
    assert plan.decisions[2].why.endswith("would have been applied")
    assert "would have been superseded by active" in plan.decisions[3].why


def test_learning_controller_is_shadowed_until_an_operator_promotes_it():
    view = make_view({"api": 3})
    plan = plan_of([sub("rl", scale("api", 5), taxonomy=LEARNING)], view)
    assert plan.decisions[0].status is SHADOW
    assert "learning controller not yet promoted by an operator" in plan.decisions[0].why
    assert plan.to_apply == ()

    hybrid = Taxonomy.of("centralized", "hybrid")
    plan = plan_of(
        [
            sub("rl", scale("api", 5), taxonomy=LEARNING, promoted=True),
            sub("mix", scale("db", 5), taxonomy=hybrid, promoted=True),
            sub("rl-shadow", scale("web", 5), taxonomy=LEARNING, promoted=True, mode=Mode.SHADOW),
        ],
        view,
    )
    assert [d.status for d in plan.decisions] == [APPLIED, APPLIED, SHADOW]


def test_a_promoted_controller_that_is_not_ready_stays_in_shadow():
    from dataclasses import replace

    view = make_view({"api": 3})
    not_ready = replace(sub("rl", scale("api", 5), taxonomy=LEARNING, promoted=True), ready=False)
    plan = plan_of([not_ready], view)
    assert plan.decisions[0].status is SHADOW
    assert "not ready to act" in plan.decisions[0].why
    assert plan.to_apply == ()


def test_disabled_controllers_proposals_are_rejected():
    plan = plan_of([sub("off", scale("api", 5), mode=Mode.DISABLED)], make_view({"api": 3}))
    assert plan.decisions[0].status is REJECTED and "disabled" in plan.decisions[0].why


def test_planning_never_changes_guardrail_state():
    guardrails = Guardrails(GuardrailConfig(max_disruptive_per_window=2))
    coordinator = Coordinator(guardrails)
    proposals = [
        sub("a", scale("api", 5)),
        *(sub("h", Remediate(target=f"s{i}", operation="restart")) for i in range(2)),
    ]
    for _ in range(3):
        plan = coordinator.plan(proposals, make_view({"api": 3}))
        assert [d.status for d in plan.decisions] == [APPLIED] * 3
    assert guardrails.last_change("api", "scale") is None
    assert guardrails.disruptive_recent(NOW) == 0


def test_guardrail_config_is_validated():
    GuardrailConfig(max_total_replicas=0, max_disruptive_per_window=0, max_scale_step=None)
    for bad in (
        {"cooldown_seconds": -1.0},
        {"max_scale_step": 0},
        {"max_scale_step": 2.5},
        {"max_total_replicas": -1},
        {"max_total_cpu": -0.5},
        {"max_disruptive_per_window": True},
        {"disruptive_window_seconds": 0.0},
    ):
        with pytest.raises(ValueError):
            GuardrailConfig(**bad)


# --- with an actuator ------------------------------------------------------------------------------------


def test_rounds_against_the_in_memory_actuator():
    async def run() -> None:
        actuator = InMemoryActuator(Inventory(services={"api": ServiceInventory("api", 2)}))
        actuator.fail_targets.add("db")
        coordinator = Coordinator(Guardrails(GuardrailConfig(cooldown_seconds=30.0, max_scale_step=4)))

        async def round_at(now: float, proposals: list[Submitted]) -> list:
            view = TelemetryView(1, now, EMPTY_GRAPH, await actuator.inventory())
            plan = coordinator.plan(proposals, view, now, 1)
            settled = {}
            for decision in plan.to_apply:
                settled[id(decision)] = coordinator.settle(
                    decision, await actuator.apply(decision.action), now
                )
            return [settled.get(id(decision), decision) for decision in plan.decisions]

        first = await round_at(NOW, [sub("a", scale("api", 20)), sub("a", scale("db", 3))])
        assert [d.status for d in first] == [APPLIED, FAILED]
        assert first[0].action.replicas == 6 and "now has 6 replicas" in first[0].outcome
        assert (await actuator.inventory()).replicas_of("api") == 6

        second = await round_at(NOW + 5, [sub("a", scale("api", 20)), sub("a", scale("db", 3))])
        assert second[0].status is REJECTED and "cool-down" in second[0].why
        assert second[1].status is FAILED  # the failure started no cool-down: it is tried again

        third = await round_at(NOW + 31, [sub("a", scale("api", 20))])
        assert third[0].status is APPLIED and third[0].action.replicas == 10

    asyncio.run(run())
