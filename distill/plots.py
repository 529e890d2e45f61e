"""The plots of a run's report (PNG under plots/), each drawn from the metrics dict alone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import FuncFormatter, NullFormatter

from polydistill.config import is_onnx_model_name
from polydistill.io import save_figure
from polydistill.run_state import TEACHER

matplotlib.use("Agg")  # the plots are files only: no display, whatever backend the machine defaults to

PLOTS = {  # the plots every run can have, by what they show; paths relative to the run directory
    "accuracy": "plots/accuracy_per_language.png",
    "size": "plots/accuracy_vs_size.png",
    "confusion": "plots/confusion_matrix.png",
    "training": "plots/training_curves.png",
}


def plot_transfer(m: dict[str, Any], path: Path) -> Path:
    """Heat map, languages x models, of accuracy relative to the teacher (teacher: to its labelled mean)."""
    t, models, languages = m["transfer"], list(m["mean"]), list(m["languages"])
    ratio = np.array([
        [(t["teacher_vs_source"] if x == TEACHER else t["retention"][x])[lang] or 0.0 for x in models]
        for lang in languages
    ])  # fmt: skip
    # at least 2.8 in high, the colour bar label on two lines: with three languages it ran off the figure
    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(models), max(2.8, 0.9 + 0.32 * len(languages))))
    image = ax.imshow(ratio, cmap="RdYlGn", vmin=0.5, vmax=1.1, aspect="auto")
    for i, lang in enumerate(languages):
        for j, x in enumerate(models):
            mark = " ✗" if x != TEACHER and lang in t["collapsed"][x] else ""
            ax.text(j, i, f"{m['languages'][lang][x]:.2f}{mark}", ha="center", va="center", fontsize=7)
    ax.set_xticks(range(len(models)), models, rotation=20, ha="right", fontsize=8)
    labels = [f"{lang}{'' if lang in t['source_languages'] else ' (0-shot)'}" for lang in languages]
    ax.set_yticks(range(len(languages)), labels, fontsize=7)
    fig.colorbar(image, ax=ax).set_label("share of the teacher\n(teacher: of its labelled mean)", fontsize=8)
    ax.set_title(f"Test accuracy per language; ✗ under {t['collapse_below']:.0%} of the teacher", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path, dpi=110)


def plot_mlm_loss(a: dict[str, Any], path: Path) -> Path:
    epochs = [h["epoch"] for h in a["history"]]
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot(epochs, [h["train_mlm_loss"] for h in a["history"]], marker="o", label="train")
    ax.plot([0, *epochs], [a["dev_mlm_loss_before"], *(h["dev_mlm_loss"] for h in a["history"])], marker="o",
            label="dev")  # fmt: skip
    ax.set_xlabel("epoch")
    ax.set_ylabel("masked-LM loss")
    ax.set_title(f"Language-adaptive pretraining ({a['target']})")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path, dpi=110)


def plot_accuracy(m: dict[str, Any], path: Path) -> Path | None:
    languages = list(m["languages"])
    models = list(m["mean"])
    if not languages or not models:
        return None
    fig, ax = plt.subplots(figsize=(max(6, 0.7 * len(languages)) + 2.2, 3.6))
    width = 0.8 / len(models)
    x = np.arange(len(languages))
    for i, model in enumerate(models):
        ax.bar(
            x + i * width,
            [m["languages"][lang][model] for lang in languages],
            width,
            label=model,
        )
    ax.set_xticks(x + 0.4 - width / 2, languages, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0, 1)
    # beside the axes: inside, it covered the bars of any language scored near 1 (POS tagging)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    ax.set_title("Accuracy per language")
    fig.tight_layout()
    return save_figure(fig, path, dpi=110)


def plot_accuracy_vs_size(m: dict[str, Any], path: Path) -> Path | None:
    """Mean test accuracy against file size, one point per model or export variant with both; each point its
    own colour and marker, named in a legend beside the axes, so variants of near-equal size never overprint
    each other's labels."""
    points = [(x, m["size_mb"][x], m["mean"][x]) for x in m["mean"] if x in m["size_mb"]]
    if not points:
        return None
    markers = "osD^v<>PX*"
    fig, ax = plt.subplots(figsize=(7.5, 3.6))
    for i, (name, size, acc) in enumerate(points):
        mb = f"{size:.1f}" if size >= 10 else f"{size:.3g}"  # tiny runs: 0.066 and 0.074 MB, not 0.1 twice
        # hollow: a student and its trimmed copy often sit on one spot, and both outlines stay visible there
        ax.scatter(size, acc, s=70, marker=markers[i % len(markers)], facecolors="none", edgecolors=f"C{i % 10}",
                   linewidths=1.8, zorder=3, label=f"{name}: {mb} MB, {acc:.3f}")  # fmt: skip
    sizes = [size for _, size, _ in points]
    if max(sizes) / min(sizes) > 20:  # a teacher hundreds of MB beside int8 students of a few
        ax.set_xscale("log")
        ax.set_xlim(min(sizes) / 1.6, max(sizes) * 1.6)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())  # "2×10¹ 3×10¹ ..." labels run into each other
    ax.margins(x=0.12, y=0.15)
    ax.set_xlabel("file size (MB)")
    ax.set_ylabel("mean test accuracy")
    ax.grid(alpha=0.3)
    ax.set_title("Accuracy against size")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
    fig.tight_layout()
    return save_figure(fig, path, dpi=110)


