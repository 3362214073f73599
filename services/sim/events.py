"""Scenario events carried out on the simulator; each returns how to undo it when it has a duration."""

from __future__ import annotations

from collections.abc import Callable

from services.sim.cluster import DOWN, READY, Node, Version
from services.sim.engine import EVICTION_SECONDS, Simulator
from services.sim.scenario import Event

Undo = Callable[[], None]


def apply_event(sim: Simulator, event: Event) -> Undo | None:
    """Inject `event` now; returns its undo (for events with a duration) or None."""
    handler = _HANDLERS[event.kind]
    return handler(sim, event.parameters)


def _node(sim: Simulator, name: str) -> Node:
    try:
        return sim.nodes[name]
    except KeyError:
        raise ValueError(f"no node named {name!r}; the cluster has {sorted(sim.nodes)}") from None


def _load(sim: Simulator, parameters) -> Undo:
    factor = float(parameters["factor"])
    sim.rate_factor *= factor

    def undo() -> None:
        sim.rate_factor /= factor

    return undo


def _mix(sim: Simulator, parameters) -> Undo:
    previous = sim.mix_weights
    sim.set_mix(dict(parameters["weights"]))
    return lambda: sim.set_mix(previous)


def _network(sim: Simulator, parameters) -> Undo:
    first, second = sorted(_node(sim, name).name for name in parameters["nodes"])
    pair = (first, second)
    sim.links[pair] = (float(parameters.get("delay_ms", 0.0)), float(parameters.get("loss", 0.0)))
    return lambda: sim.links.pop(pair, None)


def _interference(sim: Simulator, parameters) -> Undo:
    node = _node(sim, parameters["node"])
    node.slowdown = float(parameters["slowdown"])

    def undo() -> None:
        node.slowdown = 1.0

    return undo


def _crash(sim: Simulator, parameters) -> None:
    state = sim.services[parameters["service"]]
    victims = [replica for replica in state.replicas if replica.state == READY]
    for replica in victims[: int(parameters.get("replicas", 1))]:
        sim.crash(replica, float(parameters.get("recover_seconds", 30.0)))


def _node_down(sim: Simulator, parameters) -> None:
    node = _node(sim, parameters["node"])
    node.up = False
    lost = [replica for state in sim.services.values() for replica in state.replicas if replica.node is node]
    for replica in lost:
        sim.crash(replica, None)

    def evict(_: object) -> None:
        # The platform gives up on the node: its replicas are recreated wherever there is room.
        for replica in lost:
            if replica.node is node and replica.state == DOWN:
                sim.replace(replica, exclude=node)

    sim.at(sim.now + EVICTION_SECONDS, evict)


def _rollout(sim: Simulator, parameters) -> None:
    state = sim.services[parameters["service"]]
    name = str(parameters["version"])
    version = Version(name, float(parameters.get("error_rate", 0.0)), float(parameters.get("slowdown", 1.0)))
    state.previous_versions.append(state.version.name)
    state.versions[name] = version
    state.version = version
    for replica in list(state.replicas):
        if replica.state != DOWN:
            sim.replace(replica, version=version)


def _node_leave(sim: Simulator, parameters) -> None:
    node = _node(sim, parameters["node"])
    node.cordoned = True
    for state in sim.services.values():
        for replica in list(state.replicas):
            if replica.node is node:
                sim.replace(replica, exclude=node)


def _node_join(sim: Simulator, parameters) -> None:
    name = str(parameters["node"])
    node = sim.nodes.get(name)
    if node is None:
        sim.nodes[name] = Node(
            name, float(parameters.get("cpu", 16.0)), float(parameters.get("memory_mb", 65536.0))
        )
    else:
        node.up, node.cordoned = True, False


_HANDLERS: dict[str, Callable[[Simulator, dict], Undo | None]] = {
    "load": _load,
    "mix": _mix,
    "network": _network,
    "interference": _interference,
    "crash": _crash,
    "node_down": _node_down,
    "rollout": _rollout,
    "node_leave": _node_leave,
    "node_join": _node_join,
}
