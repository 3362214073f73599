"""Typed settings from configuration tables: one dataclass from one TOML table, mistakes named.

What every configurable part uses (a controller's parameters, an actuator's table, `serve`'s sections):
unknown keys are errors that list the known ones, an integer is accepted where a float is declared, and a
value of the wrong plain type (str, int, float, bool) is an error naming the key.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, TypeVar, get_type_hints

T = TypeVar("T")


def settings_from_table(kind: type[T], values: Mapping[str, Any], where: str, noun: str = "key") -> T:
    """`kind(**values)` after checking names and plain types; ValueError starting with `where`."""
    names = {field.name for field in dataclasses.fields(kind)}  # type: ignore[arg-type]
    unknown = set(values) - names
    if unknown:
        raise ValueError(f"{where}: unknown {noun}(s) {sorted(unknown)}; known: {sorted(names)}")
    try:
        hints = get_type_hints(kind)
    except Exception:  # noqa: BLE001 - annotations that do not resolve here are simply not checked
        hints = {}
    checked = {}
    for key, value in values.items():
        expected = hints.get(key)
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if expected in (str, int, float, bool) and (
            not isinstance(value, expected) or (expected is int and isinstance(value, bool))
        ):
            raise ValueError(f"{where}: {noun} {key} must be {expected.__name__}, got {value!r}")
        checked[key] = value
    try:
        return kind(**checked)
    except TypeError as error:
        raise ValueError(f"{where}: {error}") from None
