"""A pipeline stage: a contiguous range of layers, their weights, their KV pool, and the loop that runs them.

A stage takes messages from the previous stage (or the driver), handles them and passes the result on to
the next stage (or back to the driver). Micro-batches flow through as `StepMessage`s carrying activations;
commands (`ControlMessage`: status, add or release KV chunks, stop) flow through the same chain, each stage
adding its reply, so that ordering between steps and commands is the pipeline's own order. The same loop
runs in a thread (in-process mode) or in a process of its own (torch.distributed mode).
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from services.pipelive.attention import PagedAttention
from services.pipelive.checkpoint import load_stage_weights
from services.pipelive.config import EngineConfig, ModelConfig
from services.pipelive.kv_cache import StageKVCache
from services.pipelive.kv_patch import DirtyBitmap
from services.pipelive.model import (
    LayerWeights,
    RotaryEmbedding,
    StageWeights,
    decoder_layer,
    final_logits,
    seeded_stage_weights,
)
from services.pipelive.plan import StepPlan
from services.pipelive.process_migration import apply_abort, apply_carry, apply_prepare, apply_switch
from services.pipelive.transport import stage_device

log = logging.getLogger(__name__)


@dataclass
class StepMessage:
    """Micro-batch `index` of a step; `hidden` is None on the way into the first stage."""

    index: int
    plan: StepPlan
    hidden: torch.Tensor | None = None


@dataclass
class StepResult:
    """The last stage's answer for micro-batch `index`: logits of the plan's sampled tokens."""

    index: int
    logits: torch.Tensor


@dataclass
class ControlMessage:
    """A command every stage carries out in turn, appending its reply."""

    command: str
    args: dict[str, Any] = field(default_factory=dict)
    replies: list[Any] = field(default_factory=list)


@dataclass
class StageFailure:
    """A stage raised; later stages pass this on untouched and the driver raises it."""

    stage: int
    error: str
    chain_end: int | None = None  # the failed command's route, so the failure follows it (`chain_end`)


def chain_end(message: Message) -> int | None:
    """How many stages a reconfiguration's switch passes through before it returns to the driver (the
    longer of the old and the new chain), or None for a message that follows the stages' own order."""
    if isinstance(message, ControlMessage):
        return message.args.get("chain_end")
    if isinstance(message, StageFailure):
        return message.chain_end
    return None


Message = StepMessage | StepResult | ControlMessage | StageFailure


@dataclass(frozen=True)
class StageStatus:
    """Memory and layer ownership of one stage, as `Status` reports it."""

    index: int
    first_layer: int
    end_layer: int
    device: str
    budget_bytes: int
    usable_bytes: int
    weight_bytes: int
    kv_bytes: int
    chunk_bytes: int
    bytes_per_block: int
    num_chunks: int
    max_blocks: int  # what the budget allows after weights, by vLLM's sizing rule
    kv_units: tuple[tuple[int, int], ...] = ()  # the KV allocation units held, as [start, stop) layers


@dataclass(frozen=True)
class StageSpec:
    """Everything a stage needs to build itself (picklable, so a stage process can be started from it)."""

    index: int
    num_stages: int
    layers: range
    model: ModelConfig
    engine: EngineConfig
    checkpoint: str | None = None
    budget_bytes: int | None = None  # this stage's budget when it differs from engine.stage_memory_bytes
    host_weights: bool = False  # a stage process keeps a host-memory copy of the model to receive layers from


