"""A simulated PipeLive serving pipeline: stages on devices, continuous batching, a paged KV pool.

The scenario's `[pipeline]` table (`services.demo.serving.PipelineSpec`, documented in docs/benchmark.md)
describes a
decoder-only model of `num_layers` layers split into contiguous stages, each on a device with a prefill
speed, a decode speed and a memory budget, and a request stream drawn from request classes (prompt and
output tokens, weights). `PipelineSim` serves it one engine iteration at a time, as vLLM's scheduler does:

* an iteration decodes one token for every running request and prefills waiting ones first come, first
  served, within `max_num_seqs`, `max_num_batched_tokens` and the free KV blocks; a decode that needs a new
  block when none is free preempts the newest running request (its KV is dropped and recomputed later);
* every stage holds the KV of every block for its own layers, so the pool has as many blocks as the
  tightest stage allows: `(budget - weights) / (layers x block bytes per layer)`;
* a stage takes `layers x (prefill tokens x prefill cost / prefill speed + decode tokens x decode cost /
  decode speed + overhead / decode speed)`; micro-batches flow through the pipeline, so an iteration lasts
  as long as the slowest stage, and a first token also waits for the rest of the pipeline to drain;
* a request that waits `request_timeout_seconds` without a first token is dropped (the client gives up).

`reconfigure` carries out a new partition with one of PipeLive's methods, at the cost the engine measured
(scenario parameters; the defaults are assumptions, see the docs): `live` keeps serving while the moving
layers' weights and KV are copied in the background (iterations slowed by `live_slowdown`), then pauses
`live_pause_ms` at the switch, and is refused when a receiving stage cannot hold its current and incoming
layers at once; `stop_and_copy` pauses for the whole copy; `stop_and_redeploy` drops every KV cache, is
unavailable while the weights reload, and then re-prefills the requests it held. Budgets shrink, devices
join and leave through the scenario's events. The same seed gives the same run.
"""

from __future__ import annotations

import heapq
import random
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from services.demo.results import RunRecorder
from services.demo.serving import GIB, METHODS, DeviceSpec, PipelineSpec, RequestClass


class PipelineRecorder(RunRecorder):
    """`RunRecorder` with what only a serving pipeline has: TPOT, preemptions, drops, reconfigurations.

    The base class's request latency is the time to first token; a dropped request is a failed one.
    """

    def __init__(self, duration_seconds: float) -> None:
        super().__init__(duration_seconds)
        self.tpot_ms: list[tuple[float, float]] = []  # (finished at, TPOT ms)
        self.dropped = 0
        self.preempted = 0
        self.reconfigurations: list[dict[str, Any]] = []
        self.unavailable_seconds = 0.0


@dataclass(slots=True)
class _Device:
    name: str
    budget_bytes: int
    prefill_speed: float
    decode_speed: float
    ready: bool = True


@dataclass(slots=True, eq=False)
class _Request:
    number: int
    kind: RequestClass
    arrival: float
    generated: int = 0
    in_cache: int = 0  # tokens whose KV is cached
    blocks: int = 0
    first_token_at: float | None = None
    started_at: float = 0.0  # when it last started running (preemption picks the newest)


@dataclass(slots=True)
class _Batch:
    prefills: list[_Request] = field(default_factory=list)
    decodes: list[_Request] = field(default_factory=list)
    prefill_tokens: int = 0
    fill_seconds: float = 0.0
    epoch: int = 0


