"""One training loop for fine-tuning teachers and distilling students, read top to bottom."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from polydistill.batch_shares import StepLoss, backward, shard, step_seed
from polydistill.checkpoint import ResumePoint, Trainables
from polydistill.config import TrainConfig
from polydistill.data import Encoded, length_batches
from polydistill.distributed import World, average_gradients, from_main, sum_over_ranks, world
from polydistill.errors import DistillError
from polydistill.stream import TextStream


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


@dataclass(frozen=True)
class FitSetup:
    """The bookkeeping of one `fit` besides its hyperparameters (TrainConfig): its name, padding and seed,
    where it keeps resume state, and who hears its progress lines."""

    desc: str  # names the model being trained in the progress bar, the epoch lines and errors
    pad_id: int
    seed: int
    resume: ResumePoint | None = None  # None: no resume state is written or read
    say: Callable[[str], None] = print  # the epoch lines and the resume and skipped-batch notes


@dataclass
class _Loop:
    """What one `fit` trains with and carries from step to step; `trained` is `trainables.model`, or its DDP wrap."""

    trained: torch.nn.Module
    step_loss: StepLoss
    cfg: TrainConfig
    setup: FitSetup
    place: World
    trainables: Trainables
    autocast: Any
    result: FitResult
    best_state: dict[str, torch.Tensor] | None = None  # the best epoch's weights so far
    running: list[float] = field(default_factory=list)  # this epoch's batch losses


def fit(
    model: torch.nn.Module,
    train: Encoded | TextStream,
    step_loss: StepLoss,
    cfg: TrainConfig,
    setup: FitSetup,
    *,
    evaluate: Callable[[torch.nn.Module], float],
    on_best: Callable[[torch.nn.Module], None],
    extra_parameters: list[torch.nn.Parameter] | None = None,
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

    With `setup.resume`, the whole training state (weights, optimizer, scheduler, RNG, epoch and step, best
    epoch so far) is written to `resume.directory` every `resume.every_steps` steps and after each epoch,
    and a state found there is continued from: a run killed at any moment and restarted gives the same
    model as one never stopped. The folder is removed when training ends. One process draws dropout and
    masking from one RNG stream, saved in the resume point (so runs made before data parallelism existed
    reproduce); in a data-parallel run each rank reseeds every step (`step_seed`), so no RNG state per rank
    is needed. A run resumed with another number of processes continues the same training exactly when
    nothing is random (dropout 0).

    `cfg.dropout` (not None) sets every dropout of the model while it trains; its own values return after.

    `setup.say` gets the epoch lines (and the resume and skipped-batch notes), written above a live progress bar.
    """
    place, extra = world(), list(extra_parameters or [])
    torch.manual_seed(setup.seed)
    trained = _on_device(model, extra, step_loss, place)
    steps_per_epoch, epoch_batches = _epoch_plan(train, cfg.batch_size, setup.seed)
    optimizer, scheduler = _optimizer(model, extra, cfg, steps_per_epoch * cfg.epochs)
    # a step's own RNG (masked-LM masking) is training state too
    trainables = Trainables(model, extra, optimizer, scheduler, getattr(step_loss, "generator", None))
    result = FitResult(best_dev_score=-math.inf, best_epoch=-1)
    loop = _Loop(trained, step_loss, cfg, setup, place, trainables, _autocast(place, cfg), result)
    start_epoch, start_step = _resume(loop)
    dropouts = set_dropout(model, cfg.dropout)
    try:
        for epoch in range(start_epoch, cfg.epochs):
            model.train()
            skip = start_step if epoch == start_epoch else 0  # batches done before the run was stopped
            if skip == 0:
                loop.running = []
            bar = tqdm(
                epoch_batches(epoch, skip), total=steps_per_epoch, initial=skip,
                desc=f"{setup.desc} epoch {epoch + 1}/{cfg.epochs}", leave=False,
                disable=None if place.main else True,  # None: a bar on a terminal only, not in a log file
            )  # fmt: skip
            started, tokens = time.perf_counter(), 0
            for step, (data, indices) in enumerate(bar, start=skip):
                tokens += sum(len(data.input_ids[i]) for i in indices)
                if not _train_step(loop, epoch, step, data, indices):
                    continue  # a non-finite batch, skipped
                speed = tokens / (time.perf_counter() - started)
                bar.set_postfix(loss=f"{np.mean(loop.running[-20:]):.3f}", tokens_per_s=f"{speed:.0f}")
                if _resume_due(setup.resume, step + 1, steps_per_epoch):
                    _save(loop, epoch, step + 1)
            _score_epoch(loop, epoch, evaluate, on_best, (started, tokens))
            _save(loop, epoch + 1, 0)
        _finish(loop)
    finally:
        restore_dropout(model, dropouts)
    return result