class StageWorker:
    """Owns layers `spec.layers`: their weights and KV pool; runs micro-batches and commands."""

    def __init__(self, spec: StageSpec, weights: StageWeights | None = None) -> None:
        self.spec = spec
        self.config = spec.model
        self.first = spec.index == 0
        self.last = spec.index == spec.num_stages - 1
        self.device = stage_device(spec.engine.device, spec.index)  # stage i on cuda:(i % GPUs)
        if weights is None:
            if spec.checkpoint:
                weights = load_stage_weights(
                    self.config, Path(spec.checkpoint), spec.layers, self.first, self.last, self.device
                )
            else:
                weights = seeded_stage_weights(self.config, spec.layers, self.first, self.last, self.device)
        self.weights = weights
        # Live reconfiguration (live_migration.py): weights copied in ahead of the switch, and the
        # dirty bitmap of the layers leaving this stage while their KV is pre-copied.
        self.incoming_weights: dict[int, LayerWeights] = {}
        self.incoming_head: tuple[torch.Tensor, torch.Tensor] | None = None
        self.dirty: DirtyBitmap | None = None
        # Process pipeline: a stage removed by a reconfiguration retires (its process goes back on standby).
        self.retired = False
        self.rotary = RotaryEmbedding(self.config, self.device)
        self.cache = StageKVCache(
            self.config,
            spec.layers,
            spec.engine.block_size,
            spec.engine.blocks_per_chunk,
            spec.engine.layers_per_unit,
            self.device,
        )

    @property
    def budget_bytes(self) -> int:
        return self.spec.budget_bytes or self.spec.engine.stage_memory_bytes

    @property
    def usable_bytes(self) -> int:
        return int(self.budget_bytes * self.spec.engine.gpu_memory_utilization)

    def weight_bytes(self) -> int:
        """Weights held: the stage's own, plus those copied in ahead of a switch."""
        incoming = sum(layer.nbytes() for layer in list(self.incoming_weights.values()))
        if self.incoming_head is not None:
            incoming += sum(t.numel() * t.element_size() for t in self.incoming_head)
        return self.weights.nbytes() + incoming

    def max_blocks(self) -> int:
        """vLLM's rule: what the budget leaves after weights over one block's KV in this stage's layers."""
        per_block = self.cache.bytes_per_block_per_layer * self.cache.layer_slots()
        if per_block == 0:
            return 2**40  # a stage holding no KV at all puts no bound on the pool
        return max(0, (self.usable_bytes - self.weight_bytes()) // per_block)

    def status(self) -> StageStatus:
        return StageStatus(
            index=self.spec.index,
            first_layer=self.spec.layers.start,
            end_layer=self.spec.layers.stop,
            device=str(self.device),
            budget_bytes=self.budget_bytes,
            usable_bytes=self.usable_bytes,
            weight_bytes=self.weight_bytes(),
            kv_bytes=self.cache.nbytes(),
            chunk_bytes=self.cache.chunk_nbytes(),
            bytes_per_block=self.cache.bytes_per_block_per_layer * self.cache.layer_slots(),
            num_chunks=len(self.cache.chunk_ids()),
            max_blocks=self.max_blocks(),
            kv_units=tuple((u.start, u.stop) for u in self.cache.units if u is not None),
        )

    @torch.inference_mode()
    def forward(self, plan: StepPlan, hidden: torch.Tensor | None) -> torch.Tensor:
        """Run this stage's layers; the last stage returns the sampled tokens' logits, not activations."""
        if self.first:
            assert self.weights.embed_tokens is not None
            hidden = self.weights.embed_tokens[plan.token_ids.to(self.device)]
        assert hidden is not None
        hidden = hidden.to(self.device)
        rotary = self.rotary.tables(plan.positions.to(self.device))
        attention = PagedAttention(plan, self.cache)
        for layer in self.spec.layers:
            hidden = decoder_layer(
                self.config, self.weights.layers[layer], hidden, rotary, attention.for_layer(layer)
            )
        if self.dirty is not None:
            # Marked after the writes, so a block copied while being written is always copied again.
            self.dirty.mark_rows(plan.write_rows)
        if self.last:
            return (
                final_logits(self.config, self.weights, hidden[plan.sample_index.to(self.device)])
                .float()
                .cpu()
            )
        return hidden

    def handle(self, message: Message) -> Message:
        if isinstance(message, StageFailure):
            return message
        try:
            if isinstance(message, StepMessage):
                output = self.forward(message.plan, message.hidden)
                if self.last:
                    return StepResult(message.index, output)
                return StepMessage(message.index, message.plan, output)
            if isinstance(message, ControlMessage):
                message.replies.append(self._control(message.command, message.args))
                return message
            raise TypeError(f"stage cannot handle {type(message).__name__}")
        except Exception:  # noqa: BLE001 - reported to the driver, which raises it
            log.exception("stage %d failed", self.spec.index)
            return StageFailure(self.spec.index, traceback.format_exc(), chain_end(message))

    def _control(self, command: str, args: dict[str, Any]) -> Any:
        if command in ("status", "stop"):
            return self.status()
        if command == "add_chunks":
            chunk_ids = list(args["chunk_ids"])
            needed = self.weight_bytes() + self.cache.nbytes() + len(chunk_ids) * self.cache.chunk_nbytes()
            if needed > self.usable_bytes:
                raise MemoryError(
                    f"stage {self.spec.index}: {len(chunk_ids)} more KV chunks need {needed} bytes, "
                    f"budget allows {self.usable_bytes}"
                )
            for chunk_id in chunk_ids:
                self.cache.add_chunk(chunk_id)
            return self.status()
        if command in ("reconf_prepare", "reconf_copy", "reconf_switch", "reconf_abort"):
            # Process pipeline reconfiguration: each stage carries out its own part at the safe point.
            if command == "reconf_copy":
                apply_carry(self, args)
                return None
            change = args["changes"][self.spec.index]
            if command == "reconf_prepare":
                apply_prepare(self, change)
            elif command == "reconf_switch":
                apply_carry(self, args)
                apply_switch(self, change, args["num_stages"])
            else:
                apply_abort(self, change)
            return None if self.retired else self.status()
        if command == "release_chunks":
            for chunk_id in args["chunk_ids"]:
                self.cache.release_chunk(chunk_id)
            return self.status()
        raise ValueError(f"unknown stage command {command!r}")


def run_stage_loop(
    worker: StageWorker, receive: Callable[[], Message], send: Callable[[Message], None]
) -> None:
    """Handle messages until a `stop` command has passed through or the stage has retired."""
    while True:
        message = receive()
        send(worker.handle(message))
        if worker.retired or (isinstance(message, ControlMessage) and message.command == "stop"):
            return
