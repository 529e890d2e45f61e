"""Task metrics on label arrays."""

from __future__ import annotations

import numpy as np


def accuracy(predicted: np.ndarray, gold: np.ndarray) -> float:
    if len(gold) == 0:
        raise ValueError("accuracy of an empty set")
    return float(np.mean(np.asarray(predicted) == np.asarray(gold)))


def macro_f1(predicted: np.ndarray, gold: np.ndarray, num_labels: int) -> float:
    """Unweighted mean of per-class F1 over the classes present in gold or predictions."""
    predicted, gold = np.asarray(predicted), np.asarray(gold)
    scores = []
    for c in range(num_labels):
        tp = np.sum((predicted == c) & (gold == c))
        fp = np.sum((predicted == c) & (gold != c))
        fn = np.sum((predicted != c) & (gold == c))
        if tp + fp + fn == 0:
            continue
        scores.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores))
