"""The report.md sections of a run's results: accuracy per language, against the baseline, cross-lingual transfer,
F1 per class, size and training (`polydistill.report.render_report` puts them in order)."""

from __future__ import annotations

from typing import Any

from polydistill.plots import PLOTS, confusion_models
from polydistill.run_state import TEACHER


def figure_lines(m: dict[str, Any], which: str, alt: str) -> list[str]:
    """The report lines that show plot `which` of PLOTS, when this run drew it."""
    path = PLOTS[which]
    return ["", f"![{alt}]({path})"] if path in m.get("plots", []) else []


def accuracy_section(m: dict[str, Any]) -> list[str]:
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
        lines += ["", under_teacher_line(m["transfer"])]
    return lines + figure_lines(m, "accuracy", "accuracy per language")


def under_teacher_line(t: dict[str, Any]) -> str:
    """The languages where each model keeps under `collapse_below` of the teacher's accuracy, in one line."""
    limit = f"{t['collapse_below']:.0%}"
    flagged = {x: langs for x, langs in t["collapsed"].items() if langs}
    if not flagged:
        return f"No language is under {limit} of the teacher's accuracy in any model."
    return f"Languages under {limit} of the teacher's accuracy: " + "; ".join(
        f"{x}: {', '.join(langs)}" for x, langs in flagged.items()
    ) + "."  # fmt: skip


def per_class_section(m: dict[str, Any]) -> list[str]:
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
    shown = " and ".join(confusion_models(m))
    if PLOTS["confusion"] in m.get("plots", []):
        lines += ["", f"Confusion matrices of the {shown} (all models' counts: `per_class.confusion` in metrics.json)."]
    return lines + figure_lines(m, "confusion", "confusion matrices")


def size_section(m: dict[str, Any]) -> list[str]:
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
    return lines + figure_lines(m, "size", "mean test accuracy against file size")


def training_section(m: dict[str, Any]) -> list[str]:
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
    return lines + figure_lines(m, "training", "training curves")


def baseline_section(m: dict[str, Any]) -> list[str]:
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


def transfer_section(m: dict[str, Any]) -> list[str]:
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
