"""Plugin registries: controllers and actuators, registered in code or by entry points of any distribution.

A registry only records classes; running them is the engine's job (as in Kopf, registries are separate from
the machinery that runs handlers). Entry points name a class, e.g. in a plugin's pyproject.toml:

    [project.entry-points."controlplane.controllers"]
    my-scaler = "my_package.scaler:MyScaler"

    [project.entry-points."controlplane.actuators"]
    my-substrate = "my_package.driver:MyActuator"

Built-in controllers and actuators register through the same entry points, so a plugin can do everything
a built-in can. A plugin that fails to load is recorded in `load_errors` and logged, never fatal to others.
"""

from __future__ import annotations

import logging
from importlib.metadata import EntryPoint, entry_points
from typing import Generic, TypeVar

from controlplane.actuator import Actuator
from controlplane.controller import Controller

ENTRY_POINT_GROUP = "controlplane.controllers"
ACTUATOR_ENTRY_POINT_GROUP = "controlplane.actuators"
log = logging.getLogger(__name__)

P = TypeVar("P", bound=type)
C = TypeVar("C", bound=type[Controller])
A = TypeVar("A", bound=type[Actuator])


class PluginRegistry(Generic[P]):
    """Classes of one kind by name; names are unique. Subclasses say which kind and which entry points."""

    kind: type = object
    noun: str = "plugin"
    group: str = ""

    def __init__(self) -> None:
        self._classes: dict[str, P] = {}
        self._origins: dict[str, str] = {}
        self.load_errors: dict[str, str] = {}

    def check(self, cls: P) -> None:
        """Raise if `cls` is not a valid plugin of this kind (subclasses add their own checks)."""
        if not (isinstance(cls, type) and issubclass(cls, self.kind)):
            raise TypeError(f"{cls!r} is not a {self.kind.__name__} subclass")

    def register(self, cls: P, origin: str = "code") -> P:
        self.check(cls)
        name = cls.name  # type: ignore[attr-defined]
        known = self._classes.get(name)
        if known is not None and known is not cls:
            raise ValueError(f"two {self.noun}s are named {name!r}: {known.__module__} and {cls.__module__}")
        self._classes[name] = cls
        self._origins[name] = origin
        return cls

    def discover(self) -> None:
        """Load every installed entry point of this registry's group; a broken one is logged, not fatal."""
        for entry in entry_points(group=self.group):
            self._load_entry(entry)

    def load(self, name: str) -> P:
        """The class registered as `name`, loading that one entry point (and no other) if need be."""
        if name not in self._classes:
            for entry in entry_points(group=self.group, name=name):
                self._load_entry(entry)
        return self.get(name)

    def _load_entry(self, entry: EntryPoint) -> None:
        try:
            cls = entry.load()
            if not (isinstance(cls, type) and issubclass(cls, self.kind)):
                raise TypeError(f"{entry.value} is not a {self.kind.__name__} subclass")
            self.register(cls, origin=f"entry point {entry.name} ({entry.dist.name if entry.dist else '?'})")
        except Exception as error:  # one bad plugin must not take the others down
            self.load_errors[entry.name] = f"{type(error).__name__}: {error}"
            log.error("cannot load %s plugin %s: %s", self.noun, entry.name, error)

    def get(self, name: str) -> P:
        try:
            return self._classes[name]
        except KeyError:
            failed = self.load_errors.get(name)
            why = f" (its plugin failed to load: {failed})" if failed else ""
            raise KeyError(
                f"no {self.noun} named {name!r}{why}; installed: {sorted(self._classes)}"
            ) from None

    def origin(self, name: str) -> str:
        return self._origins[name]

    def names(self) -> list[str]:
        return sorted(self._classes)

    def __contains__(self, name: object) -> bool:
        return name in self._classes


class ControllerRegistry(PluginRegistry[type[Controller]]):
    """Controller classes by name (`controlplane.controllers` entry points)."""

    kind = Controller
    noun = "controller"
    group = ENTRY_POINT_GROUP

    def check(self, cls: type[Controller]) -> None:
        super().check(cls)
        cls.validate_class()


class ActuatorRegistry(PluginRegistry[type[Actuator]]):
    """Actuator classes by name (`controlplane.actuators` entry points)."""

    kind = Actuator
    noun = "actuator"
    group = ACTUATOR_ENTRY_POINT_GROUP

    def check(self, cls: type[Actuator]) -> None:
        super().check(cls)
        if not cls.name or cls.name == Actuator.name:
            raise ValueError(
                f"{cls.__module__}.{cls.__qualname__} must set `name` to the name it registers as"
            )


# Classes registered with the decorators land here; `discover()` adds installed plugins.
default_registry = ControllerRegistry()
default_actuator_registry = ActuatorRegistry()


def controller(cls: C) -> C:
    """Class decorator: register a Controller subclass in the default registry."""
    default_registry.register(cls)
    return cls


def actuator(cls: A) -> A:
    """Class decorator: register an Actuator subclass in the default actuator registry."""
    default_actuator_registry.register(cls)
    return cls
