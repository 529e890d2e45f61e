"""The losses on logits: soft targets (Hinton et al. 2015), gold labels and logit regression (Ba & Caruana 2014).
Registered, with what their `inputs` and `unit` mean, in `polydistill.losses`."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class LogitKL(nn.Module):
    """KL(teacher || student) on temperature-softened logits, scaled by T².

    Hinton, Vinyals & Dean 2015, "Distilling the Knowledge in a Neural Network": the T² factor
    keeps the gradient scale of the soft targets independent of the temperature.
    """

    inputs = ("student_logits", "teacher_logits")
    unit = "logits"

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
    unit = "logits"

    def forward(self, student_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(student_logits, labels)


class LogitMSE(nn.Module):
    """Mean squared error between student and teacher logits, averaged over every element.

    Ba & Caruana 2014, "Do Deep Nets Really Need to be Deep?": regressing the teacher's logits
    (rather than matching its softmax) keeps the information the softmax squashes away.
    """

    inputs = ("student_logits", "teacher_logits")
    unit = "logits"

    def forward(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(student_logits.float(), teacher_logits.float())
