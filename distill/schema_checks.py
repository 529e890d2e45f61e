"""Checks of a built recipe that read nothing but the recipe itself and, once it is known, the teacher's shape;
the checks that read the data, the losses or the model folders are polydistill.recipe's."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from polydistill.errors import RecipeError
from polydistill.recipe_schema import Recipe


def check_run_name(name: str) -> None:
    """A recipe's `name` becomes one folder under `output_dir`: no separators, no `.`/`..`, nothing absolute."""
    if not name.strip() or name in (".", "..") or any(sep in name for sep in ("/", "\\", "\0")):
        raise RecipeError(
            f"'name' {name!r} must be a plain folder name (runs go to output_dir/name/): no '/', '\\', '.' or '..'"
        )


# losses that read only one vector per example (or per scored word): they pair a student with the teacher's
# cached outputs even when the two tokenise differently
PER_EXAMPLE_LOSSES = ("logit_kl", "logit_mse", "cross_entropy", "cls_mse")


@dataclass(frozen=True)
class TeacherShape:
    """What a recipe's student and data keys are checked against once the teacher is known."""

    layers: int
    positions: int  # tokens a sentence may have, special ones included


def shape_of_config(config: dict[str, Any]) -> TeacherShape:
    """From a Hugging Face `config.json` mapping: RoBERTa-family models keep pad_token_id + 1 position slots
    below the first real position, BERT-family models none."""
    offset = config.get("pad_token_id", 1) + 1 if config.get("model_type") in ("xlm-roberta", "roberta") else 0
    return TeacherShape(config["num_hidden_layers"], config["max_position_embeddings"] - offset)


def check_against_teacher(recipe: Recipe, shape: TeacherShape) -> None:
    """Keys whose range depends on the teacher: student depth and layer indices, the distillation layer map,
    the sentence length its position table allows."""
    student, n = recipe.student, shape.layers
    if student.num_layers is not None and student.num_layers > n:
        raise RecipeError(f"'student.num_layers' must be at most the teacher's {n} layers, got {student.num_layers}")
    if student.layers is not None:
        for i, layer in enumerate(student.layers):
            if layer >= n:
                raise RecipeError(f"'student.layers[{i}]' is {layer}, but the teacher has layers 0..{n - 1}")
        if len(set(student.layers)) != len(student.layers):
            raise RecipeError(f"'student.layers' {student.layers} names a layer twice")
    for section in ("distill", "agnostic"):
        layer_map = getattr(recipe, section).layer_map
        if isinstance(layer_map, list) and any(not 0 <= i < n for i in layer_map):
            raise RecipeError(f"'{section}.layer_map' {layer_map} must name teacher layers 0..{n - 1}")
    if recipe.data.max_length > shape.positions:
        raise RecipeError(
            f"'data.max_length' {recipe.data.max_length} is more than the teacher's {shape.positions} positions"
        )
