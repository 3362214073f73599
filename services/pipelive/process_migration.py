"""Live reconfiguration of the process pipeline: stage-side steps and the migration channel between processes.

In the process pipeline the driver cannot reach a stage's tensors, so every step of a reconfiguration
is a message:

* at safe points, control commands travel the inference chain like any other (`reconf_prepare`,
  `reconf_switch`, `reconf_abort`), each stage carrying out its own part (`apply_prepare` and friends);
* in the background, migration tasks travel a second gloo process group, the migration channel, beside
  the inference traffic. Each stage process runs a `StageMigrationServer` thread on it; the driver sends it
  tasks (copy incoming weights from the host copy, count dirty blocks, send or receive moving KV, read KV
  for a check) and waits for the replies. KV goes stage to stage directly on that group.

The driver runs one transfer at a time on the channel, a source and its target each told their half
before either reply is awaited, so two stages sending to each other cannot block one another.

Stages are torch.distributed ranks, fixed when the pipeline starts, so the pipeline starts
`max_stages` stage processes and keeps those past the current stage count on standby: a standby process
serves the migration channel but is not in the inference chain. Adding a stage gives a standby process
a worker over the channel (`join`: an empty stage with the pool's chunks and KV units for its incoming
layers), fills it like any other target, and lets it into the chain at the switch (`enter_chain`): the
stage before it, no longer the last, passes the switch on to it. Removing a stage retires it at the
switch: it passes the switch on, drops its worker and goes back on standby.

This module sits below `stage.py` (whose control loop calls the `apply_*` steps): it never imports it.
Workers are typed `Any` here, and the server builds the workers it needs with the factory it is handed
(`WorkerFactory`: `stage.StageWorker`, in practice).
"""

from __future__ import annotations

import logging
import pickle
import queue
import threading
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import torch
import torch.distributed as dist

from services.pipelive.kv_patch import DirtyBitmap
from services.pipelive.model import StageWeights
from services.pipelive.partition import contiguous_runs
from services.pipelive.weight_store import HostWeightStore, copy_layer_to

log = logging.getLogger(__name__)

# Builds a stage worker from its spec (a `stage.StageSpec`) holding these weights.
WorkerFactory = Callable[[Any, StageWeights], Any]


# Every message is one fixed-size frame when it fits (one gloo round instead of a size and then the data):
# in the pause each message costs about a millisecond on a busy machine.
FRAME_BYTES = 4096
FRAME_LONGS = 512


def send_object(value: Any, peer: int, group: Any) -> None:
    """A pickled object to `peer` on the migration group (its own helper: the inference chain's is apart)."""
    payload = pickle.dumps(value, protocol=5)
    frame = bytearray(FRAME_BYTES)
    frame[:8] = len(payload).to_bytes(8, "little")
    head = payload[: FRAME_BYTES - 8]
    frame[8 : 8 + len(head)] = head
    dist.send(torch.frombuffer(frame, dtype=torch.uint8), peer, group=group)
    if len(payload) > len(head):
        rest = bytearray(payload[len(head) :])
        dist.send(torch.frombuffer(rest, dtype=torch.uint8), peer, group=group)


def receive_object(peer: int, group: Any) -> Any:
    frame = torch.empty(FRAME_BYTES, dtype=torch.uint8)
    dist.recv(frame, peer, group=group)
    raw = frame.numpy().tobytes()
    size = int.from_bytes(raw[:8], "little")
    payload = raw[8 : 8 + min(size, FRAME_BYTES - 8)]
    if size > FRAME_BYTES - 8:
        rest = torch.empty(size - (FRAME_BYTES - 8), dtype=torch.uint8)
        dist.recv(rest, peer, group=group)
        payload += rest.numpy().tobytes()
    return pickle.loads(payload)


