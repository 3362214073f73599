from protos.controlplane.v1 import controlplane_pb2 as _controlplane_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class NodeState(_message.Message):
    __slots__ = ("node", "online", "session", "cpu_capacity", "memory_capacity_mb", "labels", "replicas", "routing", "sent_at_unix", "services")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class RoutingEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: RouteWeights
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[RouteWeights, _Mapping]] = ...) -> None: ...
    NODE_FIELD_NUMBER: _ClassVar[int]
    ONLINE_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    CPU_CAPACITY_FIELD_NUMBER: _ClassVar[int]
    MEMORY_CAPACITY_MB_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    ROUTING_FIELD_NUMBER: _ClassVar[int]
    SENT_AT_UNIX_FIELD_NUMBER: _ClassVar[int]
    SERVICES_FIELD_NUMBER: _ClassVar[int]
    node: str
    online: bool
    session: str
    cpu_capacity: float
    memory_capacity_mb: float
    labels: _containers.ScalarMap[str, str]
    replicas: _containers.RepeatedCompositeFieldContainer[ReplicaState]
    routing: _containers.MessageMap[str, RouteWeights]
    sent_at_unix: float
    services: _containers.RepeatedCompositeFieldContainer[ServiceState]
    def __init__(self, node: _Optional[str] = ..., online: _Optional[bool] = ..., session: _Optional[str] = ..., cpu_capacity: _Optional[float] = ..., memory_capacity_mb: _Optional[float] = ..., labels: _Optional[_Mapping[str, str]] = ..., replicas: _Optional[_Iterable[_Union[ReplicaState, _Mapping]]] = ..., routing: _Optional[_Mapping[str, RouteWeights]] = ..., sent_at_unix: _Optional[float] = ..., services: _Optional[_Iterable[_Union[ServiceState, _Mapping]]] = ...) -> None: ...

class ServiceState(_message.Message):
    __slots__ = ("name", "replicas", "ready_replicas", "cpu_request", "memory_request_mb", "version")
    NAME_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    READY_REPLICAS_FIELD_NUMBER: _ClassVar[int]
    CPU_REQUEST_FIELD_NUMBER: _ClassVar[int]
    MEMORY_REQUEST_MB_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    name: str
    replicas: int
    ready_replicas: int
    cpu_request: float
    memory_request_mb: float
    version: str
    def __init__(self, name: _Optional[str] = ..., replicas: _Optional[int] = ..., ready_replicas: _Optional[int] = ..., cpu_request: _Optional[float] = ..., memory_request_mb: _Optional[float] = ..., version: _Optional[str] = ...) -> None: ...

class ReplicaState(_message.Message):
    __slots__ = ("replica", "service", "ready")
    REPLICA_FIELD_NUMBER: _ClassVar[int]
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    READY_FIELD_NUMBER: _ClassVar[int]
    replica: str
    service: str
    ready: bool
    def __init__(self, replica: _Optional[str] = ..., service: _Optional[str] = ..., ready: _Optional[bool] = ...) -> None: ...

class RouteWeights(_message.Message):
    __slots__ = ("weights",)
    class WeightsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    weights: _containers.ScalarMap[str, float]
    def __init__(self, weights: _Optional[_Mapping[str, float]] = ...) -> None: ...

class EvidenceValue(_message.Message):
    __slots__ = ("number", "integer", "text", "flag")
    NUMBER_FIELD_NUMBER: _ClassVar[int]
    INTEGER_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    FLAG_FIELD_NUMBER: _ClassVar[int]
    number: float
    integer: int
    text: str
    flag: bool
    def __init__(self, number: _Optional[float] = ..., integer: _Optional[int] = ..., text: _Optional[str] = ..., flag: _Optional[bool] = ...) -> None: ...

class ScaleSettings(_message.Message):
    __slots__ = ("replicas",)
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    replicas: int
    def __init__(self, replicas: _Optional[int] = ...) -> None: ...

class PlaceSettings(_message.Message):
    __slots__ = ("node", "replica")
    NODE_FIELD_NUMBER: _ClassVar[int]
    REPLICA_FIELD_NUMBER: _ClassVar[int]
    node: str
    replica: str
    def __init__(self, node: _Optional[str] = ..., replica: _Optional[str] = ...) -> None: ...

class RouteSettings(_message.Message):
    __slots__ = ("weights",)
    class WeightsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    weights: _containers.ScalarMap[str, float]
    def __init__(self, weights: _Optional[_Mapping[str, float]] = ...) -> None: ...

class IsolateSettings(_message.Message):
    __slots__ = ("mechanism", "limit", "enabled")
    MECHANISM_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    mechanism: str
    limit: float
    enabled: bool
    def __init__(self, mechanism: _Optional[str] = ..., limit: _Optional[float] = ..., enabled: _Optional[bool] = ...) -> None: ...

