"""metrics.json, report.md and plots of a run directory."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from polydistill.config import is_onnx_model_name, onnx_model_name
from polydistill.data import gold_labels
from polydistill.export.card import teacher_card_source
from polydistill.io import atomic_write_json, atomic_write_text, save_figure
from polydistill.metrics import confusion_matrix, per_class_f1
from polydistill.metrics_schema import SCHEMA_VERSION
from polydistill.models import count_parameters
from polydistill.predictions import PREDICTIONS_FILE, write_predictions
from polydistill.run import TEACHER, Run, file_size_mb
from polydistill.scoring import drop_text, score_table


@dataclass(frozen=True)
class Recommendation:
    """The export a run recommends for deployment, with what its report line and console line say about it."""

    name: str  # the variant's one name: its folder under onnx/ and its key in metrics.json
    directory: str  # relative to the run directory
    size_mb: float
    mean_accuracy: float | None
    p50_ms: float | None  # at latency_setup's batch and seq, when stage bench timed it
    label_agreement: float
    gate_points: float


def variant_p50(m: dict[str, Any], name: str) -> float | None:
    """p50 of an export at the bench's fixed sequence length: its latency_ms entry (the headline int8 variant),
    else its own bench row (every other variant is a row under its own name); None when it was not timed."""
    if name in m.get("latency_ms", {}):
        return m["latency_ms"][name]["p50"]
    seq = m.get("latency_setup", {}).get("seq")
    rows = m.get("bench", {}).get("rows", [])
    found = [r["p50_ms"] for r in rows if (r.get("model"), r.get("stage"), r.get("seq")) == (name, "forward", seq)]
    return found[0] if found else None


def recommended_export(m: dict[str, Any]) -> Recommendation | None:
    """The smallest export within the accuracy gate (not flagged), the faster of equal sizes: what report.md and
    the console summary both recommend, chosen here once. None when no variant passed, or none was exported."""
    variants = m.get("export", {}).get("variants", {})
    kept = [Recommendation(
        name=onnx_model_name(variant), directory=entry["directory"], size_mb=entry["size_mb"],
        mean_accuracy=m.get("mean", {}).get(onnx_model_name(variant)), p50_ms=variant_p50(m, onnx_model_name(variant)),
        label_agreement=entry["label_agreement"], gate_points=m["export"].get("max_drop_points"),
    ) for variant, entry in variants.items() if not entry["flagged"]]  # fmt: skip
    return min(kept, key=lambda r: (r.size_mb, math.inf if r.p50_ms is None else r.p50_ms), default=None)


def recommendation_text(m: dict[str, Any]) -> str | None:
    """One sentence for the recommended export (or why there is none); None for a run without stage export."""
    if not m.get("export", {}).get("variants"):
        return None
    best, gate = recommended_export(m), m["export"].get("max_drop_points")
    if best is None:
        return (f"no export kept every language within {gate:g} point(s) of the PyTorch student; ship the PyTorch "
                "student or an fp32 export")  # fmt: skip
    accuracy = "not scored" if best.mean_accuracy is None else f"{best.mean_accuracy:.3f}"
    p50 = "not timed" if best.p50_ms is None else f"{best.p50_ms:.2f} ms"
    return (
        f"{best.name} ({best.directory}): {best.size_mb:.2f} MB, mean accuracy {accuracy}, p50 {p50}, label "
        f"agreement {best.label_agreement:.1%} with the PyTorch student; the smallest export within the "
        f"{gate:g}-point gate"
    )


def summary_lines(metrics: dict[str, Any], directory: Path) -> list[str]:
    """What a run ends with on the console: each model's mean score, size and measured p50 in aligned columns
    (the name column as wide as the longest name), the export to ship (`recommended_export`) and the report."""
    sizes, latency, means = metrics.get("size_mb", {}), metrics.get("latency_ms", {}), metrics.get("mean", {})
    width = max((len(name) for name in means), default=0)
    lines = [f"summary: mean over languages of the {metrics.get('metric', 'test accuracy')}"]
    for name, score in means.items():
        size = f"{sizes[name]:9.2f} MB" if name in sizes else " " * 12
        timed = latency.get("teacher_torch_fp32" if name == TEACHER else name)
        p50 = f"  p50 {timed['p50']:.2f} ms" if timed else ""
        lines.append(f"  {name:<{width}}  {score:.3f}  {size}{p50}".rstrip())
    recommendation = recommendation_text(metrics)
    if recommendation:
        lines.append(f"recommended for deployment: {recommendation}")
    lines.append(f"report: {directory / 'report.md'}")
    return lines


METRICS = {
    "sequence": "test accuracy in [0, 1] (one topic label per sentence)",
    "token": "test accuracy in [0, 1] over words (UPOS tag of each word's first sub-token)",
}
DATA_LINES = {
    "sequence": "Data: SIB-200 (Adelani et al. 2023, annotations Apache-2.0) over FLORES-200 (NLLB Team 2022, "
    "CC-BY-SA 4.0).",
    "token": "Data: Universal Dependencies treebanks (de Marneffe et al. 2021; each treebank CC BY-SA 4.0, cite "
    "as its README asks).",
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
    from polydistill.benchmarks.baselines import TFIDF_CLASSIFIER, tfidf_accuracy

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


PLOTS = {  # the plots every run can have, by what they show; paths relative to the run directory
    "accuracy": "plots/accuracy_per_language.png",
    "size": "plots/accuracy_vs_size.png",
    "confusion": "plots/confusion_matrix.png",
    "training": "plots/training_curves.png",
}


def write_report(run: Run) -> dict[str, Any]:
    """Write metrics.json, report.md, predictions.jsonl and the plots of `run`; returns the metrics written."""
    metrics = build_metrics(run)
    plots = run.directory / "plots"
    drawn = [
        _plot_accuracy(metrics, run.directory / PLOTS["accuracy"]),
        _plot_accuracy_vs_size(metrics, run.directory / PLOTS["size"]),
        _plot_confusion(metrics, run.directory / PLOTS["confusion"]),
        _plot_training(metrics.get("training", {}), run.directory / PLOTS["training"]),
    ]
    metrics["plots"] = [str(path.relative_to(run.directory)) for path in drawn if path]
    if "transfer" in metrics and metrics["zero_shot_languages"]:
        heat = _plot_transfer(metrics, plots / "transfer_matrix.png")
        metrics["transfer"]["plot"] = str(heat.relative_to(run.directory))
    if "adapt" in metrics:
        curve = _plot_mlm_loss(metrics["adapt"], plots / "adapt_mlm_loss.png")
        metrics["adapt"]["plot"] = str(curve.relative_to(run.directory))
    write_predictions(run, run.directory / PREDICTIONS_FILE)
    atomic_write_json(run.directory / "metrics.json", metrics)
    atomic_write_text(run.directory / "report.md", render_report(run.recipe.name, metrics))
    return metrics


def _figure(m: dict[str, Any], which: str, alt: str) -> list[str]:
    """The report lines that show plot `which` of PLOTS, when this run drew it."""
    path = PLOTS[which]
    return ["", f"![{alt}]({path})"] if path in m.get("plots", []) else []


def render_report(name: str, m: dict[str, Any]) -> str:
    """report.md of a distillation run: each section only when the run has what it shows."""
    lines = [f"# polydistill run: {name}", ""]
    recommendation = recommendation_text(m)
    if recommendation:
        lines += [f"**Recommended for deployment:** {recommendation}.", ""]
    if m.get("teacher_from_scratch"):
        lines += [
            "> The teacher is an **XLM-R-architecture model trained from scratch in this run**: its",
            "> SentencePiece-Unigram tokenizer was trained on the recipe's training text and its weights on",
            "> the task itself, because no pretrained XLM-R can be downloaded here. Its scores are not those",
            "> of a pretrained XLM-R; the comparison that matters is student vs. teacher.",
            "",
        ]
    if m.get("teacher_source"):
        t = m["teacher_source"]
        lines += [
            f"> The teacher is **{t['name']}** (`{t['source']}`), fine-tuned in this run. Licence: {t['licence']}.",
            f"> Citation: {t['citation']}",
            "",
        ]
    lines += _accuracy_section(m)
    if "baseline" in m:
        lines += _baseline_section(m)
    if "transfer" in m and m["transfer"]["zero_shot_languages"]:
        lines += _transfer_section(m)
    if "per_class" in m:
        lines += _per_class_section(m)
    lines += _size_section(m)
    if "adapt" in m:
        lines += _adapt_section(m["adapt"])
    if "trim" in m:
        lines += _trim_section(m["trim"])
    if "latency_ms" in m:
        lines += _latency_section(m)
    if "export" in m:
        lines += _export_section(m["export"])
    if m.get("training"):
        lines += _training_section(m)
    env = m.get("environment", {})
    if env:
        lines += ["", "## Environment", "", ", ".join(f"{k}: {v}" for k, v in env.items())]
    if "timings_s" in m:
        lines += ["", "Stage times (s): " + ", ".join(f"{k} {v}" for k, v in m["timings_s"].items())]
    lines += [
        "",
        DATA_LINES[m.get("task", "sequence")],
        "",
    ]
    return "\n".join(lines)


def _accuracy_section(m: dict[str, Any]) -> list[str]:
    """Accuracy and macro-F1 per language and model, the retention, and the languages under COLLAPSE_BELOW of
    the teacher (in every run: a language a student loses matters with or without zero-shot languages)."""
    models = list(m["mean"])
    lines = ["## Test accuracy per language", "", f"Metric: {m['metric']}."]
    if m.get("zero_shot_languages"):
        lines.append(f"Zero-shot (no training data in this language): {', '.join(m['zero_shot_languages'])}.")
    lines.append("")
    header = "| language | " + " | ".join(f"{x} acc" for x in models)
    header += " | " + " | ".join(f"{x} macro-F1" for x in models) + " |"
    lines += [header, "|---" * (1 + 2 * len(models)) + "|"]
    for lang, scores in m["languages"].items():
        f1 = m["macro_f1"][lang]
        lines.append(
            f"| {lang} | " + " | ".join(f"{scores[x]:.3f}" for x in models)
            + " | " + " | ".join(f"{f1[x]:.3f}" for x in models) + " |"
        )  # fmt: skip
    lines.append(
        "| **mean** | " + " | ".join(f"**{m['mean'][x]:.3f}**" for x in models)
        + " | " + " | ".join(f"**{m['mean_macro_f1'][x]:.3f}**" for x in models) + " |"
    )  # fmt: skip
    if m["mean"].get(TEACHER):  # absent, or 0 (a tiny teacher that got every test sentence wrong): no ratio
        lines += ["", "Retention (mean accuracy relative to the teacher): " + ", ".join(
            f"{x} {m['mean'][x] / m['mean'][TEACHER]:.1%}" for x in models if x != TEACHER
        )]  # fmt: skip
    if "transfer" in m:
        lines += ["", _under_teacher_line(m["transfer"])]
    return lines + _figure(m, "accuracy", "accuracy per language")


def _under_teacher_line(t: dict[str, Any]) -> str:
    """The languages where each model keeps under `collapse_below` of the teacher's accuracy, in one line."""
    limit = f"{t['collapse_below']:.0%}"
    flagged = {x: langs for x, langs in t["collapsed"].items() if langs}
    if not flagged:
        return f"No language is under {limit} of the teacher's accuracy in any model."
    return f"Languages under {limit} of the teacher's accuracy: " + "; ".join(
        f"{x}: {', '.join(langs)}" for x, langs in flagged.items()
    ) + "."  # fmt: skip


