"""metrics.json, report.md and plots of a run directory."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from polydistill.config import is_onnx_model_name, onnx_model_name
from polydistill.io import atomic_write_json, atomic_write_text
from polydistill.plots import (
    PLOTS,
    confusion_models,
    plot_accuracy,
    plot_accuracy_vs_size,
    plot_confusion,
    plot_mlm_loss,
    plot_training,
    plot_transfer,
)
from polydistill.predictions import PREDICTIONS_FILE, write_predictions
from polydistill.run_state import TEACHER, Run
from polydistill.scoring import build_metrics, drop_text


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


DATA_LINES = {
    "sequence": "Data: SIB-200 (Adelani et al. 2023, annotations Apache-2.0) over FLORES-200 (NLLB Team 2022, "
    "CC-BY-SA 4.0).",
    "token": "Data: Universal Dependencies treebanks (de Marneffe et al. 2021; each treebank CC BY-SA 4.0, cite "
    "as its README asks).",
}


def write_report(run: Run) -> dict[str, Any]:
    """Write metrics.json, report.md, predictions.jsonl and the plots of `run`; returns the metrics written."""
    metrics = build_metrics(run)
    plots = run.directory / "plots"
    drawn = [
        plot_accuracy(metrics, run.directory / PLOTS["accuracy"]),
        plot_accuracy_vs_size(metrics, run.directory / PLOTS["size"]),
        plot_confusion(metrics, run.directory / PLOTS["confusion"]),
        plot_training(metrics.get("training", {}), run.directory / PLOTS["training"]),
    ]
    metrics["plots"] = [str(path.relative_to(run.directory)) for path in drawn if path]
    if "transfer" in metrics and metrics["zero_shot_languages"]:
        heat = plot_transfer(metrics, plots / "transfer_matrix.png")
        metrics["transfer"]["plot"] = str(heat.relative_to(run.directory))
    if "adapt" in metrics:
        curve = plot_mlm_loss(metrics["adapt"], plots / "adapt_mlm_loss.png")
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
    shown = " and ".join(confusion_models(m))
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