class RemediateSettings(_message.Message):
    __slots__ = ("operation", "replica", "version")
    OPERATION_FIELD_NUMBER: _ClassVar[int]
    REPLICA_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    operation: str
    replica: str
    version: str
    def __init__(self, operation: _Optional[str] = ..., replica: _Optional[str] = ..., version: _Optional[str] = ...) -> None: ...

class ReconfigurePipelineSettings(_message.Message):
    __slots__ = ("layers_per_stage", "devices")
    LAYERS_PER_STAGE_FIELD_NUMBER: _ClassVar[int]
    DEVICES_FIELD_NUMBER: _ClassVar[int]
    layers_per_stage: _containers.RepeatedScalarFieldContainer[int]
    devices: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, layers_per_stage: _Optional[_Iterable[int]] = ..., devices: _Optional[_Iterable[str]] = ...) -> None: ...

class ActionSpec(_message.Message):
    __slots__ = ("target", "reason", "evidence", "scale", "place", "route", "isolate", "remediate", "reconfigure_pipeline")
    class EvidenceEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: EvidenceValue
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[EvidenceValue, _Mapping]] = ...) -> None: ...
    TARGET_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    EVIDENCE_FIELD_NUMBER: _ClassVar[int]
    SCALE_FIELD_NUMBER: _ClassVar[int]
    PLACE_FIELD_NUMBER: _ClassVar[int]
    ROUTE_FIELD_NUMBER: _ClassVar[int]
    ISOLATE_FIELD_NUMBER: _ClassVar[int]
    REMEDIATE_FIELD_NUMBER: _ClassVar[int]
    RECONFIGURE_PIPELINE_FIELD_NUMBER: _ClassVar[int]
    target: str
    reason: str
    evidence: _containers.MessageMap[str, EvidenceValue]
    scale: ScaleSettings
    place: PlaceSettings
    route: RouteSettings
    isolate: IsolateSettings
    remediate: RemediateSettings
    reconfigure_pipeline: ReconfigurePipelineSettings
    def __init__(self, target: _Optional[str] = ..., reason: _Optional[str] = ..., evidence: _Optional[_Mapping[str, EvidenceValue]] = ..., scale: _Optional[_Union[ScaleSettings, _Mapping]] = ..., place: _Optional[_Union[PlaceSettings, _Mapping]] = ..., route: _Optional[_Union[RouteSettings, _Mapping]] = ..., isolate: _Optional[_Union[IsolateSettings, _Mapping]] = ..., remediate: _Optional[_Union[RemediateSettings, _Mapping]] = ..., reconfigure_pipeline: _Optional[_Union[ReconfigurePipelineSettings, _Mapping]] = ...) -> None: ...

class ActionRequest(_message.Message):
    __slots__ = ("decision_key", "node", "action", "issued_at_unix", "deadline_unix")
    DECISION_KEY_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    ISSUED_AT_UNIX_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_UNIX_FIELD_NUMBER: _ClassVar[int]
    decision_key: str
    node: str
    action: ActionSpec
    issued_at_unix: float
    deadline_unix: float
    def __init__(self, decision_key: _Optional[str] = ..., node: _Optional[str] = ..., action: _Optional[_Union[ActionSpec, _Mapping]] = ..., issued_at_unix: _Optional[float] = ..., deadline_unix: _Optional[float] = ...) -> None: ...

class ActionOutcome(_message.Message):
    __slots__ = ("decision_key", "node", "ok", "detail", "duplicate", "finished_at_unix")
    DECISION_KEY_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    OK_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_UNIX_FIELD_NUMBER: _ClassVar[int]
    decision_key: str
    node: str
    ok: bool
    detail: str
    duplicate: bool
    finished_at_unix: float
    def __init__(self, decision_key: _Optional[str] = ..., node: _Optional[str] = ..., ok: _Optional[bool] = ..., detail: _Optional[str] = ..., duplicate: _Optional[bool] = ..., finished_at_unix: _Optional[float] = ...) -> None: ...

class NodeBounds(_message.Message):
    __slots__ = ("node", "version", "allowed_actions", "max_replicas", "max_replicas_default", "max_total_replicas")
    class MaxReplicasEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    NODE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ALLOWED_ACTIONS_FIELD_NUMBER: _ClassVar[int]
    MAX_REPLICAS_FIELD_NUMBER: _ClassVar[int]
    MAX_REPLICAS_DEFAULT_FIELD_NUMBER: _ClassVar[int]
    MAX_TOTAL_REPLICAS_FIELD_NUMBER: _ClassVar[int]
    node: str
    version: int
    allowed_actions: _containers.RepeatedScalarFieldContainer[str]
    max_replicas: _containers.ScalarMap[str, int]
    max_replicas_default: int
    max_total_replicas: int
    def __init__(self, node: _Optional[str] = ..., version: _Optional[int] = ..., allowed_actions: _Optional[_Iterable[str]] = ..., max_replicas: _Optional[_Mapping[str, int]] = ..., max_replicas_default: _Optional[int] = ..., max_total_replicas: _Optional[int] = ...) -> None: ...

