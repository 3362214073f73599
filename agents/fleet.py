"""Node state: what an agent announces (retained `NodeState`), and the plane's inventory built from it.

The agent turns its local actuator's `Inventory` into a `NodeState`; the plane's `Fleet` keeps the latest
state of every node and joins them into one `Inventory`: nodes (ready while the agent is online),
services (replicas summed over nodes, ready replicas only on online nodes), placements and routing. The
replicas of an offline node stay in the placements, on a node that is not ready, so that placement
controllers move them.
"""

from __future__ import annotations

from collections.abc import Iterable

from controlplane import (
    Inventory,
    NodeInventory,
    ServiceInventory,
)
from protos.controlplane.v1 import agent_pb2 as apb


def node_state_pb(
    node: str, session: str, inventory: Inventory, exited: Iterable[str], now: float
) -> apb.NodeState:
    """The online state of `node` from its local actuator's inventory (`exited`: replicas not running)."""
    own = inventory.nodes.get(node)
    state = apb.NodeState(
        node=node,
        online=True,
        session=session,
        cpu_capacity=own.cpu_capacity if own else 0.0,
        memory_capacity_mb=own.memory_capacity_mb if own else 0.0,
        labels=dict(own.labels) if own else {},
        sent_at_unix=now,
    )
    for service in inventory.services.values():
        state.services.add(
            name=service.name,
            replicas=service.replicas,
            ready_replicas=service.replicas if service.ready_replicas is None else service.ready_replicas,
            cpu_request=service.cpu_request,
            memory_request_mb=service.memory_request_mb,
            version=service.version,
        )
    stopped = set(exited)
    for replica, service in sorted(inventory.replica_services.items()):
        state.replicas.add(replica=replica, service=service, ready=replica not in stopped)
    for service, weights in inventory.routing.items():
        state.routing[service].weights.update(dict(weights))
    return state


class Fleet:
    """The latest retained state of every node, by node name."""

    def __init__(self) -> None:
        self.states: dict[str, apb.NodeState] = {}
        # Sessions that went offline never come back: a retained birth of one, redelivered after a broker
        # restart, is stale.
        self._ended: set[tuple[str, str]] = set()

    def update(self, state: apb.NodeState) -> bool:
        """Take a node's new state; False if it is stale (ignored): a last will left by an older session,
        or the birth of a session that has already ended."""
        known = self.states.get(state.node)
        if not state.online and known is not None and state.session != known.session:
            return False
        if state.online and (state.node, state.session) in self._ended:
            return False
        if not state.online:
            self._ended.add((state.node, state.session))
        if not state.online and known is not None:
            # The will carries no inventory: keep what the node ran, now on a node that is not ready.
            offline = apb.NodeState()
            offline.CopyFrom(known)
            offline.online = False
            state = offline
        self.states[state.node] = state
        return True

    def online(self, node: str) -> bool:
        state = self.states.get(node)
        return state is not None and state.online

    def hosts(self, service: str, online_only: bool = True) -> dict[str, int]:
        """Replicas of `service` per node (online nodes only, unless `online_only` is False)."""
        return {
            node: item.replicas
            for node, state in self.states.items()
            if state.online or not online_only
            for item in state.services
            if item.name == service and item.replicas > 0
        }

    def node_of_replica(self, replica: str) -> str:
        for node, state in self.states.items():
            if any(item.replica == replica for item in state.replicas):
                return node
        return ""

    def inventory(self) -> Inventory:
        nodes: dict[str, NodeInventory] = {}
        services: dict[str, ServiceInventory] = {}
        placements: dict[str, str] = {}
        replica_services: dict[str, str] = {}
        routing: dict[str, dict[str, float]] = {}
        for node, state in sorted(self.states.items()):
            nodes[node] = NodeInventory(
                node, state.cpu_capacity, state.memory_capacity_mb, dict(state.labels), ready=state.online
            )
            for item in state.services:
                known = services.get(item.name)
                ready = item.ready_replicas if state.online else 0
                services[item.name] = ServiceInventory(
                    item.name,
                    replicas=(known.replicas if known else 0) + item.replicas,
                    ready_replicas=((known.ready_replicas or 0) if known else 0) + ready,
                    cpu_request=max(item.cpu_request, known.cpu_request if known else 0.0),
                    memory_request_mb=max(item.memory_request_mb, known.memory_request_mb if known else 0.0),
                    version=item.version or (known.version if known else ""),
                )
            for replica in state.replicas:
                placements[replica.replica] = node
                replica_services[replica.replica] = replica.service
            for service, weights in state.routing.items():
                routing.setdefault(service, {}).update(dict(weights.weights))
        return Inventory(
            services=services,
            nodes=nodes,
            placements=placements,
            replica_services=replica_services,
            routing=routing,
        ).frozen()
