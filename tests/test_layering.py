"""The layering contract of ARCHITECTURE.md ("may import"), checked over every module's imports.

Every `import` and `from ... import` of the project's own packages counts, wherever it stands (module top,
inside a function, under `TYPE_CHECKING`): a lazy import against the flow is still against the flow, and a
typing-only back-reference still ties two modules into one. Third-party and standard-library imports are
free. `docs/layout.md` explains the table and its three deliberate allowances (marked below).
"""

from __future__ import annotations

import ast
import fnmatch
from dataclasses import dataclass
from pathlib import Path

import networkx as nx

from tests.support import REPO

PACKAGES = ("protos", "telemetry", "controlplane", "controllers", "actuators", "agents", "services", "bench")
# The public API: `from controlplane import ...`, the package itself and nothing under it.
PUBLIC = ("controlplane",)
VOCABULARY = ("controlplane", "controlplane.*", "!controlplane.engine*", "!controlplane.serve*")

# Importer (most specific first) -> the project modules it may import. `x` is the module x only, `x*` x and
# everything under it; `!pattern` forbids. The first pattern that matches decides.
RULES: dict[str, tuple[str, ...]] = {
    "protos": ("protos*",),
    "telemetry": ("telemetry*", "protos*"),
    "controlplane.engine": ("controlplane.engine*", *VOCABULARY, "telemetry*", "protos*"),
    "controlplane.serve": ("controlplane*", "telemetry*", "protos*"),
    "controlplane": (*VOCABULARY, "telemetry*", "protos*"),
    "controllers": (*PUBLIC, "controllers*"),
    # An actuator speaks to its substrate through that substrate's client: PipeLive's is its gRPC API.
    "actuators": (*PUBLIC, "actuators*", "protos*"),
    # Allowance 1: the node agent runs a control loop of its own (hierarchical control), so it builds the
    # engine; its telemetry enters a model only through an Ingestor and the report codec.
    "agents": (
        *PUBLIC,
        "agents*",
        "protos*",
        "controlplane.engine*",
        "telemetry",
        "telemetry.ingest",
        "telemetry.reports",
    ),
    "services.shared_data": (),
    "services.demo": (*PUBLIC, "services.demo*", "services.shared_data"),
    # Allowance 2: the simulated application's tracer encodes consistent-probability sampling with the
    # same function the model decodes it with, so the two can never disagree.
    "services.sim": (*PUBLIC, "services.sim*", "services.demo*", "telemetry.sampling"),
    "services.live": (*PUBLIC, "services.live*", "services.demo*"),
    "services.pipelive": (*PUBLIC, "services.pipelive*", "services.shared_data", "protos*"),
    "services": ("services",),
    # Allowance 3 is not an exception but the bottom of the table: benchmarks may import everything.
    "bench": ("*",),
}


@dataclass(frozen=True, slots=True)
class Import:
    importer: str
    imported: str
    line: int


def module_name(root: Path, path: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules(root: Path) -> dict[str, Path]:
    modules = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")) if (root / package).is_dir() else ():
            if "_pb2" not in path.name:
                modules[module_name(root, path)] = path
    return modules


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> list[Import]:
    """Every project module `name` imports (resolved to the longest module a dotted name reaches)."""
    found = []
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            targets = [f"{base}.{alias.name}" for alias in node.names] or [base]
        for target in targets:
            parts = target.split(".")
            while parts and ".".join(parts) not in modules:
                parts.pop()
            resolved = ".".join(parts)
            if resolved and resolved != name:
                found.append(Import(name, resolved, node.lineno))
    return found


def rule_for(module: str) -> tuple[str, tuple[str, ...]] | None:
    for key in sorted(RULES, key=len, reverse=True):
        if module == key or module.startswith(key + "."):
            return key, RULES[key]
    return None


def allowed(imported: str, patterns: tuple[str, ...]) -> bool:
    for pattern in patterns:
        if fnmatch.fnmatchcase(imported, pattern.removeprefix("!")):
            return not pattern.startswith("!")
    return False


def violations(root: Path) -> list[str]:
    """Imports against the table, and import circles, in the tree at `root`."""
    modules = project_modules(root)
    problems = []
    graph = nx.DiGraph()
    for name, path in modules.items():
        graph.add_node(name)
        rule = rule_for(name)
        for item in dict.fromkeys(imports_of(name, path, modules)):
            graph.add_edge(item.importer, item.imported)
            if rule is None:
                problems.append(f"{name} is in no package of the layering table")
                break
            if not allowed(item.imported, rule[1]):
                problems.append(
                    f"{path.relative_to(root)}:{item.line}: {name} imports {item.imported}, "
                    f"which `{rule[0]}` may not import"
                )
    for cycle in nx.simple_cycles(graph):
        problems.append("import circle: " + " -> ".join([*cycle, cycle[0]]))
    return problems


def test_the_tree_follows_the_layering_table() -> None:
    problems = violations(REPO)
    assert not problems, "\n".join(problems)


def test_every_project_module_falls_under_a_rule() -> None:
    modules = project_modules(REPO)
    assert len(modules) > 150
    assert [name for name in modules if rule_for(name) is None] == []


def _tree(root: Path, files: dict[str, str]) -> Path:
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_the_contract_fails_on_an_import_against_the_flow(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "telemetry/__init__.py": "",
            "telemetry/model.py": "def f():\n    from controlplane.engine import runtime\n",
            "controlplane/__init__.py": "",
            "controlplane/actions.py": "",
            "controlplane/engine/__init__.py": "",
            "controlplane/engine/runtime.py": "from controlplane import actions\n",
            "controllers/__init__.py": "",
            "controllers/mine.py": "from controlplane.actions import Scale\nfrom controlplane import Scale\n",
        },
    )
    problems = violations(root)
    assert any("telemetry.model imports controlplane.engine.runtime" in item for item in problems)
    # A controller reaching past the public API into a vocabulary module is refused too.
    assert any("controllers.mine imports controlplane.actions" in item for item in problems)
    assert len(problems) == 2, problems


def test_the_contract_fails_on_an_import_circle(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "services/__init__.py": "",
            "services/pipelive/__init__.py": "",
            "services/pipelive/engine.py": "from services.pipelive import migration\n",
            "services/pipelive/migration.py": (
                "from typing import TYPE_CHECKING\n"
                "if TYPE_CHECKING:\n    from services.pipelive.engine import E\n"
            ),
        },
    )
    problems = violations(root)
    assert len(problems) == 1 and problems[0].startswith("import circle:"), problems
    assert "services.pipelive.engine" in problems[0] and "services.pipelive.migration" in problems[0]
