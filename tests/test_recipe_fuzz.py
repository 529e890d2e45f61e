"""Property-based: whatever structure a recipe file holds, loading it either succeeds or raises the project's
own one-line error (DistillError / RecipeError), never a TypeError, KeyError, AttributeError or the like."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from polydistill.config import Recipe
from polydistill.errors import DistillError
from polydistill.recipe import load_any_recipe

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = yaml.safe_load((REPO / "recipes" / "quickstart-scratch.yaml").read_text())

# the recipe's real key names, so random structures often reach deep into the schema, not only the top
KEYS = sorted({
    *Recipe.__dataclass_fields__, "kind", "path", "languages", "scratch", "train", "epochs", "lr", "losses",
    "weight", "layers", "num_layers", "variants", "source_language", "teacher", "model",
})  # fmt: skip
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 10**6), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12), st.sampled_from(["eng_Latn", "teacher", "distill", "int8-dynamic", "embedding-kd", "${X}"]),
)  # fmt: skip
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)  # fmt: skip


def _load(tmp_path: Path, document) -> None:
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(document, allow_unicode=True))
    try:
        load_any_recipe(path)
    except DistillError as exc:
        assert "\n" not in str(exc), f"not one line: {exc}"


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(document=values)
def test_any_yaml_document_loads_or_raises_the_projects_error(tmp_path, document):
    _load(tmp_path, document)


@pytest.mark.slow
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.sampled_from(sorted(QUICKSTART)), value=values, sub=st.sampled_from(KEYS))
def test_the_quickstart_with_one_key_replaced_loads_or_raises_the_projects_error(tmp_path, key, value, sub):
    document = {**QUICKSTART, key: value}
    if isinstance(QUICKSTART[key], dict):  # also try the value one level down, inside the real section
        document[key] = {**QUICKSTART[key], sub: value}
    _load(tmp_path, document)
