"""What the losses that compare student and teacher vectors share: the learned student→teacher projection
for models of different widths, and the width check that names the fix when there is none."""

from __future__ import annotations

import torch
from torch import nn


def projection(student_hidden_size: int | None, teacher_hidden_size: int | None) -> nn.Module:
    """A learned student→teacher linear map when both widths are known and differ, else identity."""
    if student_hidden_size is None or teacher_hidden_size is None or student_hidden_size == teacher_hidden_size:
        return nn.Identity()
    return nn.Linear(student_hidden_size, teacher_hidden_size)


class ProjectedLoss(nn.Module):
    """Base of the losses that compare a student vector with a teacher vector of possibly another width: it owns
    the `projection` (WeightedLoss passes the two widths; equal or unknown widths: identity)."""

    def __init__(self, *, student_hidden_size: int | None = None, teacher_hidden_size: int | None = None) -> None:
        super().__init__()
        self.projection = projection(student_hidden_size, teacher_hidden_size)


def same_width(student: torch.Tensor, teacher: torch.Tensor, what: str) -> None:
    if student.shape[-1] != teacher.shape[-1]:
        raise ValueError(
            f"{what}: student width {student.shape[-1]} != teacher width {teacher.shape[-1]}; build the loss with "
            "student_hidden_size and teacher_hidden_size so it learns a projection"
        )
