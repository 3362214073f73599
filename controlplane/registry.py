"""The plugin registry: controllers registered by decorator or by the `controlplane.controllers` entry points.

A registry only records controller classes; running them is the runtime's job (as in Kopf, registries are
separate from the machinery that runs handlers). Entry points name a controller class, e.g. in a plugin's
pyproject.toml:

    [project.entry-points."controlplane.controllers"]
    my-scaler = "my_package.scaler:MyScaler"
"""

from __future__ import annotations

import logging
from importlib.metadata import entry_points
from typing import TypeVar

from controlplane.controller import Controller

ENTRY_POINT_GROUP = "controlplane.controllers"
log = logging.getLogger(__name__)

C = TypeVar("C", bound=type[Controller])


class ControllerRegistry:
    """Controller classes by name; names are unique."""

    def __init__(self) -> None:
        self._classes: dict[str, type[Controller]] = {}
        self._origins: dict[str, str] = {}
        self.load_errors: dict[str, str] = {}

    def register(self, cls: type[Controller], origin: str = "code") -> type[Controller]:
        cls.validate_class()
        known = self._classes.get(cls.name)
        if known is not None and known is not cls:
            raise ValueError(
                f"two controllers are named {cls.name!r}: {known.__module__} and {cls.__module__}"
            )
        self._classes[cls.name] = cls
        self._origins[cls.name] = origin
        return cls

    def discover(self) -> None:
        """Load every installed `controlplane.controllers` entry point; a broken one is logged, not fatal."""
        for entry in entry_points(group=ENTRY_POINT_GROUP):
            try:
                cls = entry.load()
                if not (isinstance(cls, type) and issubclass(cls, Controller)):
                    raise TypeError(f"{entry.value} is not a Controller subclass")
                self.register(
                    cls, origin=f"entry point {entry.name} ({entry.dist.name if entry.dist else '?'})"
                )
            except Exception as error:  # one bad plugin must not take the others down
                self.load_errors[entry.name] = f"{type(error).__name__}: {error}"
                log.error("cannot load controller plugin %s: %s", entry.name, error)

    def get(self, name: str) -> type[Controller]:
        try:
            return self._classes[name]
        except KeyError:
            raise KeyError(f"no controller named {name!r}; installed: {sorted(self._classes)}") from None

    def origin(self, name: str) -> str:
        return self._origins[name]

    def names(self) -> list[str]:
        return sorted(self._classes)

    def __contains__(self, name: object) -> bool:
        return name in self._classes


# Controllers registered with the @controller decorator land here; `discover()` adds installed plugins.
default_registry = ControllerRegistry()


def controller(cls: C) -> C:
    """Class decorator: register a Controller subclass in the default registry."""
    default_registry.register(cls)
    return cls