def _per_class_section(m: dict[str, Any]) -> list[str]:
    p = m["per_class"]
    models = list(m["mean"])
    kind = "tag" if m.get("task") == "token" else "topic"
    unit = "scored words" if m.get("task") == "token" else "test sentences"
    lines = [
        "",
        f"## F1 per {kind}",
        "",
        f"Every language's test set pooled; support = {unit} of that {kind}; – = the {kind} is neither in the "
        "gold labels nor predicted, so its F1 is undefined.",
        "",
        f"| {kind} | support | " + " | ".join(models) + " |",
        "|---" * (2 + len(models)) + "|",
    ]
    for label in p["labels"]:
        cells = ["–" if p["f1"][x][label] is None else f"{p['f1'][x][label]:.3f}" for x in models]
        lines.append(f"| {label} | {p['support'][label]:,} | " + " | ".join(cells) + " |")
    shown = " and ".join(_confusion_models(m))
    if PLOTS["confusion"] in m.get("plots", []):
        lines += ["", f"Confusion matrices of the {shown} (all models' counts: `per_class.confusion` in metrics.json)."]
    return lines + _figure(m, "confusion", "confusion matrices")


def _size_section(m: dict[str, Any]) -> list[str]:
    lines = ["", "## Size", "", "| model | parameters | outside embeddings | file size (MB) |", "|---|---|---|---|"]
    params, size = m["params"], m["size_mb"]
    models = [key for key in params if not key.endswith("_non_embedding")]
    for key in models:
        outside = params[f"{key}_non_embedding"] / 1e6
        lines.append(f"| {key} | {params[key] / 1e6:.2f}M | {outside:.2f}M | {size.get(key, float('nan')):.2f} |")
    source = m.get("export", {}).get("exported_from")
    for key, value in size.items():
        if key not in models:  # an ONNX export: the parameters of the model it was exported from
            if source in params:
                outside = params[f"{source}_non_embedding"] / 1e6
                lines.append(f"| {key} | {params[source] / 1e6:.2f}M (as {source}) | {outside:.2f}M | {value:.2f} |")
            else:  # a run written before metrics.json recorded the source
                lines.append(f"| {key} | | | {value:.2f} |")
    return lines + _figure(m, "size", "mean test accuracy against file size")