def send_longs(values: torch.Tensor, peer: int, group: Any) -> None:
    """A 1-d long tensor of any length: its length and up to FRAME_LONGS - 1 values in one frame."""
    frame = torch.zeros(FRAME_LONGS, dtype=torch.long)
    head = values[: FRAME_LONGS - 1]
    frame[0] = values.numel()
    frame[1 : 1 + head.numel()] = head
    dist.send(frame, peer, group=group)
    if values.numel() > head.numel():
        dist.send(values[head.numel() :].contiguous(), peer, group=group)


def receive_longs(peer: int, group: Any) -> torch.Tensor:
    frame = torch.empty(FRAME_LONGS, dtype=torch.long)
    dist.recv(frame, peer, group=group)
    count = int(frame[0])
    values = frame[1 : 1 + min(count, FRAME_LONGS - 1)].clone()
    if count > FRAME_LONGS - 1:
        rest = torch.empty(count - (FRAME_LONGS - 1), dtype=torch.long)
        dist.recv(rest, peer, group=group)
        values = torch.cat([values, rest])
    return values


# stage side: the parts of a reconfiguration carried out by control commands at safe points
def apply_prepare(worker: Any, change: dict[str, Any]) -> None:
    for run in contiguous_runs(change["incoming"]):
        worker.cache.add_layers(run)
    if change["outgoing"]:
        worker.dirty = DirtyBitmap(change["outgoing"], worker.spec.engine.block_size)


def apply_switch(worker: Any, change: dict[str, Any], num_stages: int) -> None:
    worker.dirty = None
    if change["target"] is None:
        worker.retired = True  # removed: the stage loop passes the switch on and returns
        return
    for layer in change["incoming"]:
        worker.weights.layers[layer] = worker.incoming_weights.pop(layer)
    for layer in change["outgoing"]:
        del worker.weights.layers[layer]
    worker.cache.drop_layers(list(change["outgoing"]))
    if change["becomes_last"]:
        worker.weights.final_norm, worker.weights.lm_head = worker.incoming_head
        worker.incoming_head = None
    if change["stops_being_last"]:
        worker.weights.final_norm = worker.weights.lm_head = None
    budget = change["budget_bytes"] if change["budget_bytes"] is not None else worker.spec.budget_bytes
    target = change["target"]
    worker.spec = replace(worker.spec, num_stages=num_stages, layers=target, budget_bytes=budget)
    worker.first = worker.spec.index == 0
    worker.last = worker.spec.index == num_stages - 1
    worker.cache.layers = target


def apply_carry(worker: Any, args: dict[str, Any]) -> None:
    """The final dirty copy riding a chain command: as a source, take the dirty blocks of the transfers in
    `args["carry"]` (index -> (source, target, layers)) and attach them to the message (`args["kv"]`); as a
    target, write what is attached for it, take it off the message and count it in `args["written"]`.

    On the chain a source reaches only the stages after it: data for a stage before it, or for one not in
    the chain yet, comes back to the driver still attached, and the driver delivers it.
    """
    index = worker.spec.index
    for transfer, (source, _, layers) in args["carry"].items():
        if source == index:
            slots = worker.dirty.take(layers)
            if slots.numel():
                args["kv"][transfer] = (slots, read_blocks(worker.cache, layers, slots))
    for transfer, (slots, data) in list(args["kv"].items()):
        _, target, layers = args["transfers"][transfer]
        if target == index:
            write_blocks(worker.cache, layers, slots, data)
            del args["kv"][transfer]
            args["written"][transfer] = (int(slots.numel()), data.numel() * data.element_size())


def read_blocks(cache: Any, layers: list[int], slots: torch.Tensor) -> torch.Tensor:
    """KV of `layers` at block `slots`, stacked: (layers, 2, kv heads, rows, head dim)."""
    rows = cache.block_rows(slots)
    return torch.stack([cache.read_rows(layer, rows) for layer in layers])


def write_blocks(cache: Any, layers: list[int], slots: torch.Tensor, data: torch.Tensor) -> None:
    rows = cache.block_rows(slots)
    for position, layer in enumerate(layers):
        cache.write_rows(layer, rows, data[position])


