"""Per-class F1 and confusion counts (distill/metrics.py), and macro-F1 as their mean."""

import numpy as np
import pytest

from polydistill.metrics import confusion_matrix, macro_f1, per_class_f1


def test_confusion_counts_gold_rows_against_predicted_columns():
    gold = np.array([0, 0, 1, 2, 2, 2])
    predicted = np.array([0, 1, 1, 2, 0, 2])
    assert confusion_matrix(predicted, gold, 4).tolist() == [[1, 1, 0, 0], [0, 1, 0, 0], [1, 0, 2, 0], [0, 0, 0, 0]]


def test_per_class_f1_is_undefined_only_for_a_class_neither_gold_nor_predicted():
    gold = np.array([0, 0, 1, 2, 2, 2])
    predicted = np.array([0, 1, 1, 2, 0, 2])
    scores = per_class_f1(predicted, gold, 4)
    assert scores[:3] == pytest.approx([2 * 1 / (2 + 1 + 1), 2 * 1 / (2 + 1 + 0), 2 * 2 / (4 + 0 + 1)])
    assert scores[3] is None
    assert per_class_f1(np.array([3]), np.array([0]), 4) == [0.0, None, None, 0.0]  # predicted-only class: F1 0


def test_macro_f1_is_the_mean_of_the_defined_per_class_scores():
    rng = np.random.default_rng(0)
    gold, predicted = rng.integers(0, 5, 200), rng.integers(0, 4, 200)
    defined = [s for s in per_class_f1(predicted, gold, 7) if s is not None]
    assert len(defined) == 5 and macro_f1(predicted, gold, 7) == pytest.approx(float(np.mean(defined)))