def _training_section(m: dict[str, Any]) -> list[str]:
    lines = [
        "",
        "## Training",
        "",
        "Dev score: accuracy on the dev split; for the task-agnostic student (no labels) minus its dev loss.",
        "",
        "| model | epoch | train loss | dev score |",
        "|---|---|---|---|",
    ]
    for key, result in m["training"].items():
        for h in result["history"]:
            lines.append(f"| {key} | {h['epoch']} | {h['train_loss']:.4f} | {h['dev_score']:.4f} |")
    skipped = {key: r.get("skipped_batches", 0) for key, r in m["training"].items()}
    if any(skipped.values()):
        lines += ["", "Batches skipped for a NaN/inf loss or gradient (`train.skip_nonfinite`): " + ", ".join(
            f"{key} {n}" for key, n in skipped.items() if n) + "."]  # fmt: skip
    return lines + _figure(m, "training", "training curves")


def _baseline_section(m: dict[str, Any]) -> list[str]:
    b, languages = m["baseline"], m["languages"]
    lines = [
        "", "## Against the TF-IDF baseline", "", f"Baseline: {b['method']}; same test sets.", "",
        f"**The teacher beats it in {len(b['teacher_beats'])} of {len(languages)} languages**; mean "
        f"{m['mean'][TEACHER]:.3f} against {b['mean']:.3f}.", "",
        "| language | TF-IDF | teacher | " + " | ".join(x for x in m["mean"] if x != TEACHER) + " |",
        "|---" * (2 + len(m["mean"])) + "|",
    ]  # fmt: skip
    for lang, scores in languages.items():
        others = " | ".join(f"{scores[x]:.3f}" for x in m["mean"] if x != TEACHER)
        mark = "" if lang in b["teacher_beats"] else " (not beaten)"
        lines.append(f"| {lang}{mark} | {b['languages'][lang]:.3f} | {scores[TEACHER]:.3f} | {others} |")
    return lines


