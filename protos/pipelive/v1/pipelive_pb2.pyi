from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GenerateRequest(_message.Message):
    __slots__ = ("model", "prompt", "prompt_token_ids", "max_tokens", "temperature", "seed", "top_p", "top_k")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    TOP_P_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    model: str
    prompt: str
    prompt_token_ids: _containers.RepeatedScalarFieldContainer[int]
    max_tokens: int
    temperature: float
    seed: int
    top_p: float
    top_k: int
    def __init__(self, model: _Optional[str] = ..., prompt: _Optional[str] = ..., prompt_token_ids: _Optional[_Iterable[int]] = ..., max_tokens: _Optional[int] = ..., temperature: _Optional[float] = ..., seed: _Optional[int] = ..., top_p: _Optional[float] = ..., top_k: _Optional[int] = ...) -> None: ...

class GenerateResponse(_message.Message):
    __slots__ = ("request_id", "token_id", "text", "finish_reason", "index")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    TOKEN_ID_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    token_id: int
    text: str
    finish_reason: str
    index: int
    def __init__(self, request_id: _Optional[str] = ..., token_id: _Optional[int] = ..., text: _Optional[str] = ..., finish_reason: _Optional[str] = ..., index: _Optional[int] = ...) -> None: ...

class StatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StageStatus(_message.Message):
    __slots__ = ("index", "first_layer", "end_layer", "device", "budget_bytes", "usable_bytes", "weight_bytes", "kv_bytes", "kv_blocks_total", "kv_blocks_used", "kv_blocks_free", "kv_chunks", "kv_chunk_bytes", "kv_blocks_capacity")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    FIRST_LAYER_FIELD_NUMBER: _ClassVar[int]
    END_LAYER_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    BUDGET_BYTES_FIELD_NUMBER: _ClassVar[int]
    USABLE_BYTES_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_BYTES_FIELD_NUMBER: _ClassVar[int]
    KV_BYTES_FIELD_NUMBER: _ClassVar[int]
    KV_BLOCKS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    KV_BLOCKS_USED_FIELD_NUMBER: _ClassVar[int]
    KV_BLOCKS_FREE_FIELD_NUMBER: _ClassVar[int]
    KV_CHUNKS_FIELD_NUMBER: _ClassVar[int]
    KV_CHUNK_BYTES_FIELD_NUMBER: _ClassVar[int]
    KV_BLOCKS_CAPACITY_FIELD_NUMBER: _ClassVar[int]
    index: int
    first_layer: int
    end_layer: int
    device: str
    budget_bytes: int
    usable_bytes: int
    weight_bytes: int
    kv_bytes: int
    kv_blocks_total: int
    kv_blocks_used: int
    kv_blocks_free: int
    kv_chunks: int
    kv_chunk_bytes: int
    kv_blocks_capacity: int
    def __init__(self, index: _Optional[int] = ..., first_layer: _Optional[int] = ..., end_layer: _Optional[int] = ..., device: _Optional[str] = ..., budget_bytes: _Optional[int] = ..., usable_bytes: _Optional[int] = ..., weight_bytes: _Optional[int] = ..., kv_bytes: _Optional[int] = ..., kv_blocks_total: _Optional[int] = ..., kv_blocks_used: _Optional[int] = ..., kv_blocks_free: _Optional[int] = ..., kv_chunks: _Optional[int] = ..., kv_chunk_bytes: _Optional[int] = ..., kv_blocks_capacity: _Optional[int] = ...) -> None: ...

class StatusResponse(_message.Message):
    __slots__ = ("model", "num_layers", "block_size", "blocks_per_chunk", "layers_per_unit", "num_requests_running", "num_requests_waiting", "kv_blocks_total", "kv_blocks_used", "kv_blocks_free", "stages", "max_stages")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    NUM_LAYERS_FIELD_NUMBER: _ClassVar[int]
    BLOCK_SIZE_FIELD_NUMBER: _ClassVar[int]
    BLOCKS_PER_CHUNK_FIELD_NUMBER: _ClassVar[int]
    LAYERS_PER_UNIT_FIELD_NUMBER: _ClassVar[int]
    NUM_REQUESTS_RUNNING_FIELD_NUMBER: _ClassVar[int]
    NUM_REQUESTS_WAITING_FIELD_NUMBER: _ClassVar[int]
    KV_BLOCKS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    KV_BLOCKS_USED_FIELD_NUMBER: _ClassVar[int]
    KV_BLOCKS_FREE_FIELD_NUMBER: _ClassVar[int]
    STAGES_FIELD_NUMBER: _ClassVar[int]
    MAX_STAGES_FIELD_NUMBER: _ClassVar[int]
    model: str
    num_layers: int
    block_size: int
    blocks_per_chunk: int
    layers_per_unit: int
    num_requests_running: int
    num_requests_waiting: int
    kv_blocks_total: int
    kv_blocks_used: int
    kv_blocks_free: int
    stages: _containers.RepeatedCompositeFieldContainer[StageStatus]
    max_stages: int
    def __init__(self, model: _Optional[str] = ..., num_layers: _Optional[int] = ..., block_size: _Optional[int] = ..., blocks_per_chunk: _Optional[int] = ..., layers_per_unit: _Optional[int] = ..., num_requests_running: _Optional[int] = ..., num_requests_waiting: _Optional[int] = ..., kv_blocks_total: _Optional[int] = ..., kv_blocks_used: _Optional[int] = ..., kv_blocks_free: _Optional[int] = ..., stages: _Optional[_Iterable[_Union[StageStatus, _Mapping]]] = ..., max_stages: _Optional[int] = ...) -> None: ...

