"""Structured pruning of BERT-family encoders (XLM-R, BERT): whole attention heads and FFN neurons.

`prune(model, PruneConfig(heads=0.25, ffn=0.5))` removes the same number of heads and of FFN neurons in
every layer, so onnxruntime can still fuse Attention, and leaves a model that stock transformers
classes reload with `from_pretrained`.

transformers 5 derives the head size as `hidden_size // num_attention_heads` and has no `pruned_heads`,
so removing heads at a fixed hidden width cannot be reloaded. Heads are therefore removed whole (head size
kept) and the hidden width shrinks by the same fraction: 12 heads x 64 at hidden 768 become 9 x 64 at
hidden 576. The residual-stream channels (embeddings, LayerNorms, every projection's input, classifier
input) are an independent choice from the heads: each is ranked by its own importance. Projections whose
stock width is hidden_size but sit outside the residual stream (BERT's pooler, XLM-R's classifier.dense)
shrink to the new hidden width too; the label layer and the vocabulary / position counts never change.

torch-pruning's dependency graph finds the coupled weights and slices them; the indices are chosen here,
not by `tp.pruner.BasePruner`, whose rounding (ceil for heads, int for channels) can leave
hidden != heads x head_size. Choosing counts first makes that invariant hold by construction.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch_pruning as tp
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel

from polydistill.config import PruneConfig
from polydistill.models import count_parameters

Batch = dict[str, torch.Tensor]


@dataclass(frozen=True)
class ModelShape:
    params: int
    non_embedding_params: int
    layers: int
    heads: int
    head_size: int
    hidden: int
    ffn: int


@dataclass(frozen=True)
class PruneSummary:
    before: ModelShape
    after: ModelShape
    kept_heads: tuple[tuple[int, ...], ...]  # original indices of the heads kept, per layer
    kept_hidden: tuple[int, ...]  # original indices of the hidden (residual-stream) channels kept

    def __str__(self) -> str:
        b, a = self.before, self.after
        return (
            f"params {b.params:,} -> {a.params:,} ({a.params / b.params:.0%}), "
            f"non-embedding {b.non_embedding_params:,} -> {a.non_embedding_params:,}, "
            f"heads {b.heads} -> {a.heads} (x{a.head_size}), hidden {b.hidden} -> {a.hidden}, ffn {b.ffn} -> {a.ffn}"
        )


def model_shape(model: PreTrainedModel) -> ModelShape:
    config = model.config
    counts = count_parameters(model)
    return ModelShape(
        params=counts["total"],
        non_embedding_params=counts["non_embedding"],
        layers=config.num_hidden_layers,
        heads=config.num_attention_heads,
        head_size=config.hidden_size // config.num_attention_heads,
        hidden=config.hidden_size,
        ffn=config.intermediate_size,
    )


def prune(model: PreTrainedModel, cfg: PruneConfig, batches: Sequence[Batch] | None = None) -> PreTrainedModel:
    """Prune `model` in place as `cfg` says and return it; see `prune_with_summary`."""
    return prune_with_summary(model, cfg, batches)[0]


def prune_with_summary(
    model: PreTrainedModel, cfg: PruneConfig, batches: Sequence[Batch] | None = None
) -> tuple[PreTrainedModel, PruneSummary]:
    """Prune `model` in place; return it with a before/after summary.

    `batches` (dicts with input_ids, attention_mask, labels) are needed for taylor importance only.
    Every index is chosen before the first weight changes, so a ValueError from the checks or the
    planning leaves the weights untouched (the final `check_consistency` guards against bugs and should
    never fire). Taylor importance clears `.grad` on every parameter; `requires_grad` flags are kept.
    """
    if cfg.importance == "taylor" and not batches:
        raise ValueError("importance='taylor' needs batches: dicts with input_ids, attention_mask and labels")
    before = model_shape(model)
    attentions, ffns = _find_blocks(model)
    n_heads, head_size = before.heads, before.head_size
    heads_kept = _kept_count(n_heads, cfg.heads, 1, "attention heads")
    ffn_kept = _kept_count(before.ffn, cfg.ffn, cfg.round_to, "FFN neurons")
    hidden_kept = heads_kept * head_size
    if heads_kept == n_heads and ffn_kept == before.ffn:
        all_heads = tuple(tuple(range(n_heads)) for _ in attentions)
        return model, PruneSummary(before, before, all_heads, tuple(range(before.hidden)))

    was_training = model.training
    requires_grad = {name: p.requires_grad for name, p in model.named_parameters()}
    try:
        model.eval()  # no dropout: importance and tracing are deterministic
        for param in model.parameters():  # the graph is traced through autograd: a frozen weight would drop out
            param.requires_grad_(True)
        with torch.inference_mode(False), torch.enable_grad():  # tracing and taylor need autograd
            graph = tp.DependencyGraph().build_dependency(
                model, example_inputs=_example_inputs(model), output_transform=lambda out: out.logits, verbose=False
            )
            if cfg.importance == "taylor":
                _accumulate_gradients(model, batches)
            scorer = (
                tp.importance.GroupTaylorImportance(normalizer=None)
                if cfg.importance == "taylor"
                else tp.importance.GroupMagnitudeImportance(p=2, normalizer=None)
            )
            cuts, kept_heads, kept_hidden = _plan(
                model,
                graph,
                scorer,
                attentions,
                ffns,
                heads_kept=heads_kept,
                hidden_kept=hidden_kept,
                ffn_kept=ffn_kept,
            )
            for root, handler, remove in cuts:
                graph.get_pruning_group(root, handler, remove).prune()
    finally:
        if cfg.importance == "taylor":
            model.zero_grad(set_to_none=True)
        for name, param in model.named_parameters():  # torch-pruning makes every new Parameter trainable
            param.requires_grad_(requires_grad.get(name, True))
        model.train(was_training)

    for attention in attentions:
        attention.num_attention_heads = heads_kept
        attention.attention_head_size = head_size
        attention.all_head_size = hidden_kept
        attention.scaling = head_size**-0.5  # new in transformers 5; unchanged here since head size is kept
    for config in _configs(model):
        config.num_attention_heads = heads_kept
        config.hidden_size = hidden_kept
        config.intermediate_size = ffn_kept
    check_consistency(model)
    return model, PruneSummary(before, model_shape(model), kept_heads, kept_hidden)


def check_consistency(model: PreTrainedModel) -> None:
    """Raise ValueError unless a fresh `type(model)(model.config)` has exactly this model's shapes.

    That is what `from_pretrained` builds before loading the weights, so passing this check means the
    model saves and reloads with stock classes. Attention attributes the forward pass reads are checked too.
    """
    config = model.config
    problems = []
    if config.hidden_size % config.num_attention_heads:
        problems.append(f"hidden_size {config.hidden_size} is not a multiple of {config.num_attention_heads} heads")
    else:
        head_size = config.hidden_size // config.num_attention_heads
        attrs = {
            "num_attention_heads": config.num_attention_heads,
            "attention_head_size": head_size,
            "all_head_size": config.hidden_size,
            "scaling": head_size**-0.5,
        }
        for name, module in model.named_modules():
            if _is_attention(module):
                problems += [
                    f"{name}.{attr} is {getattr(module, attr)!r}, config implies {want!r}"
                    for attr, want in attrs.items()
                    if hasattr(module, attr) and getattr(module, attr) != want
                ]
        if not problems:
            with torch.device("meta"):
                fresh = type(model)(copy.deepcopy(config))
            want = {k: tuple(v.shape) for k, v in fresh.state_dict().items()}
            got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
            problems += [
                f"{key}: {got.get(key)} but the config builds {want.get(key)}"
                for key in sorted(want.keys() | got.keys())
                if got.get(key) != want.get(key)
            ]
    if problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise ValueError(f"pruned model does not match its config: {shown}")


# ----------------------------------------------------------------------------------------------
# planning


def _kept_count(total: int, fraction: float, round_to: int, what: str) -> int:
    """How many of `total` survive removing `fraction` (rounded half up), rounded down to `round_to`."""
    kept = total - math.floor(fraction * total + 0.5)
    if round_to > 1 and kept < total:
        kept -= kept % round_to
    if kept < 1:
        raise ValueError(f"removing {fraction:.0%} of {total} {what} (round_to={round_to}) would leave none")
    return kept


def _find_blocks(model: PreTrainedModel) -> tuple[list[nn.Module], list[nn.Linear]]:
    """The self-attention modules and FFN input projections, one of each per layer, or ValueError."""
    config = model.config
    for key in ("num_attention_heads", "hidden_size", "intermediate_size", "num_hidden_layers"):
        if not hasattr(config, key):
            raise ValueError(f"{type(model).__name__}: config has no {key!r}; only BERT-family encoders are supported")
    if model.get_output_embeddings() is not None:
        raise ValueError(f"{type(model).__name__}: output layers over the vocabulary (LM heads) are not supported")
    attentions = [m for m in model.modules() if _is_attention(m)]
    ffns = [m for name, m in model.named_modules() if name.endswith("intermediate.dense") and isinstance(m, nn.Linear)]
    layers = config.num_hidden_layers
    if len(attentions) != layers or len(ffns) != layers:
        raise ValueError(
            f"{type(model).__name__}: expected {layers} self-attention and {layers} intermediate.dense modules, "
            f"found {len(attentions)} and {len(ffns)}; only BERT-family encoders are supported"
        )
    heads = {m.num_attention_heads for m in attentions} | {config.num_attention_heads}
    if len(heads) != 1 or config.hidden_size % config.num_attention_heads:
        raise ValueError(f"{type(model).__name__}: layers must share one head count dividing hidden_size, got {heads}")
    return attentions, ffns


def _is_attention(module: nn.Module) -> bool:
    return hasattr(module, "num_attention_heads") and all(
        isinstance(getattr(module, n, None), nn.Linear) for n in ("query", "key", "value")
    )


def _configs(model: PreTrainedModel) -> list[PretrainedConfig]:
    """Every distinct config object the model's modules hold (usually just `model.config`)."""
    found = {id(model.config): model.config}
    for module in model.modules():
        config = getattr(module, "config", None)
        if isinstance(config, PretrainedConfig):
            found.setdefault(id(config), config)
    return list(found.values())


