"""One training loop for fine-tuning teachers and distilling students, read top to bottom."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from distill.config import TrainConfig
from distill.data import Encoded, collate, iterate_batches, length_batches
from distill.metrics import accuracy

# (model, batch) -> (loss to minimise, {term name: value} for the progress bar and the report)
StepLoss = Callable[[torch.nn.Module, dict[str, torch.Tensor]], tuple[torch.Tensor, dict[str, float]]]


@dataclass
class FitResult:
    best_dev_accuracy: float
    best_epoch: int
    history: list[dict[str, float]] = field(default_factory=list)


def fit(
    model: torch.nn.Module,
    train: Encoded,
    dev: Encoded,
    step_loss: StepLoss,
    cfg: TrainConfig,
    *,
    pad_id: int,
    seed: int,
    on_best: Callable[[torch.nn.Module], None],
    desc: str,
) -> FitResult:
    """Train for `cfg.epochs`, evaluate on `dev` after each epoch, keep the best weights.

    `on_best` is called (to write a checkpoint) whenever dev accuracy improves; at the end the
    model holds the best epoch's weights, not the last one's.
    """
    torch.manual_seed(seed)
    steps_per_epoch = math.ceil(len(train) / cfg.batch_size)
    total_steps = steps_per_epoch * cfg.epochs
    decay, no_decay = [], []
    for param in model.parameters():
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

    result = FitResult(best_dev_accuracy=-1.0, best_epoch=-1)
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
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
            optimizer.step()
            scheduler.step()
            running.append(float(loss.detach()))
            bar.set_postfix(loss=f"{np.mean(running[-20:]):.3f}")
        dev_acc = accuracy(predict_logits(model, dev, pad_id).argmax(-1), np.array(dev.labels))
        result.history.append({"epoch": epoch + 1, "train_loss": float(np.mean(running)), "dev_accuracy": dev_acc})
        tqdm.write(f"{desc} epoch {epoch + 1}: train loss {np.mean(running):.4f}, dev accuracy {dev_acc:.4f}")
        if dev_acc > result.best_dev_accuracy:
            result.best_dev_accuracy, result.best_epoch = dev_acc, epoch + 1
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            on_best(model)
    model.load_state_dict(best_state)
    model.eval()
    return result


@torch.inference_mode()
def predict_logits(model: torch.nn.Module, data: Encoded, pad_id: int, batch_size: int = 64) -> np.ndarray:
    """Logits for every example of `data`, in its original order."""
    was_training = model.training
    model.eval()
    out = np.zeros((len(data), model.config.num_labels), dtype=np.float32)
    lengths = [len(x) for x in data.input_ids]
    for indices in length_batches(lengths, batch_size, shuffle=False):
        batch = collate(data, indices, pad_id)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        out[indices] = logits.float().numpy()
    model.train(was_training)
    return out
