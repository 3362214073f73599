"""Typed settings from configuration tables: one dataclass from one TOML table, mistakes named.

What every configurable part uses (a controller's parameters, an actuator's table, `serve`'s sections):
unknown keys are errors that list the known ones; an integer is accepted where a float is declared and a
whole float (`1e9`) where an integer is; a value that is not of a declared class (str, int, bool, an enum,
...) is an error naming the key. Generic annotations (`tuple[str, ...]`, mappings) are left to the
dataclass itself to check.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, TypeVar, get_type_hints

T = TypeVar("T")


def settings_from_table(kind: type[T], values: Mapping[str, Any], where: str, noun: str = "key") -> T:
    """`kind(**values)` after checking names and types; ValueError starting with `where`."""
    names = {field.name for field in dataclasses.fields(kind)}  # type: ignore[arg-type]
    unknown = set(values) - names
    if unknown:
        raise ValueError(f"{where}: unknown {noun}(s) {sorted(unknown)}; known: {sorted(names)}")
    hints = get_type_hints(kind)
    checked = {key: _typed(value, hints.get(key), f"{where}: {noun} {key}") for key, value in values.items()}
    try:
        return kind(**checked)
    except TypeError as error:
        raise ValueError(f"{where}: {error}") from None


def _typed(value: Any, expected: Any, what: str) -> Any:
    if not isinstance(expected, type):
        return value
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if expected is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
        raise ValueError(f"{what} must be {expected.__name__}, got {value!r}")
    return value
