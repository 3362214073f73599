from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ControllerMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CONTROLLER_MODE_UNSPECIFIED: _ClassVar[ControllerMode]
    CONTROLLER_MODE_ACTIVE: _ClassVar[ControllerMode]
    CONTROLLER_MODE_SHADOW: _ClassVar[ControllerMode]
    CONTROLLER_MODE_DISABLED: _ClassVar[ControllerMode]

class DecisionStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DECISION_STATUS_UNSPECIFIED: _ClassVar[DecisionStatus]
    DECISION_STATUS_APPLIED: _ClassVar[DecisionStatus]
    DECISION_STATUS_SHADOW: _ClassVar[DecisionStatus]
    DECISION_STATUS_REJECTED: _ClassVar[DecisionStatus]
    DECISION_STATUS_SUPERSEDED: _ClassVar[DecisionStatus]
    DECISION_STATUS_FAILED: _ClassVar[DecisionStatus]

class NodeKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    NODE_KIND_UNSPECIFIED: _ClassVar[NodeKind]
    NODE_KIND_SERVICE: _ClassVar[NodeKind]
    NODE_KIND_EXTERNAL: _ClassVar[NodeKind]
CONTROLLER_MODE_UNSPECIFIED: ControllerMode
CONTROLLER_MODE_ACTIVE: ControllerMode
CONTROLLER_MODE_SHADOW: ControllerMode
CONTROLLER_MODE_DISABLED: ControllerMode
DECISION_STATUS_UNSPECIFIED: DecisionStatus
DECISION_STATUS_APPLIED: DecisionStatus
DECISION_STATUS_SHADOW: DecisionStatus
DECISION_STATUS_REJECTED: DecisionStatus
DECISION_STATUS_SUPERSEDED: DecisionStatus
DECISION_STATUS_FAILED: DecisionStatus
NODE_KIND_UNSPECIFIED: NodeKind
NODE_KIND_SERVICE: NodeKind
NODE_KIND_EXTERNAL: NodeKind

class TaxonomyInfo(_message.Message):
    __slots__ = ("locus", "strategy", "dynamics", "evidence", "objectives", "telemetry", "actions")
    LOCUS_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    DYNAMICS_FIELD_NUMBER: _ClassVar[int]
    EVIDENCE_FIELD_NUMBER: _ClassVar[int]
    OBJECTIVES_FIELD_NUMBER: _ClassVar[int]
    TELEMETRY_FIELD_NUMBER: _ClassVar[int]
    ACTIONS_FIELD_NUMBER: _ClassVar[int]
    locus: str
    strategy: str
    dynamics: _containers.RepeatedScalarFieldContainer[str]
    evidence: _containers.RepeatedScalarFieldContainer[str]
    objectives: _containers.RepeatedScalarFieldContainer[str]
    telemetry: _containers.RepeatedScalarFieldContainer[str]
    actions: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, locus: _Optional[str] = ..., strategy: _Optional[str] = ..., dynamics: _Optional[_Iterable[str]] = ..., evidence: _Optional[_Iterable[str]] = ..., objectives: _Optional[_Iterable[str]] = ..., telemetry: _Optional[_Iterable[str]] = ..., actions: _Optional[_Iterable[str]] = ...) -> None: ...

