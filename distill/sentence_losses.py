"""The losses on one vector per sentence: pooled embeddings (DistilBERT's cosine, Reimers & Gurevych's MSE, an
in-batch contrastive term) and the [CLS] vector (Patient KD); registered in `polydistill.losses`."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from polydistill.loss_projection import ProjectedLoss, same_width


class PooledCosine(ProjectedLoss):
    """1 − cos(student pooled embedding (projected), teacher pooled embedding), mean over the batch.

    Sanh et al. 2019, "DistilBERT, a distilled version of BERT" use this cosine loss on hidden
    states; Reimers & Gurevych 2020 ("Making Monolingual Sentence Embeddings Multilingual using
    Knowledge Distillation") match sentence embeddings with MSE instead. A learned linear map
    (student width → teacher width) is used when the widths differ.
    """

    inputs = ("student_pooled", "teacher_pooled")
    unit = "rows"

    def forward(self, student_pooled: torch.Tensor, teacher_pooled: torch.Tensor) -> torch.Tensor:
        student = self.projection(student_pooled)
        same_width(student, teacher_pooled, "pooled_cosine")
        return (1 - F.cosine_similarity(student.float(), teacher_pooled.float(), dim=-1)).mean()


class PooledMSE(nn.Module):
    """Mean squared error between student and teacher sentence embeddings.

    Reimers & Gurevych 2020, "Making Monolingual Sentence Embeddings Multilingual using Knowledge
    Distillation": the teacher embeds a source sentence, and the student learns to put both that sentence
    and its translations at the same point (each row's target is the teacher's embedding of its source).
    """

    inputs = ("student_pooled", "teacher_pooled")
    unit = "rows"

    def forward(self, student_pooled: torch.Tensor, teacher_pooled: torch.Tensor) -> torch.Tensor:
        same_width(student_pooled, teacher_pooled, "pooled_mse")
        return F.mse_loss(student_pooled.float(), teacher_pooled.float())


class ClsMSE(ProjectedLoss):
    """Mean squared error between the student's and the teacher's last-layer vector at the first position (<s> /
    [CLS]): the one vector a sequence-classification head reads, so it carries the teacher's whole decision
    (hidden-size numbers per sentence where the logits give one per class).

    Sun et al. 2019, "Patient Knowledge Distillation for BERT Model Compression", distil [CLS] representations
    the same way. It pairs by example, not by token, so it works across tokenizers (a trimmed vocabulary).
    """

    inputs = ("student_cls", "teacher_cls")
    unit = "rows"

    def forward(self, student_cls: torch.Tensor, teacher_cls: torch.Tensor) -> torch.Tensor:
        student = self.projection(student_cls)
        same_width(student, teacher_cls, "cls_mse")
        return F.mse_loss(student.float(), teacher_cls.float())


class PooledContrastive(nn.Module):
    """In-batch contrastive loss (InfoNCE; van den Oord et al. 2018) from student to teacher sentence embeddings.

    Each student row must be nearer (cosine / temperature) to its own teacher embedding than to the other
    rows' teacher embeddings in the batch, as in the in-batch softmax over translation pairs of LaBSE (Feng et
    al. 2022), but with the teacher's embeddings as the anchors. Rows whose teacher embedding is the same
    vector (translations of one source sentence in one batch) are not counted as each other's negatives.
    A batch split over processes or micro-batches draws its negatives from each piece only, so this term
    alone is not the same as one whole batch's (sentence-transformers' default behaves the same way).
    """

    inputs = ("student_pooled", "teacher_pooled")
    unit = "rows"

    def __init__(self, *, temperature: float = 0.05) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.temperature = temperature

    def forward(self, student_pooled: torch.Tensor, teacher_pooled: torch.Tensor) -> torch.Tensor:
        same_width(student_pooled, teacher_pooled, "pooled_contrastive")
        student = F.normalize(student_pooled.float(), dim=-1)
        teacher = F.normalize(teacher_pooled.float(), dim=-1)
        logits = student @ teacher.T / self.temperature
        rows = torch.arange(len(teacher), device=teacher.device)
        duplicate = (teacher_pooled[:, None] == teacher_pooled[None]).all(-1) & (rows[:, None] != rows[None])
        return F.cross_entropy(logits.masked_fill(duplicate, float("-inf")), rows)
