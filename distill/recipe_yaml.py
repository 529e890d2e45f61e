"""Reading a recipe file: YAML with no key given twice, `key.path=value` overrides applied to the raw mapping, and
a built recipe written back as a plain mapping (what a run's recipe.yaml snapshot holds)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import yaml

from polydistill.errors import RecipeError
from polydistill.recipe_schema import DataConfig, Recipe
from polydistill.schema_build import build_config


def load_data_config(path: str | Path) -> DataConfig:
    """The `data` section of a recipe file alone, validated: what `distill export` needs from a run's recipe.yaml
    snapshot to read that run's dev sentences, without checking its teacher or stages again (a teacher folder
    the run read may be gone by now)."""
    raw = read_yaml(path)
    return build_config(DataConfig, raw.get("data") or {}, "data")


class UniqueKeySafeLoader(yaml.SafeLoader):
    """`yaml.safe_load`'s loader, except that a mapping naming the same key twice is an error: plain YAML
    keeps the last value silently, so a recipe's second `lr:` would quietly win over the first."""


def _unique_key_mapping(loader: UniqueKeySafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    first_line: dict[Any, int] = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor`: merged keys may be overridden, by design
            continue
        key = loader.construct_object(key_node, deep=True)
        try:
            seen = first_line.get(key)
        except TypeError:  # an unhashable key: construct_mapping below reports it
            continue
        if seen is not None:
            raise yaml.constructor.ConstructorError(
                None, None, f"key {key!r} appears twice (lines {seen} and {key_node.start_mark.line + 1})",
                key_node.start_mark,
            )  # fmt: skip
        first_line[key] = key_node.start_mark.line + 1
    return loader.construct_mapping(node, deep=True)


UniqueKeySafeLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_key_mapping)


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"recipe file not found: {path}")
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=UniqueKeySafeLoader)  # safe_load, no duplicate keys
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise RecipeError(f"malformed YAML in {path}{where}: {problem}") from None
    if not isinstance(raw, dict):
        raise RecipeError(f"recipe {path} must be a mapping of keys, got {type(raw).__name__}")
    return raw


def apply_override(raw: dict[str, Any], override: str) -> None:
    """Apply `a.b.c=value` (value parsed as YAML, so `3`, `[0, 2]`, `null` keep their types)."""
    key, sep, value = override.partition("=")
    if not sep or not key or any(not part for part in key.split(".")):
        raise RecipeError(f"override {override!r} is not of the form key.path=value")
    try:
        parsed = yaml.safe_load(value) if value else ""
    except yaml.YAMLError:
        parsed = value
    *parents, leaf = key.split(".")
    node = raw
    for i, part in enumerate(parents):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise RecipeError(f"override {override!r}: '{'.'.join(parents[: i + 1])}' is not a mapping")
        node = child
    node[leaf] = parsed


def recipe_to_dict(recipe: Recipe) -> dict[str, Any]:
    return dataclasses.asdict(recipe)
