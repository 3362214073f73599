"""The discrete-event simulator: requests through replicas with queues, on nodes, over a network.

Simulated time, one seeded `random.Random`, one event heap ordered by (time, sequence): the same seed
gives the same run, bit for bit. A request enters at its type's entry service and walks the type's call
tree: at each service a replica is picked (routing weights, then the less busy of two random ready
replicas), the call crosses the network (one-way delay by node pair, plus a retransmission when a message
on a lossy link is lost), waits in the replica's FIFO queue for one of its `concurrency` workers, spends
its own log-normal service time (slowed by a noisy neighbour on the node or by a bad version), then makes
its calls stage by stage, in parallel within a stage, holding its worker throughout (thread-per-request
servers, as in DeathStarBench), and answers. Errors travel up: a call that fails fails its caller.

Every served visit becomes a real OTLP SERVER span (the parent is the caller's span; it starts when the
request reaches the replica, so time waiting for a worker counts, as in servers that accept and then queue),
collected for the runner to feed through `TelemetryModel.ingest`, the path production traffic takes.
Platform behaviour is modelled too, because the baselines rely on it: replicas take `startup_seconds` to
become ready, crashed replicas are restarted after a back-off, replicas of a dead node are rescheduled
after an eviction delay, and replicas that fit on no node stay pending until one has room.
"""

from __future__ import annotations

import bisect
import heapq
import random
from collections.abc import Callable
from heapq import heappush
from itertools import accumulate
from math import exp

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from services.demo.app import AppSpec, RequestType
from services.demo.results import RunRecorder
from services.demo.scenario import ClusterSpec
from services.sim.cluster import DOWN, DRAINING, READY, STARTING, Node, Replica, ServiceState, Version
from telemetry.sampling import threshold_for

MAX_QUEUE_PER_WORKER = 50  # a replica refuses (503) beyond this many waiting requests per worker
EVICTION_SECONDS = 60.0  # replicas of a dead node are rescheduled after this (Kubernetes: 300 s default)
KIND_SERVER = 2
KIND_CLIENT = 3
STATUS_ERROR = 2


class Visit:
    """One request's stay in one service (becomes one SERVER span)."""

    __slots__ = (
        "trace",
        "request",
        "plan",
        "arrival",
        "service",
        "parent",
        "span_id",
        "replica",
        "received",
        "start",
        "stage",
        "pending",
        "end",
        "error",
        "dead",
    )

    def __init__(
        self, trace: int, request: RequestType, arrival: float, service: ServiceState, parent: Visit | None
    ) -> None:
        self.trace = trace
        self.request = request
        self.plan = service.plans.get(request.name, ())
        self.arrival = arrival
        self.service = service
        self.parent = parent
        self.span_id = 0
        self.replica: Replica | None = None
        self.received = 0.0
        self.start = 0.0
        self.end = 0.0
        self.stage = 0
        self.pending = 0
        self.error = False
        self.dead = False


