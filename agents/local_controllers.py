"""Controllers meant to run inside a node agent (decentralized control), registered like any plugin.

`crash-restarter` reacts on the node, within a tick, to replicas that exited: it restarts the service's
replicas there. It only acts where the plane's bounds allow `remediate` on the node.
"""

from __future__ import annotations

from controlplane import (
    Action,
    ActionKind,
    Controller,
    ControlLocus,
    Dynamics,
    Objective,
    Remediate,
    RemediationOperation,
    Strategy,
    Taxonomy,
    Telemetry,
    TelemetryView,
)


class CrashRestarter(Controller):
    """Restarts a service on this node when some of its replicas are no longer running."""

    name = "crash-restarter"
    description = "node-local: restart a service whose replicas exited, without waiting for the central plane"
    taxonomy = Taxonomy.of(
        ControlLocus.DECENTRALIZED,
        Strategy.RULE,
        dynamics=[Dynamics.FAILURE],
        objectives=[Objective.AVAILABILITY],
        telemetry=[Telemetry.EVENTS],
        actions=[ActionKind.REMEDIATION],
    )
    period_seconds = 1.0
    time_budget_seconds = 1.0

    async def decide(self, view: TelemetryView) -> list[Action]:
        proposals: list[Action] = []
        for service in view.inventory.services.values():
            ready = service.ready_replicas
            if ready is not None and ready < service.replicas:
                proposals.append(
                    Remediate(
                        target=service.name,
                        operation=RemediationOperation.RESTART,
                        reason=f"{service.replicas - ready} of {service.replicas} replicas of {service.name} "
                        "exited",
                        evidence={"replicas": service.replicas, "ready_replicas": ready},
                    )
                )
        return proposals
