"""Scenario events on the live processes: what one host can reproduce, and how.

* `load` (live): the load generator's rate is multiplied by `factor` (divided back when it ends).
* `mix` (live): the load generator draws request types with the new weights.
* `crash` (live): SIGKILL of `replicas` ready replicas; the platform restarts them in place after
  `recover_seconds` (30 s by default, as in the simulator).
* `rollout` (live): every replica is replaced by a process of `version`, which fails `error_rate` of its
  requests and is `slowdown` times slower.
* `interference` (partly): the replicas the scenario's node would hold are slowed (own time x `slowdown`);
  the CPU they would compete for is not really taken from them.
* `node_down` (partly): the replicas the node would hold are killed, and restarted after the event's
  duration (or 60 s, the simulator's eviction time).
* `network` (not reproduced): one host, every call is on loopback; there is no link between nodes to slow.
* `node_leave`, `node_join` (not reproduced): one host, no capacity comes or goes, placement is a no-op.

"The replicas a node would hold": the live run has one node, so scenario nodes are mapped onto replicas:
every replica, in the order (service, replica id), is assigned to the scenario's nodes round robin, the
way a spreading scheduler would place them. The mapping is made when the event fires.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from services.demo.scenario import Event
from services.live.actuator import LocalProcessActuator, ReplicaState
from services.live.loadgen import LoadGenerator

Undo = Callable[[], Awaitable[object]]

DEFAULT_RECOVER_SECONDS = 30.0  # the simulator's default for a crash
EVICTION_SECONDS = 60.0  # the simulator's: replicas of a dead node come back after this
REPRODUCED = frozenset({"load", "mix", "crash", "rollout", "interference", "node_down"})


@dataclass(frozen=True, slots=True)
class Applied:
    """What one event did live: a description, and how and when to undo it (None: nothing to undo)."""

    detail: str
    reproduced: bool = True
    undo: Undo | None = None
    undo_after_seconds: float | None = None


def replicas_on_node(actuator: LocalProcessActuator, nodes: list[str], node: str) -> list[str]:
    """The ready replicas a scenario node stands for (round robin over (service, replica id))."""
    if node not in nodes:
        raise ValueError(f"no node named {node!r}; the scenario's cluster has {nodes}")
    ready = sorted(
        (replica.service, replica.id)
        for service in actuator.services
        for replica in actuator.replicas(service)
        if replica.state is ReplicaState.READY
    )
    index = nodes.index(node)
    return [replica_id for position, (_, replica_id) in enumerate(ready) if position % len(nodes) == index]


async def apply_event(
    event: Event, actuator: LocalProcessActuator, load: LoadGenerator, nodes: list[str]
) -> Applied:
    """Inject `event` now on the live processes (see the module docstring for each kind)."""
    parameters = event.parameters
    kind = event.kind
    if kind == "load":
        factor = float(parameters["factor"])
        load.rate_factor *= factor

        async def end_load() -> None:
            load.rate_factor /= factor

        return Applied(f"request rate x{factor:g}", undo=end_load, undo_after_seconds=event.duration)
    if kind == "mix":
        previous = load.mix
        load.set_mix(dict(parameters["weights"]))

        async def end_mix() -> None:
            load.set_mix(previous)

        return Applied(f"mix {dict(parameters['weights'])}", undo=end_mix, undo_after_seconds=event.duration)
    if kind == "crash":
        service = str(parameters["service"])
        killed = await actuator.crash(service, int(parameters.get("replicas", 1)))
        recover_seconds = float(parameters.get("recover_seconds", DEFAULT_RECOVER_SECONDS))

        async def restart() -> None:
            actuator.recover(service, killed)

        return Applied(f"killed {killed}", undo=restart, undo_after_seconds=recover_seconds)
    if kind == "rollout":
        service, version = str(parameters["service"]), str(parameters["version"])
        error_rate = float(parameters.get("error_rate", 0.0))
        slowdown = float(parameters.get("slowdown", 1.0))
        count = actuator.rollout(service, version, error_rate, slowdown)
        return Applied(
            f"{service}: {count} replicas replaced by {version} (errors {error_rate:g}, x{slowdown:g})"
        )
    if kind == "interference":
        slowdown = float(parameters["slowdown"])
        victims = replicas_on_node(actuator, nodes, str(parameters["node"]))
        slowed = await actuator.set_interference(victims, slowdown)

        async def end_interference() -> None:
            await actuator.set_interference(slowed, 1.0)

        return Applied(
            f"{len(slowed)} replicas standing for {parameters['node']} slowed x{slowdown:g}: {slowed}",
            undo=end_interference,
            undo_after_seconds=event.duration,
        )
    if kind == "node_down":
        victims = replicas_on_node(actuator, nodes, str(parameters["node"]))
        killed: dict[str, list[str]] = {}
        for service in actuator.services:
            ids = [replica.id for replica in actuator.replicas(service) if replica.id in victims]
            if ids:
                killed[service] = await actuator.crash_replicas(service, ids)

        async def bring_back() -> None:
            for service, ids in killed.items():
                actuator.recover(service, ids)

        after = event.duration if event.duration is not None else EVICTION_SECONDS
        return Applied(
            f"killed the replicas standing for {parameters['node']}: {killed}",
            undo=bring_back,
            undo_after_seconds=after,
        )
    return Applied(f"{kind}: not reproduced on one host (see services/live/events.py)", reproduced=False)
