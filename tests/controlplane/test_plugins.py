"""Plugins installed for real (pip --target), decorator registration, and the `[controllers]` TOML rules."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import textwrap
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import controlplane.registry
from controlplane import Controller, ControllerRegistry, Mode, Scale, Taxonomy, TelemetryView, controller
from controlplane.engine.controllers_config import load_controllers
from tests.support import EXAMPLE_PLUGIN, pip_install_target

# A second distribution whose entry points are broken in three different ways, plus one good controller
# listed after them: discovery has to get past the broken ones to register it.
BROKEN_PYPROJECT = """
[build-system]
requires = ["setuptools>=69"]
build-backend = "setuptools.build_meta"

[project]
name = "controlplane-broken-plugin"
version = "0.0.1"

[project.entry-points."controlplane.controllers"]
a-broken-import = "broken_plugin.explodes:Anything"
b-not-a-controller = "broken_plugin:NOT_A_CONTROLLER"
c-missing-class = "broken_plugin:Missing"
d-survivor = "broken_plugin:Survivor"

[tool.setuptools]
packages = ["broken_plugin"]
"""

BROKEN_INIT = '''
"""A plugin package with broken entry points."""

from controlplane import Controller, Taxonomy

NOT_A_CONTROLLER = "just a string"


class Survivor(Controller):
    name = "survivor"
    taxonomy = Taxonomy.of("centralized", "rule")

    async def decide(self, view):
        return []
'''

# Run in a fresh interpreter whose only extra path entry is the --target directory.
SNIPPET = textwrap.dedent(
    """
    import asyncio, json, tomllib

    from controlplane import ControllerRegistry, Inventory, TelemetryView
    from controlplane.engine.controllers_config import load_controllers
    from telemetry import GraphSnapshot, NodeSnapshot, WindowSummary


    def node(name, requests, errors):
        stats = WindowSummary(
            window_seconds=10.0, requests=requests, errors=errors, request_rate=requests / 10.0,
            error_rate=errors / requests, p50_ms=5.0, p95_ms=20.0, p99_ms=40.0, mean_ms=8.0, concurrency=0.1,
        )
        return NodeSnapshot(name, "service", "", stats, requests, errors, 100.0)


    snapshot = GraphSnapshot(
        taken_at=100.0, window_seconds=10.0,
        nodes=(node("cart", 200, 120), node("checkout", 200, 2), node("rare", 5, 5)),
        edges=(), spans_accepted=405, spans_rejected=0,
    )
    view = TelemetryView(tick=7, now=100.0, graph_snapshot=snapshot, inventory=Inventory().frozen())

    registry = ControllerRegistry()
    registry.discover()
    assert "error-budget-isolator" in registry.names(), registry.names()
    cls = registry.get("error-budget-isolator")
    default = asyncio.run(cls().decide(view))

    document = tomllib.loads('''
    [controllers.error-budget-isolator.params]
    error_rate_threshold = 0.005
    min_requests = 1
    ''')
    (configured,) = load_controllers(document, registry)
    strict = asyncio.run(configured.instance.decide(view))

    print(json.dumps({
        "names": registry.names(),
        "origin": registry.origin("error-budget-isolator"),
        "load_errors": registry.load_errors,
        "module": cls.__module__,
        "taxonomy": cls.taxonomy.as_dict(),
        "mode": configured.mode.value,
        "default": [action.to_dict() for action in default],
        "strict": sorted(action.target for action in strict),
    }))
    """
)


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example plugin and a broken one, installed with pip into one --target directory."""
    root = tmp_path_factory.mktemp("plugins")
    broken = root / "broken"
    (broken / "broken_plugin").mkdir(parents=True)
    (broken / "pyproject.toml").write_text(BROKEN_PYPROJECT)
    (broken / "broken_plugin" / "__init__.py").write_text(BROKEN_INIT)
    (broken / "broken_plugin" / "explodes.py").write_text('raise RuntimeError("this plugin cannot import")\n')
    site = root / "site"
    pip_install_target([EXAMPLE_PLUGIN, broken], site)
    return site


