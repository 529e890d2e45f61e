"""The report.md sections of the optional stages: language-adaptive pretraining, vocabulary trimming, the
exported variants and CPU latency (`polydistill.report.render_report` puts them in order)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from polydistill.benchmarks.rows import row_cell
from polydistill.config import is_onnx_model_name
from polydistill.scoring import drop_text


def adapt_section(a: dict[str, Any]) -> list[str]:
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


def trim_section(t: dict[str, Any]) -> list[str]:
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


def export_section(export: dict[str, Any]) -> list[str]:
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


def latency_section(m: dict[str, Any]) -> list[str]:
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
            eff, acc, size = (
                row_cell(r, "efficiency", ".1%"),
                row_cell(r, "accuracy", ".3f"),
                row_cell(r, "size_mb", ".2f"),
            )
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