def apply_abort(worker: Any, change: dict[str, Any]) -> None:
    worker.dirty = None
    worker.incoming_weights.clear()
    worker.incoming_head = None
    held = [layer for layer in change["incoming"] if layer in worker.cache.held_layers()]
    if held:
        worker.cache.drop_layers(held)


class StageMigrationServer:
    """A stage process's end of the migration channel: carries out the driver's tasks on a thread.

    `worker` is None while the process is on standby; `join` gives it one, built by `make_worker`, and
    `enter_chain` hands that to the process's main thread (`next_worker`), which runs it in the inference
    chain.
    """

    def __init__(self, worker: Any, group: Any, spec: Any, make_worker: WorkerFactory) -> None:
        self.worker = worker
        self.group = group
        self.spec = spec
        self.make_worker = make_worker
        self._store: HostWeightStore | None = None
        self._chain: queue.Queue[Any] = queue.Queue()
        self._lock = threading.Lock()  # `worker` is set here and cleared by the main thread on retiring
        self._thread = threading.Thread(target=self._serve, name="pipelive-migration", daemon=True)

    def start(self) -> StageMigrationServer:
        self._thread.start()
        return self

    def retire(self, worker: Any) -> None:
        """The main thread's stage has left the chain: back on standby (unless a new one joined already)."""
        with self._lock:
            if self.worker is worker:
                self.worker = None

    def next_worker(self) -> Any:
        """Block until the driver lets a worker into the chain; None when the pipeline stops."""
        return self._chain.get()

    def _serve(self) -> None:
        if self.spec.host_weights:
            # Read the whole model into host memory now, off the inference path, so that layers moving
            # here later are copied from memory rather than read from disk.
            self._store = HostWeightStore(self.spec.model, self.spec.checkpoint, preload=True)
        while True:
            task, args = receive_object(0, self.group)
            if task == "stop":
                send_object(("ok", None), 0, self.group)
                # Only now: a standby process's main thread, woken by this, leaves the groups and exits.
                self._chain.put(None)
                return
            try:
                reply = ("ok", getattr(self, f"_task_{task}")(**args))
            except Exception as error:  # noqa: BLE001 - the driver rolls back
                log.exception("migration task %s failed", task)
                reply = ("error", f"{type(error).__name__}: {error}")
            send_object(reply, 0, self.group)

    def _task_join(self, spec: Any, chunk_ids: list[int], change: dict[str, Any]) -> None:
        """A new stage on this standby process: no layers yet, the pool's chunks, units for what comes."""
        worker = self.make_worker(spec, StageWeights(layers={}))
        for chunk_id in chunk_ids:
            worker.cache.add_chunk(chunk_id)
        apply_prepare(worker, change)
        with self._lock:
            if self.worker is not None and not self.worker.retired:
                raise RuntimeError(f"stage process {spec.index} is serving, not on standby")
            self.worker = worker

    def _task_enter_chain(self) -> None:
        if self.worker is None:
            raise RuntimeError("no stage to enter the chain: join first")
        self._chain.put(self.worker)

    def _task_leave(self) -> None:
        """Undo `join` (a reconfiguration rolled back before its switch): back on standby."""
        with self._lock:
            self.worker = None

    def _task_load_weights(self, layers: list[int], head: bool, checkpoint: str | None) -> int:
        worker = self.worker
        if self._store is None:
            # Each stage process reads what it receives from the checkpoint or the seed (the disk fallback).
            self._store = HostWeightStore(self.spec.model, checkpoint, preload=False)
        copied = 0
        for layer in layers:
            weights = copy_layer_to(self._store.layer(layer), worker.config.torch_dtype, worker.device)
            worker.incoming_weights[layer] = weights
            copied += weights.nbytes()
        if head:
            norm, lm_head = self._store.head()
            dtype = worker.config.torch_dtype
            worker.incoming_head = (
                norm.to(worker.device, dtype, copy=True),
                lm_head.to(worker.device, dtype, copy=True),
            )
            copied += sum(t.numel() * t.element_size() for t in worker.incoming_head)
        return copied

    def _task_count(self, layers: list[int]) -> int:
        return self.worker.dirty.count(layers)

    def _task_send(self, layers: list[int], peer: int, slots: list[int] | None) -> tuple[int, int]:
        """Send these slots (None: the dirty ones, taken) of `layers` to `peer`: (bytes, blocks)."""
        cache = self.worker.cache
        chosen = self.worker.dirty.take(layers) if slots is None else torch.tensor(slots, dtype=torch.long)
        send_longs(chosen, peer, self.group)
        if chosen.numel() == 0:
            return 0, 0
        # The migration group is gloo, so KV travels through host memory even between GPU stages.
        data = read_blocks(cache, layers, chosen).cpu()
        dist.send(data.contiguous(), peer, group=self.group)
        return data.numel() * data.element_size(), int(chosen.numel())

    def _task_receive(self, layers: list[int], peer: int) -> int:
        cache = self.worker.cache
        slots = receive_longs(peer, self.group)
        if slots.numel() == 0:
            return 0
        rows = cache.block_rows(slots)
        config = self.worker.config
        shape = (len(layers), 2, config.num_key_value_heads, rows.count, config.head_dim)
        data = torch.empty(shape, dtype=config.torch_dtype)
        dist.recv(data, peer, group=self.group)
        write_blocks(cache, layers, slots, data)
        return data.numel() * data.element_size()

    def _task_read(self, layers: list[int], slots: list[int]) -> torch.Tensor:
        return read_blocks(self.worker.cache, layers, torch.tensor(slots, dtype=torch.long)).cpu()

    def _task_write(self, layers: list[int], slots: torch.Tensor, data: torch.Tensor) -> int:
        """KV the driver brings (the final copy for a stage not yet in the chain); returns bytes written."""
        write_blocks(self.worker.cache, layers, slots, data)
        return data.numel() * data.element_size()


