"""Layer partitions of a pipeline: parsing `0-7,8-15`, checking that ranges cover every layer once, and
grouping a set of layers into contiguous runs.

No torch here, so that `controlplane pipelive reconfigure` (a gRPC client) starts quickly.
"""

from __future__ import annotations

from collections.abc import Sequence

METHODS = ("live", "live_no_resize", "stop_and_copy", "stop_and_redeploy")


class InvalidPartition(ValueError):
    """A partition or method that can never be carried out; `field` names the request field at fault."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def parse_layer_ranges(text: str) -> list[range]:
    """`0-7,8-15` (inclusive bounds; `5` is one layer) -> [range(0, 8), range(8, 16)]."""
    ranges = []
    for index, part in enumerate(text.split(",")):
        part = part.strip()
        first, dash, last = part.partition("-")
        try:
            start = int(first)
            stop = int(last) + 1 if dash else start + 1
        except ValueError as error:
            raise InvalidPartition(
                "stages", f"stage {index}: {part!r} is not a layer range like 0-7"
            ) from error
        ranges.append(range(start, stop))
    return ranges


def format_layer_ranges(ranges: Sequence[range]) -> str:
    return ",".join(f"{r.start}-{r.stop - 1}" for r in ranges)


def contiguous_runs(layers: Sequence[int]) -> list[range]:
    """`[5, 2, 3, 7]` -> [range(2, 4), range(5, 6), range(7, 8)]: sorted, adjacent layers merged."""
    runs: list[range] = []
    for layer in sorted(layers):
        if runs and runs[-1].stop == layer:
            runs[-1] = range(runs[-1].start, layer + 1)
        else:
            runs.append(range(layer, layer + 1))
    return runs


def validate_partition(ranges: Sequence[range], num_layers: int) -> list[range]:
    """Check that the ranges cover layers 0 .. num_layers - 1 once each, in order, none empty."""
    if not ranges:
        raise InvalidPartition("stages", "the partition has no stages")
    expected = 0
    for index, layers in enumerate(ranges):
        if layers.stop <= layers.start:
            raise InvalidPartition(
                "stages", f"stage {index}: layer range [{layers.start}, {layers.stop}) is empty"
            )
        if layers.start < 0 or layers.stop > num_layers:
            raise InvalidPartition(
                "stages",
                f"stage {index}: layers [{layers.start}, {layers.stop}) are out of range; "
                f"the model has layers 0-{num_layers - 1}",
            )
        if layers.start > expected:
            raise InvalidPartition(
                "stages", f"stage {index}: layers {expected}-{layers.start - 1} belong to no stage (a gap)"
            )
        if layers.start < expected:
            raise InvalidPartition(
                "stages",
                f"stage {index}: layers {layers.start}-{expected - 1} already belong to an earlier stage "
                "(an overlap)",
            )
        expected = layers.stop
    if expected != num_layers:
        raise InvalidPartition(
            "stages", f"layers {expected}-{num_layers - 1} belong to no stage (the last stage ends too early)"
        )
    return [range(r.start, r.stop) for r in ranges]


def validate_method(method: str) -> str:
    method = method or "live"
    if method not in METHODS:
        raise InvalidPartition("method", f"unknown method {method!r}; one of {', '.join(METHODS)}")
    return method
