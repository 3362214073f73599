"""The node-local actuator: replica processes started and stopped on this node, routing weights and limits.

A replica is an operating-system process running the configured command (with `{service}`, `{replica}`
and `{version}` filled in, and the same values in CONTROLPLANE_* environment variables). Replicas are the
agent's children and die with it (PR_SET_PDEATHSIG on Linux): an agent that is killed leaves no unmanaged
processes behind, and its last will tells the plane that everything on the node is gone. Routing weights
and isolation limits are kept for the node's proxy to read (`routing`, `limits`).
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from controlplane import (
    Action,
    Actuator,
    Inventory,
    Isolate,
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

# A replica that does nothing but run: enough to manage processes without a real service.
IDLE_REPLICA = (sys.executable, "-c", "import signal; signal.pause()")
STOP_GRACE_SECONDS = 2.0
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True, slots=True)
class NodeSpec:
    """What the node offers."""

    name: str
    cpu_capacity: float = 4.0
    memory_capacity_mb: float = 8192.0
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass
class Replica:
    name: str
    service: str
    version: str
    process: subprocess.Popen

    @property
    def running(self) -> bool:
        return self.process.poll() is None


def _die_with_parent() -> None:  # runs in the child between fork and exec
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class ProcessActuator(Actuator):
    """Runs this node's replicas as processes; applies actions addressed to the node."""

    name = "node-processes"

    def __init__(
        self,
        node: NodeSpec,
        command: Sequence[str] = IDLE_REPLICA,
        cpu_request: float = 0.1,
        memory_request_mb: float = 64.0,
    ) -> None:
        self.node = node
        self.command = tuple(command)
        self.cpu_request = cpu_request
        self.memory_request_mb = memory_request_mb
        self.replicas: dict[str, Replica] = {}
        self.versions: dict[str, str] = {}
        self.routing: dict[str, dict[str, float]] = {}
        self.limits: dict[tuple[str, str], Isolate] = {}
        self.starts = 0
        self._lock = asyncio.Lock()

    # --- inventory ----------------------------------------------------------------------------------

    async def inventory(self) -> Inventory:
        services: dict[str, ServiceInventory] = {}
        for service in sorted({replica.service for replica in self.replicas.values()}):
            mine = [replica for replica in self.replicas.values() if replica.service == service]
            services[service] = ServiceInventory(
                service,
                replicas=len(mine),
                ready_replicas=sum(replica.running for replica in mine),
                cpu_request=self.cpu_request,
                memory_request_mb=self.memory_request_mb,
                version=self.versions.get(service, ""),
            )
        node = self.node
        return Inventory(
            services=services,
            nodes={
                node.name: NodeInventory(node.name, node.cpu_capacity, node.memory_capacity_mb, node.labels)
            },
            placements={name: node.name for name in self.replicas},
            replica_services={name: replica.service for name, replica in self.replicas.items()},
            routing={service: dict(weights) for service, weights in self.routing.items()},
        ).frozen()

    def exited_replicas(self) -> set[str]:
        return {name for name, replica in self.replicas.items() if not replica.running}

    # --- actions ------------------------------------------------------------------------------------

    async def apply(self, action: Action) -> Outcome:
        # One action at a time: replicas are started and stopped in order.
        async with self._lock:
            try:
                return await super().apply(action)
            except OSError as error:
                return Outcome(False, f"{self.node.name}: cannot start or stop a replica: {error}")

    async def apply_scale(self, action: Scale) -> Outcome:
        return await self._scale(action.target, action.replicas)

    async def apply_place(self, action: Place) -> Outcome:
        node = self.node.name
        if action.node != node:
            return Outcome(False, f"{node} cannot place {action.target} on another node ({action.node})")
        replica = self.replicas.get(action.replica) if action.replica else None
        if replica is not None and replica.running:
            return Outcome(True, f"{replica.name} already runs on {node}")
        started = self._start(action.target, action.replica or self._new_name(action.target))
        return Outcome(True, f"{started.name} of {action.target} started on {node}")

    async def apply_route(self, action: Route) -> Outcome:
        self.routing[action.target] = dict(action.weights)
        return Outcome(True, f"{action.target} routing set on {self.node.name}")

    async def apply_isolate(self, action: Isolate) -> Outcome:
        self.limits[action.target, action.mechanism.value] = action
        state = f"{action.limit:g}" if action.enabled else "off"
        return Outcome(True, f"{action.mechanism.value} of {action.target} on {self.node.name}: {state}")

    async def apply_remediate(self, action: Remediate) -> Outcome:
        return await self._remediate(action)

    async def apply_reconfigure_pipeline(self, action: ReconfigurePipeline) -> Outcome:
        return self.refuse(action, f"{self.node.name} runs no serving pipeline ({action.target})")

    async def _scale(self, service: str, wanted: int) -> Outcome:
        mine = [replica for replica in self.replicas.values() if replica.service == service]
        # Exited replicas go first when scaling in; they count as replicas until then.
        mine.sort(key=lambda replica: (replica.running, replica.name))
        while len(mine) > wanted:
            await self._stop(mine.pop(0))
        while len(mine) < wanted:
            mine.append(self._start(service, self._new_name(service)))
        return Outcome(True, f"{service} has {wanted} replicas on {self.node.name}")

    async def _remediate(self, action: Remediate) -> Outcome:
        service = action.target
        if action.replica:
            replica = self.replicas.get(action.replica)
            if replica is None or replica.service != service:
                return Outcome(False, f"{action.replica} of {service} does not run on {self.node.name}")
            chosen = [replica]
        else:
            chosen = [replica for replica in self.replicas.values() if replica.service == service]
        if action.operation is RemediationOperation.ROLLBACK:
            if not action.version:
                return Outcome(False, "rollback needs a version")
            self.versions[service] = action.version
        for replica in chosen:
            await self._stop(replica)
            if action.operation is not RemediationOperation.DRAIN:
                self._start(service, replica.name)
        names = ", ".join(replica.name for replica in chosen) or "no replicas"
        return Outcome(True, f"{action.operation.value} of {service} on {self.node.name}: {names}")

    def _new_name(self, service: str) -> str:
        index = 0
        while f"{service}-{self.node.name}-{index}" in self.replicas:
            index += 1
        return f"{service}-{self.node.name}-{index}"

    def _start(self, service: str, name: str) -> Replica:
        version = self.versions.get(service, "")
        values = {"service": service, "replica": name, "version": version}
        command = [part.format(**values) for part in self.command]
        env = {
            **os.environ,
            "CONTROLPLANE_SERVICE": service,
            "CONTROLPLANE_REPLICA": name,
            "CONTROLPLANE_VERSION": version,
            "CONTROLPLANE_NODE": self.node.name,
        }
        process = subprocess.Popen(
            command,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,  # noqa: PLW1509
        )
        replica = self.replicas[name] = Replica(name, service, version, process)
        self.starts += 1
        return replica

    async def _stop(self, replica: Replica) -> None:
        self.replicas.pop(replica.name, None)
        process = replica.process
        if process.poll() is None:
            process.terminate()
            try:
                await asyncio.to_thread(process.wait, STOP_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
                await asyncio.to_thread(process.wait)

    async def stop(self) -> None:
        """Stop every replica (the agent is shutting down)."""
        async with self._lock:
            for replica in list(self.replicas.values()):
                await self._stop(replica)
