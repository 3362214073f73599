"""`SimActuator`: the control plane's actions carried out on the simulator, and its inventory.

Every action type has a simulated effect with a cost, as on a real platform: scaling up starts replicas
that are ready only after their start-up time (and stay pending when no node has room); scaling down drains;
placing a replica on a node starts a new one there and retires the old one once the new one is ready (the
migration cost); routing weights split traffic by version or replica; isolation sheds calls at the caller
(concurrency limit, open circuit breaker, rate limit); restart and rollback replace replicas (rollback to the
named or previous version); drain moves a replica off its node, or every replica off a node when the target
is a node. Serving pipelines do not exist here, so `ReconfigurePipeline` is refused with the reason.
"""

from __future__ import annotations

from controlplane import (
    Action,
    Actuator,
    Inventory,
    Isolate,
    IsolationMechanism,
    NodeInventory,
    Outcome,
    Place,
    ReconfigurePipeline,
    Remediate,
    RemediationOperation,
    Route,
    Scale,
    ServiceInventory,
)
from services.sim.cluster import DOWN, DRAINING, READY, Replica, ServiceState
from services.sim.engine import Simulator


class SimActuator(Actuator):
    """Applies actions to a `Simulator` at its current simulated time."""

    name = "simulator"
    description = "the discrete-event simulator (controlplane bench); made in code, not from a config file"

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        self.applied = 0

    async def inventory(self) -> Inventory:
        sim = self.sim
        services, placements, owners, routing = {}, {}, {}, {}
        for name, state in sim.services.items():
            live = _live(state)
            spec = state.spec
            services[name] = ServiceInventory(
                name=name,
                replicas=len(live),
                ready_replicas=sum(1 for replica in live if replica.state == READY),
                cpu_request=spec.cpu,
                memory_request_mb=spec.memory_mb,
                min_replicas=spec.min_replicas,
                max_replicas=spec.max_replicas,
                version=state.version.name,
            )
            for replica in state.replicas:  # surge replicas of a rollout run somewhere too
                if replica.state != DOWN or replica.recover_at is not None:
                    owners[replica.name] = name
                    if replica.node is not None:
                        placements[replica.name] = replica.node.name
            if state.weights:
                routing[name] = dict(state.weights)
        nodes = {
            node.name: NodeInventory(node.name, node.cpu, node.memory_mb, ready=node.up and not node.cordoned)
            for node in sim.nodes.values()
        }
        return Inventory(
            services=services, nodes=nodes, placements=placements, replica_services=owners, routing=routing
        )

    async def apply(self, action: Action) -> Outcome:
        outcome = await super().apply(action)
        self.applied += outcome.ok
        return outcome

    def _state(self, action: Action) -> ServiceState | Outcome:
        state = self.sim.services.get(action.target)
        if state is None:
            return Outcome(False, f"no service named {action.target!r} in the simulation")
        return state

    async def apply_scale(self, action: Scale) -> Outcome:
        state = self._state(action)
        return state if isinstance(state, Outcome) else self._scale(state, action.replicas)

    async def apply_place(self, action: Place) -> Outcome:
        state = self._state(action)
        return state if isinstance(state, Outcome) else self._place(state, action)

    async def apply_route(self, action: Route) -> Outcome:
        state = self._state(action)
        if isinstance(state, Outcome):
            return state
        state.weights = {key: float(value) for key, value in action.weights.items()}
        self.sim._routes_changed(state)
        return Outcome(True, f"{action.target} routing set to {state.weights}")

    async def apply_isolate(self, action: Isolate) -> Outcome:
        state = self._state(action)
        return state if isinstance(state, Outcome) else _isolate(state, action, self.sim.now)

    async def apply_remediate(self, action: Remediate) -> Outcome:
        node_drain = action.operation is RemediationOperation.DRAIN and not action.replica
        if node_drain and action.target in self.sim.nodes:
            return self._drain_node(action.target)
        state = self._state(action)
        return state if isinstance(state, Outcome) else self._remediate(state, action)

    async def apply_reconfigure_pipeline(self, action: ReconfigurePipeline) -> Outcome:
        return self.refuse(action, "the simulator runs no serving pipelines")

    def _scale(self, state: ServiceState, replicas: int) -> Outcome:
        live = _live(state)
        name = state.spec.name
        if replicas > len(live):
            added = [self.sim.add_replica(name) for _ in range(replicas - len(live))]
            pending = sum(1 for replica in added if replica.node is None)
            note = f" ({pending} pending: no node has room)" if pending else ""
            return Outcome(True, f"{name}: starting {len(added)} replica(s), {replicas} in all{note}")
        # Scale in: starting replicas first, then the newest ready ones; a replica going takes the one
        # being started to replace it (a rollout in progress) with it.
        victims = sorted(live, key=lambda replica: (replica.state == READY, -_number(replica)))
        for replica in victims[: len(live) - replicas]:
            for surge in [other for other in state.replicas if other.replaces is replica]:
                self.sim.remove_replica(surge)
            self.sim.retire(replica)
        return Outcome(True, f"{name}: {replicas} replica(s), {len(live) - replicas} draining")

    def _place(self, state: ServiceState, action: Place) -> Outcome:
        node = self.sim.nodes.get(action.node)
        if node is None:
            return Outcome(False, f"no node named {action.node!r}")
        if not node.fits(state.spec):
            return Outcome(
                False, f"{action.node} has no room for a {state.spec.name} replica (or is not ready)"
            )
        if not action.replica:
            replica = self.sim.add_replica(state.spec.name, node=node)
            return Outcome(True, f"{replica.name} starting on {node.name}")
        old = _replica(state, action.replica)
        if old is None:
            return Outcome(False, f"{state.spec.name} has no replica {action.replica!r}")
        if old.node is node:
            return Outcome(True, f"{old.name} already runs on {node.name}")
        new = self.sim.replace(old, node=node)
        return Outcome(
            True, f"{old.name} moving to {node.name} as {new.name} (old one serves until it is ready)"
        )

    def _remediate(self, state: ServiceState, action: Remediate) -> Outcome:
        name = state.spec.name
        if action.operation is RemediationOperation.ROLLBACK:
            target = action.version or (state.previous_versions[-1] if state.previous_versions else "")
            version = state.versions.get(target)
            if version is None:
                return Outcome(False, f"{name} has no version {target!r} to roll back to")
            if version is state.version:
                return Outcome(True, f"{name} already runs {target}")
            state.previous_versions.append(state.version.name)
            state.version = version
            for replica in _live(state):
                self.sim.replace(replica, version=version)
            return Outcome(True, f"{name} rolling back to {target}")
        chosen = [_replica(state, action.replica)] if action.replica else _live(state)
        if None in chosen:
            return Outcome(False, f"{name} has no replica {action.replica!r}")
        if action.operation is RemediationOperation.RESTART:
            for replica in chosen:
                self.sim.replace(replica)
            return Outcome(True, f"{name}: restarting {len(chosen)} replica(s)")
        for replica in chosen:  # drain: move off its node
            self.sim.replace(replica, exclude=replica.node)
        return Outcome(True, f"{name}: moving {len(chosen)} replica(s) off their node(s)")

    def _drain_node(self, node_name: str) -> Outcome:
        node = self.sim.nodes[node_name]
        node.cordoned = True
        moved = 0
        for state in self.sim.services.values():
            for replica in _live(state):
                if replica.node is node:
                    self.sim.replace(replica, exclude=node)
                    moved += 1
        return Outcome(True, f"{node_name} cordoned; {moved} replica(s) moving off it")


