"""Configuration of `controlplane serve`: addresses, limits, model, guardrails, controllers, from TOML.

Every key has a default, so the config file is optional; command-line flags override the file. Unknown
keys are an error, so a typo never silently falls back to a default. The `[mqtt]` table belongs to the
`mqtt` actuator plugin (node agents, `agents.settings`): it is kept as written and checked by that plugin
when the file is read, so this package never imports the agents.
"""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from controlplane import default_actuator_registry, settings_from_table
from controlplane.engine.controllers_config import FILE_SECTIONS
from controlplane.engine.guardrails import GuardrailConfig
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
    # The decision store (SQLite); relative paths are relative to the working directory.
    decision_store: str = "controlplane-decisions.db"
    # Keep decisions this long / at most this many (0: forever / no limit).
    decision_retention_days: float = 30.0
    decision_retention_count: int = 10_000_000
    # How often the control loop ticks; each controller still runs on its own period.
    tick_seconds: float = 1.0
    # Consecutive faults (raise, overrun, bad return) after which a controller is quarantined.
    quarantine_after: int = 3
    # Bearer token for mutating API calls; empty means none is asked. The environment variable
    # CONTROLPLANE_API_TOKEN overrides it, so the secret need not sit in a file.
    api_token: str = ""
    # PEM files: with both set, every gRPC port serves TLS.
    tls_cert: str = ""
    tls_key: str = ""


@dataclass(frozen=True, slots=True)
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    guardrails: GuardrailConfig = field(default_factory=GuardrailConfig)
    # The [controllers] table as written; controllers_config.load_controllers validates it.
    controllers: dict[str, Any] = field(default_factory=dict)
    # Node agents over MQTT: the `mqtt` actuator's table as written (`agents.settings`); off unless enabled.
    mqtt: Mapping[str, Any] = field(default_factory=dict)

    @property
    def mqtt_enabled(self) -> bool:
        return bool(self.mqtt.get("enabled", False))

    @classmethod
    def load(cls, path: str | Path | None) -> Config:
        """Read a TOML file with optional [server] and [model] tables; None gives the defaults."""
        if path is None:
            return cls()
        with open(path, "rb") as handle:
            document = tomllib.load(handle)
        unknown = set(document) - FILE_SECTIONS
        if unknown:
            raise ValueError(f"{path}: unknown section(s) {sorted(unknown)}")
        return cls(
            server=settings_from_table(ServerConfig, document.get("server", {}), f"{path} [server]"),
            model=settings_from_table(ModelConfig, document.get("model", {}), f"{path} [model]"),
            guardrails=settings_from_table(
                GuardrailConfig, document.get("guardrails", {}), f"{path} [guardrails]"
            ),
            controllers=dict(document.get("controllers", {})),
            mqtt=checked_actuator_table("mqtt", document.get("mqtt", {}), f"{path}"),
        )

    def with_server(self, **overrides: Any) -> Config:
        """A copy with the given server settings replaced (None values are ignored)."""
        changes = {key: value for key, value in overrides.items() if value is not None}
        return dataclasses.replace(self, server=dataclasses.replace(self.server, **changes))


def checked_actuator_table(name: str, table: Any, where: str) -> dict[str, Any]:
    """A table that configures the actuator plugin `name`, checked by that plugin (loaded alone, and only
    when there is a table to check); ValueError if wrong."""
    if not isinstance(table, Mapping):
        raise ValueError(f"{where}: [{name}] must be a table, got {table!r}")
    if table:
        try:
            default_actuator_registry.load(name).check_config(table)
        except (KeyError, ValueError) as error:
            raise ValueError(f"{where}: {error.args[0] if error.args else error}") from None
    return dict(table)
