"""A host-memory copy of the model's weights, kept so that layers can be copied to a new stage live.

When a layer moves to another stage, its weights are copied to the target in the background from here
rather than from the source stage (which keeps computing with them until the switch). With `preload`
the whole model is held in host memory from the start, as PipeLive keeps it; without, each layer is read
from the checkpoint on disk (or rebuilt from the seed) when it is needed — the disk fallback.
"""

from __future__ import annotations

import threading
from pathlib import Path

import torch

from services.pipelive.checkpoint import load_stage_weights
from services.pipelive.config import ModelConfig
from services.pipelive.model import LayerWeights, seeded_head, seeded_layer


class HostWeightStore:
    """Layers and the LM head on the CPU, read once (from the seed or the checkpoint) and kept."""

    def __init__(
        self, model: ModelConfig, checkpoint: str | Path | None = None, preload: bool = True
    ) -> None:
        self.model = model
        self.checkpoint = Path(checkpoint) if checkpoint else None
        self.preload = preload
        self._layers: dict[int, LayerWeights] = {}
        self._head: tuple[torch.Tensor, torch.Tensor] | None = None
        self._lock = threading.Lock()
        if preload:
            for layer in range(model.num_hidden_layers):
                self._layers[layer] = self._read_layer(layer)
            self._head = self._read_head()

    def nbytes(self) -> int:
        total = sum(layer.nbytes() for layer in self._layers.values())
        if self._head is not None:
            total += sum(t.numel() * t.element_size() for t in self._head)
        return total

    def _read_layer(self, layer: int) -> LayerWeights:
        if self.checkpoint is None:
            return seeded_layer(self.model, layer)
        weights = load_stage_weights(
            self.model, self.checkpoint, range(layer, layer + 1), False, False, "cpu"
        )
        return weights.layers[layer]

    def _read_head(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.checkpoint is None:
            return seeded_head(self.model)
        last = self.model.num_hidden_layers
        weights = load_stage_weights(self.model, self.checkpoint, range(last, last), False, True, "cpu")
        assert weights.final_norm is not None and weights.lm_head is not None
        return weights.final_norm, weights.lm_head

    def layer(self, layer: int) -> LayerWeights:
        """Layer `layer`'s weights in host memory (read from disk first when not preloaded)."""
        with self._lock:
            if layer in self._layers:
                return self._layers[layer]
        return self._read_layer(layer)

    def head(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The final norm and the LM head."""
        if self._head is not None:
            return self._head
        return self._read_head()


def copy_layer_to(weights: LayerWeights, dtype: torch.dtype, device: torch.device) -> LayerWeights:
    """A private copy on the stage's device (never a view of the host copy)."""
    return LayerWeights(
        *(t.to(device=device, dtype=dtype, copy=True).contiguous() for t in weights.tensors())
    )
