"""Analytic FLOPs of one forward pass of a BERT / XLM-R-style encoder classifier, and efficiency.

Counted (1 multiply-add = 2 FLOPs), for `b` sequences of `s` tokens, hidden `h`, attention width
`a` (= heads × head size, normally `h`), feed-forward width `f`, `L` layers and `c` labels:

    per layer   Q, K, V projections      3 · 2·b·s·h·a
                attention output proj.       2·b·s·a·h
                scores Q·Kᵀ                  2·b·s·s·a
                context scores·V             2·b·s·s·a
                feed-forward up + down       2 · 2·b·s·h·f
    head        dense h→h on the first token 2·b·h·h   (BERT's pooler or XLM-R's classifier.dense)
                output h→c                   2·b·h·c

Embedding lookups, layer norms, softmax, GELU, biases and residual adds are left out (they are
memory-bound and small next to the matrix products). Padded positions are counted: the model does
compute them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def attention_width(config: Mapping[str, Any]) -> int:
    """Width of the concatenated heads: heads × head size (`head_dim` if the config has one)."""
    heads = int(config["num_attention_heads"])
    head_dim = config.get("head_dim") or int(config["hidden_size"]) // heads
    return heads * int(head_dim)


def num_labels(config: Mapping[str, Any]) -> int:
    if config.get("id2label"):
        return len(config["id2label"])
    return int(config.get("num_labels") or 2)


def encoder_flops(config: Mapping[str, Any], batch: int, seq: int) -> int:
    """FLOPs of one forward pass over `batch` sequences of `seq` tokens (see the module docstring)."""
    if batch < 1 or seq < 1:
        raise ValueError("batch and seq must be >= 1")
    h = int(config["hidden_size"])
    f = int(config["intermediate_size"])
    layers = int(config["num_hidden_layers"])
    a = attention_width(config)
    tokens = batch * seq
    projections = 2 * tokens * (3 * h * a + a * h)
    scores_and_context = 2 * 2 * batch * seq * seq * a
    feed_forward = 2 * 2 * tokens * h * f
    head = 2 * batch * (h * h + h * num_labels(config))
    return layers * (projections + scores_and_context + feed_forward) + head


def efficiency(flops: float | None, p50_ms: float | None, peak_flops_per_s: float | None) -> float | None:
    """Achieved FLOP/s at the median latency as a fraction of the measured matmul peak."""
    if not flops or not p50_ms or not peak_flops_per_s or p50_ms <= 0 or peak_flops_per_s <= 0:
        return None
    return flops / (p50_ms / 1000.0) / peak_flops_per_s