def _tell(setup: FitSetup, line: str) -> None:
    with tqdm.external_write_mode():  # clear a bar drawn on a terminal, write, redraw it
        setup.say(line)


def _on_device(
    model: torch.nn.Module, extra: list[torch.nn.Parameter], step_loss: StepLoss, place: World
) -> torch.nn.Module:
    """Move `model` and `extra` to this process's device; returns what trains: `model`, or its DDP wrap.

    DDP averages the gradients over ranks during backward. It waits for a gradient of every parameter its
    forward's outputs reach, so a step whose loss reads only some outputs (hidden states, q/k/v, not the
    head's logits) wraps the model in a module returning just those (`ddp_module`); parameters nothing
    reaches are allowed. The unwrapped `model` is evaluated and saved: its weights are the same on every rank."""
    model.to(place.device)
    for param in extra:
        param.data = param.data.to(place.device)
    if place.size == 1:
        return model
    wrap = getattr(step_loss, "ddp_module", None)
    module = wrap(model) if wrap is not None else model
    return torch.nn.parallel.DistributedDataParallel(module, find_unused_parameters=True)


def _autocast(place: World, cfg: TrainConfig) -> Any:
    """bf16 autocast: matmuls in bfloat16 (AMX on recent Xeons, tensor cores on GPUs), weights and the
    optimizer in float32; bf16 keeps float32's range, so no loss scaling is needed."""
    return torch.autocast(
        device_type=torch.device(place.device).type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16"
    )


def _epoch_plan(
    train: Encoded | TextStream, batch_size: int, seed: int
) -> tuple[int, Callable[[int, int], Iterator[tuple[Encoded, list[int]]]]]:
    """(steps per epoch, (epoch, batches to skip) -> that epoch's (data, example indices) batches)."""
    if not isinstance(train, Encoded):
        return train.steps_per_epoch, train.batches
    lengths = [len(x) for x in train.input_ids]

    def epoch_batches(epoch: int, skip: int) -> Iterator[tuple[Encoded, list[int]]]:
        # a different but reproducible batch order each epoch
        order = length_batches(lengths, batch_size, shuffle=True, seed=seed * 1000 + epoch)
        return ((train, indices) for indices in order[skip:])

    return math.ceil(len(train) / batch_size), epoch_batches


def _optimizer(
    model: torch.nn.Module, extra: list[torch.nn.Parameter], cfg: TrainConfig, total_steps: int
) -> tuple[torch.optim.Optimizer, Any]:
    """AdamW with linear warmup then linear decay to 0 over `total_steps`."""
    decay, no_decay = [], []
    for param in [*model.parameters(), *extra]:
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
    return optimizer, scheduler


def _resume(loop: _Loop) -> tuple[int, int]:
    """Continue from the resume point when one was saved; returns the (0-based) epoch and step to start at."""
    resume = loop.setup.resume
    if resume is None or not resume.exists():
        return 0, 0
    start_epoch, start_step, loop.running, loop.best_state = resume.load(loop.trainables, loop.result)
    if loop.place.main:
        _tell(
            loop.setup,
            f"{loop.setup.desc}: resuming at epoch {start_epoch + 1}, step {start_step} (from {resume.directory})",
        )
    return start_epoch, start_step


def _resume_due(resume: ResumePoint | None, done: int, steps_per_epoch: int) -> bool:
    """Whether to save the resume point after `done` steps of an epoch (its end saves anyway)."""
    return resume is not None and done % resume.every_steps == 0 and done < steps_per_epoch


def _save(loop: _Loop, epoch: int, step: int) -> None:
    if loop.setup.resume is not None:
        loop.setup.resume.save(loop.trainables, loop.result, loop.best_state, epoch, step, loop.running)


