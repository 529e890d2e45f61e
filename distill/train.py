"""One training loop for fine-tuning teachers and distilling students, read top to bottom."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from distill.checkpoint import ResumePoint, Trainables
from distill.config import TrainConfig
from distill.data import Encoded, collate, gold_labels, iterate_batches, length_batches, predicted_labels
from distill.errors import DistillError
from distill.metrics import accuracy

# (model, batch) -> (loss to minimise, {term name: value} for the progress bar and the report)
StepLoss = Callable[[torch.nn.Module, dict[str, torch.Tensor]], tuple[torch.Tensor, dict[str, float]]]


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


def fit(
    model: torch.nn.Module,
    train: Encoded,
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
) -> FitResult:
    """Train for `cfg.epochs`, score with `evaluate` (higher is better) after each epoch, keep the best.

    `on_best` is called (to write a checkpoint) whenever the dev score improves; at the end the
    model holds the best epoch's weights, not the last one's. `extra_parameters` are trained too
    (a loss's learned projections) but are not part of the model.

    With `resume`, the whole training state (weights, optimizer, scheduler, RNG, epoch and step, best
    epoch so far) is written to `resume.directory` every `resume.every_steps` steps and after each epoch,
    and a state found there is continued from: a run killed at any moment and restarted gives the same
    model as one never stopped. The folder is removed when training ends.
    """
    torch.manual_seed(seed)
    steps_per_epoch = math.ceil(len(train) / cfg.batch_size)
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

    result = FitResult(best_dev_score=-math.inf, best_epoch=-1)
    best_state = None
    # a step's own RNG (masked-LM masking) is training state too
    trainables = Trainables(
        model, list(extra_parameters or []), optimizer, scheduler, getattr(step_loss, "generator", None)
    )
    start_epoch, start_step, running = 0, 0, []
    if resume is not None and resume.exists():
        start_epoch, start_step, running, best_state = resume.load(trainables, result)
        tqdm.write(f"{desc}: resuming at epoch {start_epoch + 1}, step {start_step} (from {resume.directory})")

    def save(epoch: int, step: int) -> None:
        if resume is not None:
            resume.save(trainables, result, best_state, epoch, step, running)

    for epoch in range(start_epoch, cfg.epochs):
        model.train()
        # a different but reproducible batch order each epoch
        batches = iterate_batches(train, cfg.batch_size, pad_id, shuffle=True, seed=seed * 1000 + epoch)
        skip = start_step if epoch == start_epoch else 0
        if skip == 0:
            running = []
        bar = tqdm(batches, total=steps_per_epoch, desc=f"{desc} epoch {epoch + 1}/{cfg.epochs}", leave=False)
        for step, batch in enumerate(bar):
            if step < skip:  # done before the run was stopped: the same batches in the same order
                continue
            loss, parts = step_loss(model, batch)
            optimizer.zero_grad(set_to_none=True)
            problem = None if torch.isfinite(loss) else f"loss {float(loss.detach())}"
            if problem is None:
                loss.backward()
                norm = torch.nn.utils.clip_grad_norm_(
                    [p for group in optimizer.param_groups for p in group["params"]], cfg.max_grad_norm
                )
                problem = None if torch.isfinite(norm) else f"gradient norm {float(norm)}"
            if problem is not None:  # a NaN/inf update would poison every weight: skip it or stop here
                if result.skipped_batches >= cfg.skip_nonfinite:
                    raise NonFiniteLoss(desc, problem, epoch + 1, step + 1, parts, resume, cfg.skip_nonfinite)
                result.skipped_batches += 1
                optimizer.zero_grad(set_to_none=True)
                tqdm.write(f"{desc}: skipped batch {step + 1} of epoch {epoch + 1}: non-finite {problem}")
                continue
            optimizer.step()
            scheduler.step()
            running.append(float(loss.detach()))
            bar.set_postfix(loss=f"{np.mean(running[-20:]):.3f}")
            if resume is not None and (step + 1) % resume.every_steps == 0 and step + 1 < steps_per_epoch:
                save(epoch, step + 1)
        score = evaluate(model)
        result.history.append({"epoch": epoch + 1, "train_loss": float(np.mean(running)), "dev_score": score})
        tqdm.write(f"{desc} epoch {epoch + 1}: train loss {np.mean(running):.4f}, dev score {score:.4f}")
        if score > result.best_dev_score:
            result.best_dev_score, result.best_epoch = score, epoch + 1
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            on_best(model)
        save(epoch + 1, 0)
    model.load_state_dict(best_state)
    model.eval()
    if resume is not None:
        resume.clear()
    return result


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
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float().numpy()
        if data.per_token:
            for row, i in enumerate(indices):
                out[i] = logits[row, : lengths[i]]
        else:
            out[indices] = logits
    model.train(was_training)
    return out
