"""Task metrics on label arrays."""

from __future__ import annotations

import numpy as np


def accuracy(predicted: np.ndarray, gold: np.ndarray) -> float:
    if len(gold) == 0:
        raise ValueError("accuracy of an empty set")
    return float(np.mean(np.asarray(predicted) == np.asarray(gold)))


def confusion_matrix(predicted: np.ndarray, gold: np.ndarray, num_labels: int) -> np.ndarray:
    """Counts [gold label, predicted label], `num_labels` x `num_labels` (int64)."""
    counts = np.zeros((num_labels, num_labels), dtype=np.int64)
    np.add.at(counts, (np.asarray(gold, dtype=np.int64), np.asarray(predicted, dtype=np.int64)), 1)
    return counts


def per_class_f1(predicted: np.ndarray, gold: np.ndarray, num_labels: int) -> list[float | None]:
    """F1 of each class; None for a class absent from both gold and predictions, whose F1 is undefined
    (0/0) and which must not count as a zero in a mean."""
    counts = confusion_matrix(predicted, gold, num_labels)
    scores: list[float | None] = []
    for c in range(num_labels):
        tp = counts[c, c]
        fp = counts[:, c].sum() - tp
        fn = counts[c, :].sum() - tp
        scores.append(None if tp + fp + fn == 0 else float(2 * tp / (2 * tp + fp + fn)))
    return scores


def macro_f1(predicted: np.ndarray, gold: np.ndarray, num_labels: int) -> float:
    """Unweighted mean of per-class F1 over the classes present in gold or predictions."""
    return float(np.mean([s for s in per_class_f1(predicted, gold, num_labels) if s is not None]))