def _train_step(loop: _Loop, epoch: int, step: int, data: Encoded, indices: list[int]) -> bool:
    """One optimizer step on the global batch `indices`; False when its loss or gradient was not finite and it
    was skipped instead (`_skip_nonfinite`)."""
    place, optimizer = loop.place, loop.trainables.optimizer
    optimizer.zero_grad(set_to_none=True)
    if place.size > 1:  # each rank its own draws, reproducible without per-rank RNG state (step_seed)
        torch.manual_seed(step_seed(loop.setup.seed, epoch, step, place.rank))
        if loop.trainables.generator is not None:
            loop.trainables.generator.manual_seed(step_seed(loop.setup.seed, epoch, step, place.rank) + 512)
    pieces = shard(data, indices, place, loop.cfg.grad_accum_steps)
    contribution, parts = backward(loop.trained, loop.step_loss, data, pieces, loop.setup.pad_id, place, loop.autocast)
    average_gradients(loop.trainables.extra)
    batch_loss = float(sum_over_ranks(contribution))  # the global batch's loss, the same on every rank
    problem = None if math.isfinite(batch_loss) else f"loss {batch_loss}"
    if problem is None:
        norm = torch.nn.utils.clip_grad_norm_(
            [p for group in optimizer.param_groups for p in group["params"]], loop.cfg.max_grad_norm
        )
        problem = None if torch.isfinite(norm) else f"gradient norm {float(norm)}"
    if problem is not None:
        _skip_nonfinite(loop, problem, (epoch, step), parts)
        return False
    optimizer.step()
    loop.trainables.scheduler.step()
    loop.running.append(batch_loss)
    return True


def _skip_nonfinite(loop: _Loop, problem: str, where: tuple[int, int], terms: dict[str, float]) -> None:
    """A NaN/inf update would poison every weight: drop this batch's gradients, or stop once
    `cfg.skip_nonfinite` batches have been skipped. `where`: the (0-based) epoch and step."""
    (epoch, step), setup, allowed = where, loop.setup, loop.cfg.skip_nonfinite
    if loop.result.skipped_batches >= allowed:
        raise NonFiniteLoss(setup.desc, problem, epoch + 1, step + 1, terms, setup.resume, allowed)
    loop.result.skipped_batches += 1
    loop.trainables.optimizer.zero_grad(set_to_none=True)
    if loop.place.main:
        _tell(setup, f"{setup.desc}: skipped batch {step + 1} of epoch {epoch + 1}: non-finite {problem}")


def _score_epoch(
    loop: _Loop,
    epoch: int,
    evaluate: Callable[[torch.nn.Module], float],
    on_best: Callable[[torch.nn.Module], None],
    timing: tuple[float, int],
) -> None:
    """Score the epoch on dev, record it in the history, and keep the weights when they are the best so far.
    `timing`: when the epoch started (perf_counter) and how many tokens it read, for the tokens/s it reports."""
    model, result = loop.trainables.model, loop.result
    # rank 0 scores and tells the others, so every rank keeps the same best epoch
    score = float(from_main(evaluate(model) if loop.place.main else None))
    result.history.append({"epoch": epoch + 1, "train_loss": float(np.mean(loop.running)), "dev_score": score})
    if loop.place.main:
        started, tokens = timing
        speed = tokens / max(1e-9, time.perf_counter() - started)
        summary = f"train loss {np.mean(loop.running):.4f}, dev score {score:.4f} ({speed:.0f} tokens/s)"
        _tell(loop.setup, f"{loop.setup.desc} epoch {epoch + 1}: {summary}")
    if score > result.best_dev_score:
        result.best_dev_score, result.best_epoch = score, epoch + 1
        loop.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        on_best(model)


def _finish(loop: _Loop) -> None:
    """Back to the best epoch's weights, in eval mode, on the CPU (later stages score and export there);
    the resume point is no longer needed."""
    model = loop.trainables.model
    model.load_state_dict(loop.best_state)
    model.eval()
    model.to("cpu")
    for param in loop.trainables.extra:
        param.data = param.data.to("cpu")
    if loop.setup.resume is not None:
        loop.setup.resume.clear()
