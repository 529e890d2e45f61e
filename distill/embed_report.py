"""report.md of an embedding-KD run (distill/embed.py), rendered from its metrics dict."""

from __future__ import annotations

from typing import Any

from polydistill.plots import RETRIEVAL_ROWS
from polydistill.report import DATA_LINES


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


def _ties(languages: list[str]) -> str:
    return f"; tied in {', '.join(languages)}" if languages else ""
