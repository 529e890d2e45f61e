"""metrics.json, report.md and plots of a run directory."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from distill.io import atomic_write_json, atomic_write_text, save_figure
from distill.models import count_parameters
from distill.pipeline import (
    STUDENT,
    STUDENT_PRUNED,
    STUDENT_TRIMMED,
    TEACHER,
    Run,
    file_size_mb,
    onnx_model_name,
    score_table,
    teacher_card_source,
)

MODEL_TITLES = {
    TEACHER: "teacher",
    STUDENT: "student",
    STUDENT_PRUNED: "pruned student",
    STUDENT_TRIMMED: "trimmed student",
}


def title(name: str) -> str:
    """ "student_onnx_int8-static" -> "student ONNX int8-static"; the fixed names from MODEL_TITLES."""
    prefix = onnx_model_name("")
    return f"student ONNX {name[len(prefix) :]}" if name.startswith(prefix) else MODEL_TITLES.get(name, name)


def summary_lines(metrics: dict[str, Any], directory: Path) -> list[str]:
    """What a run ends with on the console: each model's mean score, size and measured p50, the variant to
    ship (the smallest export within the recipe's accuracy gate) and where the report is."""
    sizes, latency = metrics.get("size_mb", {}), metrics.get("latency_ms", {})
    latency_of = {"teacher": "teacher_torch_fp32", **{name: name for name in latency if name.startswith("student")}}
    lines = [f"summary: mean over languages of the {metrics.get('metric', 'test accuracy')}"]
    for name, score in metrics.get("mean", {}).items():
        parts = [f"  {title(name):<28} {score:.3f}"]
        if name in sizes:
            parts.append(f"{sizes[name]:8.1f} MB")
        timed = latency.get(latency_of.get(name, ""))
        if timed:
            parts.append(f"p50 {timed['p50']:.2f} ms")
        lines.append("  ".join(parts))
    variants = metrics.get("export", {}).get("variants", {})
    if variants:
        gate = metrics["export"].get("max_drop_points")
        kept = {v: e for v, e in variants.items() if not e["flagged"]}
        if kept:
            best = min(kept, key=lambda v: kept[v]["size_mb"])
            name = onnx_model_name(best)
            lines.append(
                f"recommended for deployment: {kept[best]['directory']} ({title(name)}: "
                f"{metrics['mean'].get(name, float('nan')):.3f}, {kept[best]['size_mb']:.1f} MB, label agreement "
                f"{kept[best]['label_agreement']:.1%}), the smallest export within the {gate}-point gate"
            )
        else:
            lines.append(f"recommended for deployment: no export kept every language within {gate} points; "
                         "ship the PyTorch student or an fp32 export")  # fmt: skip
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
        "languages": scores["languages"],
        "mean": scores["mean"],
        "macro_f1": scores["macro_f1"],
        "mean_macro_f1": scores["mean_macro_f1"],
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


def tfidf_baseline(run: Run, metrics: dict[str, Any]) -> dict[str, Any]:
    """The baseline a user would try first, on this run's own data: char-n-gram TF-IDF + logistic regression
    trained on the same labelled training sentences as the teacher, scored on the same test sets; and the
    languages where the teacher beats it (a tie is not a win)."""
    from benchmarks.baselines import TFIDF_CLASSIFIER, tfidf_accuracy

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


def write_report(run: Run) -> dict[str, Any]:
    """Write metrics.json, report.md and the plots of `run`; returns the metrics written."""
    metrics = build_metrics(run)
    plots = run.directory / "plots"
    plot_path = _plot_accuracy(metrics, plots / "accuracy_per_language.png")
    metrics["plots"] = [str(plot_path.relative_to(run.directory))] if plot_path else []
    if "transfer" in metrics and metrics["zero_shot_languages"]:
        heat = _plot_transfer(metrics, plots / "transfer_matrix.png")
        metrics["transfer"]["plot"] = str(heat.relative_to(run.directory))
    if "adapt" in metrics:
        curve = _plot_mlm_loss(metrics["adapt"], plots / "adapt_mlm_loss.png")
        metrics["adapt"]["plot"] = str(curve.relative_to(run.directory))
    atomic_write_json(run.directory / "metrics.json", metrics)
    atomic_write_text(run.directory / "report.md", render_report(run.recipe.name, metrics))
    return metrics


def render_report(name: str, m: dict[str, Any]) -> str:
    models = list(m["mean"])
    lines = [f"# polydistill run: {name}", ""]
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
    lines += ["## Test accuracy per language", "", f"Metric: {m['metric']}."]
    if m.get("zero_shot_languages"):
        lines.append(f"Zero-shot (no training data in this language): {', '.join(m['zero_shot_languages'])}.")
    lines.append("")
    header = "| language | " + " | ".join(f"{title(x)} acc" for x in models)
    header += " | " + " | ".join(f"{title(x)} macro-F1" for x in models) + " |"
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
            f"{title(x)} {m['mean'][x] / m['mean'][TEACHER]:.1%}" for x in models if x != TEACHER
        )]  # fmt: skip
    if "baseline" in m:
        lines += _baseline_section(m)
    if "transfer" in m:
        lines += _transfer_section(m)
    lines += ["", "## Size", "", "| model | parameters | outside embeddings | file size (MB) |", "|---|---|---|---|"]
    params, size = m["params"], m["size_mb"]
    models = [key for key in params if not key.endswith("_non_embedding")]
    for key in models:
        if key in params:
            outside = params[f"{key}_non_embedding"] / 1e6
            lines.append(f"| {key} | {params[key] / 1e6:.2f}M | {outside:.2f}M | {size.get(key, float('nan')):.2f} |")
    for key, value in size.items():
        if key not in models:
            lines.append(f"| {key} | | | {value:.2f} |")
    if "adapt" in m:
        lines += _adapt_section(m["adapt"])
    if "trim" in m:
        lines += _trim_section(m["trim"])
    if "latency_ms" in m:
        lines += _latency_section(m)
    if "export" in m:
        lines += _export_section(m["export"])
    if "training" in m:
        lines += [
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
    if m.get("plots"):
        lines += ["", *[f"![{Path(p).stem}]({p})" for p in m["plots"]]]
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


def _baseline_section(m: dict[str, Any]) -> list[str]:
    b, languages = m["baseline"], m["languages"]
    lines = [
        "", "## Against the TF-IDF baseline", "", f"Baseline: {b['method']}; same test sets.", "",
        f"**The teacher beats it in {len(b['teacher_beats'])} of {len(languages)} languages**; mean "
        f"{m['mean'][TEACHER]:.3f} against {b['mean']:.3f}.", "",
        "| language | TF-IDF | teacher | " + " | ".join(title(x) for x in m["mean"] if x != TEACHER) + " |",
        "|---" * (2 + len(m["mean"])) + "|",
    ]  # fmt: skip
    for lang, scores in languages.items():
        others = " | ".join(f"{scores[x]:.3f}" for x in m["mean"] if x != TEACHER)
        mark = "" if lang in b["teacher_beats"] else " (not beaten)"
        lines.append(f"| {lang}{mark} | {b['languages'][lang]:.3f} | {scores[TEACHER]:.3f} | {others} |")
    return lines


def _transfer_section(m: dict[str, Any]) -> list[str]:
    """The collapse flags; with zero-shot languages, the whole languages x models transfer matrix."""
    t = m["transfer"]
    limit = f"{t['collapse_below']:.0%}"
    flagged = {x: langs for x, langs in t["collapsed"].items() if langs}
    lines = ["", "## Cross-lingual transfer", ""]
    if t["zero_shot_languages"]:
        lines += [
            f"Labelled training data: {', '.join(t['source_languages'])}. Every other language is **zero-shot**: "
            "its labels were never seen (its unlabelled train text may have trained the tokenizer). Each cell: "
            f"test accuracy (share of the teacher's accuracy in that language); **COLLAPSED** marks a model "
            f"under {limit} of the teacher there. Teacher column: accuracy (share of its mean over the labelled "
            "languages).",
            "",
        ]
        models = list(m["mean"])
        lines += ["| language | " + " | ".join(title(x) for x in models) + " |", "|---" * (1 + len(models)) + "|"]
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
        lines.append("")
    if flagged:
        lines += [f"Collapsed (under {limit} of the teacher): " + "; ".join(
            f"{title(x)}: {', '.join(langs)}" for x, langs in flagged.items()) + "."]  # fmt: skip
    else:
        lines += [f"No language fell under {limit} of the teacher's accuracy in any model."]
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
    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(models), 0.9 + 0.32 * len(languages)))
    image = ax.imshow(ratio, cmap="RdYlGn", vmin=0.5, vmax=1.1, aspect="auto")
    for i, lang in enumerate(languages):
        for j, x in enumerate(models):
            mark = " ✗" if x != TEACHER and lang in t["collapsed"][x] else ""
            ax.text(j, i, f"{m['languages'][lang][x]:.2f}{mark}", ha="center", va="center", fontsize=7)
    ax.set_xticks(range(len(models)), [title(x) for x in models], rotation=20, ha="right", fontsize=8)
    labels = [f"{lang}{'' if lang in t['source_languages'] else ' (0-shot)'}" for lang in languages]
    ax.set_yticks(range(len(languages)), labels, fontsize=7)
    fig.colorbar(image, ax=ax, label="share of the teacher (teacher: of its labelled mean)")
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
        f"The {title(t['untrimmed'])}'s vocabulary ({t['tokenizer']}) cut to the pieces its tokenizer produces on the "
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
            f"| {v['label_agreement']:.4f} | {v['worst_language']} | {v['worst_drop_points']:+.1f} | {gate} |"
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
    student = next((name for name in lat if name.startswith("student_onnx_")), None)  # the headline int8 variant
    if "teacher_torch_fp32" in lat and student:
        t, s = lat["teacher_torch_fp32"], lat[student]
        variant = student.removeprefix("student_onnx_")
        lines += [
            f"At sequence {setup['seq']}: teacher PyTorch fp32 p50 {t['p50']:.2f} ms (p90 {t['p90']:.2f}, "
            f"{t['runs']} runs), student {variant} ONNX p50 {s['p50']:.2f} ms (p90 {s['p90']:.2f}, {s['runs']} runs): "
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
    fig, ax = plt.subplots(figsize=(max(6, 0.7 * len(languages)), 3.6))
    width = 0.8 / len(models)
    x = np.arange(len(languages))
    for i, model in enumerate(models):
        ax.bar(
            x + i * width,
            [m["languages"][lang][model] for lang in languages],
            width,
            label=title(model),
        )
    ax.set_xticks(x + 0.4 - width / 2, languages, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    ax.set_title("Accuracy per language")
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
