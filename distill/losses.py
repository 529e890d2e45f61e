"""Distillation losses: one small module each, one registry, weighted in the recipe.

The loss classes live by what they compare (`logit_losses`, `layer_losses`, `sentence_losses`); `LOSSES` here
is the one registry of them, and they stay importable from this module.

Each loss takes plain tensors. Its class attribute `inputs` names which of the tensors the
training step makes available it reads, so the recipe can combine any of them without the
training loop knowing their signatures:

- `student_logits`, `teacher_logits` [B, C] (or [B, T, C]), `labels`;
- `student_hidden`, `teacher_hidden`: sequences of [B, T, H] layer outputs;
- `student_attentions`, `teacher_attentions`: sequences of [B, heads, T, T] attention probabilities;
- `student_qkv`, `teacher_qkv`: sequences of (query, key, value) projections, each [B, T, width];
- `student_pooled`, `teacher_pooled` [B, H] sentence embeddings;
- `attention_mask` [B, T] (1 = real token, 0 = padding).

Its class attribute `unit` says what it averages over (`distill.train.UNITS`: sentences, real tokens or
rows of logits), so a batch split over processes or micro-batches can weight each piece by its share of
the whole batch and add up to the same loss (`WeightedLoss(..., share=)`).

The per-layer sequences arrive already aligned pair by pair (see `map_layers` and `aligned`);
per-layer losses average over the pairs. `needs(specs)` tells the training step which of these a
recipe reads, so it computes (and captures) nothing else.

Losses with a learned projection take the keyword arguments `student_hidden_size` and
`teacher_hidden_size`; `WeightedLoss` fills them from the models, the recipe never sets them.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn

from polydistill.errors import RecipeError, suggest
from polydistill.layer_losses import AttentionKL, HiddenMSE, MiniLMRelations
from polydistill.logit_losses import CrossEntropy, LogitKL, LogitMSE
from polydistill.sentence_losses import ClsMSE, PooledContrastive, PooledCosine, PooledMSE

# Constructor arguments the framework fills from the models; recipes may not set them.
FRAMEWORK_ARGS = ("student_hidden_size", "teacher_hidden_size")

# (lowest value, whether the lowest itself is refused) for the numbers a recipe may give a loss
ARG_LOWEST = {"weight": (0.0, False), "temperature": (0.0, True), "relation_heads": (1, False)}

LOSSES: dict[str, type[nn.Module]] = {
    "logit_kl": LogitKL,
    "cross_entropy": CrossEntropy,
    "logit_mse": LogitMSE,
    "hidden_mse": HiddenMSE,
    "attention_kl": AttentionKL,
    "minilm_relations": MiniLMRelations,
    "pooled_cosine": PooledCosine,
    "pooled_mse": PooledMSE,
    "pooled_contrastive": PooledContrastive,
    "cls_mse": ClsMSE,
}


def map_layers(num_student: int, num_teacher: int, how: str | Sequence[int]) -> list[tuple[int, int]]:
    """(student layer, teacher layer) pairs over transformer layer indices 0..n-1.

    "uniform": student layer i ↔ teacher layer round((i + 1) · num_teacher / num_student) − 1, so the
    last layers meet (as `polydistill.students.layers.pick_layers`); "last": only the two last layers; a list:
    the teacher layer for each student layer, in order.
    """
    for name, n in (("num_student", num_student), ("num_teacher", num_teacher)):
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"{name} must be a positive number of layers, got {n!r}")
    if how == "last":
        return [(num_student - 1, num_teacher - 1)]
    if how == "uniform":
        if num_student > num_teacher:
            raise ValueError(
                f"uniform layer mapping needs no more student layers than teacher layers, got "
                f"{num_student} > {num_teacher}; give an explicit list of teacher layers instead"
            )
        return [(i, round((i + 1) * num_teacher / num_student) - 1) for i in range(num_student)]
    if isinstance(how, str) or not isinstance(how, Sequence):
        raise ValueError(f"layer mapping must be 'uniform', 'last' or a list of teacher layers, got {how!r}")
    if len(how) != num_student:
        raise ValueError(f"layer mapping lists {len(how)} teacher layers for {num_student} student layers")
    bad = [j for j in how if isinstance(j, bool) or not isinstance(j, int) or not 0 <= j < num_teacher]
    if bad:
        raise ValueError(f"layer mapping: {bad} are not teacher layer indices in [0, {num_teacher})")
    return list(enumerate(how))


def aligned(student: Sequence[Any], teacher: Sequence[Any], pairs: Iterable[tuple[int, int]]) -> tuple[list, list]:
    """The per-layer features `pairs` (from `map_layers`) names: (student list, teacher list), pair by pair."""
    pairs = list(pairs)
    return [student[i] for i, _ in pairs], [teacher[j] for _, j in pairs]


def needs(specs: Iterable[str]) -> set[str]:
    """Every tensor name the losses named in `specs` read (a recipe's `{name: {...}}` or just names)."""
    unknown = [name for name in specs if name not in LOSSES]
    if unknown:
        raise RecipeError(f"unknown loss '{unknown[0]}'")
    return {key for name in specs for key in LOSSES[name].inputs}


def _constructor_args(cls: type[nn.Module]) -> list[str]:
    params = inspect.signature(cls.__init__).parameters
    return [name for name in params if name not in ("self", "args", "kwargs")]


def check_loss_specs(specs: dict[str, dict[str, Any]], where: str) -> None:
    """Validate `{name: {weight, **kwargs}}` against the registry without building anything."""
    if not specs:
        raise RecipeError(f"'{where}' is empty: name at least one loss")
    for name, spec in specs.items():
        if name not in LOSSES:
            raise RecipeError(f"unknown loss '{where}.{name}'{suggest(name, LOSSES)}")
        allowed = ["weight", *(arg for arg in _constructor_args(LOSSES[name]) if arg not in FRAMEWORK_ARGS)]
        for key, value in spec.items():
            if key in FRAMEWORK_ARGS:
                raise RecipeError(f"'{where}.{name}.{key}' is taken from the models; remove it from the recipe")
            if key not in allowed:
                raise RecipeError(f"unknown key '{where}.{name}.{key}'{suggest(key, allowed)}")
            if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
                raise RecipeError(f"'{where}.{name}.{key}' must be a finite number, got {value!r}")
            lowest, open_end = ARG_LOWEST.get(key, (None, False))
            if lowest is not None and (value <= lowest if open_end else value < lowest):
                need = f"greater than {lowest:g}" if open_end else f"at least {lowest:g}"
                raise RecipeError(f"'{where}.{name}.{key}' must be {need}, got {value!r}")
        if "weight" not in spec:
            raise RecipeError(f"missing required key '{where}.{name}.weight'")
    if all(spec["weight"] == 0 for spec in specs.values()):
        raise RecipeError(f"'{where}': every loss has weight 0, so nothing would be learnt")


def _usable(value: Any) -> Any:
    """`value` with inference-mode tensors copied, so autograd may save them (teacher features)."""
    if isinstance(value, torch.Tensor):
        return value.clone() if value.is_inference() else value
    if isinstance(value, list | tuple):
        return type(value)(_usable(v) for v in value)
    return value


class WeightedLoss(nn.Module):
    """The recipe's weighted sum of registered losses; returns the total and each term.

    `student_hidden_size` / `teacher_hidden_size` go to the losses whose constructor takes them (those
    with a learned projection); give `WeightedLoss(...).parameters()` to the optimizer with the student's.
    Tensors made under `torch.inference_mode()` are copied first (autograd cannot save them);
    computing the teacher under `torch.no_grad()` instead avoids the copy.
    """

    def __init__(
        self,
        specs: dict[str, dict[str, Any]],
        *,
        student_hidden_size: int | None = None,
        teacher_hidden_size: int | None = None,
    ) -> None:
        super().__init__()
        check_loss_specs(specs, "losses")
        sizes = {"student_hidden_size": student_hidden_size, "teacher_hidden_size": teacher_hidden_size}
        self.weights = {name: float(spec["weight"]) for name, spec in specs.items()}
        terms = {}
        for name, spec in specs.items():
            kwargs = {k: v for k, v in spec.items() if k != "weight"}
            accepted = _constructor_args(LOSSES[name])
            kwargs |= {k: v for k, v in sizes.items() if v is not None and k in accepted}
            terms[name] = LOSSES[name](**kwargs)
        self.terms = nn.ModuleDict(terms)

    def forward(self, share: dict[str, float] | None = None, **tensors: Any) -> tuple[torch.Tensor, dict[str, float]]:
        """The weighted sum of the terms; with `share` (unit -> this batch's part of the global batch, see
        `distill.train.fit`) each term's mean is scaled by its unit's share. The terms are returned unscaled."""
        total: torch.Tensor | None = None
        parts = {}
        for name, term in self.terms.items():
            value = term(*(_usable(tensors[key]) for key in term.inputs))
            weighted = self.weights[name] * value * (1.0 if share is None else share[term.unit])
            total = weighted if total is None else total + weighted
            parts[name] = float(value.detach())
        assert total is not None  # check_loss_specs guarantees at least one term
        return total, parts