class ControllerInfo(_message.Message):
    __slots__ = ("name", "description", "taxonomy", "mode", "period_seconds", "time_budget_seconds", "priority", "healthy", "quarantined", "faults_total", "consecutive_faults", "last_error", "last_duration_seconds", "last_run_unix", "runs_total", "origin", "parameters", "promoted")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    TAXONOMY_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    PERIOD_SECONDS_FIELD_NUMBER: _ClassVar[int]
    TIME_BUDGET_SECONDS_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    HEALTHY_FIELD_NUMBER: _ClassVar[int]
    QUARANTINED_FIELD_NUMBER: _ClassVar[int]
    FAULTS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    CONSECUTIVE_FAULTS_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    LAST_DURATION_SECONDS_FIELD_NUMBER: _ClassVar[int]
    LAST_RUN_UNIX_FIELD_NUMBER: _ClassVar[int]
    RUNS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    PROMOTED_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    taxonomy: TaxonomyInfo
    mode: ControllerMode
    period_seconds: float
    time_budget_seconds: float
    priority: int
    healthy: bool
    quarantined: bool
    faults_total: int
    consecutive_faults: int
    last_error: str
    last_duration_seconds: float
    last_run_unix: float
    runs_total: int
    origin: str
    parameters: _struct_pb2.Struct
    promoted: bool
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., taxonomy: _Optional[_Union[TaxonomyInfo, _Mapping]] = ..., mode: _Optional[_Union[ControllerMode, str]] = ..., period_seconds: _Optional[float] = ..., time_budget_seconds: _Optional[float] = ..., priority: _Optional[int] = ..., healthy: _Optional[bool] = ..., quarantined: _Optional[bool] = ..., faults_total: _Optional[int] = ..., consecutive_faults: _Optional[int] = ..., last_error: _Optional[str] = ..., last_duration_seconds: _Optional[float] = ..., last_run_unix: _Optional[float] = ..., runs_total: _Optional[int] = ..., origin: _Optional[str] = ..., parameters: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., promoted: _Optional[bool] = ...) -> None: ...

class ListControllersRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListControllersResponse(_message.Message):
    __slots__ = ("controllers",)
    CONTROLLERS_FIELD_NUMBER: _ClassVar[int]
    controllers: _containers.RepeatedCompositeFieldContainer[ControllerInfo]
    def __init__(self, controllers: _Optional[_Iterable[_Union[ControllerInfo, _Mapping]]] = ...) -> None: ...

class SetControllerModeRequest(_message.Message):
    __slots__ = ("name", "mode", "promote")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    PROMOTE_FIELD_NUMBER: _ClassVar[int]
    name: str
    mode: ControllerMode
    promote: bool
    def __init__(self, name: _Optional[str] = ..., mode: _Optional[_Union[ControllerMode, str]] = ..., promote: _Optional[bool] = ...) -> None: ...

class DecisionInfo(_message.Message):
    __slots__ = ("id", "tick", "created_unix", "controller", "taxonomy", "action_kind", "target", "layer", "action", "status", "why", "outcome")
    ID_FIELD_NUMBER: _ClassVar[int]
    TICK_FIELD_NUMBER: _ClassVar[int]
    CREATED_UNIX_FIELD_NUMBER: _ClassVar[int]
    CONTROLLER_FIELD_NUMBER: _ClassVar[int]
    TAXONOMY_FIELD_NUMBER: _ClassVar[int]
    ACTION_KIND_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    LAYER_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    WHY_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    id: int
    tick: int
    created_unix: float
    controller: str
    taxonomy: TaxonomyInfo
    action_kind: str
    target: str
    layer: str
    action: _struct_pb2.Struct
    status: DecisionStatus
    why: str
    outcome: str
    def __init__(self, id: _Optional[int] = ..., tick: _Optional[int] = ..., created_unix: _Optional[float] = ..., controller: _Optional[str] = ..., taxonomy: _Optional[_Union[TaxonomyInfo, _Mapping]] = ..., action_kind: _Optional[str] = ..., target: _Optional[str] = ..., layer: _Optional[str] = ..., action: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., status: _Optional[_Union[DecisionStatus, str]] = ..., why: _Optional[str] = ..., outcome: _Optional[str] = ...) -> None: ...

