"""Scenario events carried out on the simulators (the application's and the serving pipeline's); each returns
how to undo it when it has a duration. A new kind of event is declared in `services.demo.scenario`
(`EVENT_PARAMETERS`) and carried out here."""

from __future__ import annotations

from collections.abc import Callable

from services.demo.scenario import Event
from services.demo.serving import GIB, DeviceSpec
from services.sim.cluster import DOWN, READY, Node, Version
from services.sim.engine import EVICTION_SECONDS, Simulator
from services.sim.pipeline import PipelineSim

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


def apply_pipeline_event(sim: PipelineSim, event: Event) -> Undo | None:
    """Inject a pipeline scenario's event now; returns its undo (for events with a duration) or None."""
    parameters = event.parameters
    if event.kind == "load":
        factor = float(parameters["factor"])
        sim.rate_factor *= factor

        def undo_load() -> None:
            sim.rate_factor /= factor

        return undo_load
    if event.kind == "mix":
        previous = sim.mix_weights
        sim.set_mix(dict(parameters["weights"]))
        return lambda: sim.set_mix(previous)
    if event.kind == "device_budget":
        device = str(parameters["device"])
        before = sim.device(device).budget_bytes
        sim.set_budget(device, int(float(parameters["budget_gib"]) * GIB))
        return lambda: sim.set_budget(device, before)
    if event.kind == "device_join":
        name = str(parameters["device"])
        sim.add_device(
            DeviceSpec(
                name,
                int(float(parameters["budget_gib"]) * GIB),
                float(parameters.get("prefill_speed", 1.0)),
                float(parameters.get("decode_speed", 1.0)),
            )
        )
        return lambda: sim.remove_device(name)
    if event.kind == "device_leave":
        name = str(parameters["device"])
        sim.remove_device(name)

        def undo_leave() -> None:
            sim.device(name).ready = True

        return undo_leave
    raise ValueError(f"a pipeline scenario cannot inject a {event.kind} event")
