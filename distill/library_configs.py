"""The library configs (`prune(model, PruneConfig(...))`, `trim_vocab(..., TrimConfig(...))`, one export's
`ExportSettings`), defined here once, torch-free: the recipe's `prune`, `trim` and `export` sections extend them, so
a key, its default and its range are written in one place and checked the same way from a recipe (naming the key
path) or from Python (`check_fields`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from polydistill.export_names import CalibrationMethod
from polydistill.schema_fields import BELOW_ONE, POSITIVE, check_fields, ranged


@dataclass(frozen=True)
class PruneConfig:
    """What to remove; every fraction is of the original count and is applied to every layer alike.

    heads: fraction of attention heads removed; the hidden width shrinks with them (head size is kept).
    ffn: fraction of intermediate (FFN) neurons removed.
    importance: "magnitude" (L2 of the coupled weights) or "taylor" (|weight x gradient| over the coupled
        weights, with gradients of the task loss accumulated over `batches`, Molchanov et al. 2019).
    round_to: the kept FFN width is rounded down to a multiple of this (e.g. 64 for matmul-friendly shapes).
    """

    heads: float = ranged(0.0, 0, 1, **BELOW_ONE)
    ffn: float = ranged(0.0, 0, 1, **BELOW_ONE)
    importance: Literal["magnitude", "taylor"] = "magnitude"
    round_to: int = ranged(1, 1)

    def __post_init__(self) -> None:
        check_fields(self)


@dataclass(frozen=True)
class TrimConfig:
    """Which pieces survive: those seen at least `min_freq` times in the texts, at most `top_k` ids in all
    (special tokens included; None: no cap)."""

    top_k: int | None = ranged(None, 1)
    min_freq: int = ranged(1, 1)

    def __post_init__(self) -> None:
        check_fields(self)


@dataclass(frozen=True)
class ExportSettings:
    """How one ONNX export is made and gated, the same for `distill export` (polydistill.export.artifact.ExportOptions
    adds the one mode and the card's facts) and for the recipe's `export` section (which adds its variants)."""

    optimize: bool = True  # onnxruntime's transformer optimizer (fused Attention, checked per layer)
    calibration_method: CalibrationMethod = "minmax"  # int8-static, on the dev sentences (int8-smooth uses max)
    per_channel: bool = False  # int8 variants: one weight scale per output channel instead of per matrix
    parity_tolerance: float = ranged(1e-4, 0, **POSITIVE)  # max |logit difference| against PyTorch
    parity_sentences: int = ranged(64, 1)  # real sentences the parity gate runs
    opset: int = ranged(17, 14, 20)  # 14: scaled-dot-product attention; 20: the newest torch.onnx writes

    def export_settings(self) -> dict[str, Any]:
        """These fields alone, as keyword arguments (a recipe's `export` section -> one variant's options)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(ExportSettings)}