class PipelineSim:
    """The serving pipeline; `run_until` advances simulated time, `reconfigure` changes its partition."""

    def __init__(self, spec: PipelineSpec, seed: int, recorder: PipelineRecorder) -> None:
        self.spec = spec
        self.rng = random.Random(seed)
        self.recorder = recorder
        self.now = 0.0
        self._heap: list[tuple[float, int, Callable, object]] = []
        self._sequence = 0
        self.devices = {
            d.name: _Device(d.name, d.budget_bytes, d.prefill_speed, d.decode_speed) for d in spec.devices
        }
        self.stages: list[tuple[str, int]] = list(zip(spec.stage_devices, spec.layers, strict=True))
        self.rate_factor = 1.0
        self.set_mix({})
        self.waiting: deque[_Request] = deque()
        self.running: list[_Request] = []
        self.used_blocks = 0
        self._next_request = 0
        self._busy = False
        self._epoch = 0  # bumped when a redeploy discards the iteration in flight
        self.paused_until = 0.0
        self.slowdown_until = 0.0
        self.reconfiguring_until = -1.0
        self.requests_started = 0
        # Cumulative, as Prometheus counters and histograms are.
        self.counters = {
            "vllm:prompt_tokens_total": 0.0,
            "vllm:generation_tokens_total": 0.0,
            "vllm:num_preemptions_total": 0.0,
            "vllm:time_to_first_token_seconds_sum": 0.0,
            "vllm:time_to_first_token_seconds_count": 0.0,
            "vllm:time_per_output_token_seconds_sum": 0.0,
            "vllm:time_per_output_token_seconds_count": 0.0,
            "vllm:request_success_total": 0.0,
            # The histogram of tokens per engine step; its count is the number of iterations.
            "vllm:iteration_tokens_total_sum": 0.0,
            "vllm:iteration_tokens_total_count": 0.0,
        }

    # --- the event loop -----------------------------------------------------------------------------------

    def at(self, time: float, handler: Callable, argument: object = None) -> None:
        self._sequence += 1
        heapq.heappush(self._heap, (time, self._sequence, handler, argument))

    def run_until(self, end: float) -> None:
        while self._heap and self._heap[0][0] < end:
            time, _, handler, argument = heapq.heappop(self._heap)
            self.now = time
            handler(argument)
        self.now = end
        self._drop_timed_out()

    # --- workload -----------------------------------------------------------------------------------------

    def set_mix(self, weights: Mapping[str, float]) -> None:
        """Request-class weights (empty: the classes' own); unknown names are an error."""
        known = {kind.name for kind in self.spec.requests}
        unknown = set(weights) - known
        if unknown:
            raise ValueError(f"mix: unknown request class(es) {sorted(unknown)}; known: {sorted(known)}")
        self.mix_weights = dict(weights)
        total = 0.0
        self._cumulative = []
        for kind in self.spec.requests:
            total += float(weights.get(kind.name, 0.0)) if weights else kind.weight
            self._cumulative.append(total)

    def schedule_arrivals(self, start: float, rate: float) -> None:
        """Poisson arrivals over [start, start + 1) at `rate` requests per second (times the load factor)."""
        rate *= self.rate_factor
        total = self._cumulative[-1]
        if rate <= 0 or total <= 0:
            return
        rng = self.rng
        time = start + rng.expovariate(rate)
        while time < start + 1.0:
            point = rng.random() * total
            kind = next(k for k, c in zip(self.spec.requests, self._cumulative, strict=True) if point < c)
            self.at(time, self._arrival, kind)
            time += rng.expovariate(rate)

    def _arrival(self, kind: RequestClass) -> None:
        self._next_request += 1
        self.requests_started += 1
        self.waiting.append(_Request(self._next_request, kind, self.now))
        self._kick()

    def _kick(self) -> None:
        if not self._busy:
            self._busy = True
            self.at(max(self.now, self.paused_until), self._step)

    # --- memory -------------------------------------------------------------------------------------------

    def stage_capacity(self, device: str, layers: int) -> int:
        """KV blocks a stage of `layers` layers on `device` holds; -1 when its weights do not fit."""
        spec = self.spec
        known = self.devices.get(device)
        if known is None or not known.ready:
            return -1
        room = known.budget_bytes - layers * spec.layer_weight_bytes
        if room < 0:
            return -1
        return room // (layers * spec.kv_block_bytes_per_layer)

    def capacity(self) -> int:
        """Blocks in the pool: what the tightest stage holds (-1 when a stage cannot run at all)."""
        return min(self.stage_capacity(device, layers) for device, layers in self.stages)

    def _blocks_for(self, tokens: int) -> int:
        return -(-tokens // self.spec.block_size)

    def _release(self, request: _Request) -> None:
        self.used_blocks -= request.blocks
        request.blocks = 0
        request.in_cache = 0

    def _preempt_newest(self) -> None:
        victim = max(self.running, key=lambda request: (request.started_at, request.number))
        self.running.remove(victim)
        self._release(victim)
        self.waiting.appendleft(victim)
        self.recorder.preempted += 1
        self.counters["vllm:num_preemptions_total"] += 1

    def _fit_pool(self) -> None:
        """Preempt until the KV in use fits the pool (after a budget shrank or the layout changed)."""
        capacity = max(0, self.capacity())
        while self.used_blocks > capacity and self.running:
            self._preempt_newest()

    # --- one iteration ------------------------------------------------------------------------------------

    def _step(self, _: object = None) -> None:
        if self.now < self.paused_until - 1e-12:
            self.at(self.paused_until, self._step)
            return
        capacity = self.capacity()
        if capacity < 0:
            # A stage cannot run (its device left or its weights no longer fit): everything waits.
            for request in list(self.running):
                self.running.remove(request)
                self._release(request)
                self.waiting.appendleft(request)
            self._busy = False
            return
        self._fit_pool()
        spec = self.spec
        batch = _Batch(epoch=self._epoch)
        # Decodes first; one that needs a new block when none is free preempts the newest request.
        for request in sorted(self.running, key=lambda r: (r.started_at, r.number)):
            if request not in self.running:
                continue  # preempted just now
            need = self._blocks_for(request.in_cache + 1) - request.blocks
            while need > 0 and self.used_blocks + need > capacity and len(self.running) > 1:
                self._preempt_newest()
                if request not in self.running:
                    break
            if request not in self.running:
                continue
            if need > 0 and self.used_blocks + need > capacity:
                continue  # alone and still no room: it waits for memory
            request.blocks += max(0, need)
            self.used_blocks += max(0, need)
            batch.decodes.append(request)
        # Then prefills, first come first served, while tokens, sequences and blocks allow.
        tokens = 0
        while self.waiting and len(self.running) < spec.max_num_seqs:
            request = self.waiting[0]
            prompt = request.kind.prompt_tokens + request.generated  # a preempted one recomputes its tokens
            blocks = self._blocks_for(prompt + 1)
            if tokens + prompt > spec.max_num_batched_tokens and tokens > 0:
                break
            if self.used_blocks + blocks > capacity:
                break
            self.waiting.popleft()
            request.blocks, request.in_cache, request.started_at = blocks, prompt, self.now
            self.used_blocks += blocks
            self.running.append(request)
            batch.prefills.append(request)
            tokens += prompt
        batch.prefill_tokens = tokens
        if not batch.prefills and not batch.decodes:
            self._busy = False
            return
        times = [
            self._stage_seconds(device, layers, tokens, len(batch.decodes)) for device, layers in self.stages
        ]
        slowdown = spec.live_slowdown if self.now < self.slowdown_until else 1.0
        bottleneck = max(times) * slowdown
        batch.fill_seconds = (sum(times) - max(times)) * slowdown
        self.counters["vllm:prompt_tokens_total"] += tokens
        self.counters["vllm:iteration_tokens_total_sum"] += tokens + len(batch.decodes)
        self.counters["vllm:iteration_tokens_total_count"] += 1
        self.at(self.now + bottleneck, self._finish_step, batch)

    def _stage_seconds(self, device: str, layers: int, prefill_tokens: int, decodes: int) -> float:
        spec, known = self.spec, self.devices[device]
        return layers * (
            prefill_tokens * spec.prefill_seconds_per_token_layer / known.prefill_speed
            + (decodes * spec.decode_seconds_per_token_layer + spec.layer_overhead_seconds)
            / known.decode_speed
        )

    def _finish_step(self, batch: _Batch) -> None:
        if batch.epoch != self._epoch:
            return  # a redeploy threw this iteration away
        counters = self.counters
        for request in batch.prefills:
            if request not in self.running:
                continue
            if request.first_token_at is None:
                request.first_token_at = self.now + batch.fill_seconds
                ttft = request.first_token_at - request.arrival
                self.recorder.record_request(request.first_token_at, ttft * 1000.0, True)
                counters["vllm:time_to_first_token_seconds_sum"] += ttft
                counters["vllm:time_to_first_token_seconds_count"] += 1
            self._generated(request)
        for request in batch.decodes:
            if request in self.running:
                request.in_cache += 1
                self._generated(request)
        self._busy = False
        self._kick()

    def _generated(self, request: _Request) -> None:
        request.generated += 1
        self.counters["vllm:generation_tokens_total"] += 1
        if request.generated < request.kind.output_tokens:
            return
        self.running.remove(request)
        self._release(request)
        self.counters["vllm:request_success_total"] += 1
        if request.kind.output_tokens > 1 and request.first_token_at is not None:
            tpot = (self.now - request.first_token_at) / (request.kind.output_tokens - 1)
            self.recorder.tpot_ms.append((self.now, tpot * 1000.0))
            self.counters["vllm:time_per_output_token_seconds_sum"] += tpot
            self.counters["vllm:time_per_output_token_seconds_count"] += 1

    def _drop_timed_out(self) -> None:
        limit = self.spec.request_timeout_seconds
        kept: deque[_Request] = deque()
        for request in self.waiting:
            if request.first_token_at is None and self.now - request.arrival > limit:
                self.recorder.dropped += 1
                self.recorder.record_request(self.now, 0.0, False)
            else:
                kept.append(request)
        self.waiting = kept

    # --- what changes the pipeline ------------------------------------------------------------------------

    def set_budget(self, device: str, budget_bytes: int) -> None:
        self.device(device).budget_bytes = budget_bytes
        self._fit_pool()
        self._kick()

    def add_device(self, spec: DeviceSpec) -> None:
        if spec.name in self.devices and self.devices[spec.name].ready:
            raise ValueError(f"device {spec.name!r} is already in the pool")
        self.devices[spec.name] = _Device(spec.name, spec.budget_bytes, spec.prefill_speed, spec.decode_speed)
        self._kick()

    def remove_device(self, device: str) -> None:
        self.device(device).ready = False
        self._kick()

    def device(self, name: str) -> _Device:
        """The device named `name`; ValueError naming the known ones otherwise."""
        known = self.devices.get(name)
        if known is None:
            raise ValueError(f"no device named {name!r}; known: {sorted(self.devices)}")
        return known

    def reconfigure(self, layers: tuple[int, ...], devices: tuple[str, ...], method: str) -> tuple[bool, str]:
        """Start carrying out a new partition; (False, why) when refused, and then nothing changes."""
        spec = self.spec
        method = method or "live"
        if method not in METHODS:
            return False, f"method {method!r} is not simulated; simulated: {', '.join(METHODS)}"
        if self.now < self.reconfiguring_until:
            return False, f"a reconfiguration is in progress until t={self.reconfiguring_until:.1f} s"
        if sum(layers) != spec.num_layers or any(count < 1 for count in layers):
            return False, f"layers_per_stage {list(layers)} must cover the {spec.num_layers} layers"
        devices = devices or tuple(device for device, _ in self.stages)
        if len(devices) != len(layers) or len(set(devices)) != len(devices):
            return False, "devices must name one distinct device per stage"
        for index, (device, count) in enumerate(zip(devices, layers, strict=True)):
            if self.stage_capacity(device, count) < 1:
                known = self.devices.get(device)
                why = "is not in the pool or not ready" if known is None or not known.ready else "has no room"
                return False, f"stage {index}: device {device} {why} for {count} layers"
        old_owner = self._owners(self.stages)
        new_stages = list(zip(devices, layers, strict=True))
        new_owner = self._owners(new_stages)
        moving = [layer for layer in range(spec.num_layers) if old_owner[layer] != new_owner[layer]]
        per_layer = spec.layer_weight_bytes + self.used_blocks * spec.kv_block_bytes_per_layer
        moved_bytes = len(moving) * per_layer
        record = {
            "at": round(self.now, 3),
            "method": method,
            "layers": list(layers),
            "devices": list(devices),
        }
        if method != "stop_and_redeploy":
            # While layers are copied a device holds its current and its incoming layers, with the KV in use.
            for device in sorted(set(devices)):
                held = {layer for layer, owner in old_owner.items() if owner == device}
                held |= {layer for layer, owner in new_owner.items() if owner == device}
                needed = len(held) * per_layer
                budget = self.devices[device].budget_bytes
                if needed > budget:
                    return False, (
                        f"refused: during the change {device} would hold {len(held)} layers with the KV in "
                        f"use ({needed / GIB:.2f} GiB) in its {budget / GIB:.2f} GiB budget"
                    )
        if method == "live":
            copy = moved_bytes / spec.live_copy_bytes_per_second
            self.slowdown_until = self.now + copy
            self.reconfiguring_until = self.now + copy + spec.live_pause_ms / 1000.0
            self.at(self.now + copy, self._switch, new_stages)
            record.update(pause_s=spec.live_pause_ms / 1000.0, copy_s=round(copy, 3))
            self.recorder.unavailable_seconds += spec.live_pause_ms / 1000.0
            detail = f"live: copying {len(moving)} layer(s) ({moved_bytes / GIB:.2f} GiB) in {copy:.2f} s"
        elif method == "stop_and_copy":
            pause = moved_bytes / spec.live_copy_bytes_per_second
            self.stages = new_stages
            self.paused_until = self.reconfiguring_until = self.now + pause
            record.update(pause_s=round(pause, 3))
            self.recorder.unavailable_seconds += pause
            detail = f"stop-and-copy: paused {pause:.2f} s to copy {len(moving)} layer(s)"
        else:
            weights = spec.num_layers * spec.layer_weight_bytes
            pause = spec.redeploy_startup_seconds + weights / spec.redeploy_load_bytes_per_second
            self._epoch += 1  # the iteration in flight is lost with the old deployment
            for request in sorted(self.running, key=lambda r: (r.started_at, r.number), reverse=True):
                self._release(request)
                self.waiting.appendleft(request)
            self.running = []
            self.stages = new_stages
            self.paused_until = self.reconfiguring_until = self.now + pause
            self._busy = False
            record.update(pause_s=round(pause, 3))
            self.recorder.unavailable_seconds += pause
            detail = (
                f"stop-and-redeploy: unavailable {pause:.1f} s, {len(self.waiting)} request(s) to re-prefill"
            )
        self.recorder.reconfigurations.append(record)
        self._kick()
        return True, detail

    def _switch(self, stages: list[tuple[str, int]]) -> None:
        """The live switch point: pause, switch layer ownership, resume."""
        self.stages = stages
        self.paused_until = max(self.paused_until, self.now + self.spec.live_pause_ms / 1000.0)
        self._fit_pool()
        self._kick()

    @staticmethod
    def _owners(stages: list[tuple[str, int]]) -> dict[int, str]:
        owners, first = {}, 0
        for device, count in stages:
            for layer in range(first, first + count):
                owners[layer] = device
            first += count
        return owners

    # --- what the engine reports --------------------------------------------------------------------------

    def metrics(self) -> Mapping[str, float]:
        """The engine's metrics under vLLM's names, as a scrape would read them now."""
        capacity = self.capacity()
        values = dict(self.counters)
        values["vllm:num_requests_running"] = float(len(self.running))
        values["vllm:num_requests_waiting"] = float(len(self.waiting))
        values["vllm:gpu_cache_usage_perc"] = self.used_blocks / capacity if capacity > 0 else 1.0
        return MappingProxyType(values)

    def stages_serving(self) -> int:
        return len(self.stages) if self.capacity() >= 0 and self.now >= self.paused_until else 0
