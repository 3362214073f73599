"""The pipeline transport: messages round-trip between two real processes, and the backend choice.

NCCL itself cannot run on these CUDA-less machines: the backend choice is tested as a pure function, the
routing of tensors to the device group is tested on the encoded header, and the split between a header
group and a tensor group is exercised with a gloo group standing in for the NCCL one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from controlplane import free_port
from services.pipelive.config import EngineConfig
from services.pipelive.engine import LLMEngine
from services.pipelive.transport import (
    FRAME_BYTES,
    BackendUnavailable,
    Link,
    close_transport,
    encode_header,
    init_transport,
    receive_message,
    select_backend,
    send_message,
    stage_devices,
)
from tests.services.pipelive.support import TINY, engine_config

TIMEOUT = timedelta(seconds=60)


@dataclass(frozen=True)
class Envelope:
    """A message shaped like the pipeline's: nested metadata with tensors at several depths."""

    name: str
    numbers: dict[str, Any]
    tensors: tuple[torch.Tensor, ...]
    nested: list[Any] = field(default_factory=list)


def sample_messages() -> list[Any]:
    generator = torch.Generator().manual_seed(3)
    shared = torch.randn(4, 3, generator=generator)
    grid = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    big = Envelope(
        name="x" * (2 * FRAME_BYTES),  # a header longer than one frame
        numbers={"ints": [1, 2, 3], "pair": (None, 2.5), "flag": True},
        tensors=(
            torch.randn(3, 5, generator=generator),
            torch.tensor(7.25, dtype=torch.float64),  # zero-dimensional
            torch.randint(-(2**40), 2**40, (7,), generator=generator),
            torch.rand(2, 3, generator=generator) > 0.5,
            torch.randn(4, 2, generator=generator).to(torch.bfloat16),
            torch.zeros(0, 4, dtype=torch.uint8),  # empty
            grid.t(),  # not contiguous
            torch.randn(2, 2, generator=generator).to(torch.float16),
        ),
        nested=[{"same": shared, "again": shared}, ("deep", [torch.tensor([1, 2], dtype=torch.int32)])],
    )
    small = {"command": "status", "args": {"chunk_ids": [3, 4]}, "replies": []}
    return [small, big, small]


def summary(message: Any) -> list[tuple[str, tuple[int, ...], float]]:
    """What the far end reports back about the tensors it received, computed from their values."""
    if not isinstance(message, Envelope):
        return []
    tensors = [*message.tensors, message.nested[0]["same"], message.nested[1][1][0]]
    return [(str(t.dtype), tuple(t.shape), float(t.double().sum())) for t in tensors]


def _echo_main(port: int, split_groups: bool, count: int) -> None:
    """The far end: receive `count` messages, send each back with a summary computed from its tensors."""
    init_transport(1, 2, port, "gloo", timeout=TIMEOUT)
    try:
        link = Link(0)
        if split_groups:
            link = Link(0, dist.new_group([0, 1], backend="gloo", timeout=TIMEOUT), torch.device("cpu"))
        for _ in range(count):
            message = receive_message(link)
            send_message(("echo", message, summary(message)), link).wait()
    finally:
        close_transport()


def assert_same(sent: Any, received: Any) -> None:
    if isinstance(sent, torch.Tensor):
        assert isinstance(received, torch.Tensor)
        assert received.dtype == sent.dtype and received.shape == sent.shape
        assert torch.equal(received, sent)
        assert received.is_contiguous()
    elif isinstance(sent, Envelope):
        assert isinstance(received, Envelope)
        assert received.name == sent.name and received.numbers == sent.numbers
        assert_same(list(sent.tensors), list(received.tensors))
        assert_same(sent.nested, received.nested)
    elif isinstance(sent, list | tuple):
        assert type(received) is type(sent) and len(received) == len(sent)
        for a, b in zip(sent, received, strict=True):
            assert_same(a, b)
    elif isinstance(sent, dict):
        assert received.keys() == sent.keys()
        for key in sent:
            assert_same(sent[key], received[key])
    else:
        assert received == sent


@pytest.mark.parametrize("split_groups", [False, True], ids=["one-group", "header-and-tensor-groups"])
def test_messages_round_trip_between_two_processes(split_groups: bool) -> None:
    messages = sample_messages()
    port = free_port()
    child = mp.get_context("spawn").Process(target=_echo_main, args=(port, split_groups, len(messages)))
    child.start()
    try:
        init_transport(0, 2, port, "gloo", timeout=TIMEOUT)
        link = Link(1)
        if split_groups:
            link = Link(1, dist.new_group([0, 1], backend="gloo", timeout=TIMEOUT), torch.device("cpu"))
        pending = [send_message(message, link) for message in messages]  # all in flight at once
        replies = [receive_message(link) for _ in messages]
        for item in pending:
            item.wait()
    finally:
        close_transport()
        child.join(timeout=30)
        if child.is_alive():
            child.kill()
    assert child.exitcode == 0
    for message, (tag, echoed, report) in zip(messages, replies, strict=True):
        assert tag == "echo"
        assert_same(message, echoed)
        assert report == summary(message)
    big = replies[1][1]
    assert big.nested[0]["same"] is big.nested[0]["again"]  # one tensor twice stays one tensor
    assert big.tensors[6].tolist() == torch.arange(24.0).reshape(4, 6).t().tolist()