class BucketAggregate(_message.Message):
    __slots__ = ("index", "errors", "zero_count", "total_ms", "bins", "counts")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    ZERO_COUNT_FIELD_NUMBER: _ClassVar[int]
    TOTAL_MS_FIELD_NUMBER: _ClassVar[int]
    BINS_FIELD_NUMBER: _ClassVar[int]
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    index: int
    errors: int
    zero_count: int
    total_ms: float
    bins: _containers.RepeatedScalarFieldContainer[int]
    counts: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, index: _Optional[int] = ..., errors: _Optional[int] = ..., zero_count: _Optional[int] = ..., total_ms: _Optional[float] = ..., bins: _Optional[_Iterable[int]] = ..., counts: _Optional[_Iterable[int]] = ...) -> None: ...

class SeriesWindow(_message.Message):
    __slots__ = ("service", "operation", "buckets")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    OPERATION_FIELD_NUMBER: _ClassVar[int]
    BUCKETS_FIELD_NUMBER: _ClassVar[int]
    service: str
    operation: str
    buckets: _containers.RepeatedCompositeFieldContainer[BucketAggregate]
    def __init__(self, service: _Optional[str] = ..., operation: _Optional[str] = ..., buckets: _Optional[_Iterable[_Union[BucketAggregate, _Mapping]]] = ...) -> None: ...

class TelemetryReport(_message.Message):
    __slots__ = ("node", "seq", "bucket_seconds", "relative_accuracy", "series", "sent_at_unix")
    NODE_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    BUCKET_SECONDS_FIELD_NUMBER: _ClassVar[int]
    RELATIVE_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    SERIES_FIELD_NUMBER: _ClassVar[int]
    SENT_AT_UNIX_FIELD_NUMBER: _ClassVar[int]
    node: str
    seq: int
    bucket_seconds: float
    relative_accuracy: float
    series: _containers.RepeatedCompositeFieldContainer[SeriesWindow]
    sent_at_unix: float
    def __init__(self, node: _Optional[str] = ..., seq: _Optional[int] = ..., bucket_seconds: _Optional[float] = ..., relative_accuracy: _Optional[float] = ..., series: _Optional[_Iterable[_Union[SeriesWindow, _Mapping]]] = ..., sent_at_unix: _Optional[float] = ...) -> None: ...

class LocalDecision(_message.Message):
    __slots__ = ("local_id", "controller", "taxonomy", "action", "status", "why", "outcome", "created_at_unix", "tick")
    LOCAL_ID_FIELD_NUMBER: _ClassVar[int]
    CONTROLLER_FIELD_NUMBER: _ClassVar[int]
    TAXONOMY_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    WHY_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_UNIX_FIELD_NUMBER: _ClassVar[int]
    TICK_FIELD_NUMBER: _ClassVar[int]
    local_id: int
    controller: str
    taxonomy: _controlplane_pb2.TaxonomyInfo
    action: ActionSpec
    status: str
    why: str
    outcome: str
    created_at_unix: float
    tick: int
    def __init__(self, local_id: _Optional[int] = ..., controller: _Optional[str] = ..., taxonomy: _Optional[_Union[_controlplane_pb2.TaxonomyInfo, _Mapping]] = ..., action: _Optional[_Union[ActionSpec, _Mapping]] = ..., status: _Optional[str] = ..., why: _Optional[str] = ..., outcome: _Optional[str] = ..., created_at_unix: _Optional[float] = ..., tick: _Optional[int] = ...) -> None: ...

class DecisionReport(_message.Message):
    __slots__ = ("node", "decisions")
    NODE_FIELD_NUMBER: _ClassVar[int]
    DECISIONS_FIELD_NUMBER: _ClassVar[int]
    node: str
    decisions: _containers.RepeatedCompositeFieldContainer[LocalDecision]
    def __init__(self, node: _Optional[str] = ..., decisions: _Optional[_Iterable[_Union[LocalDecision, _Mapping]]] = ...) -> None: ...

class DecisionAck(_message.Message):
    __slots__ = ("node", "up_to_local_id")
    NODE_FIELD_NUMBER: _ClassVar[int]
    UP_TO_LOCAL_ID_FIELD_NUMBER: _ClassVar[int]
    node: str
    up_to_local_id: int
    def __init__(self, node: _Optional[str] = ..., up_to_local_id: _Optional[int] = ...) -> None: ...
