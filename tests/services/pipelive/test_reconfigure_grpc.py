"""Reconfigure over gRPC on 127.0.0.1 and through `controlplane pipelive reconfigure`: live while a stream
runs, INVALID_ARGUMENT for bad partitions, FAILED_PRECONDITION when it does not fit; the server serves on."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator

import grpc
import pytest

from protos.pipelive.v1 import pipelive_pb2 as pb
from protos.pipelive.v1 import pipelive_pb2_grpc as pb_grpc
from tests.services.pipelive.reconf_support import MODEL8, PROMPTS, config, reference_outputs
from tests.services.pipelive.support import RunningPipeLive, running_pipelive
from tests.support import REPO


@pytest.fixture(scope="module")
def server() -> Iterator[RunningPipeLive]:
    with running_pipelive(MODEL8, config()) as running:
        yield running


@pytest.fixture(scope="module")
def stub(server: RunningPipeLive) -> pb_grpc.PipeLiveStub:
    return pb_grpc.PipeLiveStub(grpc.insecure_channel(server.grpc_target))


def partition(*ranges: tuple[int, int]) -> list[pb.LayerRange]:
    return [pb.LayerRange(first_layer=a, end_layer=b) for a, b in ranges]


def layout(status: pb.StatusResponse) -> list[tuple[int, int]]:
    return [(stage.first_layer, stage.end_layer) for stage in status.stages]


def test_live_reconfigure_while_a_stream_runs_keeps_its_tokens(stub: pb_grpc.PipeLiveStub) -> None:
    from services.pipelive.params import SamplingParams

    prompt = PROMPTS[2]
    expected = reference_outputs([prompt], SamplingParams(max_tokens=120))[0]
    streamed: list[int] = []
    started = threading.Event()

    def consume() -> None:
        request = pb.GenerateRequest(prompt_token_ids=prompt, max_tokens=120)
        for message in stub.Generate(request):
            streamed.append(message.token_id)
            started.set()

    consumer = threading.Thread(target=consume)
    consumer.start()
    assert started.wait(30)
    reply = stub.Reconfigure(
        pb.ReconfigureRequest(stages=partition((0, 2), (2, 5), (5, 8)), method="live"), timeout=60
    )
    consumer.join(60)
    assert streamed == expected
    assert [(r.first_layer, r.end_layer) for r in reply.stages] == [(0, 2), (2, 5), (5, 8)]
    assert reply.method == "live" and reply.pause_ms > 0 and reply.total_ms >= reply.pause_ms
    assert reply.weight_bytes_copied > 0 and reply.kv_bytes_copied > 0 and reply.patch_rounds >= 1
    assert reply.preempted == 0 and reply.dropped == 0
    assert layout(stub.Status(pb.StatusRequest())) == [(0, 2), (2, 5), (5, 8)]
    back = stub.Reconfigure(pb.ReconfigureRequest(stages=partition((0, 4), (4, 8))), timeout=60)
    assert back.method == "live" and layout(stub.Status(pb.StatusRequest())) == [(0, 4), (4, 8)]


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (
            pb.ReconfigureRequest(stages=partition((0, 3), (4, 8))),
            "stages: stage 1: layers 3-3 belong to no stage",
        ),
        (
            pb.ReconfigureRequest(stages=partition((0, 5), (4, 8))),
            "stages: stage 1: layers 4-4 already belong",
        ),
        (pb.ReconfigureRequest(stages=partition((0, 4), (4, 4), (4, 8))), "stages: stage 1: layer range"),
        (
            pb.ReconfigureRequest(stages=partition((0, 4), (4, 12))),
            "stages: stage 1: layers [4, 12) are out of range",
        ),
        (pb.ReconfigureRequest(), "stages: the partition has no stages"),
        (
            pb.ReconfigureRequest(stages=partition((0, 8)), method="teleport"),
            "method: unknown method 'teleport'",
        ),
        (
            pb.ReconfigureRequest(stages=partition((0, 8)), budget_bytes=[1, 2]),
            "budget_bytes: give one budget",
        ),
        (pb.ReconfigureRequest(stages=partition((0, 8)), devices=["cuda:3"]), "devices: device 'cuda:3'"),
    ],
)
def test_bad_partitions_are_invalid_argument(
    stub: pb_grpc.PipeLiveStub, request_: pb.ReconfigureRequest, message: str
) -> None:
    with pytest.raises(grpc.RpcError) as raised:
        stub.Reconfigure(request_, timeout=30)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert raised.value.details().startswith(message), raised.value.details()
    assert layout(stub.Status(pb.StatusRequest())) == [(0, 4), (4, 8)]  # nothing changed, still serving


def test_a_plan_that_does_not_fit_is_failed_precondition(stub: pb_grpc.PipeLiveStub) -> None:
    before = stub.Status(pb.StatusRequest())
    request = pb.ReconfigureRequest(stages=partition((0, 1), (1, 8)), budget_bytes=[4_000_000, 1_000_000])
    with pytest.raises(grpc.RpcError) as raised:
        stub.Reconfigure(request, timeout=30)
    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "stage 1 (layers 4-7 -> 1-7): its weights after the change take" in raised.value.details()
    after = stub.Status(pb.StatusRequest())
    assert layout(after) == layout(before) and after.kv_blocks_total == before.kv_blocks_total
    tokens = [m.token_id for m in stub.Generate(pb.GenerateRequest(prompt_token_ids=[1, 2, 3], max_tokens=4))]
    assert len(tokens) == 4


def test_cli_reconfigure_prints_the_reply_and_reports_refusals(server: RunningPipeLive) -> None:
    base = [
        sys.executable,
        "-m",
        "controlplane.serve",
        "pipelive",
        "reconfigure",
        "--target",
        server.grpc_target,
    ]
    done = subprocess.run(
        [*base, "--layers", "0-5,6-7", "--method", "stop_and_copy", "--json"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    reply = json.loads(done.stdout)
    assert reply["method"] == "stop_and_copy"
    assert reply["stages"] == [{"end_layer": 6}, {"first_layer": 6, "end_layer": 8}]
    refused = subprocess.run(
        [*base, "--layers", "0-5,7-7"], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert refused.returncode == 1
    assert "INVALID_ARGUMENT: stages: stage 1: layers 6-6 belong to no stage" in refused.stderr
    back = subprocess.run(
        [*base, "--layers", "0-3,4-7"], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert back.returncode == 0 and back.stdout.startswith("live: now serving 0-3,4-7; pause "), back.stdout