class ResizeKvPoolRequest(_message.Message):
    __slots__ = ("target_blocks",)
    TARGET_BLOCKS_FIELD_NUMBER: _ClassVar[int]
    target_blocks: int
    def __init__(self, target_blocks: _Optional[int] = ...) -> None: ...

class ResizeKvPoolResponse(_message.Message):
    __slots__ = ("kv_blocks_total", "added_chunks", "released_chunks")
    KV_BLOCKS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    ADDED_CHUNKS_FIELD_NUMBER: _ClassVar[int]
    RELEASED_CHUNKS_FIELD_NUMBER: _ClassVar[int]
    kv_blocks_total: int
    added_chunks: _containers.RepeatedScalarFieldContainer[int]
    released_chunks: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, kv_blocks_total: _Optional[int] = ..., added_chunks: _Optional[_Iterable[int]] = ..., released_chunks: _Optional[_Iterable[int]] = ...) -> None: ...

class LayerRange(_message.Message):
    __slots__ = ("first_layer", "end_layer")
    FIRST_LAYER_FIELD_NUMBER: _ClassVar[int]
    END_LAYER_FIELD_NUMBER: _ClassVar[int]
    first_layer: int
    end_layer: int
    def __init__(self, first_layer: _Optional[int] = ..., end_layer: _Optional[int] = ...) -> None: ...

class ReconfigureRequest(_message.Message):
    __slots__ = ("stages", "method", "devices", "budget_bytes")
    STAGES_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    DEVICES_FIELD_NUMBER: _ClassVar[int]
    BUDGET_BYTES_FIELD_NUMBER: _ClassVar[int]
    stages: _containers.RepeatedCompositeFieldContainer[LayerRange]
    method: str
    devices: _containers.RepeatedScalarFieldContainer[str]
    budget_bytes: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, stages: _Optional[_Iterable[_Union[LayerRange, _Mapping]]] = ..., method: _Optional[str] = ..., devices: _Optional[_Iterable[str]] = ..., budget_bytes: _Optional[_Iterable[int]] = ...) -> None: ...

class ReconfigureResponse(_message.Message):
    __slots__ = ("stages", "method", "pause_ms", "total_ms", "weight_bytes_copied", "kv_bytes_copied", "patch_rounds", "final_dirty_blocks", "preempted", "dropped", "pause_kv_bytes", "dirty_blocks_per_round")
    STAGES_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    PAUSE_MS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_MS_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_BYTES_COPIED_FIELD_NUMBER: _ClassVar[int]
    KV_BYTES_COPIED_FIELD_NUMBER: _ClassVar[int]
    PATCH_ROUNDS_FIELD_NUMBER: _ClassVar[int]
    FINAL_DIRTY_BLOCKS_FIELD_NUMBER: _ClassVar[int]
    PREEMPTED_FIELD_NUMBER: _ClassVar[int]
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    PAUSE_KV_BYTES_FIELD_NUMBER: _ClassVar[int]
    DIRTY_BLOCKS_PER_ROUND_FIELD_NUMBER: _ClassVar[int]
    stages: _containers.RepeatedCompositeFieldContainer[LayerRange]
    method: str
    pause_ms: float
    total_ms: float
    weight_bytes_copied: int
    kv_bytes_copied: int
    patch_rounds: int
    final_dirty_blocks: int
    preempted: int
    dropped: int
    pause_kv_bytes: int
    dirty_blocks_per_round: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, stages: _Optional[_Iterable[_Union[LayerRange, _Mapping]]] = ..., method: _Optional[str] = ..., pause_ms: _Optional[float] = ..., total_ms: _Optional[float] = ..., weight_bytes_copied: _Optional[int] = ..., kv_bytes_copied: _Optional[int] = ..., patch_rounds: _Optional[int] = ..., final_dirty_blocks: _Optional[int] = ..., preempted: _Optional[int] = ..., dropped: _Optional[int] = ..., pause_kv_bytes: _Optional[int] = ..., dirty_blocks_per_round: _Optional[_Iterable[int]] = ...) -> None: ...
