"""One forward pass of a Hugging Face encoder that returns the features the recipe's losses read.

Works on XLMRoberta*/Bert* models: the bare encoder or one with a sequence/token classification
head. Gradients flow through everything returned (the student is trained on it); wrap the teacher's
call in `torch.no_grad()` or `torch.inference_mode()` yourself.

Feature names are the loss input names without their `student_`/`teacher_` prefix (`features_for`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

FEATURES = ("logits", "hidden", "attentions", "qkv", "pooled", "cls")

# `...layer.<i>.attention.self.query` in BertModel/XLMRobertaModel (bare or under `bert.`/`roberta.`).
_QKV = re.compile(r"(?:^|\.)layer\.(\d+)\.attention\.self\.(query|key|value)$")


def features_for(needed: set[str], side: str) -> set[str]:
    """The `forward_features` names for one side ("student"/"teacher") of `losses.needs(...)`."""
    prefix = f"{side}_"
    return {name.removeprefix(prefix) for name in needed if name.startswith(prefix)}


def qkv_projections(model: nn.Module) -> list[tuple[nn.Linear, nn.Linear, nn.Linear]]:
    """Each transformer layer's self-attention (query, key, value) linear maps, in layer order."""
    found: dict[int, dict[str, nn.Linear]] = {}
    for name, module in model.named_modules():
        match = _QKV.search(name)
        if match and isinstance(module, nn.Linear):
            found.setdefault(int(match.group(1)), {})[match.group(2)] = module
    n = model.config.num_hidden_layers
    if sorted(found) != list(range(n)) or any(len(parts) != 3 for parts in found.values()):
        raise ValueError(
            f"cannot find the query/key/value projections of {n} layers in {type(model).__name__} "
            "(expected modules named '...layer.<i>.attention.self.query|key|value')"
        )
    return [(found[i]["query"], found[i]["key"], found[i]["value"]) for i in range(n)]


def _attention_dropouts(model: nn.Module) -> list[float]:
    return [
        m.dropout.p
        for name, m in model.named_modules()
        if name.endswith("attention.self") and isinstance(getattr(m, "dropout", None), nn.Dropout)
    ]


def forward_features(
    model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, want: set[str]
) -> dict[str, Any]:
    """Run `model` once and return the wanted features among:

    - "logits": the head's output (the model must have a head);
    - "hidden": tuple of the transformer layers' outputs [B, T, H]; index 0 is the FIRST LAYER's
      output — the embedding output that `output_hidden_states` puts first is dropped, so index i
      matches layer i of `losses.map_layers`;
    - "attentions": tuple of per-layer attention probabilities [B, heads, T, T]; needs eager
      attention, and in training mode no attention dropout (the model returns the maps after dropout,
      which are not distributions);
    - "qkv": tuple of per-layer (query, key, value) projections [B, T, width], before the head split,
      captured by forward hooks that are removed again before returning;
    - "pooled": mean of the last layer's output over the real (mask 1) positions, [B, H];
    - "cls": the last layer's output at the first position (<s> / [CLS], what a classification head reads), [B, H].
    """
    unknown = set(want) - set(FEATURES)
    if unknown:
        raise ValueError(f"unknown features {sorted(unknown)}; known: {', '.join(FEATURES)}")
    if "logits" in want and model.base_model is model:
        raise ValueError(f"{type(model).__name__} has no head, so it has no logits")
    if "attentions" in want:
        implementation = model.config._attn_implementation
        if implementation != "eager":
            raise ValueError(
                f"attention maps need eager attention, but {type(model).__name__} uses {implementation!r}; "
                "load it with attn_implementation='eager'"
            )
        if model.training and any(p > 0 for p in _attention_dropouts(model)):
            raise ValueError(
                "attention maps of a model in training mode come after attention dropout and are not "
                "distributions; set attention_probs_dropout_prob=0 for a model whose attentions are distilled"
            )

    captured: dict[tuple[int, int], torch.Tensor] = {}

    def keep(key: tuple[int, int]) -> Callable[..., None]:
        def hook(module: nn.Module, args: Any, output: torch.Tensor) -> None:
            captured[key] = output

        return hook

    layers = qkv_projections(model) if "qkv" in want else []
    handles = []
    try:
        for i, projections in enumerate(layers):
            handles += [p.register_forward_hook(keep((i, j))) for j, p in enumerate(projections)]
        outputs = model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            output_hidden_states=bool({"hidden", "pooled", "cls"} & set(want)),
            output_attentions="attentions" in want,
            return_dict=True,
        )
    finally:
        for handle in handles:
            handle.remove()

    features: dict[str, Any] = {}
    if "logits" in want:
        features["logits"] = outputs.logits
    if "hidden" in want:
        features["hidden"] = tuple(outputs.hidden_states[1:])
    if "attentions" in want:
        features["attentions"] = tuple(outputs.attentions)
    if "qkv" in want:
        features["qkv"] = tuple((captured[i, 0], captured[i, 1], captured[i, 2]) for i in range(len(layers)))
    if "pooled" in want:
        features["pooled"] = mean_pool(outputs.hidden_states[-1], attention_mask)
    if "cls" in want:
        features["cls"] = outputs.hidden_states[-1][:, 0]
    return features


def features_to(features: dict[str, Any], device: torch.device | str) -> dict[str, Any]:
    """`features` (tensors, tuples or per-layer dicts of them, as `forward_features` and the teacher cache give
    them) with every tensor on `device`."""

    def move(value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            return value.to(device)
        if isinstance(value, dict):
            return {k: move(v) for k, v in value.items()}
        return type(value)(move(v) for v in value) if isinstance(value, list | tuple) else value

    return {k: move(v) for k, v in features.items()}


class WantedFeatures(nn.Module):
    """`model` whose forward returns only `forward_features(model, ..., want)`: wrapped in DistributedDataParallel,
    the parameters that none of those features reach (a head whose logits no loss reads) count as unused
    instead of leaving DDP waiting for their gradients."""

    def __init__(self, model: nn.Module, want: set[str]) -> None:
        super().__init__()
        self.model, self.want = model, set(want)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> dict[str, Any]:
        return forward_features(self.model, input_ids, attention_mask, self.want)


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean of the real tokens' vectors (sentence-transformers' mean pooling): [B, T, H] -> [B, H]."""
    mask = attention_mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * mask).sum(1) / mask.sum(1).clamp_min(1)
