"""Distillation losses: one small module each, one registry, weighted in the recipe.

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
import torch.nn.functional as F
from torch import nn

from polydistill.errors import RecipeError, suggest

# Constructor arguments the framework fills from the models; recipes may not set them.
FRAMEWORK_ARGS = ("student_hidden_size", "teacher_hidden_size")

# (lowest value, whether the lowest itself is refused) for the numbers a recipe may give a loss
ARG_LOWEST = {"weight": (0.0, False), "temperature": (0.0, True), "relation_heads": (1, False)}

# Probabilities are clamped to this before taking logs, so a zero attention weight costs a large
# but finite penalty instead of an infinite one (computed in float32, where 1e-12 is representable).
_EPS = 1e-12


def _projection(student_hidden_size: int | None, teacher_hidden_size: int | None) -> nn.Module:
    """A learned student→teacher linear map when both widths are known and differ, else identity."""
    if student_hidden_size is None or teacher_hidden_size is None or student_hidden_size == teacher_hidden_size:
        return nn.Identity()
    return nn.Linear(student_hidden_size, teacher_hidden_size)


def _same_width(student: torch.Tensor, teacher: torch.Tensor, what: str) -> None:
    if student.shape[-1] != teacher.shape[-1]:
        raise ValueError(
            f"{what}: student width {student.shape[-1]} != teacher width {teacher.shape[-1]}; build the loss with "
            "student_hidden_size and teacher_hidden_size so it learns a projection"
        )


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


class HiddenMSE(nn.Module):
    """MSE between (projected) student and teacher hidden states at real tokens, mean over layer pairs.

    Jiao et al. 2020, "TinyBERT: Distilling BERT for Natural Language Understanding": a learned
    linear map W (student width → teacher width, one shared by all layers; identity when the widths
    match) so that MSE(h_S W, h_T) is defined. Per pair: Σ over real tokens of ‖h_S W − h_T‖² divided
    by (real tokens × teacher width).
    """

    inputs = ("student_hidden", "teacher_hidden", "attention_mask")
    unit = "tokens"

    def __init__(self, *, student_hidden_size: int | None = None, teacher_hidden_size: int | None = None) -> None:
        super().__init__()
        self.projection = _projection(student_hidden_size, teacher_hidden_size)

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
            _same_width(student, teacher, "hidden_mse")
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


class PooledCosine(nn.Module):
    """1 − cos(student pooled embedding (projected), teacher pooled embedding), mean over the batch.

    Sanh et al. 2019, "DistilBERT, a distilled version of BERT" use this cosine loss on hidden
    states; Reimers & Gurevych 2020 ("Making Monolingual Sentence Embeddings Multilingual using
    Knowledge Distillation") match sentence embeddings with MSE instead. A learned linear map
    (student width → teacher width) is used when the widths differ.
    """

    inputs = ("student_pooled", "teacher_pooled")
    unit = "rows"

    def __init__(self, *, student_hidden_size: int | None = None, teacher_hidden_size: int | None = None) -> None:
        super().__init__()
        self.projection = _projection(student_hidden_size, teacher_hidden_size)

    def forward(self, student_pooled: torch.Tensor, teacher_pooled: torch.Tensor) -> torch.Tensor:
        student = self.projection(student_pooled)
        _same_width(student, teacher_pooled, "pooled_cosine")
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
        _same_width(student_pooled, teacher_pooled, "pooled_mse")
        return F.mse_loss(student_pooled.float(), teacher_pooled.float())


class ClsMSE(nn.Module):
    """Mean squared error between the student's and the teacher's last-layer vector at the first position (<s> /
    [CLS]): the one vector a sequence-classification head reads, so it carries the teacher's whole decision
    (hidden-size numbers per sentence where the logits give one per class).

    Sun et al. 2019, "Patient Knowledge Distillation for BERT Model Compression", distil [CLS] representations
    the same way. It pairs by example, not by token, so it works across tokenizers (a trimmed vocabulary).
    """

    inputs = ("student_cls", "teacher_cls")
    unit = "rows"

    def __init__(self, *, student_hidden_size: int | None = None, teacher_hidden_size: int | None = None) -> None:
        super().__init__()
        self.projection = _projection(student_hidden_size, teacher_hidden_size)

    def forward(self, student_cls: torch.Tensor, teacher_cls: torch.Tensor) -> torch.Tensor:
        student = self.projection(student_cls)
        _same_width(student, teacher_cls, "cls_mse")
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
        _same_width(student_pooled, teacher_pooled, "pooled_contrastive")
        student = F.normalize(student_pooled.float(), dim=-1)
        teacher = F.normalize(teacher_pooled.float(), dim=-1)
        logits = student @ teacher.T / self.temperature
        rows = torch.arange(len(teacher), device=teacher.device)
        duplicate = (teacher_pooled[:, None] == teacher_pooled[None]).all(-1) & (rows[:, None] != rows[None])
        return F.cross_entropy(logits.masked_fill(duplicate, float("-inf")), rows)


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
