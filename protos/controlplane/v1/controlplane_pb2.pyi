from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class NodeKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    NODE_KIND_UNSPECIFIED: _ClassVar[NodeKind]
    NODE_KIND_SERVICE: _ClassVar[NodeKind]
    NODE_KIND_EXTERNAL: _ClassVar[NodeKind]
NODE_KIND_UNSPECIFIED: NodeKind
NODE_KIND_SERVICE: NodeKind
NODE_KIND_EXTERNAL: NodeKind

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
    __slots__ = ("window_seconds",)
    WINDOW_SECONDS_FIELD_NUMBER: _ClassVar[int]
    window_seconds: float
    def __init__(self, window_seconds: _Optional[float] = ...) -> None: ...

class GetGraphResponse(_message.Message):
    __slots__ = ("nodes", "edges", "spans_accepted", "spans_rejected", "generated_unix")
    NODES_FIELD_NUMBER: _ClassVar[int]
    EDGES_FIELD_NUMBER: _ClassVar[int]
    SPANS_ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    SPANS_REJECTED_FIELD_NUMBER: _ClassVar[int]
    GENERATED_UNIX_FIELD_NUMBER: _ClassVar[int]
    nodes: _containers.RepeatedCompositeFieldContainer[Node]
    edges: _containers.RepeatedCompositeFieldContainer[Edge]
    spans_accepted: int
    spans_rejected: int
    generated_unix: float
    def __init__(self, nodes: _Optional[_Iterable[_Union[Node, _Mapping]]] = ..., edges: _Optional[_Iterable[_Union[Edge, _Mapping]]] = ..., spans_accepted: _Optional[int] = ..., spans_rejected: _Optional[int] = ..., generated_unix: _Optional[float] = ...) -> None: ...

class GetServiceStatsRequest(_message.Message):
    __slots__ = ("services", "include_operations", "window_seconds")
    SERVICES_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_OPERATIONS_FIELD_NUMBER: _ClassVar[int]
    WINDOW_SECONDS_FIELD_NUMBER: _ClassVar[int]
    services: _containers.RepeatedScalarFieldContainer[str]
    include_operations: bool
    window_seconds: float
    def __init__(self, services: _Optional[_Iterable[str]] = ..., include_operations: _Optional[bool] = ..., window_seconds: _Optional[float] = ...) -> None: ...

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
    __slots__ = ("services",)
    SERVICES_FIELD_NUMBER: _ClassVar[int]
    services: _containers.RepeatedCompositeFieldContainer[ServiceStats]
    def __init__(self, services: _Optional[_Iterable[_Union[ServiceStats, _Mapping]]] = ...) -> None: ...
