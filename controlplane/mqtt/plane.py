"""The MQTT side of `controlplane serve`: the embedded broker when none is configured, and `MqttActuator`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from controlplane.mqtt.central import CentralConfig, MqttActuator
from controlplane.mqtt.embedded import EmbeddedBroker
from controlplane.mqtt.settings import MqttConfig
from controlplane.store import DecisionStore
from telemetry import TelemetryModel


class PlaneMqtt:
    """Starts (if needed) the embedded broker, then the plane's MQTT actuator."""

    def __init__(
        self,
        config: MqttConfig,
        model: TelemetryModel,
        store: DecisionStore,
        on_decisions: Callable[[], Awaitable[None]],
    ) -> None:
        self.config = config
        self.embedded = None if config.broker else EmbeddedBroker(config.embedded_port)
        url = config.broker or (self.embedded.url if self.embedded else "")
        central = CentralConfig(
            broker=config.broker_settings(url),
            client_id=config.client_id,
            action_timeout_seconds=config.action_timeout_seconds,
            bounds=config.bounds(),
        )
        self.actuator = MqttActuator(central, model, store, on_decisions)

    @property
    def broker_url(self) -> str:
        return self.actuator.config.broker.url

    async def start(self) -> None:
        if self.embedded is not None:
            await self.embedded.start()
        await self.actuator.start()

    async def stop(self) -> None:
        await self.actuator.stop()
        if self.embedded is not None:
            await self.embedded.stop()
