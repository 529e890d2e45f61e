"""The field helpers every config dataclass is declared with: a numeric range (`ranged`, checked by `Bounds`), a
path that expands `${VAR}` (`path_field`), and `check_fields`, which checks a config built in Python rather than
read from a recipe (`PruneConfig(heads=2.0)` -> `FieldValueError`)."""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any, Literal


def path_field(default: str | None = None) -> Any:
    """A string field that may hold `${VAR}` / `${VAR:-default}` and is expanded on load."""
    return field(default=default, metadata={"path": True})


@dataclass(frozen=True)
class Bounds:
    """The range a numeric recipe key must fall in, checked when the recipe is read (`build_config`)."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False  # (low, ...: the low end itself is not allowed
    high_open: bool = False

    def holds(self, value: float) -> bool:
        low_ok = self.low is None or (value > self.low if self.low_open else value >= self.low)
        high_ok = self.high is None or (value < self.high if self.high_open else value <= self.high)
        return low_ok and high_ok

    def describe(self) -> str:
        if self.high is None:
            return f"greater than {self.low:g}" if self.low_open else f"at least {self.low:g}"
        left = "(" if self.low_open else "["
        right = ")" if self.high_open else "]"
        return f"in {left}{self.low:g}, {self.high:g}{right}"


def ranged(default: Any, low: float, high: float | None = None, **openness: bool) -> Any:
    """A numeric field whose value (each item, for a list) must lie in `Bounds(low, high, **openness)`."""
    return field(default=default, metadata={"bounds": Bounds(low, high, **openness)})


POSITIVE = {"low_open": True}  # ranged(x, 0, **POSITIVE): greater than 0
BELOW_ONE = {"high_open": True}  # ranged(x, 0, 1, **BELOW_ONE): [0, 1)


class FieldValueError(ValueError):
    """A config field out of its range: `field` names it, `problem` says what is wrong (`must be ..., got x`),
    so a command can name its own option for it."""

    def __init__(self, config: Any, field_name: str, problem: str) -> None:
        self.where = config if isinstance(config, str) else type(config).__name__
        super().__init__(f"{self.where}.{field_name} {problem}")
        self.field, self.problem = field_name, problem

    def __reduce__(self) -> tuple[Any, ...]:  # picklable across process pools (by the config's name)
        return (FieldValueError, (self.where, self.field, self.problem))


def check_fields(config: Any) -> None:
    """A config built in Python rather than read from a recipe: each ranged field in its range and each
    `Literal` field one of its values, or a FieldValueError naming the field (`PruneConfig.heads must be ...`)."""
    hints = typing.get_type_hints(type(config))
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if "bounds" in f.metadata and value is not None:
            for item in value if isinstance(value, list) else [value]:
                if not f.metadata["bounds"].holds(item):
                    raise FieldValueError(config, f.name, f"must be {f.metadata['bounds'].describe()}, got {item!r}")
        if typing.get_origin(hints[f.name]) is Literal and value not in typing.get_args(hints[f.name]):
            choices = list(typing.get_args(hints[f.name]))
            raise FieldValueError(config, f.name, f"must be one of {choices}, got {value!r}")
