"""One global batch of a training step: cut into this rank's micro-batches, each weighted by its share of the
batch, run forward and backward (`polydistill.train.fit` calls `shard` and `backward` each step)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch

from polydistill.data import IGNORE_INDEX, Encoded, collate
from polydistill.distributed import World

# (model, batch, share) -> (loss to minimise, {term name: value} for the progress bar and the report).
# `share` says what part of the global batch this (micro-)batch is, per unit a loss averages over (UNITS):
# a step multiplies each mean by its unit's share, so the shares' losses add up to the global batch's mean.
StepLoss = Callable[[torch.nn.Module, dict[str, torch.Tensor], dict[str, float]], tuple[torch.Tensor, dict[str, float]]]

# What a loss term averages over: sentences ("rows"), real tokens ("tokens": the attention mask's ones), or
# rows of logits ("logits": sentences for a sentence task, scored words for a token task).
UNITS = ("rows", "tokens", "logits")
WHOLE_BATCH = dict.fromkeys(UNITS, 1.0)  # the share of a batch that is the whole global batch


def units(data: Encoded, indices: list[int]) -> dict[str, int]:
    """How many of each unit (UNITS) the examples `indices` of `data` hold."""
    tokens = sum(len(data.input_ids[i]) for i in indices)
    if data.per_token:
        scored = sum(1 for i in indices for y in data.labels[i] if y != IGNORE_INDEX)
    else:
        scored = len(indices)
    return {"rows": len(indices), "tokens": tokens, "logits": scored}


def shard(
    data: Encoded, indices: list[int], place: World, micro_batches: int
) -> list[tuple[list[int], dict[str, float]]]:
    """This rank's micro-batches of the global batch `indices`, each with its share of the global batch.

    Rank r takes every size-th example from the r-th (the batch is sorted by length, so ranks get alike
    lengths), then splits them into `micro_batches` the same way. A piece left empty (a batch smaller
    than ranks x micro-batches) is replaced by one example with share 0: every rank must still run a
    forward and backward, because DDP's gradient all-reduce needs all of them.
    """
    total = units(data, indices)
    mine = indices[place.rank :: place.size]
    pieces = []
    for m in range(micro_batches):
        piece = mine[m::micro_batches]
        if piece:
            share = {u: n / max(1, total[u]) for u, n in units(data, piece).items()}
            pieces.append((piece, share))
        else:
            pieces.append((indices[:1], dict.fromkeys(UNITS, 0.0)))
    return pieces


def step_seed(seed: int, epoch: int, step: int, rank: int) -> int:
    """The RNG seed of one optimizer step on one rank of a data-parallel run (dropout masks, masked-LM masks).
    Seeding every step makes a resumed run draw what an uninterrupted one draws without saving every rank's
    RNG state, and gives each rank its own masks."""
    return ((seed * 1_000 + epoch) * 1_000_003 + step) * 1_024 + rank


def backward(
    trained: torch.nn.Module, step_loss: StepLoss, data: Encoded, pieces: list[tuple[list[int], dict[str, float]]],
    pad_id: int, place: World, autocast: Any,
) -> tuple[torch.Tensor, dict[str, float]]:  # fmt: skip
    """Forward and backward this rank's pieces of one global batch (see `shard`); returns this rank's part of
    the batch's loss and the last piece's loss terms. The gradients add up in `.grad`."""
    contribution = torch.zeros((), device=place.device)
    for m, (piece, share) in enumerate(pieces):
        batch = {k: v.to(place.device) for k, v in collate(data, piece, pad_id).items()}
        # DDP all-reduces during the last piece's backward only; the others just accumulate
        last = m == len(pieces) - 1
        with trained.no_sync() if place.size > 1 and not last else contextlib.nullcontext():
            with autocast:
                loss, parts = step_loss(trained, batch, share)
            (loss * place.size).backward()  # DDP averages over ranks; the shares already sum to 1
        contribution += loss.detach().float()
    return contribution, parts
