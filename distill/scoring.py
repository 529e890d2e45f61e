"""Scoring a run's models: predictions per test sentence (PyTorch and onnxruntime), the per-language score
table, and the export gate (accuracy drop per language, PyTorch − variant, in points).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import numpy as np
import torch

from polydistill.benchmarks.baselines import TFIDF_CLASSIFIER, tfidf_accuracy
from polydistill.config import onnx_model_name
from polydistill.data import (
    IGNORE_INDEX,
    Encoded,
    collate,
    gold_labels,
    length_batches,
    predicted_labels,
)
from polydistill.export.card import teacher_card_source
from polydistill.logits import predict_logits
from polydistill.metrics import accuracy, confusion_matrix, macro_f1, per_class_f1
from polydistill.metrics_schema import SCHEMA_VERSION
from polydistill.models import count_parameters
from polydistill.run_state import TEACHER, Run, file_size_mb


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


METRICS = {
    "sequence": "test accuracy in [0, 1] (one topic label per sentence)",
    "token": "test accuracy in [0, 1] over words (UPOS tag of each word's first sub-token)",
}


def build_metrics(run: Run) -> dict[str, Any]:
    scores = score_table(run)
    params: dict[str, int] = {}
    size_mb: dict[str, float] = {}
    for name, model in run.models.items():
        counted = count_parameters(model)
        params[name] = counted["total"]
        params[f"{name}_non_embedding"] = counted["non_embedding"]
        weights = run.directory / "checkpoints" / name / "model.safetensors"
        if weights.exists():
            size_mb[name] = file_size_mb(weights)
    for variant, directory in run.onnx_dirs.items():
        size_mb[onnx_model_name(variant)] = file_size_mb(directory / "model.onnx")
    metrics = {
        "schema_version": SCHEMA_VERSION,
        "languages": scores["languages"],
        "mean": scores["mean"],
        "macro_f1": scores["macro_f1"],
        "mean_macro_f1": scores["mean_macro_f1"],
        "per_class": class_metrics(run),
        "params": params,
        "size_mb": size_mb,
        "teacher_from_scratch": run.teacher_from_scratch,
        "student_layers": run.student_layers,
        "task": run.task,
        "metric": METRICS[run.task],
        "zero_shot_languages": run.zero_shot_languages,
        "labelled_languages": run.labelled_languages,
        "labelled_train_examples": len(run.joined("train")),
        "test_sentences_per_language": {lang: len(e) for lang, e in run.encoded["test"].items()},
    }
    metrics.update({k: v for k, v in run.metrics.items() if k not in metrics})
    source = teacher_card_source(run.recipe.teacher.model)
    if source:
        metrics["teacher_source"] = {"source": run.recipe.teacher.model, **asdict(source)}
    if run.task == "sequence" and TEACHER in metrics["mean"]:
        metrics["baseline"] = tfidf_baseline(run, metrics)
    if TEACHER in metrics["mean"] and len(metrics["mean"]) > 1:
        metrics["transfer"] = transfer_matrix(metrics)
    return metrics


def class_metrics(run: Run) -> dict[str, Any]:
    """Per-class F1 and the confusion counts of every scored model on the test sets of all languages pooled
    (per language, most topics or tags have too few test examples for a per-class score to mean much):
    which classes a student loses, and what it takes them for, where one accuracy figure cannot say."""
    labels, test = list(run.data.labels), run.encoded["test"]
    gold = np.concatenate([gold_labels(enc) for enc in test.values()])
    f1, confusion = {}, {}
    for model, per_language in run.predictions.items():
        predicted = np.concatenate([per_language[lang] for lang in test])
        f1[model] = dict(zip(labels, per_class_f1(predicted, gold, len(labels)), strict=True))
        confusion[model] = confusion_matrix(predicted, gold, len(labels)).tolist()
    support = np.bincount(gold, minlength=len(labels)).tolist()
    return {"labels": labels, "support": dict(zip(labels, support, strict=True)), "f1": f1, "confusion": confusion}


def tfidf_baseline(run: Run, metrics: dict[str, Any]) -> dict[str, Any]:
    """The baseline a user would try first, on this run's own data: char-n-gram TF-IDF + logistic regression
    trained on the same labelled training sentences as the teacher, scored on the same test sets; and the
    languages where the teacher beats it (a tie is not a win)."""
    train = [run.data.splits["train"][lang] for lang in run.labelled_languages]
    test = {lang: run.data.splits["test"][lang] for lang in metrics["languages"]}
    per_language, _ = tfidf_accuracy(train, test, seed=run.recipe.seed)
    teacher = {lang: scores[TEACHER] for lang, scores in metrics["languages"].items()}
    return {
        "method": f"{TFIDF_CLASSIFIER}, trained on this run's {sum(len(ds) for ds in train)} labelled training "
        "sentences",
        "languages": per_language,
        "mean": float(np.mean(list(per_language.values()))),
        "teacher_beats": [lang for lang, acc in per_language.items() if teacher[lang] > acc + 1e-9],
    }


COLLAPSE_BELOW = 0.9  # a language where a model keeps less than this share of the teacher's accuracy


def transfer_matrix(m: dict[str, Any]) -> dict[str, Any]:
    """Each model's accuracy per language relative to the teacher's in that language, with the languages
    under COLLAPSE_BELOW flagged as collapsed; and the teacher's own transfer: its accuracy per language
    relative to its mean over the labelled (source) languages."""
    languages, models = m["languages"], [x for x in m["mean"] if x != TEACHER]
    teacher = {lang: scores[TEACHER] for lang, scores in languages.items()}
    retention = {
        x: {lang: (s[x] / teacher[lang] if teacher[lang] else None) for lang, s in languages.items()} for x in models
    }
    sources = [lang for lang in m["labelled_languages"] if lang in teacher]
    source_mean = sum(teacher[lang] for lang in sources) / len(sources) if sources else 0.0
    teacher_transfer = {lang: (acc / source_mean if source_mean else None) for lang, acc in teacher.items()}
    return {
        "collapse_below": COLLAPSE_BELOW,
        "source_languages": sources,
        "zero_shot_languages": m["zero_shot_languages"],
        "retention": retention,
        "collapsed": {
            x: [lang for lang, r in per.items() if r is not None and r < COLLAPSE_BELOW] for x, per in retention.items()
        },
        "teacher_vs_source": teacher_transfer,
        "teacher_transfer_collapsed": [
            lang for lang, r in teacher_transfer.items() if lang not in sources and r is not None and r < COLLAPSE_BELOW
        ],
    }
