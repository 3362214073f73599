"""The driver's side of the pipeline: start the stages, push micro-batches through them, send commands.

Two transports, one stage loop (`stage.run_stage_loop`):

* `ThreadPipeline` runs each stage in a thread of this process, linked by queues. PyTorch releases the
  GIL inside its kernels, so stages overlap on different micro-batches. Used by tests and small runs.
* `ProcessPipeline` runs each stage in its own process, linked by `torch.distributed` point-to-point
  messages (`transport`: a pickled header plus tensors sent natively; NCCL between stages on GPUs, gloo
  otherwise). Rank 0 is the driver, rank i + 1 is stage i.

Either way the driver sends all micro-batches of a step into stage 0 before waiting for the last stage,
so stage i works on micro-batch m while stage i + 1 works on micro-batch m - 1.
"""

from __future__ import annotations

import abc
import os
import queue
import threading
from dataclasses import replace
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from controlplane import (
    free_port,
)
from services.pipelive.plan import StepPlan
from services.pipelive.process_migration import MigrationClient, StageMigrationServer
from services.pipelive.stage import (
    ControlMessage,
    Message,
    StageFailure,
    StageSpec,
    StageWorker,
    StepMessage,
    StepResult,
    chain_end,
    run_stage_loop,
)
from services.pipelive.transport import (
    Link,
    PendingSend,
    choose_backend,
    close_transport,
    init_transport,
    receive_message,
    send_message,
    stage_device,
    stage_links,
)


class PipelineError(RuntimeError):
    """A stage failed; the message carries its traceback."""


class Pipeline(abc.ABC):
    """Stages in a chain, seen from the driver."""

    num_stages: int
    backend: str  # what carries messages between stages: "queue" (threads), "gloo" or "nccl"

    @abc.abstractmethod
    def _send(self, message: Message) -> None: ...

    @abc.abstractmethod
    def _receive(self) -> Message: ...

    def run_step(self, plans: list[StepPlan]) -> list[torch.Tensor]:
        """Push micro-batches through every stage; returns the sampled tokens' logits of each, in order."""
        for index, plan in enumerate(plans):
            self._send(StepMessage(index, plan))
        results: list[torch.Tensor | None] = [None] * len(plans)
        failure = None
        for _ in plans:
            reply = self._receive()
            if isinstance(reply, StageFailure):
                failure = reply
            elif isinstance(reply, StepResult):
                results[reply.index] = reply.logits
        if failure is not None:
            raise PipelineError(f"stage {failure.stage} failed:\n{failure.error}")
        return [r for r in results if r is not None]

    def control(self, command: str, **args: Any) -> list[Any]:
        """Run a command on every stage in order; returns each stage's reply."""
        return self.control_message(command, **args).replies

    def control_message(self, command: str, **args: Any) -> ControlMessage:
        """Run a command on every stage in order; returns the message as it came back: every stage's
        reply, and its arguments as the stages left them."""
        self._send(ControlMessage(command, args))
        reply = self._receive()
        if isinstance(reply, StageFailure):
            raise PipelineError(f"stage {reply.stage} failed:\n{reply.error}")
        assert isinstance(reply, ControlMessage)
        return reply

    @abc.abstractmethod
    def close(self) -> None: ...


class ThreadPipeline(Pipeline):
    """Stages as threads of this process, linked by queues."""

    def __init__(self, specs: list[StageSpec]) -> None:
        self.backend = "queue"
        self._link([StageWorker(spec) for spec in specs])
        self._closed = False

    def _link(self, workers: list[StageWorker]) -> None:
        self.num_stages = len(workers)
        self.workers = workers
        self._queues: list[queue.Queue[Message]] = [queue.Queue() for _ in range(len(workers) + 1)]
        self._threads = []
        for index, worker in enumerate(self.workers):
            thread = threading.Thread(
                target=run_stage_loop,
                args=(worker, self._queues[index].get, self._queues[index + 1].put),
                name=f"pipelive-stage-{index}",
                daemon=True,
            )
            thread.start()
            self._threads.append(thread)

    def relink(self, workers: list[StageWorker]) -> None:
        """Chain these workers instead (stages added or removed); only with nothing in flight."""
        self.control("stop")
        for thread in self._threads:
            thread.join(timeout=10)
        self._link(workers)

    def _send(self, message: Message) -> None:
        self._queues[0].put(message)

    def _receive(self) -> Message:
        return self._queues[-1].get()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.control("stop")
        for thread in self._threads:
            thread.join(timeout=10)