class MigrationClient:
    """The driver's end: one task at a time per call, replies checked."""

    def __init__(self, group: Any) -> None:
        self.group = group
        self._lock = threading.Lock()

    def call(self, rank: int, task: str, **args: Any) -> Any:
        with self._lock:
            send_object((task, args), rank, self.group)
            return self._reply(rank, task)

    def call_each(self, ranks: list[int], task: str, **args: Any) -> list[Any]:
        """The same task on several stages: every one is told before any reply is awaited (and every reply
        is read, so that a failed one leaves no stale reply on the channel)."""
        with self._lock:
            for rank in ranks:
                send_object((task, args), rank, self.group)
            replies = [receive_object(rank, self.group) for rank in ranks]
        for rank, (status, value) in zip(ranks, replies, strict=True):
            if status != "ok":
                raise RuntimeError(f"stage {rank - 1}: migration task {task} failed: {value}")
        return [value for _, value in replies]

    def _reply(self, rank: int, task: str) -> Any:
        status, value = receive_object(rank, self.group)
        if status != "ok":
            raise RuntimeError(f"stage {rank - 1}: migration task {task} failed: {value}")
        return value

    def transfer(
        self, source_rank: int, target_rank: int, layers: list[int], slots: list[int] | None
    ) -> tuple[int, int]:
        """Move KV of `layers` at `slots` (None: the source's dirty set, taken) from source to target;
        returns (bytes, blocks) once the target has written them."""
        with self._lock:
            send_object(
                ("send", {"layers": layers, "peer": target_rank, "slots": slots}), source_rank, self.group
            )
            send_object(("receive", {"layers": layers, "peer": source_rank}), target_rank, self.group)
            sent, blocks = self._reply(source_rank, "send")
            self._reply(target_rank, "receive")
            return int(sent), int(blocks)

    def stop(self, ranks: list[int]) -> None:
        with self._lock:
            for rank in ranks:
                send_object(("stop", {}), rank, self.group)
            for rank in ranks:
                receive_object(rank, self.group)
