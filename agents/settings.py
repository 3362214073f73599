"""The `[mqtt]` table of `controlplane serve`'s configuration: broker, credentials, TLS, agents' bounds.

[mqtt]
enabled = true                  # off by default: `serve` then starts nothing MQTT
broker = "mqtts://broker:8883"  # empty: the embedded broker on 127.0.0.1:embedded_port
username = "controlplane"
password = ""                   # or $CONTROLPLANE_MQTT_PASSWORD
tls_ca = "ca.pem"               # with tls_cert/tls_key for client certificates
action_timeout_seconds = 5.0
local_allowed_actions = ["remediate", "isolate"]   # what agents' own controllers may do
local_max_replicas = 10         # per service, for a local Scale
local_max_total_replicas = 0    # per node; 0: no limit
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from agents.bounds import Bounds
from agents.connection import BrokerSettings
from controlplane import settings_from_table

PASSWORD_VARIABLE = "CONTROLPLANE_MQTT_PASSWORD"


@dataclass(frozen=True, slots=True)
class MqttConfig:
    enabled: bool = False
    broker: str = ""
    embedded_port: int = 1883
    username: str = ""
    password: str = ""
    tls_ca: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    client_id: str = "controlplane"
    action_timeout_seconds: float = 5.0
    local_allowed_actions: tuple[str, ...] = ()
    local_max_replicas: int = 0
    local_max_total_replicas: int = 0

    @classmethod
    def from_table(cls, table: Mapping[str, Any]) -> MqttConfig:
        """The `[mqtt]` table of the configuration file; ValueError naming an unknown key or a bad value."""
        return settings_from_table(cls, table, "[mqtt]")

    def __post_init__(self) -> None:
        object.__setattr__(self, "local_allowed_actions", tuple(self.local_allowed_actions))
        if self.action_timeout_seconds <= 0:
            raise ValueError("[mqtt] action_timeout_seconds must be > 0")
        if not 0 <= self.embedded_port < 65536:
            raise ValueError("[mqtt] embedded_port must be a port number")
        if self.broker:
            self.broker_settings(self.broker)  # a bad URL or TLS setting fails when the file is read
        self.bounds()

    def broker_settings(self, url: str) -> BrokerSettings:
        return BrokerSettings(
            url,
            self.username,
            os.environ.get(PASSWORD_VARIABLE, self.password),
            self.tls_ca,
            self.tls_cert,
            self.tls_key,
        )

    def bounds(self) -> Bounds:
        return Bounds(
            allowed_actions=frozenset(self.local_allowed_actions),
            max_replicas_default=self.local_max_replicas,
            max_total_replicas=self.local_max_total_replicas,
        )