def _transfer_section(m: dict[str, Any]) -> list[str]:
    """The languages x models transfer matrix of a run with zero-shot languages (the collapse flags of every
    run are under the accuracy table)."""
    t = m["transfer"]
    limit = f"{t['collapse_below']:.0%}"
    lines = [
        "",
        "## Cross-lingual transfer",
        "",
        f"Labelled training data: {', '.join(t['source_languages'])}. Every other language is **zero-shot**: "
        "its labels were never seen (its unlabelled train text may have trained the tokenizer). Each cell: "
        f"test accuracy (share of the teacher's accuracy in that language); **COLLAPSED** marks a model "
        f"under {limit} of the teacher there. Teacher column: accuracy (share of its mean over the labelled "
        "languages).",
        "",
    ]
    models = list(m["mean"])
    lines += ["| language | " + " | ".join(models) + " |", "|---" * (1 + len(models)) + "|"]
    for lang, scores in m["languages"].items():
        cells = []
        for x in models:
            ratio = t["teacher_vs_source"][lang] if x == TEACHER else t["retention"][x][lang]
            text = f"{scores[x]:.3f} ({ratio:.1%})" if ratio is not None else f"{scores[x]:.3f}"
            if x != TEACHER and lang in t["collapsed"][x]:
                text += " **COLLAPSED**"
            cells.append(text)
        shot = " (zero-shot)" if lang in t["zero_shot_languages"] else ""
        lines.append(f"| {lang}{shot} | " + " | ".join(cells) + " |")
    if t["teacher_transfer_collapsed"]:
        lines += ["", f"The teacher itself keeps under {limit} of its labelled-language accuracy in: "
                  + ", ".join(t["teacher_transfer_collapsed"]) + "."]  # fmt: skip
    if t.get("plot"):
        lines += ["", f"![transfer matrix]({t['plot']})"]
    return lines