def _example_inputs(model: PreTrainedModel) -> Batch:
    device = next(model.parameters()).device
    return {
        "input_ids": torch.zeros((1, 8), dtype=torch.long, device=device),
        "attention_mask": torch.ones((1, 8), dtype=torch.long, device=device),
    }


def _accumulate_gradients(model: PreTrainedModel, batches: Sequence[Batch]) -> None:
    """Sum the task-loss gradients over `batches` into `.grad` (first-order Taylor importance)."""
    device = next(model.parameters()).device
    model.zero_grad(set_to_none=True)
    for batch in batches:
        output = model(**{k: v.to(device) for k, v in batch.items()})
        if output.loss is None:
            raise ValueError("taylor importance needs 'labels' in every batch")
        output.loss.backward()
    for param in model.parameters():  # weights off the loss path (e.g. an unused pooler) rank as unimportant
        if param.grad is None:
            param.grad = torch.zeros_like(param)


def _plan(
    model: PreTrainedModel,
    graph: tp.DependencyGraph,
    scorer: tp.importance.Importance,
    attentions: list[nn.Module],
    ffns: list[nn.Linear],
    *,
    heads_kept: int,
    hidden_kept: int,
    ffn_kept: int,
) -> tuple[list[tuple[nn.Module, object, list[int]]], tuple[tuple[int, ...], ...], tuple[int, ...]]:
    """Sort every prunable group of the graph into heads / FFN / hidden / hidden-width projection and
    choose, from importance, the indices to remove in each: (root module, pruning fn, indices) cuts,
    plus the heads kept per layer and the hidden channels kept.

    Groups are disjoint sets of channels (e.g. query's output rows vs its input columns), so indices
    chosen on the unpruned model stay valid while the cuts are applied one after another.
    """
    config = model.config
    n_heads, hidden = config.num_attention_heads, config.hidden_size
    head_size = hidden // n_heads
    names = {module: name for name, module in model.named_modules()}
    attention_of = {a.query: i for i, a in enumerate(attentions)}
    ffn_of = {f: i for i, f in enumerate(ffns)}
    embedding = model.get_input_embeddings()
    cuts: list[tuple[nn.Module, object, list[int]]] = []
    kept_heads: list[tuple[int, ...] | None] = [None] * len(attentions)
    kept_hidden: tuple[int, ...] | None = None
    for group in graph.get_all_groups(root_module_types=(nn.Linear,)):
        root, handler = group[0].dep.target.module, group[0].dep.handler
        outputs = {d.target.module for d, _ in group if graph.is_out_channel_pruning_fn(d.handler)}
        inputs = {d.target.module for d, _ in group if graph.is_in_channel_pruning_fn(d.handler)} & names.keys()
        width = len(group[0].idxs)
        heads_here = [attention_of[m] for m in outputs if m in attention_of]
        ffn_here = [ffn_of[m] for m in outputs if m in ffn_of]
        if heads_here:
            (layer,) = heads_here
            per_head = _scores(scorer, group, width).view(n_heads, head_size).sum(1)
            kept_heads[layer] = tuple(_top(per_head, heads_kept))
            keep = [h * head_size + d for h in kept_heads[layer] for d in range(head_size)]
        elif ffn_here:
            keep = _top(_scores(scorer, group, width), ffn_kept)
        elif embedding in outputs:
            keep = _top(_scores(scorer, group, width), hidden_kept)
            kept_hidden = tuple(keep)
        elif not inputs:
            continue  # nothing reads these channels: a model output (the labels), never pruned
        elif width == hidden:  # a hidden x hidden projection outside the residual stream (pooler, classifier.dense)
            keep = _top(_scores(scorer, group, width), hidden_kept)
        else:
            raise ValueError(f"unsupported layer {names.get(root, root)}: output width {width} is not hidden {hidden}")
        drop = sorted(set(range(width)) - set(keep))
        if drop:
            cuts.append((root, handler, drop))
    if kept_hidden is None or any(k is None for k in kept_heads):
        raise ValueError("torch-pruning's dependency graph did not couple embeddings and attention heads as expected")
    return cuts, tuple(kept_heads), kept_hidden  # type: ignore[arg-type]


def _scores(scorer: tp.importance.Importance, group: tp.Group, width: int) -> torch.Tensor:
    """Per-channel importance of a whole group (all its coupled weights), indexed like its root."""
    scores = scorer(group)
    if scores is None or scores.shape != (width,):
        raise ValueError(f"torch-pruning gave no importance for the group rooted at {group[0].dep.target}")
    return scores.float().cpu()


def _top(scores: torch.Tensor, k: int) -> list[int]:
    """Indices of the `k` largest scores, in index order (ties go to the lower index)."""
    order = torch.argsort(scores, descending=True, stable=True)
    return sorted(order[:k].tolist())
