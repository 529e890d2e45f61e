"""Distillation losses: one small module each, one registry, weighted in the recipe.

Each loss takes plain tensors. Its class attribute `inputs` names which of the tensors the
training step makes available it reads (`student_logits`, `teacher_logits`, `labels`), so the
recipe can combine any of them without the training loop knowing their signatures.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from distill.errors import RecipeError


class LogitKL(nn.Module):
    """KL(teacher || student) on temperature-softened logits, scaled by T².

    Hinton, Vinyals & Dean 2015, "Distilling the Knowledge in a Neural Network": the T² factor
    keeps the gradient scale of the soft targets independent of the temperature.
    """

    inputs = ("student_logits", "teacher_logits")

    def __init__(self, temperature: float = 1.0) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError("temperature must be positive")
        self.temperature = temperature

    def forward(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
        t = self.temperature
        log_p_student = F.log_softmax(student_logits / t, dim=-1)
        log_p_teacher = F.log_softmax(teacher_logits / t, dim=-1)
        kl = F.kl_div(log_p_student, log_p_teacher, log_target=True, reduction="batchmean")
        return kl * t * t


class CrossEntropy(nn.Module):
    """Plain cross-entropy of the student against the gold labels."""

    inputs = ("student_logits", "labels")

    def forward(self, student_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(student_logits, labels)


LOSSES: dict[str, type[nn.Module]] = {"logit_kl": LogitKL, "cross_entropy": CrossEntropy}


def _constructor_args(cls: type[nn.Module]) -> list[str]:
    params = inspect.signature(cls.__init__).parameters
    return [name for name in params if name != "self"]


def check_loss_specs(specs: dict[str, dict[str, Any]], where: str) -> None:
    """Validate `{name: {weight, **kwargs}}` against the registry without building anything."""
    from distill.config import suggest

    if not specs:
        raise RecipeError(f"'{where}' is empty: name at least one loss")
    for name, spec in specs.items():
        if name not in LOSSES:
            raise RecipeError(f"unknown loss '{where}.{name}'{suggest(name, LOSSES)}")
        allowed = ["weight", *_constructor_args(LOSSES[name])]
        for key, value in spec.items():
            if key not in allowed:
                raise RecipeError(f"unknown key '{where}.{name}.{key}'{suggest(key, allowed)}")
            if not isinstance(value, int | float) or isinstance(value, bool):
                raise RecipeError(f"'{where}.{name}.{key}' must be a number, got {value!r}")
        if "weight" not in spec:
            raise RecipeError(f"missing required key '{where}.{name}.weight'")


class WeightedLoss(nn.Module):
    """The recipe's weighted sum of registered losses; returns the total and each term."""

    def __init__(self, specs: dict[str, dict[str, Any]]) -> None:
        super().__init__()
        check_loss_specs(specs, "losses")
        self.weights = {name: float(spec["weight"]) for name, spec in specs.items()}
        self.terms = nn.ModuleDict(
            {name: LOSSES[name](**{k: v for k, v in spec.items() if k != "weight"}) for name, spec in specs.items()}
        )

    def forward(self, **tensors: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        total = torch.zeros(())
        parts = {}
        for name, term in self.terms.items():
            value = term(*(tensors[key] for key in term.inputs))
            total = total + self.weights[name] * value
            parts[name] = float(value.detach())
        return total, parts
