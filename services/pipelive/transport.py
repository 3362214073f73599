"""How pipeline processes pass messages: a pickled metadata header plus tensors sent natively.

A message (a step's plan and activations, a command, a reply) is split in two when it is sent:

* the **header**: the message with every tensor replaced by a reference `(index, TensorSpec)`, pickled,
  and framed in a fixed-size uint8 tensor whose first 8 bytes give the pickle's length (a longer header
  sends its remainder as a second tensor). Headers always travel over the default gloo group on the host,
  so a receiver reads one without waiting on a GPU.
* the **tensors**: each sent with `isend` as its raw bytes (a uint8 view, so every dtype travels the same
  way on either backend), received into buffers preallocated from the header's shapes and dtypes.

Which way a tensor travels depends on the link. With NCCL, a link between two stages has a device group
(an NCCL group of the stage ranks): a tensor already on that link's device type goes through it and lands
on the receiver's GPU, with no host round trip. Everything else — links to the driver, which lives on the
CPU, and every link under gloo — carries host tensors over the default group (CUDA tensors are copied to
the host first: gloo's point-to-point is CPU-only).

NCCL refuses two ranks on one GPU ("Duplicate GPU detected"), so the driver (rank 0) never joins the
NCCL group, and NCCL is only chosen when neighbouring stages sit on different GPUs.
"""

from __future__ import annotations

import io
import pickle
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

BACKENDS = ("auto", "gloo", "nccl")
FRAME_BYTES = 4096  # the first header frame; most headers (a plan's metadata) fit in one
_LENGTH = struct.Struct("<q")
_TIMEOUT = timedelta(minutes=10)


class BackendUnavailable(ValueError):
    """The transport backend asked for cannot run with these stage devices on this machine."""


def stage_devices(device: str, num_stages: int, cuda_device_count: int) -> list[torch.device]:
    """The device of each stage: a bare "cuda" puts stage i on cuda:(i % device_count); anything else
    (cpu, or an explicit cuda:k) is used as given for every stage."""
    base = torch.device(device)
    if base.type == "cuda" and base.index is None and cuda_device_count > 0:
        return [torch.device("cuda", index % cuda_device_count) for index in range(num_stages)]
    return [base] * num_stages


def stage_device(device: str, index: int) -> torch.device:
    """The device of stage `index` on this machine (see `stage_devices`)."""
    count = torch.cuda.device_count() if torch.device(device).type == "cuda" else 0
    return stage_devices(device, index + 1, count)[index]


def select_backend(
    devices: Sequence[torch.device],
    requested: str = "auto",
    *,
    cuda_available: bool,
    nccl_available: bool,
) -> str:
    """The backend ("gloo" or "nccl") for stages on `devices`.

    "auto" picks NCCL exactly when an explicit "nccl" would work; an explicit "nccl" that cannot work
    raises BackendUnavailable saying why.
    """
    if requested not in BACKENDS:
        raise BackendUnavailable(f"transport_backend must be one of {', '.join(BACKENDS)}, not {requested!r}")
    if requested == "gloo":
        return "gloo"
    problems = []
    if not cuda_available:
        problems.append("torch.cuda is not available on this machine")
    elif not nccl_available:
        problems.append("this torch build has no NCCL")
    off_gpu = [
        f"stage {index} is on {device}" for index, device in enumerate(devices) if device.type != "cuda"
    ]
    if off_gpu:
        problems.append("NCCL needs every stage on a CUDA device, but " + ", ".join(off_gpu))
    shared = [
        f"stages {index} and {index + 1} are both on {devices[index]}"
        for index in range(len(devices) - 1)
        if devices[index].type == "cuda" and devices[index] == devices[index + 1]
    ]
    if shared:
        problems.append("NCCL allows one rank per GPU, but " + ", ".join(shared))
    if not problems:
        return "nccl"
    if requested == "auto":
        return "gloo"
    raise BackendUnavailable("transport_backend='nccl' cannot be used: " + "; ".join(problems))


def choose_backend(devices: Sequence[torch.device], requested: str = "auto") -> str:
    """`select_backend` for this machine."""
    return select_backend(
        devices,
        requested,
        cuda_available=torch.cuda.is_available(),
        nccl_available=dist.is_available() and dist.is_nccl_available(),
    )


@dataclass(frozen=True)
class Link:
    """This process's connection to one neighbouring rank."""

    peer: int  # global rank
    device_group: Any = None  # ProcessGroup for device tensors (NCCL between stages); None: host only
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))


@dataclass(frozen=True)
class TensorSpec:
    """What a receiver needs to preallocate one tensor, and which way it travels."""

    shape: tuple[int, ...]
    dtype: torch.dtype
    nbytes: int
    on_device: bool  # over the link's device group, landing on the receiver's device


class PendingSend:
    """The works of one message's sends, and the buffers that must live until they complete."""

    def __init__(self, works: list[Any], buffers: list[torch.Tensor]) -> None:
        self._works = works
        self._buffers = buffers

    def wait(self) -> None:
        for work in self._works:
            if work is not None:
                work.wait()
        self._works, self._buffers = [], []


