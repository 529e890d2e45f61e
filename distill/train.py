"""One training loop for fine-tuning teachers and distilling students, read top to bottom."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from distill.config import TrainConfig
from distill.data import Encoded, collate, gold_labels, iterate_batches, length_batches, predicted_labels
from distill.metrics import accuracy

# (model, batch) -> (loss to minimise, {term name: value} for the progress bar and the report)
StepLoss = Callable[[torch.nn.Module, dict[str, torch.Tensor]], tuple[torch.Tensor, dict[str, float]]]


@dataclass
class FitResult:
    best_dev_score: float
    best_epoch: int
    history: list[dict[str, float]] = field(default_factory=list)


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
) -> FitResult:
    """Train for `cfg.epochs`, score with `evaluate` (higher is better) after each epoch, keep the best.

    `on_best` is called (to write a checkpoint) whenever the dev score improves; at the end the
    model holds the best epoch's weights, not the last one's. `extra_parameters` are trained too
    (a loss's learned projections) but are not part of the model.
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
    for epoch in range(cfg.epochs):
        model.train()
        # a different but reproducible batch order each epoch
        batches = iterate_batches(train, cfg.batch_size, pad_id, shuffle=True, seed=seed * 1000 + epoch)
        bar = tqdm(batches, total=steps_per_epoch, desc=f"{desc} epoch {epoch + 1}/{cfg.epochs}", leave=False)
        running = []
        for batch in bar:
            loss, parts = step_loss(model, batch)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"{desc}: non-finite loss {float(loss)} at epoch {epoch + 1} ({parts})")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(
                [p for group in optimizer.param_groups for p in group["params"]], cfg.max_grad_norm
            )
            optimizer.step()
            scheduler.step()
            running.append(float(loss.detach()))
            bar.set_postfix(loss=f"{np.mean(running[-20:]):.3f}")
        score = evaluate(model)
        result.history.append({"epoch": epoch + 1, "train_loss": float(np.mean(running)), "dev_score": score})
        tqdm.write(f"{desc} epoch {epoch + 1}: train loss {np.mean(running):.4f}, dev score {score:.4f}")
        if score > result.best_dev_score:
            result.best_dev_score, result.best_epoch = score, epoch + 1
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            on_best(model)
    model.load_state_dict(best_state)
    model.eval()
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
