"""Narrow students: fewer heads, a thinner residual stream and FFN, initialised by slicing the teacher.

`shrink_width(teacher, hidden_size=192, intermediate_size=768, layers=[1, 3, 5])` keeps the teacher's most
important heads, FFN neurons and residual-stream (hidden) channels and copies their weights, in their original
order, into a stock model of the same class. This is the "prune, then distil" initialisation of Minitron
(Muralidharan et al. 2024, "Compact Language Models via Pruning and Knowledge Distillation", arXiv:2407.14679)
and of weight selection (Xu et al. 2024, "Initializing Models with Larger Ones", ICLR) and Sheared-LLaMA
(Xia et al. 2024): a student that starts from the teacher's features needs far less distillation than one
that starts from noise. `student_from_config` is that noise baseline at the same shape.

Importance is computed from the weights alone (no calibration data), so the function is deterministic and
cheap even for XLM-R large:

- head h of a layer: ||W_o[:, h] @ W_v[h, :]||_F, the norm of the linear map ("OV circuit") through which the
  head writes into the residual stream; the attention pattern only mixes positions, so this bounds how much
  the head can change the stream. Q/K are ignored: they decide where a head looks, not how much it writes.
- FFN neuron j: ||W_in[j, :]|| * ||W_out[:, j]||, how strongly it reads times how strongly it writes (the
  GELU between them and the biases are ignored).
- hidden channel d: one score for the whole model, because the residual stream (embeddings -> every layer ->
  task head) is one vector space and every matrix must agree on which channels survive. The score is the sum
  over the stream's LayerNorms (embeddings, and each kept layer's attention and output LayerNorm) of |gamma_d|,
  each LayerNorm divided by its mean. In these post-LN encoders every sublayer's sum is renormalised, so the
  stream that every reader sees at channel d is gamma_d * normalised + beta_d: |gamma_d| is that channel's
  scale, and BERT's known outlier dimensions rank top. Measured on the pretrained MiniLM (384 -> 192 hidden,
  layers [1, 3, 5], mean-pooled sentence embeddings, cosine to the teacher's kept channels / agreement of
  pairwise similarities, 32-64 SIB-200 dev sentences): gammas 0.31 / 0.33; a random channel subset
  0.20 / 0.35; the mean-normalised sum of the L2 norms of every weight slice reading or writing the stream
  0.11 / 0.23 (readers' column norms alone 0.05 / 0.14: a matrix reads a quiet channel with large weights);
  Minitron's activation-based score (mean |LayerNorm output| on 32 calibration sentences) 0.30 / 0.31, no
  better, so no calibration data is needed.
- projections outside the stream that are hidden-wide (BERT's pooler, XLM-R's classifier.dense) keep their own
  output units, ranked like FFN neurons: ||row|| * ||column of the layer that reads it|| (||row|| alone when
  nothing reads it, e.g. BertModel's pooler).

What slicing does not preserve: LayerNorm normalises over the kept channels only, so its mean and variance
(and with them every activation's scale) differ from the teacher's; dropped heads, neurons and channels
simply vanish, with no compensation in the biases. The result is an initialisation for distillation, not an
approximation of the teacher to be used as is. Since the kept channels are the loud ones, each LayerNorm's
input has a larger RMS over them than over all channels and its output comes out smaller. Multiplying each
LayerNorm's gamma by a weight-based estimate of that ratio (sqrt of the mean kept vs all gamma^2 + beta^2 of
the LayerNorm feeding it, 1.02-1.14 on MiniLM) moved MiniLM's first forward only from 0.31 / 0.33 to
0.33 / 0.35 (the ratio measured on activations: 0.35 / 0.36), and gammas are trained in the first distillation
steps anyway, so nothing is rescaled.

Ranking heads and FFN neurons does not make the *first* forward pass closer (on MiniLM, keeping the lowest-ranked
heads scored 0.35 / 0.37 and the lowest-ranked neurons 0.36 / 0.40, against 0.31 / 0.33: small units perturb
the stream less), but it is what distillation builds on: after 50 steps of hidden-state distillation on English
SIB-200 sentences, cosine / agreement were 0.62 / 0.57 for the ranked choice, 0.58 / 0.53 for random heads and
neurons, 0.52 / 0.48 for the lowest-ranked and 0.21 / 0.04 for random init (one seed each).

Supported: the XLM-R and BERT families' Model, ForSequenceClassification, ForTokenClassification,
ForQuestionAnswering and ForMaskedLM (the LM head's transform is sliced on the hidden channels; its decoder
stays tied to the sliced word embeddings). Any other weight raises ValueError rather than being guessed.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass

import torch
from transformers import PretrainedConfig, PreTrainedModel

from polydistill.students.layers import student_from_teacher

# axis kinds: "hidden" (the shared residual-stream set), "heads" / "ffn" (per layer), "pooler" and
# "cls_dense" (own-ranked hidden-wide projections outside the stream), None (kept whole: vocab, positions, labels)
_Axes = tuple[str | None, ...]
_LAYER = re.compile(r"(?:^|\.)encoder\.layer\.(\d+)\.")
_STREAM_NORM = re.compile(r"((^|\.)embeddings|\.attention\.output|encoder\.layer\.\d+\.output)\.LayerNorm\.weight$")

_RULES: list[tuple[re.Pattern[str], _Axes]] = [
    (re.compile(p), axes)
    for p, axes in [
        (r"(^|\.)embeddings\.(word|position|token_type)_embeddings\.weight$", (None, "hidden")),
        (r"(^|\.)embeddings\.LayerNorm\.(weight|bias)$", ("hidden",)),
        (r"\.attention\.self\.(query|key|value)\.weight$", ("heads", "hidden")),
        (r"\.attention\.self\.(query|key|value)\.bias$", ("heads",)),
        (r"\.attention\.output\.dense\.weight$", ("hidden", "heads")),
        (r"\.attention\.output\.dense\.bias$", ("hidden",)),
        (r"\.attention\.output\.LayerNorm\.(weight|bias)$", ("hidden",)),
        (r"\.intermediate\.dense\.weight$", ("ffn", "hidden")),
        (r"\.intermediate\.dense\.bias$", ("ffn",)),
        (r"encoder\.layer\.\d+\.output\.dense\.weight$", ("hidden", "ffn")),
        (r"encoder\.layer\.\d+\.output\.dense\.bias$", ("hidden",)),
        (r"encoder\.layer\.\d+\.output\.LayerNorm\.(weight|bias)$", ("hidden",)),
        (r"(^|\.)pooler\.dense\.weight$", ("pooler", "hidden")),
        (r"(^|\.)pooler\.dense\.bias$", ("pooler",)),
        (r"^classifier\.dense\.weight$", ("cls_dense", "hidden")),  # XLM-R sequence classification head
        (r"^classifier\.dense\.bias$", ("cls_dense",)),
        (r"^classifier\.out_proj\.weight$", (None, "cls_dense")),
        (r"^(classifier\.out_proj|classifier|qa_outputs)\.bias$", (None,)),
        (r"^qa_outputs\.weight$", (None, "hidden")),
        # MaskedLM heads: the transform maps the stream to itself, the decoder is tied to the word embeddings
        (r"^(lm_head\.dense|cls\.predictions\.transform\.dense)\.weight$", ("hidden", "hidden")),
        (r"^(lm_head\.dense|cls\.predictions\.transform\.dense)\.bias$", ("hidden",)),
        (r"^(lm_head\.layer_norm|cls\.predictions\.transform\.LayerNorm)\.(weight|bias)$", ("hidden",)),
        (r"^(lm_head|cls\.predictions)\.decoder\.weight$", (None, "hidden")),
        (r"^(lm_head|cls\.predictions)(\.decoder)?\.bias$", (None,)),
    ]
]


@dataclass(frozen=True)
class WidthPlan:
    """What `shrink_width` keeps, as original teacher indices (each tuple sorted ascending).

    layers: the teacher layers kept; kept_heads / kept_ffn have one entry per kept layer, in that order.
    """

    layers: tuple[int, ...]
    kept_hidden: tuple[int, ...]
    kept_heads: tuple[tuple[int, ...], ...]
    kept_ffn: tuple[tuple[int, ...], ...]
    kept_pooler: tuple[int, ...] | None = None  # BERT pooler units (None: the model has no pooler)
    kept_cls_dense: tuple[int, ...] | None = None  # XLM-R classifier.dense units


def student_from_config(
    teacher: PreTrainedModel,
    *,
    hidden_size: int,
    intermediate_size: int,
    num_heads: int | None = None,
    num_layers: int | None = None,
) -> PreTrainedModel:
    """A randomly initialised model of the teacher's class at the given shape: the baseline that slicing beats.

    Everything else (vocabulary, positions, labels, activation, attention implementation) is the teacher's,
    so the two students differ only in their initial weights. `num_heads` defaults to keeping the teacher's
    head size; `num_layers` to the teacher's depth. Seed with `torch.manual_seed` for a reproducible draw.
    """
    config = teacher.config
    if num_heads is None:
        num_heads = _heads_for(config, hidden_size)
    if num_heads < 1 or hidden_size % num_heads:
        raise ValueError(f"hidden_size {hidden_size} is not a multiple of num_heads {num_heads}")
    if intermediate_size < 1:
        raise ValueError(f"intermediate_size must be positive, got {intermediate_size}")
    student_config = _student_config(
        config,
        hidden_size=hidden_size,
        num_heads=num_heads,
        intermediate_size=intermediate_size,
        num_layers=config.num_hidden_layers if num_layers is None else num_layers,
    )
    student = type(teacher)(student_config)
    return _like(student, teacher)


def plan_width(
    teacher: PreTrainedModel, *, hidden_size: int, intermediate_size: int, layers: list[int] | None = None
) -> WidthPlan:
    """Choose what `shrink_width` keeps, without building the student (see the module docstring for the scores).

    Scores are computed on the kept layers only: a layer that is dropped does not vote on the hidden channels.
    """
    source = _prepare(teacher, hidden_size, intermediate_size, layers)
    return _plan(source, teacher.config, hidden_size, intermediate_size, layers)


def shrink_width(
    teacher: PreTrainedModel, *, hidden_size: int, intermediate_size: int, layers: list[int] | None = None
) -> PreTrainedModel:
    """A student with the teacher's `layers` (default: all), `hidden_size` and `intermediate_size`, initialised
    by importance-ranked slicing of the teacher's weights (`plan_width`).

    The head size is the teacher's, so `hidden_size` must be a multiple of it and at most the teacher's hidden
    size (HF's XLM-R and BERT tie attention width to hidden size, so heads = hidden_size / head size). The
    student is a stock `type(teacher)` whose config says its shape, so `save_pretrained` + `from_pretrained`
    reload it; the teacher is not modified.
    """
    student, _ = shrink_width_with_plan(
        teacher, hidden_size=hidden_size, intermediate_size=intermediate_size, layers=layers
    )
    return student


def shrink_width_with_plan(
    teacher: PreTrainedModel, *, hidden_size: int, intermediate_size: int, layers: list[int] | None = None
) -> tuple[PreTrainedModel, WidthPlan]:
    """`shrink_width`, also returning the indices it kept."""
    config = teacher.config
    source = _prepare(teacher, hidden_size, intermediate_size, layers)
    plan = _plan(source, config, hidden_size, intermediate_size, layers)
    head_size = config.hidden_size // config.num_attention_heads
    shared = {"hidden": plan.kept_hidden, "pooler": plan.kept_pooler, "cls_dense": plan.kept_cls_dense}
    per_layer = [
        {"heads": tuple(h * head_size + d for h in heads for d in range(head_size)), "ffn": ffn}
        for heads, ffn in zip(plan.kept_heads, plan.kept_ffn, strict=True)
    ]
    state = {}
    for key, value in source.state_dict().items():
        sliced = value.detach()
        for dim, kind in enumerate(_axes_for(key, has_pooler=plan.kept_pooler is not None)):
            if kind is not None:
                keep = per_layer[int(_LAYER.search(key).group(1))][kind] if kind in ("heads", "ffn") else shared[kind]
                sliced = sliced.index_select(dim, torch.tensor(keep, device=sliced.device))
        state[key] = sliced.clone()
    student_config = _student_config(
        config,
        hidden_size=hidden_size,
        num_heads=hidden_size // head_size,
        intermediate_size=intermediate_size,
        num_layers=len(plan.layers),
    )
    student = type(teacher)(student_config)
    student.load_state_dict(state, strict=True)
    return _like(student, teacher), plan


def _prepare(
    teacher: PreTrainedModel, hidden_size: int, intermediate_size: int, layers: list[int] | None
) -> PreTrainedModel:
    """Check everything, then return the teacher itself or a copy with only `layers` (validated there)."""
    _check_supported(teacher)
    _heads_for(teacher.config, hidden_size)
    if not 1 <= intermediate_size <= teacher.config.intermediate_size:
        raise ValueError(
            f"intermediate_size must be in [1, {teacher.config.intermediate_size}], got {intermediate_size}"
        )
    everything = list(range(teacher.config.num_hidden_layers))
    return teacher if layers is None or list(layers) == everything else student_from_teacher(teacher, list(layers))


def _plan(
    source: PreTrainedModel,
    config: PretrainedConfig,
    hidden_size: int,
    intermediate_size: int,
    layers: list[int] | None,
) -> WidthPlan:
    """Importance ranking on `source` (the teacher cut to `layers`); `config` is the teacher's."""
    num_heads = _heads_for(config, hidden_size)
    layers = list(range(config.num_hidden_layers)) if layers is None else list(layers)
    state = {k: v.detach().float().cpu() for k, v in source.state_dict().items()}
    axes = _axes_of(state)
    n_heads = config.num_attention_heads
    head_size = config.hidden_size // n_heads
    kept_heads, kept_ffn = [], []
    for i in range(len(layers)):
        prefix = _layer_prefix(state, i)
        value = state[f"{prefix}attention.self.value.weight"].view(n_heads, head_size, -1)
        out = state[f"{prefix}attention.output.dense.weight"].view(-1, n_heads, head_size)
        ov = torch.stack([torch.linalg.matrix_norm(out[:, h] @ value[h]) for h in range(n_heads)])
        kept_heads.append(_top(ov, num_heads))
        ffn_in, ffn_out = state[f"{prefix}intermediate.dense.weight"], state[f"{prefix}output.dense.weight"]
        kept_ffn.append(_top(ffn_in.norm(dim=1) * ffn_out.norm(dim=0), intermediate_size))
    return WidthPlan(
        layers=tuple(layers),
        kept_hidden=_top(_hidden_scores(state), hidden_size),
        kept_heads=tuple(kept_heads),
        kept_ffn=tuple(kept_ffn),
        kept_pooler=_own_ranked(state, axes, "pooler", hidden_size),
        kept_cls_dense=_own_ranked(state, axes, "cls_dense", hidden_size),
    )


# ----------------------------------------------------------------------------------------------
# helpers


def _heads_for(config: PretrainedConfig, hidden_size: int) -> int:
    """Heads at `hidden_size` keeping the teacher's head size, or ValueError."""
    head_size = config.hidden_size // config.num_attention_heads
    if not 1 <= hidden_size <= config.hidden_size or hidden_size % head_size:
        raise ValueError(
            f"hidden_size must be a multiple of the teacher's head size {head_size} between {head_size} and "
            f"{config.hidden_size} (attention width equals hidden size in XLM-R / BERT), got {hidden_size}"
        )
    return hidden_size // head_size


def _student_config(
    config: PretrainedConfig, *, hidden_size: int, num_heads: int, intermediate_size: int, num_layers: int
) -> PretrainedConfig:
    if num_layers < 1:
        raise ValueError(f"num_layers must be positive, got {num_layers}")
    new = copy.deepcopy(config)
    new.hidden_size = hidden_size
    new.num_attention_heads = num_heads
    new.intermediate_size = intermediate_size
    new.num_hidden_layers = num_layers
    return new


def _like(student: PreTrainedModel, teacher: PreTrainedModel) -> PreTrainedModel:
    """On the teacher's device and dtype, in its train/eval mode."""
    student.to(device=teacher.device, dtype=teacher.dtype)
    return student.train(teacher.training)


def _check_supported(teacher: PreTrainedModel) -> None:
    config = teacher.config
    for key in ("num_attention_heads", "hidden_size", "intermediate_size", "num_hidden_layers"):
        if not hasattr(config, key):
            raise ValueError(f"{type(teacher).__name__}: config has no {key!r}; only XLM-R / BERT encoders")
    if config.hidden_size % config.num_attention_heads:
        raise ValueError(f"{type(teacher).__name__}: hidden_size is not a multiple of num_attention_heads")
    _axes_of(teacher.state_dict())  # raises on any weight it does not know how to slice


def _axes_for(key: str, *, has_pooler: bool) -> _Axes:
    if key == "classifier.weight":  # BERT's sequence classifier reads the pooler, its token classifier the stream
        return (None, "pooler" if has_pooler else "hidden")
    for pattern, axes in _RULES:
        if pattern.search(key) and (_LAYER.search(key) or not {"heads", "ffn"} & set(axes)):
            return axes
    raise ValueError(
        f"don't know how to slice {key!r}: shrink_width supports XLM-R / BERT Model, ForSequenceClassification, "
        "ForTokenClassification, ForQuestionAnswering and ForMaskedLM"
    )


def _axes_of(state: dict[str, torch.Tensor]) -> dict[str, _Axes]:
    has_pooler = any(k.endswith("pooler.dense.weight") for k in state)
    return {key: _axes_for(key, has_pooler=has_pooler) for key in state}


def _layer_prefix(state: dict[str, torch.Tensor], i: int) -> str:
    for key in state:
        match = _LAYER.search(key)
        if match and int(match.group(1)) == i:
            return key[: match.end()].lstrip(".")
    raise ValueError(f"no encoder layer {i} in the state dict")


def _hidden_scores(state: dict[str, torch.Tensor]) -> torch.Tensor:
    """Per hidden channel: the sum over the stream's LayerNorms of |gamma|, each LayerNorm divided by its mean."""
    total: torch.Tensor | None = None
    for key, value in state.items():
        if _STREAM_NORM.search(key):
            score = value.abs()
            mean = score.mean()
            if mean > 0:
                total = score / mean if total is None else total + score / mean
    if total is None:
        raise ValueError("no LayerNorm on the hidden channels: not a post-LN XLM-R / BERT encoder")
    return total


def _own_ranked(state: dict[str, torch.Tensor], axes: dict[str, _Axes], kind: str, k: int) -> tuple[int, ...] | None:
    """Units of a hidden-wide projection outside the stream: ||its row|| * ||the reading layer's column||."""
    writers = [key for key, a in axes.items() if key.endswith(".weight") and a[0] == kind]
    if not writers:
        return None
    (writer,) = writers
    score = state[writer].norm(dim=1)
    for key, a in axes.items():
        if key.endswith(".weight") and len(a) == 2 and a[1] == kind:
            score = score * state[key].norm(dim=0)
    return _top(score, k)


def _top(scores: torch.Tensor, k: int) -> tuple[int, ...]:
    """Indices of the `k` largest scores, in index order (ties go to the lower index)."""
    order = torch.argsort(scores, descending=True, stable=True)
    return tuple(sorted(order[:k].tolist()))
