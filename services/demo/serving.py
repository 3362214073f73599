"""The `[pipeline]` table of a serving-pipeline scenario: the model, its stages and devices, the requests.

`parse_pipeline` turns the table into a `PipelineSpec` (every field is documented in docs/benchmark.md,
"Scenarios") and `check_events` checks the scenario's device events against it, both
before anything runs. The simulator (`services.sim.pipeline.PipelineSim`) serves what the spec describes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from controlplane import DEFAULT_BLOCK_SIZE

GIB = 1024**3
KIB = 1024
METHODS = ("live", "stop_and_copy", "stop_and_redeploy")


@dataclass(frozen=True, slots=True)
class DeviceSpec:
    name: str
    budget_bytes: int
    prefill_speed: float = 1.0
    decode_speed: float = 1.0


@dataclass(frozen=True, slots=True)
class RequestClass:
    name: str
    prompt_tokens: int
    output_tokens: int
    weight: float = 1.0


@dataclass(frozen=True, slots=True)
class PipelineSpec:
    """The `[pipeline]` table of a scenario (every field is documented in docs/benchmark.md)."""

    name: str
    num_layers: int
    layers: tuple[int, ...]
    stage_devices: tuple[str, ...]
    devices: tuple[DeviceSpec, ...]
    requests: tuple[RequestClass, ...]
    layer_weight_bytes: int = int(0.4 * GIB)
    # Keys and values of one token in one layer; a KV block of one layer is `block_size` of them, so the
    # block size is one knob: the pool's block count and every block's bytes follow it.
    kv_bytes_per_token_layer: int = 16 * KIB
    block_size: int = DEFAULT_BLOCK_SIZE
    prefill_seconds_per_token_layer: float = 2.0e-5
    decode_seconds_per_token_layer: float = 1.0e-4
    layer_overhead_seconds: float = 1.0e-3
    max_num_seqs: int = 64
    max_num_batched_tokens: int = 2048
    request_timeout_seconds: float = 30.0
    # What a reconfiguration costs; assumptions until the engine's measured figures replace them.
    live_pause_ms: float = 10.0
    live_copy_bytes_per_second: float = 10.0 * GIB
    live_slowdown: float = 1.1
    redeploy_startup_seconds: float = 5.0
    redeploy_load_bytes_per_second: float = 2.0 * GIB

    @property
    def kv_block_bytes_per_layer(self) -> int:
        """Bytes of one KV block of one layer."""
        return self.block_size * self.kv_bytes_per_token_layer


_FLOATS = {
    "prefill_seconds_per_token_layer": ("prefill_seconds_per_token_layer", 1.0),
    "decode_seconds_per_token_layer": ("decode_seconds_per_token_layer", 1.0),
    "layer_overhead_seconds": ("layer_overhead_seconds", 1.0),
    "request_timeout_seconds": ("request_timeout_seconds", 1.0),
    "live_pause_ms": ("live_pause_ms", 1.0),
    "live_copy_gib_per_s": ("live_copy_bytes_per_second", GIB),
    "live_slowdown": ("live_slowdown", 1.0),
    "redeploy_startup_seconds": ("redeploy_startup_seconds", 1.0),
    "redeploy_load_gib_per_s": ("redeploy_load_bytes_per_second", GIB),
}
_INTS = ("block_size", "max_num_seqs", "max_num_batched_tokens")
_KNOWN = {
    "name",
    "num_layers",
    "layers",
    "stage_devices",
    "devices",
    "requests",
    "layer_weight_gib",
    "kv_kib_per_token_layer",
    *_FLOATS,
    *_INTS,
}


def _number(table: Mapping[str, Any], key: str, where: str) -> float:
    value = table[key]
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ValueError(f"{where}.{key}: expected a number > 0, got {value!r}")
    return float(value)


def _whole(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{where}: expected a whole number >= 1, got {value!r}")
    return value


def device_from_table(table: Mapping[str, Any], where: str) -> DeviceSpec:
    unknown = set(table) - {"name", "budget_gib", "prefill_speed", "decode_speed"}
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {sorted(unknown)}")
    if not isinstance(table.get("name"), str) or not table["name"]:
        raise ValueError(f"{where}.name: a device needs a name")
    if "budget_gib" not in table:
        raise ValueError(f"{where}.budget_gib: a device needs a memory budget")
    return DeviceSpec(
        name=table["name"],
        budget_bytes=int(_number(table, "budget_gib", where) * GIB),
        prefill_speed=_number(table, "prefill_speed", where) if "prefill_speed" in table else 1.0,
        decode_speed=_number(table, "decode_speed", where) if "decode_speed" in table else 1.0,
    )


def parse_pipeline(table: Mapping[str, Any]) -> PipelineSpec:
    """A `PipelineSpec` from a scenario's `[pipeline]` table; ValueError names the first wrong field."""
    where = "pipeline"
    unknown = set(table) - _KNOWN
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {sorted(unknown)}; known: {sorted(_KNOWN)}")
    num_layers = _whole(table.get("num_layers"), f"{where}.num_layers")
    devices = tuple(
        device_from_table(item, f"{where}.devices[{index}]")
        for index, item in enumerate(table.get("devices", ()))
    )
    names = [device.name for device in devices]
    if not devices or len(set(names)) != len(names):
        raise ValueError(f"{where}.devices: give at least one device, each with its own name")
    layers = tuple(_whole(count, f"{where}.layers") for count in table.get("layers", ()))
    if sum(layers) != num_layers:
        raise ValueError(f"{where}.layers: the stages hold {sum(layers)} layers, the model has {num_layers}")
    stage_devices = tuple(table.get("stage_devices", ()))
    if len(stage_devices) != len(layers) or len(set(stage_devices)) != len(stage_devices):
        raise ValueError(f"{where}.stage_devices: name one distinct device per stage")
    missing = [name for name in stage_devices if name not in names]
    if missing:
        raise ValueError(f"{where}.stage_devices: {missing} are not in pipeline.devices")
    requests = []
    for index, item in enumerate(table.get("requests", ())):
        at = f"{where}.requests[{index}]"
        if set(item) - {"name", "prompt_tokens", "output_tokens", "weight"} or "name" not in item:
            raise ValueError(f"{at}: expected name, prompt_tokens, output_tokens and weight")
        requests.append(
            RequestClass(
                name=str(item["name"]),
                prompt_tokens=_whole(item.get("prompt_tokens"), f"{at}.prompt_tokens"),
                output_tokens=_whole(item.get("output_tokens"), f"{at}.output_tokens"),
                weight=_number(item, "weight", at) if "weight" in item else 1.0,
            )
        )
    if not requests:
        raise ValueError(f"{where}.requests: give at least one request class")
    options: dict[str, Any] = {}
    for key, (attribute, scale) in _FLOATS.items():
        if key in table:
            options[attribute] = _number(table, key, where) * scale
    for key in _INTS:
        if key in table:
            options[key] = _whole(table[key], f"{where}.{key}")
    if "layer_weight_gib" in table:
        options["layer_weight_bytes"] = int(_number(table, "layer_weight_gib", where) * GIB)
    if "kv_kib_per_token_layer" in table:
        options["kv_bytes_per_token_layer"] = int(_number(table, "kv_kib_per_token_layer", where) * KIB)
    return PipelineSpec(
        name=str(table.get("name", "llm")),
        num_layers=num_layers,
        layers=layers,
        stage_devices=stage_devices,
        devices=devices,
        requests=tuple(requests),
        **options,
    )


def check_events(spec: PipelineSpec, events: list[tuple[str, Mapping[str, Any]]]) -> None:
    """Device events name devices the pipeline has (or that joined before) and give numbers > 0.

    `events` are (kind, parameters) in time order; a wrong one is a ValueError naming it, before the run.
    """
    known = {device.name for device in spec.devices}
    for index, (kind, parameters) in enumerate(events):
        where = f"events[{index}]"
        if not kind.startswith("device_"):
            continue
        device = parameters["device"]
        if kind == "device_join":
            known.add(str(device))
        elif device not in known:
            raise ValueError(
                f"{where}.device: {device!r} is not a device of the pipeline; known: {sorted(known)}"
            )
        for key in ("budget_gib", "prefill_speed", "decode_speed"):
            if key in parameters:
                _number(parameters, key, where)
