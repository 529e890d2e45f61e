"""Scoring a run's models: predictions per test sentence (PyTorch and onnxruntime), the per-language score
table, and the export gate (accuracy drop per language, PyTorch − variant, in points).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from polydistill.data import (
    IGNORE_INDEX,
    Encoded,
    collate,
    gold_labels,
    predicted_labels,
)
from polydistill.metrics import accuracy, macro_f1
from polydistill.run import Run
from polydistill.train import predict_logits


def scored_per_sentence(enc: Encoded) -> list[int]:
    """How many predictions each sentence contributes to `gold_labels(enc)`."""
    if not enc.per_token:
        return [1] * len(enc)
    return [sum(1 for y in row if y != IGNORE_INDEX) for row in enc.labels]


def per_sentence(predicted: np.ndarray, enc: Encoded) -> list[np.ndarray]:
    """`predicted_labels` (or `gold_labels`) output cut into one array per sentence of `enc`."""
    return np.split(predicted, np.cumsum(scored_per_sentence(enc))[:-1])


def drop_text(points: float) -> str:
    """An accuracy drop as the console line and report.md's "drop (points)" column both print it: PyTorch
    accuracy − variant accuracy in points, signed, so +0.5 is a variant half a point worse and -0.5 one better.
    One function, so the two can never print opposite signs for the same number again."""
    return f"{points:+.1f}"


def export_line(variant: str, entry: dict[str, Any]) -> str:
    """The console line of one scored export variant (`entry`: its metrics.json export entry)."""
    worst = entry["worst_language"]
    flag = f"  FLAGGED: {worst} drops {entry['worst_drop_points']:.1f} points" if entry["flagged"] else ""
    return (
        f"{variant}: {entry['size_mb']:.2f} MB, fused Attention {entry['fused_attention'] or 'not optimized'}, "
        f"label agreement {entry['label_agreement']:.4f}, worst language {worst} drop "
        f"{drop_text(entry['worst_drop_points'])} points (PyTorch − variant){flag}"
    )


def gate_variant(
    predicted: dict[str, np.ndarray],
    reference: dict[str, np.ndarray],
    gold: dict[str, np.ndarray],
    max_drop_points: float,
) -> dict[str, Any]:
    """Label agreement of a variant with its reference model, its accuracy drop in every language
    (points, positive = worse), and whether any language dropped by more than `max_drop_points`."""
    per_language = {}
    for lang, labels in gold.items():
        acc, ref = accuracy(predicted[lang], labels), accuracy(reference[lang], labels)
        per_language[lang] = {"accuracy": acc, "pytorch_accuracy": ref, "drop_points": 100 * (ref - acc)}
    worst = max(per_language, key=lambda lang: per_language[lang]["drop_points"])
    agreement = np.concatenate([predicted[lang] == reference[lang] for lang in gold])
    return {
        "label_agreement": float(agreement.mean()),
        "worst_language": worst,
        "worst_drop_points": per_language[worst]["drop_points"],
        "flagged": per_language[worst]["drop_points"] > max_drop_points,
        "languages": per_language,
    }


def evaluate_torch(run: Run, name: str, model: torch.nn.Module, test: dict[str, Encoded], pad_id: int) -> None:
    """Predicted test labels of `model` per language; `test` is encoded with the model's own tokenizer."""
    for lang, enc in test.items():
        run.predictions.setdefault(name, {})[lang] = predicted_labels(predict_logits(model, enc, pad_id), enc)


def onnx_predictions(sess, enc: Encoded, pad_id: int, batch_size: int = 64) -> np.ndarray:
    """Predicted labels of an onnxruntime session, in `gold_labels(enc)`'s order."""
    from polydistill.data import length_batches

    lengths = [len(x) for x in enc.input_ids]
    logits: list[Any] = [None] * len(enc)
    for indices in length_batches(lengths, batch_size, shuffle=False):
        batch = collate(enc, indices, pad_id)
        feed = {"input_ids": batch["input_ids"].numpy(), "attention_mask": batch["attention_mask"].numpy()}
        out = sess.run(None, feed)[0]
        for row, i in enumerate(indices):
            logits[i] = out[row, : lengths[i]] if enc.per_token else out[row]
    return predicted_labels(logits if enc.per_token else np.stack(logits), enc)


def score_table(run: Run) -> dict[str, Any]:
    """Per-language test accuracy and macro-F1 of every evaluated model, and their means."""
    languages: dict[str, dict[str, float]] = {}
    f1: dict[str, dict[str, float]] = {}
    num_labels = len(run.data.labels)
    for lang, enc in run.encoded["test"].items():
        gold = gold_labels(enc)
        languages[lang] = {m: accuracy(p[lang], gold) for m, p in run.predictions.items()}
        f1[lang] = {m: macro_f1(p[lang], gold, num_labels) for m, p in run.predictions.items()}
    models = list(run.predictions)
    mean = {m: float(np.mean([languages[lang][m] for lang in languages])) for m in models}
    mean_f1 = {m: float(np.mean([f1[lang][m] for lang in f1])) for m in models}
    return {"languages": languages, "mean": mean, "macro_f1": f1, "mean_macro_f1": mean_f1}
