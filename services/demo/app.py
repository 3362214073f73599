"""The application description: services with their costs, and request types with their paths.

One TOML file describes an application (see `services/demo/socialnetwork.toml`, whose header documents
every field); the simulator and the live runner both read it through `load_app`. Mistakes are reported
with the field that is wrong, before anything runs.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

T = TypeVar("T")
DEMO_APP = Path(__file__).resolve().parent / "socialnetwork.toml"


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    """One service: what a request costs in it and what one replica of it can take."""

    name: str
    service_time_ms: float
    service_time_cv: float = 0.5
    concurrency: int = 8
    replicas: int = 1
    min_replicas: int = 1
    max_replicas: int = 20
    cpu: float = 0.5
    memory_mb: float = 256.0
    startup_seconds: float = 5.0
    error_rate: float = 0.0
    kind: str = "service"


@dataclass(frozen=True, slots=True)
class Call:
    """A call to `service`, made with `probability` (below 1: only sometimes, e.g. on a cache miss)."""

    service: str
    probability: float = 1.0


# Stages run one after another; the calls of one stage run in parallel.
Stages = tuple[tuple[Call, ...], ...]


@dataclass(frozen=True, slots=True)
class RequestType:
    """One kind of request: where it enters, and what each service it reaches calls next."""

    name: str
    weight: float
    entry: str
    operation: str
    calls: Mapping[str, Stages]

    def services(self) -> list[str]:
        """Every service this request type can reach, entry first, in call order."""
        seen, order = {self.entry}, [self.entry]
        for caller in order:
            for stage in self.calls.get(caller, ()):
                for call in stage:
                    if call.service not in seen:
                        seen.add(call.service)
                        order.append(call.service)
        return order


@dataclass(frozen=True, slots=True)
class AppSpec:
    name: str
    slo_p99_ms: float
    services: Mapping[str, ServiceSpec]
    requests: tuple[RequestType, ...]

    def request(self, name: str) -> RequestType:
        for request in self.requests:
            if request.name == name:
                return request
        raise KeyError(f"no request type {name!r}; the app has {[r.name for r in self.requests]}")


_SERVICE_FIELDS = {name for name in ServiceSpec.__dataclass_fields__ if name != "name"}


def _number(value: Any, where: str, minimum: float = 0.0, integer: bool = False) -> Any:
    wrong_type = not isinstance(value, int | float) or (integer and not isinstance(value, int))
    if isinstance(value, bool) or wrong_type:
        raise ValueError(f"{where}: expected a {'whole ' if integer else ''}number, got {value!r}")
    if value < minimum:
        raise ValueError(f"{where}: must be >= {minimum:g}, got {value!r}")
    return value


def _service(name: str, table: Mapping[str, Any]) -> ServiceSpec:
    where = f"services.{name}"
    unknown = set(table) - _SERVICE_FIELDS
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {sorted(unknown)}; known: {sorted(_SERVICE_FIELDS)}")
    if "service_time_ms" not in table:
        raise ValueError(f"{where}.service_time_ms: required")
    values: dict[str, Any] = {"name": name}
    for key, value in table.items():
        if key == "kind":
            values[key] = str(value)
        elif key in ("concurrency", "replicas", "min_replicas", "max_replicas"):
            values[key] = _number(value, f"{where}.{key}", 1 if key != "min_replicas" else 0, integer=True)
        else:
            values[key] = float(_number(value, f"{where}.{key}"))
    spec = ServiceSpec(**values)
    if spec.error_rate > 1:
        raise ValueError(f"{where}.error_rate: must be at most 1")
    if not spec.min_replicas <= spec.replicas <= spec.max_replicas:
        raise ValueError(f"{where}: need min_replicas <= replicas <= max_replicas")
    return spec


def _call(value: Any, where: str) -> Call:
    if isinstance(value, str):
        return Call(value)
    if isinstance(value, Mapping) and isinstance(value.get("service"), str):
        probability = float(_number(value.get("probability", 1.0), f"{where}.probability"))
        if probability > 1:
            raise ValueError(f"{where}.probability: must be at most 1")
        return Call(value["service"], probability)
    raise ValueError(f'{where}: a call is a service name or {{service = "...", probability = p}}')


def _request(name: str, table: Mapping[str, Any], services: Mapping[str, ServiceSpec]) -> RequestType:
    where = f"requests.{name}"
    for key in ("entry", "operation"):
        if not isinstance(table.get(key), str):
            raise ValueError(f"{where}.{key}: required (a string)")
    if table["entry"] not in services:
        raise ValueError(f"{where}.entry: no service named {table['entry']!r}")
    calls: dict[str, Stages] = {}
    for caller, stages in dict(table.get("calls", {})).items():
        if caller not in services:
            raise ValueError(f"{where}.calls.{caller}: no service named {caller!r}")
        if not isinstance(stages, list) or not all(isinstance(stage, list) for stage in stages):
            raise ValueError(f"{where}.calls.{caller}: expected a list of stages, each a list of calls")
        parsed = tuple(
            tuple(_call(item, f"{where}.calls.{caller}[{index}]") for item in stage)
            for index, stage in enumerate(stages)
        )
        for stage in parsed:
            for call in stage:
                if call.service not in services:
                    raise ValueError(f"{where}.calls.{caller}: calls unknown service {call.service!r}")
        calls[caller] = parsed
    request = RequestType(
        name=name,
        weight=float(_number(table.get("weight", 1.0), f"{where}.weight")),
        entry=table["entry"],
        operation=table["operation"],
        calls=MappingProxyType(calls),
    )
    _check_acyclic(request, where)
    return request


def _check_acyclic(request: RequestType, where: str) -> None:
    """A request's path is a tree walked per service: a service calling back up its path would recurse."""

    def visit(service: str, path: tuple[str, ...]) -> None:
        for stage in request.calls.get(service, ()):
            for call in stage:
                if call.service in path:
                    cycle = " -> ".join((*path, call.service))
                    raise ValueError(f"{where}.calls: the path loops ({cycle})")
                visit(call.service, (*path, call.service))

    visit(request.entry, (request.entry,))


def parse_app(document: Mapping[str, Any]) -> AppSpec:
    """An `AppSpec` from a parsed TOML document; ValueError names the first wrong field."""
    services_table = document.get("services")
    if not isinstance(services_table, Mapping) or not services_table:
        raise ValueError("services: at least one [services.<name>] table is required")
    services = {name: _service(name, table) for name, table in services_table.items()}
    requests_table = document.get("requests")
    if not isinstance(requests_table, Mapping) or not requests_table:
        raise ValueError("requests: at least one [requests.<name>] table is required")
    requests = tuple(_request(name, table, services) for name, table in requests_table.items())
    if sum(request.weight for request in requests) <= 0:
        raise ValueError("requests: the weights must not all be zero")
    return AppSpec(
        name=str(document.get("name", "app")),
        slo_p99_ms=float(_number(document.get("slo_p99_ms", 100.0), "slo_p99_ms")),
        services=MappingProxyType(services),
        requests=requests,
    )


def parse_toml_file(path: str | Path, parse: Callable[[dict[str, Any]], T]) -> T:
    """`parse` applied to a TOML file; any ValueError (bad TOML, a wrong field) names the file."""
    with open(path, "rb") as handle:
        try:
            document = tomllib.load(handle)
        except tomllib.TOMLDecodeError as error:
            raise ValueError(f"{path}: not valid TOML: {error}") from None
    try:
        return parse(document)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None


def load_app(path: str | Path = DEMO_APP) -> AppSpec:
    """Read an application description file (TOML)."""
    return parse_toml_file(path, parse_app)
