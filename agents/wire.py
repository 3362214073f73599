"""Protobuf payloads (protos/controlplane/v1/agent.proto) to and from the control plane's own types.

Every decoder raises `MalformedPayload` with a message saying what is wrong, so that a receiver can count
and log a bad message and carry on; nothing here touches the network.
"""

from __future__ import annotations

from typing import TypeVar

from google.protobuf.message import DecodeError, Message

from controlplane import (
    Action,
    ActionEvidence,
    Decision,
    DecisionStatus,
    Isolate,
    Place,
    ReconfigurePipeline,
    Remediate,
    Route,
    Scale,
    Taxonomy,
)
from protos.controlplane.v1 import agent_pb2 as apb
from protos.controlplane.v1 import controlplane_pb2 as pb

M = TypeVar("M", bound=Message)


class MalformedPayload(ValueError):
    """A message that is not a valid payload of the kind its topic says."""


class NotOwned(MalformedPayload):
    """A payload naming another node than the one whose topic it came on."""


def check_owner(topic_node: str, payload_node: str) -> None:
    """NotOwned unless the payload names the node whose topic carried it."""
    if payload_node != topic_node:
        raise NotOwned(f"payload names node {payload_node!r} but came on node {topic_node!r}'s topic")


def decode(kind: type[M], payload: bytes) -> M:
    """Parse `payload` as a `kind` message; MalformedPayload if it is not one."""
    message = kind()
    try:
        message.ParseFromString(payload)
    except (DecodeError, RuntimeError) as error:
        raise MalformedPayload(f"not a {kind.DESCRIPTOR.name}: {error}") from None
    return message


def evidence_pb(evidence: ActionEvidence) -> dict[str, apb.EvidenceValue]:
    values = {}
    for key, value in evidence.items():
        if isinstance(value, bool):
            values[key] = apb.EvidenceValue(flag=value)
        elif isinstance(value, int) and abs(value) < 2**63:
            values[key] = apb.EvidenceValue(integer=value)
        elif isinstance(value, int | float):
            values[key] = apb.EvidenceValue(number=float(value))
        else:
            values[key] = apb.EvidenceValue(text=str(value))
    return values


def _evidence(values: dict[str, apb.EvidenceValue]) -> dict[str, float | int | str | bool]:
    evidence: dict[str, float | int | str | bool] = {}
    for key, value in values.items():
        which = value.WhichOneof("value")
        evidence[key] = getattr(value, which) if which else ""
    return evidence


def action_pb(action: Action) -> apb.ActionSpec:
    """The wire form of an action."""
    spec = apb.ActionSpec(target=action.target, reason=action.reason, evidence=evidence_pb(action.evidence))
    if isinstance(action, Scale):
        spec.scale.replicas = action.replicas
    elif isinstance(action, Place):
        spec.place.CopyFrom(apb.PlaceSettings(node=action.node, replica=action.replica))
    elif isinstance(action, Route):
        spec.route.weights.update({str(key): float(value) for key, value in action.weights.items()})
    elif isinstance(action, Isolate):
        spec.isolate.CopyFrom(
            apb.IsolateSettings(mechanism=action.mechanism.value, limit=action.limit, enabled=action.enabled)
        )
    elif isinstance(action, Remediate):
        spec.remediate.CopyFrom(
            apb.RemediateSettings(
                operation=action.operation.value, replica=action.replica, version=action.version
            )
        )
    elif isinstance(action, ReconfigurePipeline):
        spec.reconfigure_pipeline.layers_per_stage.extend(action.layers_per_stage)
        spec.reconfigure_pipeline.devices.extend(action.devices)
    else:
        raise ValueError(f"no wire form for action {action.name!r}")
    return spec


def action_from_pb(spec: apb.ActionSpec) -> Action:
    """The action a spec describes; MalformedPayload if it names none or its settings are invalid."""
    which = spec.WhichOneof("settings")
    common = {"target": spec.target, "reason": spec.reason, "evidence": _evidence(dict(spec.evidence))}
    try:
        if which == "scale":
            return Scale(replicas=spec.scale.replicas, **common)
        if which == "place":
            return Place(node=spec.place.node, replica=spec.place.replica, **common)
        if which == "route":
            return Route(weights=dict(spec.route.weights), **common)
        if which == "isolate":
            settings = spec.isolate
            return Isolate(
                mechanism=settings.mechanism, limit=settings.limit, enabled=settings.enabled, **common
            )
        if which == "remediate":
            settings = spec.remediate
            return Remediate(
                operation=settings.operation, replica=settings.replica, version=settings.version, **common
            )
        if which == "reconfigure_pipeline":
            settings = spec.reconfigure_pipeline
            return ReconfigurePipeline(
                layers_per_stage=tuple(settings.layers_per_stage), devices=tuple(settings.devices), **common
            )
    except (TypeError, ValueError) as error:
        raise MalformedPayload(f"invalid {which} action: {error}") from None
    raise MalformedPayload("the action names no settings (scale, place, route, ...)")


def taxonomy_from_pb(info: pb.TaxonomyInfo) -> Taxonomy:
    try:
        return Taxonomy.of(
            info.locus,  # type: ignore[arg-type]
            info.strategy,  # type: ignore[arg-type]
            info.dynamics,  # type: ignore[arg-type]
            info.evidence,  # type: ignore[arg-type]
            info.objectives,  # type: ignore[arg-type]
            info.telemetry,  # type: ignore[arg-type]
            info.actions,  # type: ignore[arg-type]
        )
    except ValueError as error:
        raise MalformedPayload(f"invalid taxonomy: {error}") from None


def local_decision_pb(decision: Decision) -> apb.LocalDecision:
    return apb.LocalDecision(
        local_id=decision.id,
        controller=decision.controller,
        taxonomy=pb.TaxonomyInfo(**decision.taxonomy.as_dict()),
        action=action_pb(decision.action),
        status=decision.status.value,
        why=decision.why,
        outcome=decision.outcome,
        created_at_unix=decision.created_at,
        tick=decision.tick,
    )


def decision_from_local(node: str, local: apb.LocalDecision) -> Decision:
    """The central record of a node's local decision: the controller is named `<node>/<controller>`."""
    try:
        status = DecisionStatus(local.status)
    except ValueError:
        raise MalformedPayload(f"unknown decision status {local.status!r}") from None
    if not local.controller:
        raise MalformedPayload("a local decision must name its controller")
    return Decision(
        controller=f"{node}/{local.controller}",
        taxonomy=taxonomy_from_pb(local.taxonomy),
        action=action_from_pb(local.action),
        status=status,
        why=f"decided on node {node} (local decision {local.local_id}): {local.why}",
        tick=local.tick,
        created_at=local.created_at_unix,
        outcome=local.outcome,
    )