def _plot_transfer(m: dict[str, Any], path: Path) -> Path:
    """Heat map, languages x models, of accuracy relative to the teacher (teacher: to its labelled mean)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

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


def _adapt_section(a: dict[str, Any]) -> list[str]:
    sources = (["the recipe languages' training text"] if a["train_text"] == "train" else []) + [
        f"`{Path(p).name}`" for p in a["corpus_files"]
    ]
    lines = [
        "",
        "## Language-adaptive pretraining",
        "",
        f"Continued masked-LM training of the {a['target']}'s encoder on {a['sentences']:,} sentences "
        f"({', '.join(sources)}; {a['mask_prob']:.0%} of tokens masked, 80/10/10) before it "
        f"{'was fine-tuned on the task' if a['target'] == 'teacher' else 'was distilled'}. Dev MLM loss on "
        f"{a['dev_sentences']:,} dev sentences, the same masks every epoch; the best epoch ({a['best_epoch']}) was "
        f"kept. Checkpoint {a['checkpoint']} (masked-LM model + tokenizer).",
        "",
        "| epoch | train MLM loss | dev MLM loss |",
        "|---|---|---|",
        f"| 0 (before) | – | {a['dev_mlm_loss_before']:.4f} |",
    ]
    for h in a["history"]:
        lines.append(f"| {h['epoch']} | {h['train_mlm_loss']:.4f} | {h['dev_mlm_loss']:.4f} |")
    if a.get("plot"):
        lines += ["", f"![masked-LM loss]({a['plot']})"]
    return lines


def _plot_mlm_loss(a: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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


def _trim_section(t: dict[str, Any]) -> list[str]:
    cap = f"at most {t['top_k']:,} ids" if t["top_k"] is not None else "no cap on the count"
    share_before, share_after = t["embedding_share_before"], t["embedding_share_after"]
    lines = [
        "",
        "## Vocabulary trimming",
        "",
        f"The {t['untrimmed']}'s vocabulary ({t['tokenizer']}) cut to the pieces its tokenizer produces on the "
        f"recipe languages' training text ({t['counted_sentences']:,} sentences, {t['counted_tokens']:,} tokens; "
        f"pieces seen at least {t['min_freq']} time(s), {cap}; special tokens always kept, ids in their original "
        f"order). Checkpoint {t['checkpoint']}, with its own tokenizer; the teacher keeps its own."
        + (
            " Trimmed **before distillation**: the student learned on the pieces it keeps, the teacher's outputs "
            "paired with it sentence by sentence."
            if t.get("before_distill")
            else ""
        ),
        "",
        f"- pieces: {t['vocab_before']:,} → {t['vocab_after']:,} ({t['vocab_after'] / t['vocab_before']:.1%})",
        f"- parameters: {t['params_before']:,} → {t['params_after']:,} ({t['params_after'] / t['params_before']:.1%})",
        f"- word embedding: {t['embedding_params_before']:,} ({share_before:.1%} of the model) → "
        f"{t['embedding_params_after']:,} ({share_after:.1%})",
        "",
    ]
    if t.get("before_distill"):  # no untrimmed student was scored: only the coverage is meaningful
        lines += [
            "Coverage: share of sentences the trimmed tokenizer splits into the same pieces as the teacher's.",
            "",
            "| language | dev coverage | test sentences tokenised as before |",
            "|---|---|---|",
        ]
        for lang, identical in t["test_identical"].items():
            lines.append(f"| {lang} | {t['dev_coverage'].get(lang, 0.0):.1%} | {identical:.1%} |")
        return lines
    lines += [
        "Coverage: share of sentences the trimmed tokenizer splits into the same pieces as before; their logits are "
        "unchanged, so the trimmed student should give them the same labels as the untrimmed one.",
        "",
        "| language | dev coverage | test sentences tokenised as before | same label as before on those |",
        "|---|---|---|---|",
    ]

    def pct(value: float | None) -> str:
        return "–" if value is None else f"{value:.1%}"

    for lang, identical in t["test_identical"].items():
        dev, agree = t["dev_coverage"].get(lang), t["test_identical_agreement"].get(lang)
        lines.append(f"| {lang} | {pct(dev)} | {pct(identical)} | {pct(agree)} |")
    return lines


def _export_section(export: dict[str, Any]) -> list[str]:
    limit = export["max_drop_points"]
    lines = [
        "",
        "## Exported variants",
        "",
        "Each is its own folder with a model card; fp32 parity gate: max |logit diff| "
        f"≤ {export['parity_tolerance']:g} on {export['parity_sentences']} dev sentences. Agreement = same label as "
        "the PyTorch student on every test "
        f"sentence; drop = PyTorch accuracy − variant accuracy, in points; a variant losing more than {limit:g} "
        "point(s) in any language is flagged.",
        "",
        "| variant | folder | model.onnx MB | fused Attention | fp32 parity | label agreement | worst language | "
        "drop (points) | gate |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for variant, v in export["variants"].items():
        fused = f"{v['fused_attention']} layers" if v["fused_attention"] else "not optimized"
        gate = f"**FLAGGED** (> {limit:g})" if v["flagged"] else "ok"
        lines.append(
            f"| {variant} | {v['directory']} | {v['size_mb']:.2f} | {fused} | {v['fp32_max_abs_diff']:.1e} "
            f"| {v['label_agreement']:.4f} | {v['worst_language']} | {drop_text(v['worst_drop_points'])} | {gate} |"
        )
    return lines


def _latency_section(m: dict[str, Any]) -> list[str]:
    setup = m["latency_setup"]
    lines = [
        "",
        f"## CPU latency (batch {setup['batch']}, {setup['threads']} threads, all variants interleaved after "
        f"{setup['warmup']} warm-up runs each)",
        "",
    ]
    lat = m["latency_ms"]
    student = next((name for name in lat if is_onnx_model_name(name)), None)  # the headline int8 variant
    if "teacher_torch_fp32" in lat and student:
        t, s = lat["teacher_torch_fp32"], lat[student]
        lines += [
            f"At sequence {setup['seq']}: teacher PyTorch fp32 p50 {t['p50']:.2f} ms (p90 {t['p90']:.2f}, "
            f"{t['runs']} runs), {student} (ONNX) p50 {s['p50']:.2f} ms (p90 {s['p90']:.2f}, {s['runs']} runs): "
            f"**{t['p50'] / s['p50']:.1f}× lower**.",
            "",
        ]
    bench = m.get("bench", {})
    rows = [r for r in bench.get("rows", []) if r.get("stage") == "forward"]
    if rows:
        lines += [
            "| model | backend | precision | seq | p50 ms | p90 ms | runs | settled | seq/s | efficiency "
            "| accuracy | MB |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in rows:
            seq = r["seq"] if r.get("seq") is not None else "length mix"
            eff = f"{r['efficiency']:.1%}" if r.get("efficiency") is not None else "–"
            acc = f"{r['accuracy']:.3f}" if r.get("accuracy") is not None else "–"
            size = f"{r['size_mb']:.2f}" if r.get("size_mb") is not None else "–"
            lines.append(
                f"| {r['model']} | {r['backend']} | {r['precision']} | {seq} | {r['p50_ms']:.2f} | {r['p90_ms']:.2f} "
                f"| {r['runs']} | {'yes' if r['settled'] else 'no'} | {r['throughput']:.1f} | {eff} | {acc} | {size} |"
            )
        tokenize = [r for r in bench.get("rows", []) if r.get("stage") == "tokenize"]
        if tokenize:  # one row per tokenizer: the teacher's, and the student's own once its vocabulary is trimmed
            timings = ", ".join(f"{r['model']} p50 {r['p50_ms']:.2f} ms per batch of {r['batch']}" for r in tokenize)
            lines.append(f"\nTokenisation (timed apart, not included above): {timings}.")
        lines += [
            "",
            f"Full results: [{bench['markdown']}]({bench['markdown']}) ([JSON]({bench['results']})); efficiency = "
            "model FLOPs / p50 / this machine's measured matmul peak of that precision.",
        ]
    if bench.get("pareto"):
        lines += ["", f"![accuracy vs latency]({bench['pareto']})"]
    return lines


def _plot_accuracy(m: dict[str, Any], path: Path) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

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


def _pyplot() -> Any:
    """matplotlib.pyplot on the file-only Agg backend (imported here: only reporting needs matplotlib)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _plot_accuracy_vs_size(m: dict[str, Any], path: Path) -> Path | None:
    """Mean test accuracy against file size, one point per model or export variant with both; each point its
    own colour and marker, named in a legend beside the axes, so variants of near-equal size never overprint
    each other's labels."""
    points = [(x, m["size_mb"][x], m["mean"][x]) for x in m["mean"] if x in m["size_mb"]]
    if not points:
        return None
    plt = _pyplot()
    markers = "osD^v<>PX*"
    fig, ax = plt.subplots(figsize=(7.5, 3.6))
    for i, (name, size, acc) in enumerate(points):
        mb = f"{size:.1f}" if size >= 10 else f"{size:.3g}"  # tiny runs: 0.066 and 0.074 MB, not 0.1 twice
        # hollow: a student and its trimmed copy often sit on one spot, and both outlines stay visible there
        ax.scatter(size, acc, s=70, marker=markers[i % len(markers)], facecolors="none", edgecolors=f"C{i % 10}",
                   linewidths=1.8, zorder=3, label=f"{name}: {mb} MB, {acc:.3f}")  # fmt: skip
    sizes = [size for _, size, _ in points]
    if max(sizes) / min(sizes) > 20:  # a teacher hundreds of MB beside int8 students of a few
        from matplotlib.ticker import FuncFormatter, NullFormatter

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