def _run_snippet(site: Path, cwd: Path) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(site)}
    done = subprocess.run(
        [sys.executable, "-c", SNIPPET], capture_output=True, text=True, timeout=60, env=env, cwd=cwd
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def discovered(plugin_site: Path) -> dict[str, Any]:
    return _run_snippet(plugin_site, plugin_site.parent)


def test_installed_plugin_is_discovered_configured_and_decides(discovered: dict[str, Any]) -> None:
    assert "error-budget-isolator" in discovered["names"]
    assert discovered["module"] == "controlplane_example_plugin.isolator"
    assert discovered["origin"] == "entry point error-budget-isolator (controlplane-example-plugin)"
    assert discovered["taxonomy"] == {
        "locus": "centralized",
        "strategy": "rule",
        "dynamics": ["failure"],
        "evidence": [],
        "objectives": ["availability"],
        "telemetry": ["traces"],
        "actions": ["isolation"],
    }
    # Only "cart" burns its budget: "checkout" is healthy, "rare" has too few requests to judge.
    assert discovered["default"] == [
        {
            "action": "isolate",
            "target": "cart",
            "reason": "error rate 60% over the last 10 s exceeds 20%",
            "evidence": {"error_rate": 0.6, "requests": 200, "errors": 120, "error_rate_threshold": 0.2},
            "mechanism": "circuit_breaker",
            "limit": 0.0,
            "enabled": True,
        }
    ]
    # Parameters from the TOML config reach the instance: a stricter rule catches all three.
    assert discovered["strict"] == ["cart", "checkout", "rare"]
    assert discovered["mode"] == "active"


def test_broken_entry_points_are_recorded_and_do_not_stop_discovery(discovered: dict[str, Any]) -> None:
    errors = discovered["load_errors"]
    assert set(errors) == {"a-broken-import", "b-not-a-controller", "c-missing-class"}
    assert errors["a-broken-import"] == "RuntimeError: this plugin cannot import"
    assert errors["b-not-a-controller"] == (
        "TypeError: broken_plugin:NOT_A_CONTROLLER is not a Controller subclass"
    )
    assert errors["c-missing-class"].startswith("AttributeError")
    assert {"survivor", "error-budget-isolator"} <= set(discovered["names"])


def test_example_plugin_imports_only_the_public_api() -> None:
    allowed = {"__future__", "dataclasses", "controlplane", "controlplane_example_plugin.isolator"}
    for source in (EXAMPLE_PLUGIN / "controlplane_example_plugin").glob("*.py"):
        for statement in ast.walk(ast.parse(source.read_text())):
            if isinstance(statement, ast.ImportFrom):
                assert statement.module in allowed, f"{source.name} imports from {statement.module}"
            elif isinstance(statement, ast.Import):
                pytest.fail(f"{source.name} imports {[alias.name for alias in statement.names]}")


# --- registration ---------------------------------------------------------------------------------------


def _controller_class(name: str, strategy: str = "rule", **attributes: Any) -> type[Controller]:
    async def decide(self: Controller, view: TelemetryView) -> list:
        return [Scale(target="api", replicas=1)]

    namespace = {"name": name, "taxonomy": Taxonomy.of("centralized", strategy), "decide": decide}
    return type(name.title().replace("-", ""), (Controller,), {**namespace, **attributes})


def test_decorator_registers_in_the_default_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    # A fresh default registry, so the test's controller does not leak into other tests.
    fresh = ControllerRegistry()
    monkeypatch.setattr(controlplane.registry, "default_registry", fresh)

    @controller
    class Decorated(Controller):
        name = "decorated"
        taxonomy = Taxonomy.of("decentralized", "rule")

        async def decide(self, view: TelemetryView) -> list:
            return []

    assert fresh.names() == ["decorated"]
    assert fresh.get("decorated") is Decorated
    assert fresh.origin("decorated") == "code"


def test_two_classes_with_one_name_are_an_error_and_reregistering_is_not() -> None:
    registry = ControllerRegistry()
    first = registry.register(_controller_class("twin"))
    registry.register(first)
    with pytest.raises(ValueError, match="two controllers are named 'twin'"):
        registry.register(_controller_class("twin"))
    assert registry.get("twin") is first


def test_a_class_missing_its_taxonomy_is_refused() -> None:
    class Nameless(Controller):
        name = "nameless"

        async def decide(self, view: TelemetryView) -> list:
            return []

    with pytest.raises(TypeError, match="taxonomy"):
        ControllerRegistry().register(Nameless)


# --- [controllers] configuration ------------------------------------------------------------------------


@dataclass(frozen=True)
class ScalerParameters:
    threshold: float = 0.5
    steps: int = 3
    label: str = "x"


@pytest.fixture
def registry() -> ControllerRegistry:
    registry = ControllerRegistry()
    registry.register(_controller_class("scaler", priority=2, Parameters=ScalerParameters))
    registry.register(_controller_class("learner", strategy="learning"))
    registry.register(_controller_class("hybrid", strategy="hybrid"))
    registry.register(_controller_class("router"))
    registry.load_errors["broken"] = "RuntimeError: this plugin cannot import"
    return registry


def _load(text: str, registry: ControllerRegistry) -> dict[str, Any]:
    return {item.name: item for item in load_controllers(tomllib.loads(text), registry)}


def test_only_listed_controllers_are_enabled(registry: ControllerRegistry) -> None:
    assert load_controllers({}, registry) == []
    assert load_controllers(tomllib.loads('[server]\notlp_grpc = "127.0.0.1:0"'), registry) == []
    loaded = _load("[controllers.scaler]\n[controllers.learner]", registry)
    assert sorted(loaded) == ["learner", "scaler"]


def test_default_and_explicit_modes(registry: ControllerRegistry) -> None:
    loaded = _load(
        """
        [controllers.scaler]
        [controllers.learner]
        [controllers.hybrid]
        mode = "active"
        [controllers.router]
        mode = "disabled"
        """,
        registry,
    )
    assert loaded["scaler"].mode is Mode.ACTIVE
    # Learning controllers start in shadow until an operator says otherwise.
    assert loaded["learner"].mode is Mode.SHADOW
    assert loaded["hybrid"].mode is Mode.ACTIVE
    # Disabled ones are still built, so the API can show them and switch them on.
    assert loaded["router"].mode is Mode.DISABLED
    assert loaded["router"].runner().mode is Mode.DISABLED


def test_priority_and_parameters_are_overridden(registry: ControllerRegistry) -> None:
    loaded = _load(
        """
        [controllers.scaler]
        priority = 9
        [controllers.scaler.params]
        threshold = 1
        label = "y"
        [controllers.router]
        """,
        registry,
    )
    scaler = loaded["scaler"]
    assert scaler.priority == 9 and loaded["router"].priority == 0
    assert scaler.instance.params == ScalerParameters(threshold=1.0, steps=3, label="y")
    assert isinstance(scaler.instance.params.threshold, float)
    assert type(scaler.instance) is scaler.cls
    assert _load("[controllers.scaler]", registry)["scaler"].priority == 2


def test_the_controllers_table_alone_is_accepted(registry: ControllerRegistry) -> None:
    document = tomllib.loads('[controllers.learner]\nmode = "active"\n[server]\napi = "127.0.0.1:0"')
    from_file = load_controllers(document, registry)
    from_table = load_controllers(document["controllers"], registry)
    assert [(c.name, c.mode) for c in from_file] == [(c.name, c.mode) for c in from_table]
    assert [(c.name, c.mode) for c in from_table] == [("learner", Mode.ACTIVE)]


def test_enable_all_adds_unlisted_controllers_at_their_defaults(registry: ControllerRegistry) -> None:
    loaded = _load(
        """
        [controllers]
        enable_all = true
        [controllers.router]
        mode = "shadow"
        """,
        registry,
    )
    assert sorted(loaded) == ["hybrid", "learner", "router", "scaler"]
    assert loaded["router"].mode is Mode.SHADOW
    assert loaded["hybrid"].mode is Mode.SHADOW and loaded["scaler"].mode is Mode.ACTIVE


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "[controllers.scaler.params]\nthreshhold = 0.1",
            r"controller scaler: unknown parameter\(s\) \['threshh",
        ),
        ('[controllers.scaler.params]\nsteps = "many"', "controller scaler: parameter steps must be int"),
        ("[controllers.scaler.params]\nsteps = 1.5", "controller scaler: parameter steps must be int"),
        ("[controllers.scaler]\nparams = 3", r"\[controllers.scaler\]: params must be a table"),
        ('[controllers.scaler]\nmode = "on"', r"\[controllers.scaler\]: mode must be one of .*\"shadow\""),
        ('[controllers.scaler]\npriority = "high"', r"\[controllers.scaler\]: priority must be an integer"),
        ("[controllers.scaler]\npriority = true", r"\[controllers.scaler\]: priority must be an integer"),
        ("[controllers.scaler]\nperiod = 3", r"\[controllers.scaler\]: unknown key\(s\) \['period'\]"),
        ("[controllers.scalr]", r"no controller named 'scalr'; installed: \['hybrid', 'learner', 'router'"),
        ("[controllers.broken]", "plugin 'broken' failed to load: RuntimeError: this plugin cannot import"),
        ('[controllers]\nenable_all = "yes"', "enable_all must be true or false"),
        ("[controllers]\nscaler = 1", r"scaler must be a table \[controllers.scaler\]"),
    ],
)
def test_configuration_errors_name_the_controller_and_key(
    registry: ControllerRegistry, text: str, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        load_controllers(tomllib.loads(text), registry)


def test_config_overrides_period_and_time_budget_per_instance() -> None:
    registry = ControllerRegistry()

    class Periodic(Controller):
        name = "periodic"
        taxonomy = Taxonomy.of("centralized", "rule")
        period_seconds = 30.0

        async def decide(self, view):
            return []

    registry.register(Periodic)
    (configured,) = load_controllers(
        {"periodic": {"period_seconds": 2, "time_budget_seconds": 0.5}}, registry
    )
    assert configured.instance.period_seconds == 2.0 and configured.instance.time_budget_seconds == 0.5
    assert Periodic.period_seconds == 30.0  # the class keeps its declared value
    with pytest.raises(ValueError, match=r"\[controllers.periodic\]: period_seconds must be a positive"):
        load_controllers({"periodic": {"period_seconds": 0}}, registry)


def test_a_learning_controller_promoted_in_the_config_acts_and_one_not_promoted_is_shadowed() -> None:
    import asyncio

    from actuators.memory import InMemoryActuator
    from controlplane.decisions import DecisionStatus
    from controlplane.engine.runtime import ControlLoop
    from controlplane.engine.store import DecisionStore
    from telemetry import TelemetryModel

    class Learner(Controller):
        name = "learner"
        taxonomy = Taxonomy.of("centralized", "learning", actions=["autoscaling"])

        async def decide(self, view: TelemetryView) -> list:
            return [Scale(target="api", replicas=3, reason="learned")]

    registry = ControllerRegistry()
    registry.register(Learner)
    statuses = []
    for promoted in (False, True):
        configured = load_controllers({"learner": {"mode": "active", "promoted": promoted}}, registry)
        store = DecisionStore(":memory:")
        loop = ControlLoop(TelemetryModel(), configured, InMemoryActuator(), store)
        (decision,) = asyncio.run(loop.tick())
        asyncio.run(loop.stop())
        statuses.append(decision.status)
    assert statuses == [DecisionStatus.SHADOW, DecisionStatus.APPLIED]
    with pytest.raises(ValueError, match=r"\[controllers.learner\]: promoted must be true or false"):
        load_controllers({"learner": {"promoted": "yes"}}, registry)
