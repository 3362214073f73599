"""Built-in controllers are found through the `controlplane.controllers` entry points, as plugins are."""

import asyncio

import pytest

from controlplane import ControllerRegistry, Inventory, ServiceInventory, TelemetryView
from telemetry import TelemetryModel

BUILT_IN = (
    "hpa",
    "isolation",
    "kpa",
    "learned",
    "pipeline",
    "placement",
    "queueing",
    "remediation",
    "routing",
)


@pytest.fixture(scope="module")
def registry() -> ControllerRegistry:
    registry = ControllerRegistry()
    registry.discover()
    return registry


def test_every_built_in_is_an_entry_point(registry: ControllerRegistry) -> None:
    assert set(BUILT_IN) <= set(registry.names())
    for name in BUILT_IN:
        assert registry.origin(name) == f"entry point {name} (controlplane)"
        assert registry.get(name).__module__ == f"controllers.{name}"


@pytest.mark.parametrize("name", BUILT_IN)
def test_each_decides_on_a_quiet_view_without_proposing_nonsense(
    registry: ControllerRegistry, name: str
) -> None:
    cls = registry.get(name)
    controller = cls(cls.build_parameters({}))
    inventory = Inventory(services={"api": ServiceInventory("api", replicas=2, ready_replicas=2)})
    view = TelemetryView(1, 1000.0, TelemetryModel(clock=lambda: 1000.0).snapshot(), inventory.frozen())
    proposals = asyncio.run(controller.decide(view))
    assert isinstance(proposals, list)
    # Without any traffic there is nothing to fix: no isolation, routing, placement or remediation.
    assert all(action.name == "scale" for action in proposals), proposals
