"""`settings_from_table`: the one way every configuration table becomes typed settings."""

from __future__ import annotations

import enum
from dataclasses import dataclass

import pytest

from controlplane import settings_from_table
from controlplane.serve.config import ServerConfig
from telemetry import ModelConfig


class Color(enum.Enum):
    RED = "red"


@dataclass(frozen=True)
class Settings:
    name: str = "x"
    count: int = 1
    share: float = 0.5
    flag: bool = False
    color: Color = Color.RED
    tags: tuple[str, ...] = ()


def test_numbers_are_taken_as_declared_and_generic_fields_pass_through() -> None:
    built = settings_from_table(Settings, {"count": 2e6, "share": 1, "tags": ("a",)}, "[t]")
    assert built == Settings(count=2_000_000, share=1.0, tags=("a",))
    assert isinstance(built.count, int) and isinstance(built.share, float)
    # What a TOML file can write for the server's and the model's integers loads as before the move.
    assert settings_from_table(ServerConfig, {"max_queue_bytes": 1e9}, "[server]").max_queue_bytes == 10**9
    model = settings_from_table(ModelConfig, {"max_linked_spans": 2e6}, "[model]")
    assert model.max_linked_spans == 2_000_000


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"cnt": 1}, r"\[t\]: unknown key\(s\) \['cnt'\]; known: \['color', 'count'"),
        ({"count": 1.5}, r"\[t\]: key count must be int, got 1.5"),
        ({"count": True}, r"\[t\]: key count must be int, got True"),
        ({"flag": "yes"}, r"\[t\]: key flag must be bool, got 'yes'"),
        ({"color": "red"}, r"\[t\]: key color must be Color, got 'red'"),
    ],
)
def test_mistakes_are_named(values: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        settings_from_table(Settings, values, "[t]")


def test_a_controller_parameter_is_called_a_parameter() -> None:
    with pytest.raises(ValueError, match=r"controller c: unknown parameter\(s\) \['x'\]"):
        settings_from_table(Settings, {"x": 1}, "controller c", noun="parameter")
