"""The token ids a benchmark feeds: fixed-shape batches and a mix of lengths, random ids with the XLM-R special
tokens (token values do not change the cost of a dense encoder)."""

from __future__ import annotations

import numpy as np

from polydistill.errors import DistillError


def fixed_inputs(batch: int, seq: int, vocab_size: int, *, seed: int = 0) -> dict[str, np.ndarray]:
    """`batch` rows of `seq` tokens: <s> random ids </s>, mask all ones (token values do not change
    the cost of a dense encoder)."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(3, max(4, vocab_size), size=(batch, seq), dtype=np.int64)
    ids[:, 0] = 0
    if seq > 1:
        ids[:, -1] = 2
    return {"input_ids": ids, "attention_mask": np.ones_like(ids)}


def length_mix_inputs(
    batch: int, lengths: list[int], vocab_size: int, *, batches: int = 16, seed: int = 0
) -> list[dict[str, np.ndarray]]:
    """`batches` batches of `batch` lengths drawn (with replacement) from `lengths`, right-padded with
    the pad id 1 to each batch's longest, mask 0 on padding."""
    if not lengths:
        raise DistillError("bench: the length mix needs at least one length")
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(batches):
        chosen = rng.choice(np.asarray(lengths, dtype=np.int64), size=batch, replace=True)
        width = int(chosen.max())
        ids = np.ones((batch, width), dtype=np.int64)
        mask = np.zeros((batch, width), dtype=np.int64)
        for row, n in enumerate(chosen):
            ids[row, :n] = rng.integers(3, max(4, vocab_size), size=int(n))
            ids[row, 0] = 0
            if n > 1:
                ids[row, n - 1] = 2
            mask[row, :n] = 1
        out.append({"input_ids": ids, "attention_mask": mask})
    return out
