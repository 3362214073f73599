"""The `controlplane pipelive` commands, the Azure-trace workload, and the generated gRPC code."""

import json
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from services.pipelive.bench.workload import read_trace, scale_trace
from services.pipelive.cli import parse_bytes
from tests.support import REPO, SHARED_DATA

TRACE = SHARED_DATA / "azure-llm-inference-2023" / "AzureLLMInferenceTrace_conv.csv"


def test_serve_command_answers_on_http_to_the_model_name_it_was_given(tmp_path: Path) -> None:
    command = [
        sys.executable, "-m", "controlplane.serve", "pipelive", "serve", "--model", "tiny", "--stages", "2",
        "--mode", "thread", "--stage-memory", "8MiB", "--http", "127.0.0.1:0", "--grpc", "127.0.0.1:0",
    ]  # fmt: skip
    process = subprocess.Popen(
        command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("PipeLive: HTTP http://127.0.0.1:"), line
        base = line.split()[2].rstrip(",")
        models = json.loads(urllib.request.urlopen(base + "/models", timeout=10).read())
        assert (
            models["data"][0]["id"] == "tiny"
        )  # served as given, as vLLM serves `--model` (not pipelive-tiny)
        # An OpenAI client names the model it was told about; the server answers to it.
        body = json.dumps({"model": "tiny", "prompt": [1, 2, 3], "max_tokens": 2, "temperature": 0}).encode()
        request = urllib.request.Request(
            base + "/completions", data=body, headers={"Content-Type": "application/json"}
        )
        answer = json.loads(urllib.request.urlopen(request, timeout=30).read())
        assert answer["model"] == "tiny" and len(answer["choices"][0]["token_ids"]) == 2
        wrong = urllib.request.Request(
            base + "/completions",
            data=body.replace(b'"tiny"', b'"pipelive-tiny"'),
            headers={"Content-Type": "application/json"},
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(wrong, timeout=30)
        assert refused.value.code in (400, 404) and b"serves `tiny`" in refused.value.read()
    finally:
        process.terminate()
        process.wait(timeout=20)


def test_write_checkpoint_command(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "controlplane.serve",
            "pipelive",
            "write-checkpoint",
            str(tmp_path),
            "--model",
            "tiny",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.strip() == str(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["num_hidden_layers"] == 4


def test_memory_sizes() -> None:
    assert parse_bytes("512MiB") == 512 * 2**20
    assert parse_bytes("2G") == 2 * 2**30
    assert parse_bytes("1024") == 1024
    with pytest.raises(Exception, match="not a memory size"):
        parse_bytes("lots")


def test_trace_replay_is_scaled_to_the_model() -> None:
    trace = read_trace(TRACE, limit=200)
    assert len(trace) == 200 and trace[0].arrival == 0.0
    assert all(b.arrival >= a.arrival for a, b in zip(trace, trace[1:], strict=False))
    assert trace[0].prompt_tokens == 374 and trace[0].output_tokens == 44  # the file's first row
    replay = scale_trace(trace, rate=4.0, token_scale=0.25, max_prompt=128, max_output=32, vocab_size=300)
    span = replay[-1].arrival
    assert len(replay) / span == pytest.approx(4.0, rel=0.01)
    assert all(1 <= len(r.prompt_token_ids) <= 128 and 1 <= r.max_tokens <= 32 for r in replay)
    assert len(replay[0].prompt_token_ids) == round(374 * 0.25) and replay[0].max_tokens == 11
    assert all(0 <= t < 300 for r in replay for t in r.prompt_token_ids)


def test_committed_pipelive_generated_code_is_fresh(tmp_path: Path) -> None:
    proto = "protos/pipelive/v1/pipelive.proto"
    subprocess.run(
        [
            sys.executable, "-m", "grpc_tools.protoc", "-I.", f"--python_out={tmp_path}",
            f"--grpc_python_out={tmp_path}", f"--pyi_out={tmp_path}", proto,
        ],
        cwd=REPO,
        check=True,
    )  # fmt: skip
    generated = sorted(path for path in tmp_path.rglob("*") if path.is_file())
    assert len(generated) == 3
    for fresh in generated:
        committed = REPO / fresh.relative_to(tmp_path)
        assert committed.read_bytes() == fresh.read_bytes(), f"{committed} is stale: run `make protos`"


def test_reconfigure_benchmark_layouts_bound_the_pool_as_it_says() -> None:
    from services.pipelive.bench import reconfigure as bench
    from services.pipelive.config import EngineConfig
    from services.pipelive.engine import LLMEngine

    base = EngineConfig(num_stages=2, block_size=16, blocks_per_chunk=8, layers_per_unit=2, device="cpu")
    budgets = bench.stage_budgets(bench.BENCH_MODEL, base, small_blocks=48, large_blocks=192)
    pools = {}
    for name, layout in bench.LAYOUTS.items():
        config = EngineConfig(
            num_stages=2,
            layer_split=tuple(len(r) for r in layout),
            stage_budgets=budgets,
            block_size=16,
            blocks_per_chunk=8,
            layers_per_unit=2,
            device="cpu",
        )
        with LLMEngine(bench.BENCH_MODEL, config) as engine:
            pools[name] = engine.pool.num_total
    assert pools["prefill_optimal"] == 48 and pools["decode_optimal"] == 192
    assert 48 < pools["balanced"] < 192
    phases = bench.paper_phases(0.25, 12.0, 4.0, 2.0)
    assert [(p.prompt_tokens, p.output_tokens) for p in phases] == [(128, 4), (32, 128)]
    trace = bench.build_trace(phases, 256, None, seed=1)
    assert trace == bench.build_trace(phases, 256, None, seed=1)  # same trace for every method
    heavy = [item for item in trace if item.phase == "prefill_heavy"]
    assert heavy and all(item.arrival < 12.0 for item in heavy)
    assert all(item.arrival >= 12.0 for item in trace if item.phase == "decode_heavy")