def test_tensors_take_the_device_group_only_when_on_the_links_device_type() -> None:
    message = {"hidden": torch.ones(2, 3), "ids": torch.arange(4)}
    _, host_only = encode_header(message, Link(1))
    assert [on_device for _, on_device in host_only] == [False, False]
    stand_in_group = object()  # never used: encoding only decides the route
    _, on_cpu_link = encode_header(message, Link(1, stand_in_group, torch.device("cpu")))
    assert [on_device for _, on_device in on_cpu_link] == [True, True]
    # a CUDA link (NCCL between stages) carries CUDA tensors; host tensors keep to the host group
    _, on_cuda_link = encode_header(message, Link(1, stand_in_group, torch.device("cuda", 1)))
    assert [on_device for _, on_device in on_cuda_link] == [False, False]


CUDA = [torch.device("cuda", 0), torch.device("cuda", 1)]
CPU = [torch.device("cpu"), torch.device("cpu")]
ONE_GPU = [torch.device("cuda", 0)] * 2
ROUND_ROBIN = [torch.device("cuda", 0), torch.device("cuda", 1), torch.device("cuda", 0)]


@pytest.mark.parametrize(
    ("devices", "requested", "cuda", "nccl", "expected"),
    [
        (CPU, "auto", False, False, "gloo"),
        (CPU, "auto", True, True, "gloo"),
        (CUDA, "auto", True, True, "nccl"),
        (CUDA, "auto", False, False, "gloo"),
        (CUDA, "auto", True, False, "gloo"),
        (CUDA, "gloo", True, True, "gloo"),
        (CUDA, "nccl", True, True, "nccl"),
        (ONE_GPU, "auto", True, True, "gloo"),  # two stages, one GPU
        (ROUND_ROBIN, "nccl", True, True, "nccl"),  # neighbours differ; stages 0 and 2 never talk
        ([torch.device("cuda", 0), torch.device("cpu")], "auto", True, True, "gloo"),
    ],
)
def test_backend_follows_the_stage_devices(
    devices: list[torch.device], requested: str, cuda: bool, nccl: bool, expected: str
) -> None:
    assert select_backend(devices, requested, cuda_available=cuda, nccl_available=nccl) == expected


@pytest.mark.parametrize(
    ("devices", "cuda", "nccl", "words"),
    [
        (CPU, False, False, ["torch.cuda is not available", "stage 0 is on cpu, stage 1 is on cpu"]),
        (CUDA, True, False, ["this torch build has no NCCL"]),
        (ONE_GPU, True, True, ["one rank per GPU", "stages 0 and 1 are both on cuda:0"]),
        ([torch.device("cuda", 0), torch.device("cpu")], True, True, ["stage 1 is on cpu"]),
    ],
)
def test_asking_for_nccl_where_it_cannot_run_says_why(
    devices: list[torch.device], cuda: bool, nccl: bool, words: list[str]
) -> None:
    with pytest.raises(BackendUnavailable) as raised:
        select_backend(devices, "nccl", cuda_available=cuda, nccl_available=nccl)
    assert str(raised.value).startswith("transport_backend='nccl' cannot be used: ")
    for word in words:
        assert word in str(raised.value)


def test_unknown_backend_is_refused() -> None:
    with pytest.raises(BackendUnavailable, match="not 'mpi'"):
        select_backend(CPU, "mpi", cuda_available=False, nccl_available=False)
    with pytest.raises(ValueError, match="transport_backend must be"):
        EngineConfig(transport_backend="mpi")


def test_stages_spread_over_the_gpus() -> None:
    assert stage_devices("cuda", 4, 2) == [torch.device("cuda", i) for i in (0, 1, 0, 1)]
    assert stage_devices("cuda", 3, 4) == [torch.device("cuda", i) for i in (0, 1, 2)]
    assert stage_devices("cuda:1", 2, 2) == [torch.device("cuda", 1)] * 2
    assert stage_devices("cpu", 3, 0) == [torch.device("cpu")] * 3


def test_engine_asked_for_nccl_on_this_cpu_machine_fails_before_starting_stages() -> None:
    # stages on the CPU: an explicit NCCL request is a clear error, not a hang or a silent fallback
    with pytest.raises(BackendUnavailable, match="cannot be used: .*stage 0 is on cpu"):
        LLMEngine(TINY, engine_config(num_stages=2, transport_backend="nccl"), mode="process")
    assert not dist.is_initialized()