def _confusion_models(m: dict[str, Any]) -> list[str]:
    """The teacher and the final PyTorch student (the last scored model that is not an ONNX export): the pair
    whose differences distillation made; the exports' counts stay in metrics.json."""
    torch_models = [x for x in m["mean"] if not is_onnx_model_name(x)]
    students = [x for x in torch_models if x != TEACHER]
    return [x for x in torch_models if x == TEACHER] + students[-1:]


def _plot_confusion(m: dict[str, Any], path: Path) -> Path | None:
    """Confusion matrices (rows: gold, columns: predicted) of `_confusion_models`, coloured by the share of each
    gold row so small classes read as clearly as large ones, with the counts written in the non-empty cells."""
    if "per_class" not in m or not _confusion_models(m):
        return None
    plt = _pyplot()
    labels, models = m["per_class"]["labels"], _confusion_models(m)
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


def _plot_training(training: dict[str, Any], path: Path) -> Path | None:
    """Train loss and dev score per epoch, one row per trained model: each model's losses and dev scores have
    their own scale (the agnostic student's dev score is minus a loss), so they get their own axes."""
    trained = {name: r["history"] for name, r in training.items() if r.get("history")}
    if not trained:
        return None
    plt = _pyplot()
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


# ----------------------------------------------------------------------------------------------
# embedding-kd runs (distill.embed)