class Simulator:
    """The application on the cluster; `run_until` advances simulated time."""

    def __init__(
        self,
        app: AppSpec,
        cluster: ClusterSpec,
        seed: int,
        recorder: RunRecorder,
        base_unix: float = 1_700_000_000.0,
        trace_sampling: float = 1.0,
    ) -> None:
        self.app = app
        self.cluster = cluster
        self.rng = random.Random(seed)
        self.recorder = recorder
        self.base_unix = base_unix
        self.now = 0.0
        self._heap: list[tuple[float, int, Callable, object]] = []
        self._sequence = 0
        self.nodes = {spec.name: Node(spec.name, spec.cpu, spec.memory_mb) for spec in cluster.nodes}
        self.services: dict[str, ServiceState] = {}
        for name, spec in app.services.items():
            version = Version("v1")
            self.services[name] = ServiceState(spec, version, {"v1": version})
        self.links: dict[tuple[str, str], tuple[float, float]] = {}  # node pair -> (extra ms, loss)
        # One-way delays in seconds without link faults (as _delay computes them).
        self._local_delay = cluster.local_network_ms / 1000.0
        self._network_delay = cluster.network_ms / 1000.0
        self.rate_factor = 1.0
        self.set_mix({})
        # Per service and request type: its stages, each (callees always called, (callee, probability)
        # pairs called sometimes), resolved once so the hot path does no lookups by name.
        for request in app.requests:
            for caller, stages in request.calls.items():
                self.services[caller].plans[request.name] = tuple(
                    (
                        tuple(self.services[call.service] for call in stage if call.probability >= 1.0),
                        tuple(
                            (self.services[call.service], call.probability)
                            for call in stage
                            if call.probability < 1.0
                        ),
                    )
                    for stage in stages
                )
        self._next_trace = 1
        # Consistent probability sampling as an OpenTelemetry sampler does it: a trace is kept when its
        # 56-bit randomness (the trace id's low 7 bytes) reaches the threshold; kept spans carry `ot=th:`.
        # Unkept traces (trace 0 below) are simulated in full but export no spans.
        self.trace_sampling = trace_sampling
        threshold = threshold_for(trace_sampling)
        self._sampling_threshold = int(threshold.ljust(14, "0"), 16) if trace_sampling < 1.0 else 0
        self._trace_state = f"ot=th:{threshold}" if trace_sampling < 1.0 else ""
        self._next_span = 1
        self.spans: list[Visit] = []  # finished visits not yet exported
        # Calls that failed without a server span: (calling visit, callee, trace, time), not yet exported.
        self.failed_calls: list[tuple[Visit, str, int, float]] = []
        self.requests_started = 0
        self.pending: list[Replica] = []  # replicas that fit on no node yet
        for name, state in self.services.items():
            for _ in range(state.spec.replicas):
                replica = self.add_replica(name)
                if replica.node is not None:
                    replica.state, replica.ready_at = READY, 0.0
        for state in self.services.values():
            self._routes_changed(state)

    # --- the event loop -------------------------------------------------------------------------------

    def at(self, time: float, handler: Callable, argument: object = None) -> None:
        self._sequence += 1
        heappush(self._heap, (time, self._sequence, handler, argument))

    def run_until(self, end: float) -> None:
        heap, pop = self._heap, heapq.heappop
        while heap and heap[0][0] < end:
            time, _, handler, argument = pop(heap)
            self.now = time
            handler(argument)
        self.now = end

    # --- workload ---------------------------------------------------------------------------------------

    def set_mix(self, weights: dict[str, float]) -> None:
        """Request-type weights (empty: the application's own)."""
        for name in weights:
            self.app.request(name)  # unknown names fail here, not mid-run
        self.mix_weights = dict(weights)
        self._types = list(self.app.requests)
        self._cumulative = list(
            accumulate(
                weights.get(request.name, 0.0) if weights else request.weight for request in self._types
            )
        )

    def schedule_arrivals(self, start: float, rate: float) -> None:
        """Poisson arrivals over [start, start + 1) at `rate` requests per second (times the load factor)."""
        rate *= self.rate_factor
        if rate <= 0:
            return
        rng, total = self.rng, self._cumulative[-1]
        time = start + rng.expovariate(rate)
        end = start + 1.0
        while time < end:
            request = self._types[bisect.bisect_right(self._cumulative, rng.random() * total)]
            self.at(time, self._arrival, request)
            time += rng.expovariate(rate)

    def _arrival(self, request: RequestType) -> None:
        trace = self._next_trace
        self._next_trace += 1
        if self._sampling_threshold:
            randomness = self.rng.getrandbits(56)
            trace = (trace << 64 | randomness) if randomness >= self._sampling_threshold else 0
        self.requests_started += 1
        self._dispatch(trace, request, self.now, self.services[request.entry], None)

    # --- one call ---------------------------------------------------------------------------------------

    def _dispatch(
        self, trace: int, request: RequestType, arrival: float, state: ServiceState, parent: Visit | None
    ) -> None:
        # The hot path: one call per visit, so the common case of admit() is inlined.
        visit = Visit(trace, request, arrival, state, parent)
        visit.span_id = self._next_span
        self._next_span += 1
        now = self.now
        if state.breaker_open or state.concurrency_limit is not None or state.rate_limit is not None:
            replica = self._pick(state) if state.admit(now) else None
        else:
            replica = self._pick(state)
        if replica is None:  # shed by isolation, or no ready replica: the call fails at once
            visit.error = True
            self._failed_call(visit)
            self.at(now, self._answered, visit)
            return
        visit.replica = replica
        state.in_flight += 1
        delay = self._delay(parent.replica.node if parent is not None else None, replica.node)
        self._sequence += 1
        heappush(self._heap, (now + delay, self._sequence, self._arrive, visit))

    def _pick(self, state: ServiceState) -> Replica | None:
        groups = state.groups
        if not groups:
            return None
        if len(groups) == 1:
            candidates = groups[0][1]
        else:
            total = groups[-1][0]
            point = self.rng.random() * total
            candidates = groups[-1][1]
            for cumulative, replicas in groups:
                if point < cumulative:
                    candidates = replicas
                    break
        count = len(candidates)
        if count == 1:
            return candidates[0]
        random_ = self.rng.random
        index = int(random_() * count)
        other = int(random_() * (count - 1))
        first, second = candidates[index], candidates[other + (other >= index)]
        first_load = first.busy + len(first.queue)
        second_load = second.busy + len(second.queue)
        return first if first_load <= second_load else second

    def _delay(self, source: Node | None, target: Node | None) -> float:
        """One-way delay in seconds between two nodes (None: the client, next to the entry)."""
        if source is None or target is None or source is target:
            return self._local_delay
        if not self.links:
            return self._network_delay
        cluster = self.cluster
        delay = cluster.network_ms
        pair = (source.name, target.name) if source.name < target.name else (target.name, source.name)
        extra = self.links.get(pair)
        if extra is not None:
            delay += extra[0]
            if extra[1] and self.rng.random() < extra[1]:
                delay += cluster.retransmit_ms
        return delay / 1000.0

    def _arrive(self, visit: Visit) -> None:
        replica = visit.replica
        visit.received = self.now
        if replica.state != READY and replica.state != DRAINING:
            self._fail_unserved(visit)
        elif replica.busy < replica.concurrency:
            self._start(visit)
        elif len(replica.queue) >= MAX_QUEUE_PER_WORKER * replica.concurrency:
            self._fail_unserved(visit)
        else:
            replica.queue.append(visit)

    def _fail_unserved(self, visit: Visit) -> None:
        visit.service.in_flight -= 1
        visit.error = True
        visit.replica = None
        self._failed_call(visit)
        self._answered(visit)

    def _failed_call(self, visit: Visit) -> None:
        """A call that got no server span (refused, shed, reset): the caller's CLIENT span records it.

        Only failed calls get client spans (see `take_spans`): without them a dead service would simply
        vanish from the traces, while real instrumentation shows its callers' errors towards it.
        """
        if visit.parent is not None and visit.trace:
            self.failed_calls.append((visit.parent, visit.service.spec.name, visit.trace, self.now))

    def _start(self, visit: Visit) -> None:
        replica = visit.replica
        replica.busy += 1
        replica.active[visit] = None
        visit.start = self.now
        state = visit.service
        # Log-normal service time; gauss() is the cheaper of the standard library's normal samplers.
        seconds = (
            exp(state.mu + state.sigma * self.rng.gauss()) * replica.node.slowdown * replica.version.slowdown
        )
        self._sequence += 1
        # A visit that calls nobody (most of them) goes straight to _finish.
        after = self._next_stage if visit.plan else self._finish
        heappush(self._heap, (self.now + seconds / 1000.0, self._sequence, after, visit))

    def _next_stage(self, visit: Visit) -> None:
        if visit.dead:
            return
        stages = visit.plan
        while visit.stage < len(stages):
            always, sometimes = stages[visit.stage]
            visit.stage += 1
            if sometimes:
                random_ = self.rng.random
                chosen = list(always) + [state for state, probability in sometimes if random_() < probability]
            else:
                chosen = always
            if chosen:
                visit.pending = len(chosen)
                dispatch, trace, request, arrival = self._dispatch, visit.trace, visit.request, visit.arrival
                for state in chosen:
                    dispatch(trace, request, arrival, state, visit)
                return
        self._finish(visit)

    def _finish(self, visit: Visit) -> None:
        if visit.dead:  # its replica crashed meanwhile: _fail_held answered for it
            return
        replica, state = visit.replica, visit.service
        replica.busy -= 1
        replica.active.pop(visit, None)
        state.in_flight -= 1
        rng = self.rng
        if (replica.version.error_rate and rng.random() < replica.version.error_rate) or (
            state.spec.error_rate and rng.random() < state.spec.error_rate
        ):
            visit.error = True
        now = visit.end = self.now
        if visit.trace:
            self.spans.append(visit)
        if replica.queue or replica.state == DRAINING:
            self._serve_queue(replica)
        parent = visit.parent
        if parent is None:
            self._answered(visit)
            return
        delay = self._delay(replica.node, parent.replica.node)
        self._sequence += 1
        heappush(self._heap, (now + delay, self._sequence, self._answered, visit))

    def _serve_queue(self, replica: Replica) -> None:
        queue = replica.queue
        while queue and replica.busy < replica.concurrency:
            self._start(queue.popleft())
        if replica.state == DRAINING and not replica.busy and not queue:
            self.remove_replica(replica)

    def _answered(self, visit: Visit) -> None:
        """The answer of `visit` reaches its caller (or, for the entry visit, the client)."""
        parent = visit.parent
        if parent is None:
            latency_ms = (self.now - visit.arrival) * 1000.0
            self.recorder.record_request(self.now, latency_ms, not visit.error)
            return
        if parent.dead:
            return
        if visit.error:
            parent.error = True
        parent.pending -= 1
        if parent.pending == 0:
            self._next_stage(parent)

    # --- spans ------------------------------------------------------------------------------------------

    def take_spans(self) -> ExportTraceServiceRequest:
        """The spans finished since the last call, as one OTLP export request (resource per replica)."""
        request = ExportTraceServiceRequest()
        by_replica: dict[Replica, object] = {}
        base = self.base_unix
        trace_state = self._trace_state
        for visit in self.spans:
            replica = visit.replica
            scope = by_replica.get(replica)
            if scope is None:
                scope = by_replica[replica] = self._resource(request, replica)
            parent = visit.parent
            span = scope.add(
                trace_id=visit.trace.to_bytes(16, "big"),
                span_id=visit.span_id.to_bytes(8, "big"),
                parent_span_id=parent.span_id.to_bytes(8, "big") if parent is not None else b"",
                name=visit.request.operation if parent is None else visit.request.name,
                kind=KIND_SERVER,
                start_time_unix_nano=int((base + visit.received) * 1e9),
                end_time_unix_nano=int((base + visit.end) * 1e9),
                trace_state=trace_state,
            )
            if visit.error:
                span.status.code = STATUS_ERROR
        for caller, callee, trace, at in self.failed_calls:
            replica = caller.replica
            scope = by_replica.get(replica)
            if scope is None:
                scope = by_replica[replica] = self._resource(request, replica)
            stamp = int((base + at) * 1e9)
            span = scope.add(
                trace_id=trace.to_bytes(16, "big"),
                span_id=self._next_span.to_bytes(8, "big"),
                parent_span_id=caller.span_id.to_bytes(8, "big"),
                name=callee,
                kind=KIND_CLIENT,
                start_time_unix_nano=stamp,
                end_time_unix_nano=stamp,
                trace_state=trace_state,
            )
            self._next_span += 1
            span.attributes.add(key="peer.service").value.string_value = callee
            span.status.code = STATUS_ERROR
        self.spans = []
        self.failed_calls = []
        return request

    @staticmethod
    def _resource(request: ExportTraceServiceRequest, replica: Replica):
        """A new resource (service, version, instance) in `request`; returns its span list."""
        resource = request.resource_spans.add()
        attributes = resource.resource.attributes
        attributes.add(key="service.name").value.string_value = replica.service
        attributes.add(key="service.version").value.string_value = replica.version.name
        attributes.add(key="service.instance.id").value.string_value = replica.name
        return resource.scope_spans.add().spans

    # --- replicas ---------------------------------------------------------------------------------------

    def add_replica(
        self,
        service: str,
        node: Node | None = None,
        version: Version | None = None,
        exclude: Node | None = None,
    ) -> Replica:
        """Start a replica (on `node`, or where the scheduler finds room); ready after start-up."""
        state = self.services[service]
        state.next_replica += 1
        replica = Replica(
            name=f"{service}-{state.next_replica}",
            service=service,
            node=None,
            version=version or state.version,
            concurrency=state.spec.concurrency,
        )
        state.replicas.append(replica)
        target = node if node is not None and node.fits(state.spec) else self._schedule(state, exclude)
        if target is None:
            self.pending.append(replica)
        else:
            self._bind(replica, target)
        return replica

    def _schedule(self, state: ServiceState, exclude: Node | None = None) -> Node | None:
        """The least-allocated node (by CPU share) that fits a replica, as the default scheduler spreads."""
        best, best_share = None, 2.0
        for node in self.nodes.values():
            if node is exclude or not node.fits(state.spec):
                continue
            share = (node.cpu_used + state.spec.cpu) / node.cpu
            if share < best_share:
                best, best_share = node, share
        return best

    def _bind(self, replica: Replica, node: Node) -> None:
        spec = self.services[replica.service].spec
        replica.node = node
        node.cpu_used += spec.cpu
        node.memory_used += spec.memory_mb
        replica.state = STARTING
        replica.ready_at = self.now + spec.startup_seconds
        self.at(replica.ready_at, self._became_ready, replica)

    def _became_ready(self, replica: Replica) -> None:
        if replica.state != STARTING or replica.ready_at > self.now + 1e-9:
            return  # crashed or restarted meanwhile: a later event owns it
        replica.state = READY
        old = replica.replaces
        if old is not None:
            replica.replaces = None
            self.retire(old)
        self._routes_changed(self.services[replica.service])

    def place_pending(self) -> None:
        """Bind pending replicas to nodes that now have room (once a simulated second)."""
        still = []
        for replica in self.pending:
            if replica.state == DOWN and replica.recover_at is None:
                continue  # removed while pending
            node = self._schedule(self.services[replica.service])
            if node is None:
                still.append(replica)
            else:
                self._bind(replica, node)
        self.pending = still

    def retire(self, replica: Replica) -> None:
        """Stop sending it requests; it finishes what it holds, then goes."""
        if replica.state in (STARTING, DOWN) or replica.node is None:
            self.remove_replica(replica)
            return
        replica.state = DRAINING
        self._routes_changed(self.services[replica.service])
        if not replica.busy and not replica.queue:
            self.remove_replica(replica)

    def remove_replica(self, replica: Replica) -> None:
        state = self.services[replica.service]
        if replica in state.replicas:
            state.replicas.remove(replica)
        if replica in self.pending:
            self.pending.remove(replica)
        if replica.node is not None:
            replica.node.cpu_used -= state.spec.cpu
            replica.node.memory_used -= state.spec.memory_mb
        self._fail_held(replica)
        replica.state, replica.recover_at, replica.node = DOWN, None, None
        self._routes_changed(state)

    def replace(
        self,
        replica: Replica,
        node: Node | None = None,
        version: Version | None = None,
        exclude: Node | None = None,
    ) -> Replica:
        """A new replica (elsewhere, or of another version) that takes over once ready."""
        new = self.add_replica(
            replica.service, node=node, version=version or replica.version, exclude=exclude
        )
        if replica.state == DOWN:
            self.remove_replica(replica)
        else:
            new.replaces = replica
        return new

    def crash(self, replica: Replica, recover_seconds: float | None) -> None:
        """The replica's process dies: what it holds fails; the platform restarts it after the back-off."""
        self._fail_held(replica)
        replica.state = DOWN
        replica.recover_at = None if recover_seconds is None else self.now + recover_seconds
        if replica.recover_at is not None:
            self.at(replica.recover_at, self._recover, replica)
        self._routes_changed(self.services[replica.service])

    def _recover(self, replica: Replica) -> None:
        if replica.state != DOWN or replica.recover_at is None or replica.recover_at > self.now + 1e-9:
            return
        replica.recover_at = None
        if replica.node is None or not replica.node.up:
            return
        spec = self.services[replica.service].spec
        replica.state = STARTING
        replica.ready_at = self.now + spec.startup_seconds
        self.at(replica.ready_at, self._became_ready, replica)

    def _fail_held(self, replica: Replica) -> None:
        """Requests the replica was serving or holding in its queue fail (their callers see a reset)."""
        held = list(replica.active) + list(replica.queue)
        replica.active.clear()
        replica.queue.clear()
        replica.busy = 0
        for visit in held:
            visit.dead = True
            visit.service.in_flight -= 1
            answer = Visit(visit.trace, visit.request, visit.arrival, visit.service, visit.parent)
            answer.error = True
            self._failed_call(answer)
            self.at(self.now, self._answered, answer)

    def _routes_changed(self, state: ServiceState) -> None:
        """Recompute the routing groups: (cumulative weight, ready replicas) per weighted destination."""
        ready = [replica for replica in state.replicas if replica.state == READY]
        if not state.weights:
            state.groups = [(1.0, ready)] if ready else []
            return
        groups, total = [], 0.0
        for destination, weight in state.weights.items():
            members = [
                replica
                for replica in ready
                if destination
                in (replica.name, replica.version.name, f"{replica.service}-{replica.version.name}")
            ]
            if members and weight > 0:
                total += weight
                groups.append((total, members))
        state.groups = groups or ([(1.0, ready)] if ready else [])

    # --- what the inventory reports ---------------------------------------------------------------------

    def replica_counts(self) -> tuple[int, int]:
        """(replicas running or starting, replicas ready) over every service."""
        running = ready = 0
        for state in self.services.values():
            for replica in state.replicas:
                if replica.state != DOWN or replica.recover_at is not None:
                    running += 1
                if replica.state == READY:
                    ready += 1
        return running, ready