def _live(state: ServiceState) -> list[Replica]:
    """Replicas that count: starting, ready, pending, or crashed and about to be restarted. A replica
    started to replace another (rollout, restart, migration) is the surge of a rolling update, as
    Kubernetes' maxSurge: the service's replica count does not include it until it has taken over."""
    return [
        replica
        for replica in state.replicas
        if replica.state != DRAINING
        and replica.replaces is None
        and (replica.state != DOWN or replica.recover_at is not None)
    ]


def _replica(state: ServiceState, name: str) -> Replica | None:
    return next((replica for replica in state.replicas if replica.name == name), None)


def _number(replica: Replica) -> int:
    return int(replica.name.rsplit("-", 1)[-1])


def _isolate(state: ServiceState, action: Isolate, now: float) -> Outcome:
    name = state.spec.name
    mechanism = action.mechanism
    if mechanism is IsolationMechanism.CIRCUIT_BREAKER:
        state.breaker_open = action.enabled
        return Outcome(True, f"{name}: circuit breaker {'open' if action.enabled else 'closed'}")
    if mechanism is IsolationMechanism.CONCURRENCY_LIMIT:
        state.concurrency_limit = max(1, int(action.limit)) if action.enabled and action.limit else None
        return Outcome(True, f"{name}: concurrency limit {state.concurrency_limit or 'off'}")
    state.rate_limit = action.limit if action.enabled and action.limit else None
    state.tokens, state.tokens_at = state.rate_limit or 0.0, now
    return Outcome(True, f"{name}: rate limit {state.rate_limit or 'off'}")
