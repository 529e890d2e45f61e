"""One training loop for fine-tuning teachers and distilling students, read top to bottom."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from polydistill.checkpoint import ResumePoint, Trainables
from polydistill.config import TrainConfig
from polydistill.data import IGNORE_INDEX, Encoded, collate, gold_labels, length_batches, predicted_labels
from polydistill.distributed import World, average_gradients, from_main, sum_over_ranks, world
from polydistill.errors import DistillError
from polydistill.metrics import accuracy
from polydistill.stream import TextStream

# (model, batch, share) -> (loss to minimise, {term name: value} for the progress bar and the report).
# `share` says what part of the global batch this (micro-)batch is, per unit a loss averages over (UNITS):
# a step multiplies each mean by its unit's share, so the shares' losses add up to the global batch's mean.
StepLoss = Callable[[torch.nn.Module, dict[str, torch.Tensor], dict[str, float]], tuple[torch.Tensor, dict[str, float]]]

# What a loss term averages over: sentences ("rows"), real tokens ("tokens": the attention mask's ones), or
# rows of logits ("logits": sentences for a sentence task, scored words for a token task).
UNITS = ("rows", "tokens", "logits")
WHOLE_BATCH = dict.fromkeys(UNITS, 1.0)  # the share of a batch that is the whole global batch


@dataclass
class FitResult:
    best_dev_score: float
    best_epoch: int
    history: list[dict[str, float]] = field(default_factory=list)
    skipped_batches: int = 0  # batches whose loss or gradient was NaN/inf (see TrainConfig.skip_nonfinite)


class NonFiniteLoss(DistillError):
    """Training met a NaN/inf loss or gradient more often than the recipe allows skipping."""

    def __init__(self, desc: str, problem: str, epoch: int, step: int, terms: dict[str, float],
                 resume: ResumePoint | None, allowed: int) -> None:  # fmt: skip
        last = (
            f"last good training state: {resume.directory} (continue with --resume)"
            if resume is not None and resume.exists()
            else "no training state saved yet"
        )
        terms_text = ", ".join(f"{k} {v:.4g}" for k, v in terms.items())
        super().__init__(
            f"{desc}: non-finite {problem} at epoch {epoch}, step {step} (loss terms: {terms_text}); {last}; "
            f"{allowed} such batches may be skipped (train.skip_nonfinite): lower the learning rate or raise that"
        )


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


def set_dropout(model: torch.nn.Module, p: float | None) -> list[float]:
    """Set every dropout of `model` to `p` (None: leave them); returns their values before, for `restore_dropout`."""
    dropouts = [m for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    before = [m.p for m in dropouts]
    for module in dropouts if p is not None else []:
        module.p = p
    return before


def restore_dropout(model: torch.nn.Module, before: list[float]) -> None:
    dropouts = [m for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    for module, value in zip(dropouts, before, strict=True):
        module.p = value


def step_seed(seed: int, epoch: int, step: int, rank: int) -> int:
    """The RNG seed of one optimizer step on one rank of a data-parallel run (dropout masks, masked-LM masks).
    Seeding every step makes a resumed run draw what an uninterrupted one draws without saving every rank's
    RNG state, and gives each rank its own masks."""
    return ((seed * 1_000 + epoch) * 1_000_003 + step) * 1_024 + rank


def fit(
    model: torch.nn.Module,
    train: Encoded | TextStream,
    step_loss: StepLoss,
    cfg: TrainConfig,
    *,
    evaluate: Callable[[torch.nn.Module], float],
    on_best: Callable[[torch.nn.Module], None],
    pad_id: int,
    seed: int,
    desc: str,
    extra_parameters: list[torch.nn.Parameter] | None = None,
    resume: ResumePoint | None = None,
    say: Callable[[str], None] = print,
) -> FitResult:
    """Train for `cfg.epochs`, score with `evaluate` (higher is better) after each epoch, keep the best.

    `on_best` is called (to write a checkpoint) whenever the dev score improves; at the end the
    model holds the best epoch's weights, not the last one's. `extra_parameters` are trained too
    (a loss's learned projections) but are not part of the model.

    `train` is held in memory (Encoded: length-bucketed batches, reshuffled each epoch) or streamed
    (polydistill.stream.TextStream: batches in the stream's shuffled order). The progress bar shows tokens/s.

    Each optimizer step sees one global batch of `cfg.batch_size` examples. In a data-parallel run
    (distill.distributed) every rank takes its shard of it and DistributedDataParallel averages the
    gradients; with `cfg.grad_accum_steps` > 1 each shard is cut further into micro-batches whose
    gradients add up before the step. Each piece's loss is weighted by its share of the global batch,
    so 1 process or N, with or without accumulation, take the same step (up to float rounding).

    With `resume`, the whole training state (weights, optimizer, scheduler, RNG, epoch and step, best
    epoch so far) is written to `resume.directory` every `resume.every_steps` steps and after each epoch,
    and a state found there is continued from: a run killed at any moment and restarted gives the same
    model as one never stopped. The folder is removed when training ends. One process draws dropout and
    masking from one RNG stream, saved in the resume point (so runs made before data parallelism existed
    reproduce); in a data-parallel run each rank reseeds every step (`step_seed`), so no RNG state per rank
    is needed. A run resumed with another number of processes continues the same training exactly when
    nothing is random (dropout 0).

    `cfg.dropout` (not None) sets every dropout of the model while it trains; its own values return after.

    `say` gets the epoch lines (and the resume and skipped-batch notes), written above a live progress bar.
    """
    place = world()

    def tell(line: str) -> None:
        with tqdm.external_write_mode():  # clear a bar drawn on a terminal, write, redraw it
            say(line)

    torch.manual_seed(seed)
    model.to(place.device)
    for param in extra_parameters or []:
        param.data = param.data.to(place.device)
    # DDP averages the gradients over ranks during backward. It waits for a gradient of every parameter its
    # forward's outputs reach, so a step whose loss reads only some outputs (hidden states, q/k/v, not the
    # head's logits) wraps the model in a module returning just those (`ddp_module`); parameters nothing
    # reaches are allowed. The unwrapped `model` is evaluated and saved: its weights are the same on every rank.
    trained = model
    if place.size > 1:
        wrap = getattr(step_loss, "ddp_module", None)
        module = wrap(model) if wrap is not None else model
        trained = torch.nn.parallel.DistributedDataParallel(module, find_unused_parameters=True)
    if isinstance(train, Encoded):
        lengths = [len(x) for x in train.input_ids]
        steps_per_epoch = math.ceil(len(train) / cfg.batch_size)

        def epoch_batches(epoch: int, skip: int) -> Iterator[tuple[Encoded, list[int]]]:
            # a different but reproducible batch order each epoch
            order = length_batches(lengths, cfg.batch_size, shuffle=True, seed=seed * 1000 + epoch)
            return ((train, indices) for indices in order[skip:])
    else:
        steps_per_epoch, epoch_batches = train.steps_per_epoch, train.batches
    total_steps = steps_per_epoch * cfg.epochs
    decay, no_decay = [], []
    for param in [*model.parameters(), *(extra_parameters or [])]:
        # the usual BERT recipe: no weight decay on biases and LayerNorm weights
        (no_decay if param.ndim < 2 else decay).append(param)
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr,
    )
    warmup = int(cfg.warmup_ratio * total_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: (
            (step + 1) / max(1, warmup)
            if step < warmup
            else max(0.0, (total_steps - step) / max(1, total_steps - warmup))
        ),
    )
    # bf16 autocast: matmuls in bfloat16 (AMX on recent Xeons, tensor cores on GPUs), weights and the
    # optimizer in float32; bf16 keeps float32's range, so no loss scaling is needed
    autocast = torch.autocast(
        device_type=torch.device(place.device).type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16"
    )

    result = FitResult(best_dev_score=-math.inf, best_epoch=-1)
    best_state = None
    # a step's own RNG (masked-LM masking) is training state too
    trainables = Trainables(
        model, list(extra_parameters or []), optimizer, scheduler, getattr(step_loss, "generator", None)
    )
    start_epoch, start_step, running = 0, 0, []
    if resume is not None and resume.exists():
        start_epoch, start_step, running, best_state = resume.load(trainables, result)
        if place.main:
            tell(f"{desc}: resuming at epoch {start_epoch + 1}, step {start_step} (from {resume.directory})")

    def save(epoch: int, step: int) -> None:
        if resume is not None:
            resume.save(trainables, result, best_state, epoch, step, running)

    dropouts = set_dropout(model, cfg.dropout)
    try:
        for epoch in range(start_epoch, cfg.epochs):
            model.train()
            skip = start_step if epoch == start_epoch else 0  # batches done before the run was stopped
            if skip == 0:
                running = []
            bar = tqdm(
                epoch_batches(epoch, skip), total=steps_per_epoch, initial=skip,
                desc=f"{desc} epoch {epoch + 1}/{cfg.epochs}", leave=False,
                disable=None if place.main else True,  # None: a bar on a terminal only, not in a log file
            )  # fmt: skip
            started, tokens = time.perf_counter(), 0
            for step, (data, indices) in enumerate(bar, start=skip):
                optimizer.zero_grad(set_to_none=True)
                if place.size > 1:  # each rank its own draws, reproducible without per-rank RNG state (step_seed)
                    torch.manual_seed(step_seed(seed, epoch, step, place.rank))
                    if trainables.generator is not None:
                        trainables.generator.manual_seed(step_seed(seed, epoch, step, place.rank) + 512)
                pieces = shard(data, indices, place, cfg.grad_accum_steps)
                tokens += sum(len(data.input_ids[i]) for i in indices)
                contribution, parts = backward(trained, step_loss, data, pieces, pad_id, place, autocast)
                average_gradients(list(extra_parameters or []))
                batch_loss = float(sum_over_ranks(contribution))  # the global batch's loss, the same on every rank
                problem = None if math.isfinite(batch_loss) else f"loss {batch_loss}"
                if problem is None:
                    norm = torch.nn.utils.clip_grad_norm_(
                        [p for group in optimizer.param_groups for p in group["params"]], cfg.max_grad_norm
                    )
                    problem = None if torch.isfinite(norm) else f"gradient norm {float(norm)}"
                if problem is not None:  # a NaN/inf update would poison every weight: skip it or stop here
                    if result.skipped_batches >= cfg.skip_nonfinite:
                        raise NonFiniteLoss(desc, problem, epoch + 1, step + 1, parts, resume, cfg.skip_nonfinite)
                    result.skipped_batches += 1
                    optimizer.zero_grad(set_to_none=True)
                    if place.main:
                        tell(f"{desc}: skipped batch {step + 1} of epoch {epoch + 1}: non-finite {problem}")
                    continue
                optimizer.step()
                scheduler.step()
                running.append(batch_loss)
                bar.set_postfix(
                    loss=f"{np.mean(running[-20:]):.3f}", tokens_per_s=f"{tokens / (time.perf_counter() - started):.0f}"
                )
                if resume is not None and (step + 1) % resume.every_steps == 0 and step + 1 < steps_per_epoch:
                    save(epoch, step + 1)
            # rank 0 scores and tells the others, so every rank keeps the same best epoch
            score = float(from_main(evaluate(model) if place.main else None))
            result.history.append({"epoch": epoch + 1, "train_loss": float(np.mean(running)), "dev_score": score})
            if place.main:
                speed = tokens / max(1e-9, time.perf_counter() - started)
                summary = f"train loss {np.mean(running):.4f}, dev score {score:.4f} ({speed:.0f} tokens/s)"
                tell(f"{desc} epoch {epoch + 1}: {summary}")
            if score > result.best_dev_score:
                result.best_dev_score, result.best_epoch = score, epoch + 1
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                on_best(model)
            save(epoch + 1, 0)
        model.load_state_dict(best_state)
        model.eval()
        model.to("cpu")  # later stages (scoring, export) work on the CPU
        for param in extra_parameters or []:
            param.data = param.data.to("cpu")
        if resume is not None:
            resume.clear()
    finally:
        restore_dropout(model, dropouts)
    return result


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


def dev_accuracy(dev: Encoded, pad_id: int) -> Callable[[torch.nn.Module], float]:
    """`fit`'s `evaluate` for classifiers: accuracy on `dev` (per sentence, or per scored token)."""
    gold = gold_labels(dev)
    return lambda model: accuracy(predicted_labels(predict_logits(model, dev, pad_id), dev), gold)


@torch.inference_mode()
def predict_logits(
    model: torch.nn.Module, data: Encoded, pad_id: int, batch_size: int = 64
) -> np.ndarray | list[np.ndarray]:
    """Logits for every example of `data`, in its original order: [N, labels] for a sentence task,
    a list of [length_i, labels] arrays for a token task."""
    was_training = model.training
    model.eval()
    out: np.ndarray | list = (
        [None] * len(data) if data.per_token else np.zeros((len(data), model.config.num_labels), dtype=np.float32)
    )
    lengths = [len(x) for x in data.input_ids]
    for indices in length_batches(lengths, batch_size, shuffle=False):
        batch = collate(data, indices, pad_id)
        device = next(model.parameters()).device
        ids, mask = batch["input_ids"].to(device), batch["attention_mask"].to(device)
        logits = model(input_ids=ids, attention_mask=mask).logits.float().cpu().numpy()
        if data.per_token:
            for row, i in enumerate(indices):
                out[i] = logits[row, : lengths[i]]
        else:
            out[indices] = logits
    model.train(was_training)
    return out
