"""Llama-layout safetensors checkpoints: written by us, read per stage, same tokens as the seeded model."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from services.pipelive.checkpoint import load_stage_weights, write_checkpoint
from services.pipelive.config import ModelConfig, resolve_model
from services.pipelive.engine import LLMEngine
from services.pipelive.params import SamplingParams
from services.pipelive.reference import DenseReference
from tests.services.pipelive.support import PROMPTS, TINY, engine_config


def test_engine_serves_a_checkpoint_directory_like_the_seeded_model(tmp_path: Path) -> None:
    directory = write_checkpoint(TINY, tmp_path / "ckpt")
    names = set(load_file(directory / "model.safetensors"))
    assert "model.layers.3.self_attn.q_proj.weight" in names and "lm_head.weight" in names
    model, checkpoint = resolve_model(str(directory))
    assert checkpoint == directory
    assert (model.hidden_size, model.num_hidden_layers, model.num_key_value_heads) == (64, 4, 2)
    model = model.with_dtype("float64")
    expected = DenseReference(TINY).generate([PROMPTS[2]], 10)
    assert DenseReference(model, checkpoint=directory).generate([PROMPTS[2]], 10) == expected
    with LLMEngine(model, engine_config(num_stages=2), checkpoint=directory) as engine:
        assert engine.generate([PROMPTS[2]], SamplingParams(max_tokens=10)) == expected


def test_each_stage_reads_only_its_layers(tmp_path: Path) -> None:
    directory = write_checkpoint(TINY, tmp_path)
    middle = load_stage_weights(TINY, directory, range(1, 3), first=False, last=False)
    assert sorted(middle.layers) == [1, 2]
    assert middle.embed_tokens is None and middle.lm_head is None
    last = load_stage_weights(TINY, directory, range(3, 4), first=False, last=True)
    assert last.lm_head is not None and last.final_norm is not None


def test_tied_embeddings_without_lm_head(tmp_path: Path) -> None:
    tied = ModelConfig(name="tied", tie_word_embeddings=True, dtype="float64", seed=3)
    directory = write_checkpoint(tied, tmp_path)
    assert "lm_head.weight" not in load_file(directory / "model.safetensors")
    weights = load_stage_weights(tied, directory, range(0, 4), first=True, last=True)
    assert torch.equal(weights.lm_head, weights.embed_tokens)


def test_shape_mismatch_and_missing_tensor_are_clear_errors(tmp_path: Path) -> None:
    directory = write_checkpoint(TINY, tmp_path)
    config = json.loads((directory / "config.json").read_text())
    config["intermediate_size"] = 96
    wrong = ModelConfig.from_hf_json(config)
    with pytest.raises(ValueError, match="gate_proj.weight has shape"):
        load_stage_weights(wrong, directory, range(0, 1), first=False, last=False)
    tensors = load_file(directory / "model.safetensors")
    del tensors["model.layers.2.mlp.down_proj.weight"]
    save_file(tensors, str(directory / "model.safetensors"))
    with pytest.raises(KeyError, match="model.layers.2.mlp.down_proj.weight"):
        load_stage_weights(TINY, directory, range(2, 3), first=False, last=False)


def test_unsupported_configs_are_refused(tmp_path: Path) -> None:
    config = TINY.to_hf_json() | {"architectures": ["GPT2LMHeadModel"]}
    with pytest.raises(ValueError, match="only Llama-layout"):
        ModelConfig.from_hf_json(config)
    with pytest.raises(ValueError, match="no config.json"):
        resolve_model(str(tmp_path))
    with pytest.raises(ValueError, match="neither a preset"):
        resolve_model(str(tmp_path / "missing"))