class ListDecisionsRequest(_message.Message):
    __slots__ = ("service", "controller", "action_kind", "status", "since_unix", "until_unix", "page_size", "page_token")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    CONTROLLER_FIELD_NUMBER: _ClassVar[int]
    ACTION_KIND_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    SINCE_UNIX_FIELD_NUMBER: _ClassVar[int]
    UNTIL_UNIX_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    service: str
    controller: str
    action_kind: str
    status: DecisionStatus
    since_unix: float
    until_unix: float
    page_size: int
    page_token: str
    def __init__(self, service: _Optional[str] = ..., controller: _Optional[str] = ..., action_kind: _Optional[str] = ..., status: _Optional[_Union[DecisionStatus, str]] = ..., since_unix: _Optional[float] = ..., until_unix: _Optional[float] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListDecisionsResponse(_message.Message):
    __slots__ = ("decisions", "next_page_token")
    DECISIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    decisions: _containers.RepeatedCompositeFieldContainer[DecisionInfo]
    next_page_token: str
    def __init__(self, decisions: _Optional[_Iterable[_Union[DecisionInfo, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetDecisionRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: int
    def __init__(self, id: _Optional[int] = ...) -> None: ...

class WatchDecisionsRequest(_message.Message):
    __slots__ = ("after_id", "from_start", "service", "controller")
    AFTER_ID_FIELD_NUMBER: _ClassVar[int]
    FROM_START_FIELD_NUMBER: _ClassVar[int]
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    CONTROLLER_FIELD_NUMBER: _ClassVar[int]
    after_id: int
    from_start: bool
    service: str
    controller: str
    def __init__(self, after_id: _Optional[int] = ..., from_start: _Optional[bool] = ..., service: _Optional[str] = ..., controller: _Optional[str] = ...) -> None: ...

class WindowStats(_message.Message):
    __slots__ = ("window_seconds", "requests", "errors", "request_rate", "error_rate", "p50_ms", "p95_ms", "p99_ms", "mean_ms", "concurrency")
    WINDOW_SECONDS_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_RATE_FIELD_NUMBER: _ClassVar[int]
    ERROR_RATE_FIELD_NUMBER: _ClassVar[int]
    P50_MS_FIELD_NUMBER: _ClassVar[int]
    P95_MS_FIELD_NUMBER: _ClassVar[int]
    P99_MS_FIELD_NUMBER: _ClassVar[int]
    MEAN_MS_FIELD_NUMBER: _ClassVar[int]
    CONCURRENCY_FIELD_NUMBER: _ClassVar[int]
    window_seconds: float
    requests: int
    errors: int
    request_rate: float
    error_rate: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float
    concurrency: float
    def __init__(self, window_seconds: _Optional[float] = ..., requests: _Optional[int] = ..., errors: _Optional[int] = ..., request_rate: _Optional[float] = ..., error_rate: _Optional[float] = ..., p50_ms: _Optional[float] = ..., p95_ms: _Optional[float] = ..., p99_ms: _Optional[float] = ..., mean_ms: _Optional[float] = ..., concurrency: _Optional[float] = ...) -> None: ...

class Node(_message.Message):
    __slots__ = ("name", "kind", "system", "stats", "requests_total", "errors_total", "last_seen_unix")
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    SYSTEM_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    ERRORS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    LAST_SEEN_UNIX_FIELD_NUMBER: _ClassVar[int]
    name: str
    kind: NodeKind
    system: str
    stats: WindowStats
    requests_total: int
    errors_total: int
    last_seen_unix: float
    def __init__(self, name: _Optional[str] = ..., kind: _Optional[_Union[NodeKind, str]] = ..., system: _Optional[str] = ..., stats: _Optional[_Union[WindowStats, _Mapping]] = ..., requests_total: _Optional[int] = ..., errors_total: _Optional[int] = ..., last_seen_unix: _Optional[float] = ...) -> None: ...

class Edge(_message.Message):
    __slots__ = ("source", "target", "stats", "calls_total", "errors_total", "last_seen_unix")
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    CALLS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    ERRORS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    LAST_SEEN_UNIX_FIELD_NUMBER: _ClassVar[int]
    source: str
    target: str
    stats: WindowStats
    calls_total: int
    errors_total: int
    last_seen_unix: float
    def __init__(self, source: _Optional[str] = ..., target: _Optional[str] = ..., stats: _Optional[_Union[WindowStats, _Mapping]] = ..., calls_total: _Optional[int] = ..., errors_total: _Optional[int] = ..., last_seen_unix: _Optional[float] = ...) -> None: ...

class GetGraphRequest(_message.Message):
    __slots__ = ("window_seconds", "page_size", "page_token")
    WINDOW_SECONDS_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    window_seconds: float
    page_size: int
    page_token: str
    def __init__(self, window_seconds: _Optional[float] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class GetGraphResponse(_message.Message):
    __slots__ = ("nodes", "edges", "spans_accepted", "spans_rejected", "generated_unix", "next_page_token", "total_nodes", "total_edges", "folded")
    class FoldedEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    NODES_FIELD_NUMBER: _ClassVar[int]
    EDGES_FIELD_NUMBER: _ClassVar[int]
    SPANS_ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    SPANS_REJECTED_FIELD_NUMBER: _ClassVar[int]
    GENERATED_UNIX_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TOTAL_NODES_FIELD_NUMBER: _ClassVar[int]
    TOTAL_EDGES_FIELD_NUMBER: _ClassVar[int]
    FOLDED_FIELD_NUMBER: _ClassVar[int]
    nodes: _containers.RepeatedCompositeFieldContainer[Node]
    edges: _containers.RepeatedCompositeFieldContainer[Edge]
    spans_accepted: int
    spans_rejected: int
    generated_unix: float
    next_page_token: str
    total_nodes: int
    total_edges: int
    folded: _containers.ScalarMap[str, int]
    def __init__(self, nodes: _Optional[_Iterable[_Union[Node, _Mapping]]] = ..., edges: _Optional[_Iterable[_Union[Edge, _Mapping]]] = ..., spans_accepted: _Optional[int] = ..., spans_rejected: _Optional[int] = ..., generated_unix: _Optional[float] = ..., next_page_token: _Optional[str] = ..., total_nodes: _Optional[int] = ..., total_edges: _Optional[int] = ..., folded: _Optional[_Mapping[str, int]] = ...) -> None: ...

class GetServiceStatsRequest(_message.Message):
    __slots__ = ("services", "include_operations", "window_seconds", "page_size", "page_token")
    SERVICES_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_OPERATIONS_FIELD_NUMBER: _ClassVar[int]
    WINDOW_SECONDS_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    services: _containers.RepeatedScalarFieldContainer[str]
    include_operations: bool
    window_seconds: float
    page_size: int
    page_token: str
    def __init__(self, services: _Optional[_Iterable[str]] = ..., include_operations: _Optional[bool] = ..., window_seconds: _Optional[float] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class OperationStats(_message.Message):
    __slots__ = ("operation", "stats", "requests_total", "errors_total")
    OPERATION_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    ERRORS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    operation: str
    stats: WindowStats
    requests_total: int
    errors_total: int
    def __init__(self, operation: _Optional[str] = ..., stats: _Optional[_Union[WindowStats, _Mapping]] = ..., requests_total: _Optional[int] = ..., errors_total: _Optional[int] = ...) -> None: ...

class ServiceStats(_message.Message):
    __slots__ = ("service", "stats", "requests_total", "errors_total", "operations")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    ERRORS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    OPERATIONS_FIELD_NUMBER: _ClassVar[int]
    service: str
    stats: WindowStats
    requests_total: int
    errors_total: int
    operations: _containers.RepeatedCompositeFieldContainer[OperationStats]
    def __init__(self, service: _Optional[str] = ..., stats: _Optional[_Union[WindowStats, _Mapping]] = ..., requests_total: _Optional[int] = ..., errors_total: _Optional[int] = ..., operations: _Optional[_Iterable[_Union[OperationStats, _Mapping]]] = ...) -> None: ...

class GetServiceStatsResponse(_message.Message):
    __slots__ = ("services", "next_page_token", "total_services")
    SERVICES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SERVICES_FIELD_NUMBER: _ClassVar[int]
    services: _containers.RepeatedCompositeFieldContainer[ServiceStats]
    next_page_token: str
    total_services: int
    def __init__(self, services: _Optional[_Iterable[_Union[ServiceStats, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., total_services: _Optional[int] = ...) -> None: ...
