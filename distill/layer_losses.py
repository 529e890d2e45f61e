"""The per-layer losses: hidden states (TinyBERT), attention maps (MiniLM) and self-attention relations
(MiniLMv2). Each reads sequences of layer features already aligned pair by pair (`polydistill.losses.map_layers`,
`aligned`) and averages over the pairs; registered in `polydistill.losses`."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from polydistill.loss_projection import ProjectedLoss, same_width

# Probabilities are clamped to this before taking logs, so a zero attention weight costs a large
# but finite penalty instead of an infinite one (computed in float32, where 1e-12 is representable).
_EPS = 1e-12


def _pairs(student: Sequence[Any], teacher: Sequence[Any], what: str) -> list[tuple[Any, Any]]:
    if len(student) != len(teacher) or not student:
        raise ValueError(
            f"{what}: need the same non-zero number of student and teacher layers, got {len(student)} "
            f"and {len(teacher)} (align them with map_layers first)"
        )
    return list(zip(student, teacher, strict=True))


def _row_kl(
    p_teacher: torch.Tensor, log_p_teacher: torch.Tensor, log_p_student: torch.Tensor, attention_mask: torch.Tensor
) -> torch.Tensor:
    """KL(teacher || student) of [B, heads, T, T] row distributions, mean over heads and real query rows.

    Padded keys (columns) are left out of each row's sum and padded query rows out of the mean, so
    whatever the models put at padding does not matter.
    """
    keys = attention_mask[:, None, None, :].bool()
    queries = attention_mask[:, None, :].bool()
    terms = (p_teacher * (log_p_teacher - log_p_student)).masked_fill(~keys, 0.0)
    rows = terms.sum(-1).masked_fill(~queries, 0.0)  # [B, heads, T]
    return rows.sum() / (queries.sum() * rows.shape[1]).clamp_min(1)


class HiddenMSE(ProjectedLoss):
    """MSE between (projected) student and teacher hidden states at real tokens, mean over layer pairs.

    Jiao et al. 2020, "TinyBERT: Distilling BERT for Natural Language Understanding": a learned
    linear map W (student width → teacher width, one shared by all layers; identity when the widths
    match) so that MSE(h_S W, h_T) is defined. Per pair: Σ over real tokens of ‖h_S W − h_T‖² divided
    by (real tokens × teacher width).
    """

    inputs = ("student_hidden", "teacher_hidden", "attention_mask")
    unit = "tokens"

    def forward(
        self,
        student_hidden: Sequence[torch.Tensor],
        teacher_hidden: Sequence[torch.Tensor],
        attention_mask: torch.Tensor,
    ) -> torch.Tensor:
        real = attention_mask.bool()
        per_layer = []
        for student, teacher in _pairs(student_hidden, teacher_hidden, "hidden_mse"):
            student = self.projection(student)
            same_width(student, teacher, "hidden_mse")
            squared = (student.float() - teacher.float()).pow(2).sum(-1).masked_fill(~real, 0.0)  # [B, T]
            per_layer.append(squared.sum() / (real.sum() * teacher.shape[-1]).clamp_min(1))
        return torch.stack(per_layer).mean()


class AttentionKL(nn.Module):
    """KL(teacher attention || student attention) per query row, mean over rows, heads and layer pairs.

    Wang et al. 2020, "MiniLM: Deep Self-Attention Distillation for Task-Agnostic Compression of
    Pre-Trained Transformers" (there on the last layer: use `map_layers(..., "last")`). With equal
    head counts each head is matched to its namesake; otherwise both sides are averaged over heads
    first. Only real query rows count and padded keys are left out; probabilities are clamped to
    1e-12 before the log.
    """

    inputs = ("student_attentions", "teacher_attentions", "attention_mask")
    unit = "tokens"

    def forward(
        self,
        student_attentions: Sequence[torch.Tensor],
        teacher_attentions: Sequence[torch.Tensor],
        attention_mask: torch.Tensor,
    ) -> torch.Tensor:
        per_layer = []
        for student, teacher in _pairs(student_attentions, teacher_attentions, "attention_kl"):
            student, teacher = student.float(), teacher.float()
            if student.shape[1] != teacher.shape[1]:
                student, teacher = student.mean(1, keepdim=True), teacher.mean(1, keepdim=True)
            log_teacher, log_student = teacher.clamp_min(_EPS).log(), student.clamp_min(_EPS).log()
            per_layer.append(_row_kl(teacher, log_teacher, log_student, attention_mask))
        return torch.stack(per_layer).mean()


class MiniLMRelations(nn.Module):
    """MiniLMv2 self-attention relation distillation: L = L_QQ + L_KK + L_VV, mean over layer pairs.

    Wang et al. 2021, "MiniLMv2: Multi-Head Self-Attention Relation Distillation for Compressing
    Pretrained Transformers" (Findings of ACL). Each of q, k, v ([B, T, width], before the model's
    own head split) is cut into `relation_heads` heads of width d_r = width / relation_heads, on each
    side separately, so teacher and student may differ in width and attention heads. Relation =
    softmax(x_r x_rᵀ / √d_r) over the real keys; each term is KL(teacher relation || student relation)
    averaged over real query rows, relation heads and the batch; the three terms are summed.

    The paper used 48 relation heads for base-size and 64 for large-size teachers; the default here
    is 4 because it divides every width in common use (the paper's values need a width divisible by
    48 or 64 on both sides; set them in the recipe to follow the paper).
    """

    inputs = ("student_qkv", "teacher_qkv", "attention_mask")
    unit = "tokens"

    def __init__(self, relation_heads: int = 4) -> None:
        super().__init__()
        if isinstance(relation_heads, bool) or not float(relation_heads).is_integer() or relation_heads < 1:
            raise ValueError(f"relation_heads must be a positive whole number, got {relation_heads!r}")
        self.relation_heads = int(relation_heads)

    def log_relations(self, x: torch.Tensor, attention_mask: torch.Tensor, side: str) -> torch.Tensor:
        """log softmax(x_r x_rᵀ / √d_r) over real keys, [B, relation_heads, T, T]."""
        batch, length, width = x.shape
        if width % self.relation_heads:
            raise ValueError(
                f"minilm_relations: {side} width {width} is not divisible by relation_heads="
                f"{self.relation_heads}; pick a relation_heads that divides both widths"
            )
        heads = x.float().reshape(batch, length, self.relation_heads, -1).transpose(1, 2)
        scores = heads @ heads.transpose(-1, -2) / math.sqrt(width // self.relation_heads)
        scores = scores.masked_fill(~attention_mask[:, None, None, :].bool(), torch.finfo(scores.dtype).min)
        return scores.log_softmax(-1)

    def forward(
        self,
        student_qkv: Sequence[Sequence[torch.Tensor]],
        teacher_qkv: Sequence[Sequence[torch.Tensor]],
        attention_mask: torch.Tensor,
    ) -> torch.Tensor:
        per_layer = []
        for student, teacher in _pairs(student_qkv, teacher_qkv, "minilm_relations"):
            total = torch.zeros((), device=attention_mask.device)
            for s, t in zip(student, teacher, strict=True):  # q, k, v
                log_t = self.log_relations(t, attention_mask, "teacher")
                log_s = self.log_relations(s, attention_mask, "student")
                total = total + _row_kl(log_t.exp(), log_t, log_s, attention_mask)
            per_layer.append(total)
        return torch.stack(per_layer).mean()