class _HeaderPickler(pickle.Pickler):
    """Pickles a message with each tensor replaced by `(index, TensorSpec)`; keeps the tensors to send."""

    def __init__(self, file: io.BytesIO, link: Link) -> None:
        super().__init__(file, protocol=5)
        self.link = link
        self.payloads: list[tuple[torch.Tensor, bool]] = []
        self._seen: dict[int, tuple[int, TensorSpec]] = {}
        self._keep: list[torch.Tensor] = []  # so that no id() is reused while pickling

    def persistent_id(self, obj: Any) -> Any:
        if not isinstance(obj, torch.Tensor):
            return None
        known = self._seen.get(id(obj))
        if known is not None:
            return known  # the same tensor twice is sent once and stays one tensor
        tensor = obj.detach()
        on_device = self.link.device_group is not None and tensor.device.type == self.link.device.type
        tensor = tensor.to(self.link.device) if on_device else tensor.cpu()
        spec = TensorSpec(
            tuple(tensor.shape), tensor.dtype, tensor.numel() * tensor.element_size(), on_device
        )
        reference = (len(self.payloads), spec)
        self.payloads.append((tensor.contiguous(), on_device))
        self._seen[id(obj)] = reference
        self._keep.append(obj)
        return reference


class _HeaderUnpickler(pickle.Unpickler):
    """Rebuilds a message around empty buffers; the tensors' bytes are received into them afterwards.

    So nothing in a message may read its tensors while being unpickled (plain dataclasses, dicts and
    tuples do not).
    """

    def __init__(self, file: io.BytesIO, link: Link) -> None:
        super().__init__(file)
        self.link = link
        self.buffers: dict[int, tuple[torch.Tensor, bool]] = {}
        self.tensors: dict[int, torch.Tensor] = {}

    def persistent_load(self, pid: Any) -> Any:
        index, spec = pid
        if index not in self.tensors:
            device = self.link.device if spec.on_device else torch.device("cpu")
            raw = torch.empty(spec.nbytes, dtype=torch.uint8, device=device)
            self.buffers[index] = (raw, spec.on_device)
            self.tensors[index] = raw.view(spec.dtype).reshape(spec.shape)
        return self.tensors[index]


def _raw_bytes(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.reshape(-1).view(torch.uint8)


def encode_header(message: Any, link: Link) -> tuple[bytes, list[tuple[torch.Tensor, bool]]]:
    """The pickled header of `message` and its tensors in sending order, each with whether it goes on
    the device group."""
    buffer = io.BytesIO()
    pickler = _HeaderPickler(buffer, link)
    pickler.dump(message)
    return buffer.getvalue(), pickler.payloads


def send_message(message: Any, link: Link) -> PendingSend:
    """Start sending `message` to `link.peer`; wait on the result before reusing what it holds."""
    header, payloads = encode_header(message, link)
    frame = bytearray(FRAME_BYTES)
    _LENGTH.pack_into(frame, 0, len(header))
    first = min(len(header), FRAME_BYTES - _LENGTH.size)
    frame[_LENGTH.size : _LENGTH.size + first] = header[:first]
    buffers = [torch.frombuffer(frame, dtype=torch.uint8)]
    if len(header) > first:
        buffers.append(torch.frombuffer(bytearray(header[first:]), dtype=torch.uint8))
    works = [dist.isend(buffer, link.peer) for buffer in buffers]
    for tensor, on_device in payloads:
        if tensor.numel() == 0:
            continue  # nothing to send: the receiver allocates the empty tensor from the header alone
        raw = _raw_bytes(tensor)
        works.append(dist.isend(raw, link.peer, group=link.device_group if on_device else None))
        buffers.append(raw)
    return PendingSend(works, buffers)


def receive_message(link: Link) -> Any:
    """Receive the next message from `link.peer`: its header, then its tensors into fresh buffers."""
    frame = torch.empty(FRAME_BYTES, dtype=torch.uint8)
    dist.recv(frame, link.peer)
    (length,) = _LENGTH.unpack_from(frame.numpy(), 0)
    first = min(length, FRAME_BYTES - _LENGTH.size)
    header = frame.numpy()[_LENGTH.size : _LENGTH.size + first].tobytes()
    if length > first:
        rest = torch.empty(length - first, dtype=torch.uint8)
        dist.recv(rest, link.peer)
        header += rest.numpy().tobytes()
    unpickler = _HeaderUnpickler(io.BytesIO(header), link)
    message = unpickler.load()
    works = []
    for index in range(len(unpickler.buffers)):
        raw, on_device = unpickler.buffers[index]
        if raw.numel():
            works.append(dist.irecv(raw, link.peer, group=link.device_group if on_device else None))
    for work in works:
        work.wait()
    return message


def init_transport(
    rank: int,
    world_size: int,
    port: int,
    backend: str,
    device: torch.device | None = None,
    timeout: timedelta = _TIMEOUT,
) -> Any:
    """Join the pipeline's groups; every rank calls this. Rank 0 is the driver, ranks 1.. the stages.

    Returns the NCCL group of the stage ranks under NCCL (None elsewhere, and on the driver): the default
    group is always gloo, for headers and for the driver's host tensors.
    """
    if backend == "nccl" and device is not None and device.type == "cuda":
        torch.cuda.set_device(device)  # before any NCCL call, so that its communicators use this GPU
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size, timeout=timeout
    )
    if backend != "nccl":
        return None
    # Every rank must take part in creating a group, members or not.
    group = dist.new_group(ranks=list(range(1, world_size)), backend="nccl", timeout=timeout)
    return None if rank == 0 else group


def stage_links(rank: int, world_size: int, device_group: Any, device: torch.device) -> tuple[Link, Link]:
    """A stage's links: from the rank before it, and to the next (the last stage's goes to the driver)."""

    def link(peer: int) -> Link:
        if peer == 0 or device_group is None:
            return Link(peer)  # the driver's side is the host
        return Link(peer, device_group, device)

    return link(rank - 1), link((rank + 1) % world_size)


def close_transport() -> None:
    """Leave every group this process joined."""
    if dist.is_initialized():
        dist.destroy_process_group()
