"""PipeLive's module boundaries: live migration reaches the engine only through the pool-control object it
is handed (import circles anywhere, this package's included, are tests/test_layering.py's)."""

from __future__ import annotations

import ast
from pathlib import Path

from services.pipelive.engine import LLMEngine
from services.pipelive.pool_control import PoolControl
from tests.services.pipelive.reconf_support import (
    MODEL8,
    PROMPTS,
    config,
    reference_outputs,
    run_with_reconfiguration,
)

PACKAGE = Path(__file__).resolve().parents[3] / "services" / "pipelive"


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
