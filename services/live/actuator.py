"""`LocalProcessActuator`: the control plane's actions carried out on real processes on this host.

It owns the router process and one process per replica (see `services.live.replica`) and keeps, per
service, the replicas with their state, the version running, the versions known (for rollback), the
routing weights and the isolation settings. Every change of what the router should know is pushed to it
as the service's whole table (level-triggered and idempotent, numbered so a late push cannot undo a newer
one), the way a control plane pushes endpoints to a mesh.

* `Scale` starts or stops replica processes. A started replica is STARTING until its port answers
  `GET /healthz`; that real start-up time is measured (`startup_seconds`) and only then does the router
  send it traffic. Scaling down stops crashed replicas first, then starting ones, then the newest ready
  ones; a stopped replica leaves the router's table first and gets SIGTERM, so it finishes what it holds.
* `Route` sets the weights in the router (destinations: replica ids, versions or `<service>-<version>`).
* `Isolate` sets a concurrency limit, opens or closes a circuit breaker, or sets a rate limit, in the router.
* `Remediate`: `restart` replaces one replica (or every replica) with a fresh process, of `version` when
  given; `rollback` replaces every replica with `version` (or the version before the current one);
  `drain` takes one replica out of the router and replaces it (there is no other node to drain to, so
  draining a whole service is refused). Replacements surge: the old replica serves until the new is ready.
* `Place` is accepted as a no-op: this host is the one node (`local`), every replica already runs there.
* `ReconfigurePipeline` is refused: there is no serving pipeline here.

The inventory reports every service with its replicas (starting, ready and crashed; crashed ones keep
their slot, as a crash-looping pod does) and ready replicas, the single node with this machine's cores and
memory, every replica placed on it, and the weights set by `Route`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import subprocess
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import ClientError, ClientSession, ClientTimeout, TCPConnector

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
    free_port,
)
from services.demo.app import AppSpec, load_app
from services.live import processes
from services.live.costs import total_memory_mb
from services.live.protocol import BEHAVIOUR_PATH, INITIAL_VERSION, ROUTES_PREFIX
from services.live.routing import Isolation

log = logging.getLogger(__name__)
A = TypeVar("A", bound=Action)

NODE = "local"
# How often the actuator looks for replica processes that died (what a kubelet's liveness check does).
SUPERVISE_SECONDS = 0.2
READY_TIMEOUT_SECONDS = 60.0
# Replicas started at once when the application comes up (see `start_replicas`).
STARTING_AT_ONCE = 2 * (os.cpu_count() or 1)


class ReplicaState(StrEnum):
    STARTING = "starting"
    READY = "ready"
    CRASHED = "crashed"


@dataclass(frozen=True, slots=True)
class Version:
    """How one version of a service behaves beyond its spec (a bad rollout fails and slows requests)."""

    name: str
    error_rate: float = 0.0
    slowdown: float = 1.0


@dataclass(slots=True)
class LiveReplica:
    id: str
    service: str
    version: str
    port: int
    process: subprocess.Popen
    state: ReplicaState = ReplicaState.STARTING
    replaces: str | None = None  # a replica this one takes over from once ready
    startup_seconds: float | None = None


@dataclass(slots=True)
class ServiceRuntime:
    """One service at run time."""

    name: str
    version: str = INITIAL_VERSION
    versions: dict[str, Version] = field(default_factory=lambda: {INITIAL_VERSION: Version(INITIAL_VERSION)})
    previous_versions: list[str] = field(default_factory=list)  # oldest first
    replicas: list[LiveReplica] = field(default_factory=list)
    weights: dict[str, float] = field(default_factory=dict)
    isolation: Isolation = field(default_factory=Isolation)
    next_index: int = 0

    def replica(self, replica_id: str) -> LiveReplica | None:
        return next((replica for replica in self.replicas if replica.id == replica_id), None)


class LocalProcessActuator(Actuator):
    """Replica processes and the router on 127.0.0.1, changed by the control plane's actions."""

    name = "local-processes"
    description = "the demo application's replicas as processes on this host (controlplane bench --live)"

    def __init__(
        self,
        app_path: str | Path,
        otlp_endpoint: str,
        *,
        seed: int = 0,
        time_scale: float = 1.0,
        workdir: str | Path | None = None,
        spec_startup: bool = True,
    ) -> None:
        self.app_path = Path(app_path)
        self.app: AppSpec = load_app(self.app_path)
        self.otlp_endpoint = otlp_endpoint
        self.seed = seed
        self.time_scale = time_scale
        self.workdir = Path(workdir) if workdir is not None else None
        # Hold a started replica unready until the spec's startup_seconds have passed (if its process is
        # up sooner), so that scaling takes as long as the application description says.
        self.spec_startup = spec_startup
        self.services = {name: ServiceRuntime(name) for name in self.app.services}
        self.router_port = 0
        self.router_process: subprocess.Popen | None = None
        self.startup_seconds: list[float] = []  # start to ready, the spec's start-up time included
        self.process_start_seconds: list[float] = []  # start to the first HTTP answer: the process alone
        self.applied_actions = 0
        self._retiring: set[asyncio.Task] = set()
        self._waiting: set[asyncio.Task] = set()
        self._generation = 0
        self._session: ClientSession | None = None
        self._supervisor: asyncio.Task | None = None
        self._node = NodeInventory(NODE, float(os.cpu_count() or 1), total_memory_mb(), {"host": "127.0.0.1"})

    # --- life cycle ---------------------------------------------------------------------------------------

    @property
    def router_address(self) -> str:
        return f"127.0.0.1:{self.router_port}"

    async def start(self) -> None:
        """Start the router (and wait until it answers); replicas come with `start_replicas` or `Scale`."""
        self._session = ClientSession(connector=TCPConnector(limit=0), timeout=ClientTimeout(total=5.0))
        self.router_port = free_port()
        self.router_process = processes.start_module(
            "services.live.router",
            ["--port", str(self.router_port), "--seed", str(self.seed)],
            self._log_path("router"),
        )
        took = await processes.wait_until_healthy(self.router_process, self.router_port, self._session)
        if took is None:
            raise RuntimeError(f"the router did not start (see {self._log_path('router')})")
        self._supervisor = asyncio.create_task(self._supervise())

    async def start_replicas(self, timeout_seconds: float = READY_TIMEOUT_SECONDS) -> None:
        """Start every service's initial replicas (`replicas` in the spec) and wait until all are ready."""
        # A few at a time: thirty interpreters importing at once on two cores take as long in total but
        # each one looks fifteen seconds slow to start, which is not what a replica's start-up costs.
        pending = [
            runtime
            for runtime in self.services.values()
            for _ in range(self.app.services[runtime.name].replicas)
        ]
        deadline = time.monotonic() + timeout_seconds
        while pending and time.monotonic() < deadline:
            while pending and len(self._waiting) < STARTING_AT_ONCE:
                runtime = pending.pop(0)
                self._spawn(runtime, runtime.version, warm=True)
            await asyncio.wait(set(self._waiting), return_when=asyncio.FIRST_COMPLETED)
        await self.wait_ready(max(0.0, deadline - time.monotonic()))

    async def wait_ready(self, timeout_seconds: float = READY_TIMEOUT_SECONDS) -> None:
        """Wait until no replica is starting; RuntimeError naming the ones that did not come up."""
        deadline = time.monotonic() + timeout_seconds
        while self._waiting and time.monotonic() < deadline:
            await asyncio.wait(set(self._waiting), timeout=max(0.0, deadline - time.monotonic()))
        broken = [
            replica.id
            for runtime in self.services.values()
            for replica in runtime.replicas
            if replica.state is not ReplicaState.READY
        ]
        if self._waiting or broken:
            raise RuntimeError(f"replicas not ready after {timeout_seconds:g} s: {broken}")

    async def stop(self) -> None:
        """Stop every process (replicas, then the router) and wait until they are gone."""
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        for task in list(self._waiting):
            task.cancel()
        everyone = [replica.process for runtime in self.services.values() for replica in runtime.replicas]
        for runtime in self.services.values():
            runtime.replicas.clear()
        await asyncio.gather(*(processes.stop(process, grace_seconds=2.0) for process in everyone))
        if self._retiring:
            await asyncio.gather(*self._retiring, return_exceptions=True)
        if self.router_process is not None:
            await processes.stop(self.router_process, grace_seconds=2.0)
        if self._session is not None:
            await self._session.close()

    async def __aenter__(self) -> LocalProcessActuator:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.stop()

    def _log_path(self, name: str) -> Path | None:
        return self.workdir / f"{name}.log" if self.workdir is not None else None

    # --- replicas -----------------------------------------------------------------------------------------

    def _spawn(
        self,
        runtime: ServiceRuntime,
        version: str,
        replica_id: str = "",
        replaces: str = "",
        warm: bool = False,
    ) -> LiveReplica:
        """Start one replica process; `warm`: ready as soon as it answers (the application's start)."""
        if not replica_id:
            replica_id = f"{runtime.name}-{runtime.next_index}"
            runtime.next_index += 1
        behaviour = runtime.versions.get(version) or Version(version)
        port = free_port()
        startup = self.app.services[runtime.name].startup_seconds if self.spec_startup and not warm else 0.0
        # One moment for both clocks: the replica's readiness deadline and the measured start-up time.
        launched = time.monotonic()
        arguments = [
            "--ready-at", repr(time.time() + startup),
            "--app", str(self.app_path),
            "--service", runtime.name,
            "--port", str(port),
            "--otlp", self.otlp_endpoint,
            "--router", self.router_address,
            "--replica-id", replica_id,
            "--version", version,
            "--seed", str(self.seed),
            "--time-scale", repr(self.time_scale),
            "--error-rate", repr(behaviour.error_rate),
            "--slowdown", repr(behaviour.slowdown),
        ]  # fmt: skip
        process = processes.start_module("services.live.replica", arguments, self._log_path(replica_id))
        replica = LiveReplica(replica_id, runtime.name, version, port, process, replaces=replaces or None)
        runtime.replicas.append(replica)
        task = asyncio.create_task(self._become_ready(runtime, replica, launched))
        self._waiting.add(task)
        task.add_done_callback(self._waiting.discard)
        return replica

    async def _become_ready(self, runtime: ServiceRuntime, replica: LiveReplica, launched: float) -> None:
        assert self._session is not None
        took = await processes.wait_until_healthy(
            replica.process, replica.port, self._session, READY_TIMEOUT_SECONDS + 60.0, started=launched
        )
        if replica not in runtime.replicas:
            return  # stopped while starting
        if took is None:
            log.warning("replica %s did not become ready", replica.id)
            if replica.replaces:  # a failed replacement leaves the old replica in place
                runtime.replicas.remove(replica)
                self._retire(replica)
            else:
                replica.state = ReplicaState.CRASHED
                processes.kill(replica.process)
            return
        replica.state = ReplicaState.READY
        replica.startup_seconds = took.ready_seconds
        self.startup_seconds.append(took.ready_seconds)
        self.process_start_seconds.append(took.answering_seconds)
        if replica.replaces:
            old = runtime.replica(replica.replaces)
            replica.replaces = None
            if old is not None:
                runtime.replicas.remove(old)
                self._retire(old)
        await self._push(runtime)

    def _retire(self, replica: LiveReplica) -> None:
        """Stop a replica that has already left the service's list (and so the router's table)."""
        task = asyncio.create_task(processes.stop(replica.process))
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def _supervise(self) -> None:
        while True:
            await asyncio.sleep(SUPERVISE_SECONDS)
            for runtime in self.services.values():
                died = [
                    replica
                    for replica in runtime.replicas
                    if replica.state is ReplicaState.READY and replica.process.poll() is not None
                ]
                for replica in died:
                    log.warning("replica %s exited (code %s)", replica.id, replica.process.returncode)
                    replica.state = ReplicaState.CRASHED
                if died:
                    await self._push(runtime)

    async def _push(self, runtime: ServiceRuntime) -> None:
        """Send the router this service's whole table (ready replicas, weights, isolation)."""
        assert self._session is not None
        self._generation += 1
        body = {
            "generation": self._generation,
            "endpoints": [
                {"replica": replica.id, "version": replica.version, "port": replica.port}
                for replica in runtime.replicas
                if replica.state is ReplicaState.READY
            ],
            "weights": runtime.weights,
            "isolation": runtime.isolation.to_dict(),
        }
        url = f"http://{self.router_address}{ROUTES_PREFIX}{runtime.name}"
        async with self._session.put(url, json=body) as reply:
            reply.raise_for_status()

    def _scale(self, runtime: ServiceRuntime, replicas: int) -> tuple[int, int]:
        """Start or stop replicas until the service has `replicas`; (started, stopped)."""
        current = [replica for replica in runtime.replicas if not replica.replaces]
        if replicas > len(current):
            for _ in range(replicas - len(current)):
                self._spawn(runtime, runtime.version)
            return replicas - len(current), 0
        order = {ReplicaState.CRASHED: 0, ReplicaState.STARTING: 1, ReplicaState.READY: 2}
        victims = sorted(current, key=lambda replica: (order[replica.state], -current.index(replica)))
        victims = victims[: len(current) - replicas]
        for replica in victims:
            runtime.replicas.remove(replica)
            for replacement in [r for r in runtime.replicas if r.replaces == replica.id]:
                runtime.replicas.remove(replacement)  # nothing left to take over from
                self._retire(replacement)
            self._retire(replica)
        return 0, len(victims)

    def _replace(self, runtime: ServiceRuntime, targets: list[LiveReplica], version: str) -> int:
        """Start a replacement of `version` for each target; a target goes once its replacement is ready."""
        for replica in targets:
            if replica.state is ReplicaState.CRASHED:
                runtime.replicas.remove(replica)  # nothing to keep serving meanwhile
                processes.forget_if_exited(replica.process)
                self._spawn(runtime, version)
            else:
                self._spawn(runtime, version, replaces=replica.id)
        return len(targets)

    # --- what scenario events do (not actions: the platform and the world, not the control plane) --------

    async def crash(self, service: str, count: int = 1) -> list[str]:
        """SIGKILL up to `count` ready replicas of `service`; they stay as crashed until recovered."""
        runtime = self._runtime(service)
        ready = [replica.id for replica in runtime.replicas if replica.state is ReplicaState.READY]
        return await self.crash_replicas(service, ready[:count])

    async def crash_replicas(self, service: str, replica_ids: list[str]) -> list[str]:
        """SIGKILL the given ready replicas of `service`; returns the ids killed."""
        runtime = self._runtime(service)
        victims = [
            replica
            for replica in runtime.replicas
            if replica.id in replica_ids and replica.state is ReplicaState.READY
        ]
        for replica in victims:
            replica.state = ReplicaState.CRASHED
            processes.kill(replica.process)
        if victims:
            await self._push(runtime)
        for replica in victims:
            await asyncio.to_thread(replica.process.wait)
            processes.forget_if_exited(replica.process)
        return [replica.id for replica in victims]

    def recover(self, service: str, replica_ids: list[str]) -> list[str]:
        """Restart crashed replicas in place (same id and version), as the platform's restart policy does."""
        runtime = self._runtime(service)
        restarted = []
        for replica_id in replica_ids:
            replica = runtime.replica(replica_id)
            if replica is not None and replica.state is ReplicaState.CRASHED:
                runtime.replicas.remove(replica)
                self._spawn(runtime, replica.version, replica_id=replica.id)
                restarted.append(replica_id)
        return restarted

    def rollout(self, service: str, version: str, error_rate: float = 0.0, slowdown: float = 1.0) -> int:
        """Roll `version` (with its error rate and slowdown) out to every replica of `service`."""
        runtime = self._runtime(service)
        runtime.versions[version] = Version(version, error_rate, slowdown)
        return self._switch_version(runtime, version)

    def _switch_version(self, runtime: ServiceRuntime, version: str) -> int:
        if version != runtime.version:
            runtime.previous_versions.append(runtime.version)
            runtime.version = version
        return self._replace(runtime, [r for r in runtime.replicas if not r.replaces], version)

    async def set_interference(self, replica_ids: list[str], slowdown: float) -> list[str]:
        """Slow the given replicas' own time by `slowdown` (1 ends it): a noisy neighbour on their node."""
        assert self._session is not None
        slowed = []
        for runtime in self.services.values():
            for replica in runtime.replicas:
                if replica.id in replica_ids and replica.state is ReplicaState.READY:
                    url = f"http://127.0.0.1:{replica.port}{BEHAVIOUR_PATH}"
                    with contextlib.suppress(TimeoutError, ClientError):
                        async with self._session.post(url, json={"slowdown": slowdown}) as reply:
                            if reply.status == 200:
                                slowed.append(replica.id)
        return slowed

    def replicas(self, service: str) -> list[LiveReplica]:
        """The service's replicas (starting, ready, crashed), oldest first."""
        return list(self._runtime(service).replicas)

    def counts(self) -> tuple[int, int]:
        """(replicas, ready replicas) over every service, as the cost column counts them."""
        replicas = ready = 0
        for runtime in self.services.values():
            replicas += len(runtime.replicas)
            ready += sum(1 for replica in runtime.replicas if replica.state is ReplicaState.READY)
        return replicas, ready

    def pids(self) -> list[int]:
        """This actuator's running processes: the router and every replica (not those being stopped)."""
        owned = [replica.process for runtime in self.services.values() for replica in runtime.replicas]
        if self.router_process is not None:
            owned.append(self.router_process)
        return [process.pid for process in owned if process.poll() is None]

    def _runtime(self, service: str) -> ServiceRuntime:
        try:
            return self.services[service]
        except KeyError:
            raise KeyError(f"no service named {service!r}") from None

    # --- the Actuator interface ---------------------------------------------------------------------------

    async def inventory(self) -> Inventory:
        services, placements, owners, routing = {}, {}, {}, {}
        for name, runtime in self.services.items():
            spec = self.app.services[name]
            live = [replica for replica in runtime.replicas if not replica.replaces]
            services[name] = ServiceInventory(
                name=name,
                replicas=len(live),
                ready_replicas=sum(1 for replica in live if replica.state is ReplicaState.READY),
                cpu_request=spec.cpu,
                memory_request_mb=spec.memory_mb,
                min_replicas=spec.min_replicas,
                max_replicas=spec.max_replicas,
                version=runtime.version,
            )
            for replica in runtime.replicas:
                owners[replica.id] = name
                placements[replica.id] = NODE
            if runtime.weights:
                routing[name] = dict(runtime.weights)
        return Inventory(
            services=services,
            nodes={NODE: self._node},
            placements=placements,
            replica_services=owners,
            routing=routing,
        )

    async def apply_reconfigure_pipeline(self, action: ReconfigurePipeline) -> Outcome:
        return self.refuse(
            action,
            "the local-process actuator runs microservice replicas; it has no serving pipeline to"
            " reconfigure (the PipeLive service's actuator does that)",
        )

    async def apply_place(self, action: Place) -> Outcome:
        # Accepted, not refused: on one host the placement asked for is the only one there is.
        return Outcome(
            True,
            f"single host: {action.replica or 'every replica of ' + action.target} runs on node"
            f" {NODE!r}; placement onto {action.node!r} is a no-op here",
        )

    async def apply_scale(self, action: Scale) -> Outcome:
        return await self._on_service(action, self._scale_to)

    async def apply_route(self, action: Route) -> Outcome:
        return await self._on_service(action, self._route)

    async def apply_isolate(self, action: Isolate) -> Outcome:
        return await self._on_service(action, self._isolate)

    async def apply_remediate(self, action: Remediate) -> Outcome:
        return await self._on_service(action, self._remediate)

    async def _on_service(
        self, action: A, change: Callable[[ServiceRuntime, A], Awaitable[Outcome]]
    ) -> Outcome:
        """Apply `change` to the action's service (refused when there is none); count what was applied."""
        runtime = self.services.get(action.target)
        if runtime is None:
            return Outcome(False, f"no service named {action.target!r} in {self.app.name}")
        outcome = await change(runtime, action)
        if outcome.ok:
            self.applied_actions += 1
        return outcome

    async def _scale_to(self, runtime: ServiceRuntime, action: Scale) -> Outcome:
        before = len([replica for replica in runtime.replicas if not replica.replaces])
        started, stopped = self._scale(runtime, action.replicas)
        await self._push(runtime)
        counts = f"{started} starting, {stopped} stopping"
        return Outcome(True, f"{runtime.name}: {before} -> {action.replicas} replicas ({counts})")

    async def _route(self, runtime: ServiceRuntime, action: Route) -> Outcome:
        runtime.weights = dict(action.weights)
        await self._push(runtime)
        return Outcome(True, f"{runtime.name}: router weights {dict(action.weights)}")

    async def _isolate(self, runtime: ServiceRuntime, action: Isolate) -> Outcome:
        isolation = runtime.isolation
        if action.mechanism is IsolationMechanism.CONCURRENCY_LIMIT:
            isolation.concurrency_limit = int(action.limit) if action.enabled else None
            what = (
                f"concurrency limit {isolation.concurrency_limit}"
                if action.enabled
                else "no concurrency limit"
            )
        elif action.mechanism is IsolationMechanism.CIRCUIT_BREAKER:
            isolation.breaker_open = action.enabled
            what = "circuit breaker open" if action.enabled else "circuit breaker closed"
        else:
            isolation.rate_limit = action.limit if action.enabled else None
            what = f"rate limit {action.limit:g}/s" if action.enabled else "no rate limit"
        await self._push(runtime)
        return Outcome(True, f"{runtime.name}: {what} in the router")

    async def _remediate(self, runtime: ServiceRuntime, action: Remediate) -> Outcome:
        name = runtime.name
        operation = action.operation
        current = [replica for replica in runtime.replicas if not replica.replaces]
        if action.replica:
            target = runtime.replica(action.replica)
            if target is None or target.replaces:
                return Outcome(False, f"{name} has no replica {action.replica!r}")
            targets = [target]
        else:
            targets = current
        if operation is RemediationOperation.ROLLBACK:
            version = action.version or (runtime.previous_versions[-1] if runtime.previous_versions else "")
            if not version:
                return Outcome(False, f"{name}: no earlier version to roll back to")
            runtime.versions.setdefault(version, Version(version))
            count = self._switch_version(runtime, version)
            await self._push(runtime)
            return Outcome(True, f"{name}: rolling back to {version} ({count} replicas replaced)")
        if operation is RemediationOperation.DRAIN and not action.replica:
            return Outcome(False, f"{name}: one node only, nowhere to drain the whole service to")
        if operation is RemediationOperation.RESTART and action.version:
            runtime.versions.setdefault(action.version, Version(action.version))
            if not action.replica:
                count = self._switch_version(runtime, action.version)
                await self._push(runtime)
                return Outcome(True, f"{name}: restarting {count} replicas with {action.version}")
        version = action.version or (targets[0].version if action.replica else runtime.version)
        if operation is RemediationOperation.DRAIN:
            # Out of the router now; the replacement starts on the same (only) node.
            runtime.replicas.remove(targets[0])
            self._retire(targets[0])
            self._spawn(runtime, version)
            await self._push(runtime)
            return Outcome(True, f"{name}: drained {targets[0].id}; a replacement starts on {NODE!r}")
        count = self._replace(runtime, targets, version)
        await self._push(runtime)
        return Outcome(True, f"{name}: restarting {count} replica(s) ({', '.join(r.id for r in targets)})")
