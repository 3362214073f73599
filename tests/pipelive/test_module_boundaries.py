"""PipeLive's module boundaries: no import circles (lazy and TYPE_CHECKING imports count), and live migration
reaching the engine only through the pool-control object it is handed."""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

from services.pipelive.engine import LLMEngine
from services.pipelive.pool_control import PoolControl
from tests.pipelive.reconf_support import MODEL8, PROMPTS, config, reference_outputs, run_with_reconfiguration

PACKAGE = Path(__file__).resolve().parents[2] / "services" / "pipelive"


def _imports(path: Path) -> set[str]:
    """Every services.pipelive module `path` imports, wherever the import statement stands."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        for name in names:
            if name.startswith("services.pipelive."):
                module = name.split(".")[2]
                if (PACKAGE / f"{module}.py").exists() and module != path.stem:
                    found.add(module)
    return found


def test_pipelive_modules_import_each_other_without_circles() -> None:
    graph = {path.stem: _imports(path) for path in PACKAGE.glob("*.py")}
    assert "engine" not in graph["live_migration"] and "stage" not in graph["process_migration"]
    graphlib.TopologicalSorter(graph).prepare()  # CycleError names the circle


def test_live_migration_touches_no_private_state_but_its_own() -> None:
    for name in ("live_migration.py", "process_migration.py"):
        for node in ast.walk(ast.parse((PACKAGE / name).read_text())):
            private = isinstance(node, ast.Attribute) and node.attr[:1] == "_" and node.attr[:2] != "__"
            if private:
                owner = node.value
                assert isinstance(owner, ast.Name) and owner.id == "self", f"{name}:{node.lineno}"


def test_the_engine_hands_a_reconfiguration_its_pool_control() -> None:
    with LLMEngine(MODEL8, config()) as engine:
        outputs, reconfiguration = run_with_reconfiguration(
            engine, lambda e: e.begin_reconfigure([range(0, 3), range(3, 8)]), prompts=PROMPTS[:3]
        )
        assert reconfiguration.future.result().stages == [range(0, 3), range(3, 8)]
        control = reconfiguration.control
        assert isinstance(control, PoolControl) and not isinstance(control, LLMEngine)
        assert control.num_chunks == engine.pool.num_chunks and control.stages == engine.status().stages
    assert outputs == reference_outputs(PROMPTS[:3])
