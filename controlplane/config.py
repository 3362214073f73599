"""Configuration of `controlplane serve`: listen addresses, limits and model settings, from TOML.

Every key has a default, so the config file is optional; command-line flags override the file. Unknown
keys are an error, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from telemetry import ModelConfig
from telemetry.ingest import DEFAULT_MAX_QUEUE_BYTES
from telemetry.otlp_http import DEFAULT_MAX_REQUEST_BYTES


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """Where the control plane listens and how much it accepts at once."""

    otlp_grpc: str = "127.0.0.1:4317"
    otlp_http: str = "127.0.0.1:4318"
    # The control plane API; the same address as otlp_grpc serves both on one port.
    api: str = "127.0.0.1:4317"
    # Real exporters send batches well past gRPC's 4 MiB default.
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    max_queue_bytes: int = DEFAULT_MAX_QUEUE_BYTES
    retry_after_seconds: float = 1.0


@dataclass(frozen=True, slots=True)
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    model: ModelConfig = field(default_factory=ModelConfig)

    @classmethod
    def load(cls, path: str | Path | None) -> Config:
        """Read a TOML file with optional [server] and [model] tables; None gives the defaults."""
        if path is None:
            return cls()
        with open(path, "rb") as handle:
            document = tomllib.load(handle)
        unknown = set(document) - {"server", "model"}
        if unknown:
            raise ValueError(f"{path}: unknown section(s) {sorted(unknown)}")
        return cls(
            server=_build(ServerConfig, document.get("server", {}), f"{path} [server]"),
            model=_build(ModelConfig, document.get("model", {}), f"{path} [model]"),
        )

    def with_server(self, **overrides: Any) -> Config:
        """A copy with the given server settings replaced (None values are ignored)."""
        changes = {key: value for key, value in overrides.items() if value is not None}
        return dataclasses.replace(self, server=dataclasses.replace(self.server, **changes))


def _build(kind: type, values: dict[str, Any], where: str) -> Any:
    names = {f.name for f in dataclasses.fields(kind)}
    unknown = set(values) - names
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {sorted(unknown)}; known: {sorted(names)}")
    return kind(**values)