def confusion_models(m: dict[str, Any]) -> list[str]:
    """The teacher and the final PyTorch student (the last scored model that is not an ONNX export): the pair
    whose differences distillation made; the exports' counts stay in metrics.json."""
    torch_models = [x for x in m["mean"] if not is_onnx_model_name(x)]
    students = [x for x in torch_models if x != TEACHER]
    return [x for x in torch_models if x == TEACHER] + students[-1:]


def plot_confusion(m: dict[str, Any], path: Path) -> Path | None:
    """Confusion matrices (rows: gold, columns: predicted) of `confusion_models`, coloured by the share of each
    gold row so small classes read as clearly as large ones, with the counts written in the non-empty cells."""
    if "per_class" not in m or not confusion_models(m):
        return None
    labels, models = m["per_class"]["labels"], confusion_models(m)
    side = 1.2 + 0.36 * len(labels)
    fig, axes = plt.subplots(
        1, len(models), figsize=(side * len(models) + 1.2, side + 0.4), squeeze=False, layout="constrained"
    )
    for ax, model in zip(axes[0], models, strict=True):
        counts = np.asarray(m["per_class"]["confusion"][model])
        shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
        image = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
        for (i, j), n in np.ndenumerate(counts):
            if n:
                ax.text(j, i, str(n), ha="center", va="center", fontsize=6,
                        color="white" if shares[i, j] > 0.6 else "black")  # fmt: skip
        ax.set_xticks(range(len(labels)), labels, rotation=60, ha="right", fontsize=7)
        ax.set_yticks(range(len(labels)), labels, fontsize=7)
        ax.set_xlabel("predicted", fontsize=8)
        ax.set_ylabel("gold", fontsize=8)
        ax.set_title(f"{model} (accuracy {m['mean'][model]:.3f})", fontsize=9)
    fig.colorbar(image, ax=axes[0].tolist(), shrink=0.8, label="share of the gold row")
    return save_figure(fig, path, dpi=110)


def plot_training(training: dict[str, Any], path: Path) -> Path | None:
    """Train loss and dev score per epoch, one row per trained model: each model's losses and dev scores have
    their own scale (the agnostic student's dev score is minus a loss), so they get their own axes."""
    trained = {name: r["history"] for name, r in training.items() if r.get("history")}
    if not trained:
        return None
    fig, axes = plt.subplots(len(trained), 2, figsize=(8, 0.4 + 2.1 * len(trained)), squeeze=False)
    for (loss_ax, dev_ax), (name, history) in zip(axes, trained.items(), strict=True):
        epochs = [h["epoch"] for h in history]
        loss_ax.plot(epochs, [h["train_loss"] for h in history], marker="o", color="C0")
        dev_ax.plot(epochs, [h["dev_score"] for h in history], marker="o", color="C1")
        best = training[name].get("best_epoch")
        if best in epochs:  # ringed, and named beside the model: a legend box would cover a curve somewhere
            dev_ax.scatter([best], [history[epochs.index(best)]["dev_score"]], s=120, facecolors="none",
                           edgecolors="C3", zorder=3, clip_on=False)  # fmt: skip
        loss_ax.set_ylabel(f"{name}\n(kept: epoch {best})" if best in epochs else name, fontsize=9)
        for ax in (loss_ax, dev_ax):
            ax.set_xticks(epochs)
            ax.margins(x=0.08, y=0.2)  # the kept epoch's ring stays inside the axes
            ax.grid(alpha=0.3)
    axes[0][0].set_title("train loss", fontsize=9)
    axes[0][1].set_title("dev score (ring: the epoch kept)", fontsize=9)  # what it is: report.md says
    axes[-1][0].set_xlabel("epoch")
    axes[-1][1].set_xlabel("epoch")
    fig.tight_layout()
    return save_figure(fig, path, dpi=110)


RETRIEVAL_ROWS = {
    "student": "student (distilled)",
    "tfidf": "char-n-gram TF-IDF",
    "teacher": "teacher (English-only)",
    "student_init": "student before distillation",
}


def plot_retrieval(m: dict[str, Any], path: Path) -> Path:
    """Bars per language: retrieval accuracy (mean of both directions) of each row of RETRIEVAL_ROWS."""
    r = m["retrieval"]
    languages = list(r["student"])
    rows = [k for k in RETRIEVAL_ROWS if k in r]
    fig, ax = plt.subplots(figsize=(max(6, 0.7 * len(languages)), 3.6))
    width = 0.8 / len(rows)
    x = np.arange(len(languages))
    for i, key in enumerate(rows):
        values = [(r[key][lang]["src2tgt"] + r[key][lang]["tgt2src"]) / 2 for lang in languages]
        ax.bar(x + i * width, values, width, label=RETRIEVAL_ROWS[key])
    ax.set_xticks(x + 0.4 - width / 2, languages, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("retrieval accuracy (mean of both directions)")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7)
    ax.set_title(f"Translation retrieval against {m['source_language']} (test ids)")
    fig.tight_layout()
    return save_figure(fig, path, dpi=110)