RETRIEVAL_ROWS = {
    "student": "student (distilled)",
    "tfidf": "char-n-gram TF-IDF",
    "teacher": "teacher (English-only)",
    "student_init": "student before distillation",
}


def render_embedding_report(name: str, m: dict[str, Any]) -> str:
    """report.md of an embedding-kd run: retrieval per language against the baselines, probes, training."""
    src, r = m["source_language"], m["retrieval"]
    languages = list(r["student"])
    s = m["student"]
    lines = [
        f"# polydistill run: {name} (multilingual sentence-embedding distillation)",
        "",
        f"Teacher: `{m['teacher']}` ({m['teacher_params'] / 1e6:.2f}M parameters), which embeds each {src} sentence. "
        f"Student: an XLM-R-architecture model with the teacher's layers {s['layers'] or 'all'} under a "
        f"{s['vocab_size']}-piece {'case-folded ' if s.get('lowercase') else ''}Unigram vocabulary trained on "
        "every language's train text "
        f"({s['transfer']['from_teacher']} pieces initialised from the teacher's embeddings, {s['transfer']['random']} "
        f"at random; {s['params'] / 1e6:.2f}M parameters). It learnt to embed each {src} train sentence and its "
        f"translations to the teacher's embedding of the {src} sentence (MSE; Reimers & Gurevych 2020): "
        f"{m['pairs']['train']} train ids; the best epoch by dev retrieval ({m['pairs']['dev']} dev ids).",
        "",
        "## Retrieval accuracy on the test ids",
        "",
        f"Each of the {m['pairs']['test']} test sentences of one side retrieves its nearest (cosine) sentence among "
        f"the other side's {m['pairs']['test']}; accuracy is the share that finds its translation (chance "
        f"{1 / m['pairs']['test']:.3f}). `{src[:3]}→xx` queries with {src}, `xx→{src[:3]}` with the other language.",
        "",
        f"**The student beats the TF-IDF baseline on {m['beats_tfidf']['count']} of {len(languages)} languages** "
        f"({m['beats_tfidf']['rule']}){_ties(m['beats_tfidf'].get('ties', []))}.",
        "",
    ]
    rows = [k for k in RETRIEVAL_ROWS if k in r]
    lines.append("| language | " + " | ".join(f"{RETRIEVAL_ROWS[k]} {src[:3]}→xx / xx→{src[:3]}" for k in rows) + " |")
    lines.append("|---" * (1 + len(rows)) + "|")

    def cell(scores: dict[str, float], bold: bool = False) -> str:
        text = f"{scores['src2tgt']:.3f} / {scores['tgt2src']:.3f}"
        return f"**{text}**" if bold else text

    wins = set(m["beats_tfidf"]["languages"])
    for lang in languages:
        lines.append(
            f"| {lang} | " + " | ".join(cell(r[k][lang], k == "student" and lang in wins) for k in rows) + " |"
        )
    means = {
        k: {d: sum(r[k][lang][d] for lang in languages) / len(languages) for d in ("src2tgt", "tgt2src")} for k in rows
    }
    lines.append("| **mean** | " + " | ".join(cell(means[k]) for k in rows) + " |")
    p = m["probe"]
    lines += [
        "",
        "## Topic accuracy of a linear probe on the embeddings",
        "",
        "Logistic regression on L2-normalised sentence embeddings, test ids. `all languages`: trained on every "
        f"language's train sentences; `{src} only`: trained on the {src} train sentences, so every other column is "
        f"zero-shot transfer. The teacher's own {src} probe scores {p['teacher_source'][src]:.3f}.",
        "",
        f"| language | all languages | {src} only |",
        "|---|---|---|",
    ]
    for lang in p["all_languages"]:
        lines.append(f"| {lang} | {p['all_languages'][lang]:.3f} | {p['source_only'][lang]:.3f} |")
    mean_all = sum(p["all_languages"].values()) / len(p["all_languages"])
    mean_src = sum(p["source_only"].values()) / len(p["source_only"])
    lines += [f"| **mean** | **{mean_all:.3f}** | **{mean_src:.3f}** |", ""]
    lines += ["## Training", "", "Dev score: mean retrieval accuracy over languages and both directions (dev ids).", ""]
    lines += ["| epoch | train MSE | dev score |", "|---|---|---|"]
    for h in m["training"]["history"]:
        lines.append(f"| {h['epoch']} | {h['train_loss']:.5f} | {h['dev_score']:.4f} |")
    lines += ["", f"Best epoch: {m['training']['best_epoch']}.", "", "![retrieval](retrieval.png)", ""]
    env = m.get("environment", {})
    if env:
        lines += ["## Environment", "", ", ".join(f"{k}: {v}" for k, v in env.items()), ""]
    lines += [f"Total time: {m['timings_s']['total']} s.", "", DATA_LINES["sequence"], ""]
    return "\n".join(lines)


def plot_retrieval(m: dict[str, Any], path: Path) -> Path:
    """Bars per language: retrieval accuracy (mean of both directions) of each row of RETRIEVAL_ROWS."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

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


def _ties(languages: list[str]) -> str:
    return f"; tied in {', '.join(languages)}" if languages else ""
