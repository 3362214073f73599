"""The controller API: what a built-in or third-party controller declares and implements.

    from controlplane import Controller, Scale, Taxonomy, controller

    @controller
    class MyScaler(Controller):
        name = "my-scaler"
        taxonomy = Taxonomy.of("centralized", "rule", dynamics=["workload"], actions=["autoscaling"])
        period_seconds = 15.0

        @dataclass
        class Parameters:
            target_rate_per_replica: float = 50.0

        async def decide(self, view):
            ...
            return [Scale(target="api", replicas=3, reason="...", evidence={...})]

`Parameters` is a dataclass of typed settings with defaults; the TOML config overrides them by name and
the controller reads them as `self.params`.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar

from controlplane.actions import Action
from controlplane.tables import settings_from_table
from controlplane.taxonomy import Taxonomy
from controlplane.view import TelemetryView


class Mode(StrEnum):
    ACTIVE = "active"
    """Decide, and have decisions applied."""
    SHADOW = "shadow"
    """Decide and record, never apply."""
    DISABLED = "disabled"
    """Do not run."""


class Controller(ABC):
    """Base class of every controller; subclasses set the class attributes and implement `decide`."""

    name: ClassVar[str]
    taxonomy: ClassVar[Taxonomy]
    period_seconds: ClassVar[float] = 10.0
    # A decide() that takes longer is cancelled and counted as a fault.
    time_budget_seconds: ClassVar[float] = 2.0
    # Higher wins a conflict between controllers of the same layer.
    priority: ClassVar[int] = 0
    description: ClassVar[str] = ""

    @dataclass(frozen=True)
    class Parameters:
        """No parameters; subclasses declare their own dataclass."""

    def __init__(self, params: Any | None = None) -> None:
        self.params = params if params is not None else type(self).Parameters()

    @abstractmethod
    async def decide(self, view: TelemetryView) -> list[Action]:
        """Read the view and return proposals (possibly none)."""

    @property
    def ready_to_apply(self) -> bool:
        """Whether this controller's proposals may be applied now; False keeps them in shadow.

        Safe learning control: a learning controller answers False until its live prediction error is
        below its threshold, even after an operator promoted it.
        """
        return True

    @classmethod
    def build_parameters(cls, values: Mapping[str, Any]) -> Any:
        """The Parameters instance for configured `values`; unknown names and wrong types are errors."""
        return settings_from_table(cls.Parameters, values, f"controller {cls.name}", noun="parameter")

    @classmethod
    def parameter_defaults(cls) -> dict[str, Any]:
        return {f.name: getattr(cls.Parameters(), f.name) for f in dataclasses.fields(cls.Parameters)}

    @classmethod
    def validate_class(cls) -> None:
        """Raise TypeError if the class does not declare what the framework needs."""
        for attribute in ("name", "taxonomy"):
            if not hasattr(cls, attribute):
                raise TypeError(f"controller class {cls.__qualname__} must set `{attribute}`")
        if not isinstance(cls.taxonomy, Taxonomy):
            raise TypeError(f"controller {cls.name}: `taxonomy` must be a Taxonomy")
        if cls.period_seconds <= 0 or cls.time_budget_seconds <= 0:
            raise TypeError(f"controller {cls.name}: period and time budget must be positive")
        if not dataclasses.is_dataclass(cls.Parameters):
            raise TypeError(f"controller {cls.name}: `Parameters` must be a dataclass")
