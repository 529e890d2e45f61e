"""A classifier's logits for every example of a data set, and `fit`'s dev accuracy built on them."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from polydistill.data import Encoded, collate, gold_labels, length_batches, predicted_labels
from polydistill.metrics import accuracy


def dev_accuracy(dev: Encoded, pad_id: int) -> Callable[[torch.nn.Module], float]:
    """`polydistill.train.fit`'s `evaluate` for classifiers: accuracy on `dev` (per sentence, or per scored token)."""
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
