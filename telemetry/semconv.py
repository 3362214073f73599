"""What the OpenTelemetry semantic conventions (current names and their older ones) tell the model.

Only the attributes the model uses are named here: who a client span calls when the callee sends no spans,
whether a span failed although its status is unset, and which operation a server span serves.
"""

from __future__ import annotations

# Span kinds and status codes as numbered in opentelemetry/proto/trace/v1/trace.proto.
KIND_UNSPECIFIED, KIND_INTERNAL, KIND_SERVER, KIND_CLIENT, KIND_PRODUCER, KIND_CONSUMER = range(6)
STATUS_UNSET, STATUS_OK, STATUS_ERROR = range(3)

SERVICE_NAME = "service.name"
SERVICE_VERSION = "service.version"
UNKNOWN_SERVICE = "unknown_service"

# Who an outgoing call goes to, most specific first (the order: logical service name, then
# address, then the kind of system as a last resort).
PEER_NAME_KEYS = (
    "peer.service",
    "service.peer.name",
    "server.address",
    "net.peer.name",
    "network.peer.address",
    "net.sock.peer.addr",
    "net.peer.ip",
    "db.namespace",
    "db.name",
    "db.system.name",
    "db.system",
    "messaging.system",
)
SYSTEM_KEYS = ("db.system.name", "db.system", "messaging.system")
HTTP_STATUS_KEYS = ("http.response.status_code", "http.status_code")
GRPC_STATUS_KEYS = ("rpc.grpc.status_code", "rpc.response.status_code")
ROUTE_KEYS = ("http.route",)
HTTP_METHOD_KEYS = ("http.request.method", "http.method")
RPC_METHOD_KEY = "rpc.method"
RPC_SERVICE_KEY = "rpc.service"

# Every attribute key the ingest loop looks at; others are skipped without reading their value.
INTERESTING_KEYS = frozenset(
    PEER_NAME_KEYS
    + SYSTEM_KEYS
    + HTTP_STATUS_KEYS
    + GRPC_STATUS_KEYS
    + ROUTE_KEYS
    + HTTP_METHOD_KEYS
    + (RPC_METHOD_KEY, RPC_SERVICE_KEY)
)


def any_value_scalar(value: object) -> str | int | float | bool | None:
    """The scalar inside an OTLP AnyValue (None for arrays, maps and unset values)."""
    which = value.WhichOneof("value")  # type: ignore[attr-defined]
    if which in ("string_value", "int_value", "double_value", "bool_value"):
        return getattr(value, which)
    return None


# The ingest loop keeps the AnyValue of each interesting attribute; these read only what they need.
Attributes = dict[str, object]


def _scalar(attributes: Attributes, key: str) -> str | int | float | bool | None:
    value = attributes.get(key)
    return None if value is None else any_value_scalar(value)


def peer_of(attributes: Attributes) -> tuple[str, str] | None:
    """(name, system) of the callee a client span's attributes name, or None if they name none."""
    for key in PEER_NAME_KEYS:
        value = attributes.get(key)
        if value is not None:
            name = any_value_scalar(value)
            if name not in (None, ""):
                for system_key in SYSTEM_KEYS:
                    system = attributes.get(system_key)
                    if system is not None:
                        return str(name), str(any_value_scalar(system) or "")
                return str(name), ""
    return None


def is_error(status_code: int, attributes: Attributes) -> bool:
    """ERROR status, or (status unset) an HTTP 5xx or a non-OK gRPC code; an explicit OK wins."""
    if status_code == STATUS_ERROR:
        return True
    if status_code == STATUS_OK or not attributes:
        return False
    for key in HTTP_STATUS_KEYS:
        value = attributes.get(key)
        if value is not None:
            code = _as_int(any_value_scalar(value))
            if code is not None:
                return code >= 500
    for key in GRPC_STATUS_KEYS:
        value = attributes.get(key)
        if value is not None:
            code = any_value_scalar(value)
            return code is not None and _as_int(code) != 0 and code != "OK"
    return False


def operation_of(span_name: str, attributes: Attributes) -> str:
    """The operation a server span serves: `rpc.service/rpc.method`, `METHOD /route`, else its name."""
    if not attributes:
        return span_name
    method = _scalar(attributes, RPC_METHOD_KEY) if RPC_METHOD_KEY in attributes else None
    if method:
        service = _scalar(attributes, RPC_SERVICE_KEY)
        return f"{service}/{method}" if service else str(method)
    route = _scalar(attributes, "http.route") if "http.route" in attributes else None
    if route:
        verb = _scalar(attributes, "http.request.method") or _scalar(attributes, "http.method")
        return f"{verb} {route}" if verb else str(route)
    return span_name


def _as_int(value: object) -> int | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return value
    try:
        return int(str(value))
    except ValueError:
        return None