def default_threads_per_stage(num_stages: int) -> int:
    """Torch threads for each stage process: the cores less one for the driver, shared among the stages.

    Oversubscribing cores costs far more than it gains: an OpenMP team waits at every barrier for its
    slowest thread, and a thread that lost its core makes every operator wait (measured: three times slower
    per step with two threads than with one on a busy 2-core machine).
    """
    return max(1, ((os.cpu_count() or 1) - 1) // num_stages)


def _stage_process_main(
    spec: StageSpec, port: int, threads: int, backend: str, world: int, standby: bool
) -> None:
    """Entry point of a stage process: join the groups, build the stage (unless on standby), and run it in
    the chain until the pipeline stops; a stage that retires goes back on standby."""
    torch.set_num_threads(threads)
    rank = spec.index + 1
    device = stage_device(spec.engine.device, spec.index)
    device_group = init_transport(rank, world, port, backend, device)
    # The migration channel: a gloo group beside the inference chain, served on a thread of its own.
    migration_group = dist.new_group(backend="gloo")
    server = StageMigrationServer(
        None if standby else StageWorker(spec), migration_group, spec, make_worker=StageWorker
    ).start()
    previous, to_next = stage_links(rank, world, device_group, device)
    to_driver = Link(0)
    try:
        worker = server.worker if server.worker is not None else server.next_worker()
        while worker is not None:
            _serve_chain(worker, previous, to_next, to_driver)
            if not worker.retired:
                return  # stopped
            server.retire(worker)
            worker = None  # frees a retired stage's weights and KV while it waits on standby
            worker = server.next_worker()
    finally:
        close_transport()


def _serve_chain(worker: StageWorker, previous: Link, to_next: Link, to_driver: Link) -> None:
    pending: PendingSend | None = None

    def send(message: Message) -> None:
        nonlocal pending
        end = chain_end(message)
        if end is None:
            link = to_driver if worker.last else to_next
        else:
            # A switch (or its failure) follows the longer of the old and new chains whatever this
            # stage became: on to the stages it adds or retires, back to the driver from the last.
            link = to_driver if worker.spec.index == end - 1 else to_next
        if (
            isinstance(message, ControlMessage)
            and message.command == "reconf_switch"
            and worker.spec.engine.threads_per_stage is None
        ):
            # The cores are shared among the stages serving now, not among those that served at start.
            torch.set_num_threads(default_threads_per_stage(message.args["num_stages"]))
        if pending is not None:
            # one send in flight: the stage computes the next micro-batch while this one travels
            pending.wait()
        pending = send_message(message, link)

    run_stage_loop(worker, lambda: receive_message(previous), send)
    if pending is not None:
        pending.wait()


class ProcessPipeline(Pipeline):
    """Stages as processes linked by torch.distributed point-to-point messages; this process is rank 0.

    The backend for activations between stages is NCCL when every stage is on its own CUDA device, else
    gloo (`transport.select_backend`; `EngineConfig.transport_backend` overrides). torch.distributed has
    one default group per process, so one process can drive one such pipeline at a time. `max_stages`
    processes are started; those past the stage count wait on standby for a reconfiguration to add them.
    """

    def __init__(
        self, specs: list[StageSpec], threads_per_stage: int | None = None, max_stages: int | None = None
    ) -> None:
        self.num_stages = len(specs)
        self.max_stages = max(max_stages or 0, len(specs))
        engine = specs[0].engine
        devices = [stage_device(engine.device, index) for index in range(self.max_stages)]
        self.backend = choose_backend(devices, engine.transport_backend)
        port = free_port()
        threads = threads_per_stage or default_threads_per_stage(len(specs))
        world = self.max_stages + 1
        standby = [
            replace(specs[-1], index=index, num_stages=index + 2, layers=range(0, 0), budget_bytes=None)
            for index in range(len(specs), self.max_stages)
        ]
        context = mp.get_context("spawn")
        self._processes = [
            context.Process(
                target=_stage_process_main,
                args=(spec, port, threads, self.backend, world, spec.index >= len(specs)),
                daemon=True,
            )
            for spec in specs + standby
        ]
        for process in self._processes:
            process.start()
        init_transport(0, world, port, self.backend)
        self.migration = MigrationClient(dist.new_group(backend="gloo"))
        self._to_first, self._from_last = Link(1), Link(self.num_stages)
        self._pending: list[PendingSend] = []
        self._closed = False
        self._broken = False

    def _send(self, message: Message) -> None:
        self._pending.append(send_message(message, self._to_first))

    def _receive(self) -> Message:
        message = receive_message(self._from_last)
        for pending in self._pending:
            pending.wait()
        self._pending = []
        return message

    def switch(self, num_stages: int, **args: Any) -> ControlMessage:
        """The `reconf_switch` command, after which `num_stages` stages serve (retired stages reply None).
        Its reply comes from the last stage of the longer chain: stages removed pass it on as they retire,
        stages added (let into the chain beforehand) receive it from the old last stage."""
        end = max(num_stages, self.num_stages)
        self._from_last = Link(end)
        try:
            message = self.control_message("reconf_switch", num_stages=num_stages, chain_end=end, **args)
        except BaseException:
            # Some stages switched and some did not: the chain cannot carry a `stop` any more.
            self._broken = True
            raise
        self._from_last = Link(num_stages)
        self.num_stages = num_stages
        return message

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            if not self._broken:
                self.migration.stop([index + 1 for index in range(self.max_stages)])
                self.control("stop")
        finally:
            close_transport()
            for process in self._processes:
                process.join(timeout=1 if self._broken else 30)
                if process.is_alive():
                    process.kill()
                    process.join(timeout=30)


def start_pipeline(
    specs: list[StageSpec],
    mode: str = "thread",
    threads_per_stage: int | None = None,
    max_stages: int | None = None,
) -> Pipeline:
    """`mode` is "thread" (stages in this process) or "process" (one process per stage, torch.distributed,
    `max_stages` processes of which those past `len(specs)` on standby)."""
    if mode == "thread":
        return ThreadPipeline(specs)
    if mode == "process":
        return ProcessPipeline(specs, threads_per_stage, max_stages)
    raise ValueError(f"pipeline mode must be 'thread' or 'process', not {mode!r}")
