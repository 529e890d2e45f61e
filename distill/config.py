"""Recipes: YAML files validated into frozen, typed config objects before any work starts.

A recipe is read with `yaml.safe_load`, `key.path=value` overrides are applied to the raw mapping,
and `parse_recipe` turns it into a `Recipe`. Every mistake raises `RecipeError` with a one-line
message naming the key path, e.g. ``unknown key 'distill.epoch' (did you mean 'epochs'?)``.

The one import path for the schema, torch-free; each name is defined once, in the module of its concern:

    schema_fields     the field helpers (`ranged`, `path_field`, `Bounds`) and `check_fields` / `FieldValueError`
    export_names      the export variants and calibration methods, and the names exported models go by
    library_configs   `PruneConfig`, `TrimConfig`, `ExportSettings`: the library's configs the recipe extends
    recipe_schema     the sections of a `kind: distill` recipe and `Recipe`
    embed_schema      `EmbedRecipe` (`kind: embedding-kd`) and `RECIPE_KINDS`
    schema_build      raw mapping -> typed config (`build_config`), `${VAR}` and `pkg:` paths
    recipe_yaml       reading a recipe file, `key.path=value` overrides, `recipe_to_dict`
    schema_checks     the checks that need only the recipe and the teacher's shape
"""

from __future__ import annotations

from polydistill.embed_schema import RECIPE_KINDS, EmbedRecipe, EmbedStudentConfig
from polydistill.export_names import (
    ATTN_IMPLEMENTATION,
    CALIBRATION_METHODS,
    EXPORT_MODES,
    INT8_VARIANTS,
    LEGACY_ONNX_PREFIX,
    CalibrationMethod,
    ExportVariant,
    headline_int8,
    is_onnx_model_name,
    onnx_model_name,
    variant_mean,
    variant_tag,
)
from polydistill.library_configs import ExportSettings, PruneConfig, TrimConfig
from polydistill.recipe_schema import (
    ALL_SIB200_LANGUAGES,
    STAGES,
    AdaptStageConfig,
    AgnosticConfig,
    AugmentConfig,
    BenchConfig,
    DataConfig,
    DistillConfig,
    ExportConfig,
    PruneStageConfig,
    Recipe,
    ScratchConfig,
    StudentConfig,
    TeacherConfig,
    TrainConfig,
    TrimStageConfig,
)
from polydistill.recipe_yaml import UniqueKeySafeLoader, apply_override, load_data_config, read_yaml, recipe_to_dict
from polydistill.schema_build import EXTRAS, build_config, expand_env, resolve_package_path
from polydistill.schema_checks import (
    PER_EXAMPLE_LOSSES,
    TeacherShape,
    check_against_teacher,
    check_run_name,
    shape_of_config,
)
from polydistill.schema_fields import BELOW_ONE, POSITIVE, Bounds, FieldValueError, check_fields, path_field, ranged

__all__ = [
    "ALL_SIB200_LANGUAGES", "ATTN_IMPLEMENTATION", "BELOW_ONE", "CALIBRATION_METHODS", "EXPORT_MODES", "EXTRAS",
    "INT8_VARIANTS", "LEGACY_ONNX_PREFIX", "PER_EXAMPLE_LOSSES", "POSITIVE", "RECIPE_KINDS", "STAGES",
    "AdaptStageConfig", "AgnosticConfig", "AugmentConfig", "BenchConfig", "Bounds", "CalibrationMethod", "DataConfig",
    "DistillConfig", "EmbedRecipe", "EmbedStudentConfig", "ExportConfig", "ExportSettings", "ExportVariant",
    "FieldValueError", "PruneConfig", "PruneStageConfig", "Recipe", "ScratchConfig", "StudentConfig", "TeacherConfig",
    "TeacherShape", "TrainConfig", "TrimConfig", "TrimStageConfig", "UniqueKeySafeLoader",
    "apply_override", "build_config", "check_against_teacher", "check_fields", "check_run_name", "expand_env",
    "headline_int8", "is_onnx_model_name", "load_data_config", "onnx_model_name", "path_field", "ranged",
    "read_yaml", "recipe_to_dict", "resolve_package_path", "shape_of_config", "variant_mean", "variant_tag",
]  # fmt: skip
