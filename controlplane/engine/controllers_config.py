"""Which controllers run, in which mode, with which parameters: the `[controllers]` tables of the TOML config.

    [controllers]
    # enable_all = true        # also run every installed controller that is not listed below

    [controllers.hpa]
    mode = "active"            # "active" | "shadow" | "disabled"
    priority = 5               # overrides the class's `priority`
    period_seconds = 15.0      # overrides how often it runs
    time_budget_seconds = 1.0  # overrides how long one decide may take
    promoted = false           # a learning controller acts only once promoted (here, or over the API)

    [controllers.hpa.params]   # overrides fields of the controller's `Parameters` dataclass
    target_rate_per_replica = 40.0

Which controllers are enabled: only the ones listed. Installing a plugin must not make it act on
production by itself, so `controlplane serve` without a `[controllers]` table runs none. `enable_all = true`
is the explicit opt-in for demos and experiments: every installed controller that is not listed is added at
its default mode and parameters.

Default mode: "shadow" for learning-based controllers (`Taxonomy.learning`: learning and hybrid strategies),
so that they propose and get recorded but do not act until an operator promotes them; "active" otherwise.
A controller listed with `mode = "disabled"` is still built and returned (its parameters are checked and
the API can show it and switch it on at runtime); its runner simply never calls `decide`.

Every mistake is a ValueError that names the controller and the key: an unknown controller (the message
lists the installed ones, and why a plugin of that name failed to load, if it did), an unknown key, a
mode that is not one of the three, a priority that is not an integer, parameters that
`Controller.build_parameters` rejects.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from controlplane.controller import Controller, Mode
from controlplane.engine.runner import ControllerRunner
from controlplane.registry import ControllerRegistry

TABLE_KEYS = frozenset({"mode", "priority", "params", "period_seconds", "time_budget_seconds", "promoted"})
# The top-level sections of `controlplane serve`'s configuration file (see controlplane.serve.config).
FILE_SECTIONS = frozenset({"server", "model", "guardrails", "controllers", "mqtt"})


@dataclass(frozen=True, slots=True)
class ConfiguredController:
    """One controller the configuration enables: its class, its configured instance, mode and priority."""

    cls: type[Controller]
    instance: Controller
    mode: Mode
    priority: int
    # Promoted out of shadow mode by the configuration (learning controllers; see the coordinator).
    promoted: bool = False

    @property
    def name(self) -> str:
        return self.cls.name

    def runner(self, **options: Any) -> ControllerRunner:
        """A `ControllerRunner` for the instance, starting in the configured mode."""
        return ControllerRunner(self.instance, mode=self.mode, **options)


def default_mode(cls: type[Controller]) -> Mode:
    """Shadow for learning-based controllers until an operator promotes them, active for the others."""
    return Mode.SHADOW if cls.taxonomy.learning else Mode.ACTIVE


def load_controllers(document: Mapping[str, Any], registry: ControllerRegistry) -> list[ConfiguredController]:
    """The controllers a configuration enables, sorted by name (rules in the module docstring).

    `document` is either a whole parsed TOML file, whose `controllers` table is then read, or that
    `[controllers]` table itself (as `Config.controllers` holds it).
    """
    table = _controllers_table(document, registry)
    enable_all = table.get("enable_all", False)
    if not isinstance(enable_all, bool):
        raise ValueError(f"[controllers] enable_all must be true or false, got {enable_all!r}")

    configured: dict[str, ConfiguredController] = {}
    for name, settings in table.items():
        if name == "enable_all":
            continue
        if not isinstance(settings, Mapping):
            raise ValueError(
                f"[controllers] {name} must be a table [controllers.{name}], got {settings!r}"
                " (the only plain key allowed here is enable_all)"
            )
        configured[name] = _configure(name, settings, registry)
    if enable_all:
        for name in registry.names():
            if name not in configured:
                configured[name] = _configure(name, {}, registry)
    return [configured[name] for name in sorted(configured)]


def _controllers_table(document: Mapping[str, Any], registry: ControllerRegistry) -> Mapping[str, Any]:
    # A key naming a section of the file (and no installed controller) means a whole file was passed.
    if not any(key in FILE_SECTIONS and key not in registry for key in document):
        return document
    nested = document.get("controllers", {})
    if not isinstance(nested, Mapping):
        raise ValueError(f"[controllers] must be a table, got {nested!r}")
    return nested


def _configure(name: str, settings: Mapping[str, Any], registry: ControllerRegistry) -> ConfiguredController:
    where = f"[controllers.{name}]"
    if name not in registry:
        failed = registry.load_errors.get(name)
        why = f"; the plugin {name!r} failed to load: {failed}" if failed else ""
        raise ValueError(f"{where}: no controller named {name!r}; installed: {registry.names()}{why}")
    cls = registry.get(name)

    unknown = set(settings) - TABLE_KEYS
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {sorted(unknown)}; known: {sorted(TABLE_KEYS)}")

    mode_value = settings.get("mode")
    if mode_value is None:
        mode = default_mode(cls)
    else:
        try:
            mode = Mode(mode_value)
        except ValueError:
            choices = ", ".join(f'"{item.value}"' for item in Mode)
            raise ValueError(f"{where}: mode must be one of {choices}, got {mode_value!r}") from None

    priority = settings.get("priority", cls.priority)
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise ValueError(f"{where}: priority must be an integer, got {priority!r}")

    values = settings.get("params", {})
    if not isinstance(values, Mapping):
        raise ValueError(f"{where}: params must be a table [controllers.{name}.params], got {values!r}")
    try:
        params = cls.build_parameters(values)
    except (TypeError, ValueError) as error:
        # build_parameters names the controller and the key; the prefix says where in the file to look.
        raise ValueError(f"[controllers.{name}.params]: {error}") from error
    instance = cls(params)
    # Operators tune how often a controller runs and how long it may take without touching its code;
    # instance attributes shadow the class's declared values for the runner.
    for key in ("period_seconds", "time_budget_seconds"):
        if key in settings:
            value = settings[key]
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise ValueError(f"{where}: {key} must be a positive number of seconds, got {value!r}")
            setattr(instance, key, float(value))
    promoted = settings.get("promoted", False)
    if not isinstance(promoted, bool):
        raise ValueError(f"{where}: promoted must be true or false, got {promoted!r}")
    return ConfiguredController(cls=cls, instance=instance, mode=mode, priority=priority, promoted=promoted)
