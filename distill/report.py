"""metrics.json, report.md and plots of a run directory."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from polydistill.config import onnx_model_name
from polydistill.io import atomic_write_json, atomic_write_text
from polydistill.plots import (
    PLOTS,
    plot_accuracy,
    plot_accuracy_vs_size,
    plot_confusion,
    plot_mlm_loss,
    plot_training,
    plot_transfer,
)
from polydistill.predictions import PREDICTIONS_FILE, write_predictions
from polydistill.report_results import (
    accuracy_section,
    baseline_section,
    per_class_section,
    size_section,
    training_section,
    transfer_section,
)
from polydistill.report_stages import adapt_section, export_section, latency_section, trim_section
from polydistill.run_state import TEACHER, Run
from polydistill.scoring import build_metrics


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
    lines += accuracy_section(m)
    if "baseline" in m:
        lines += baseline_section(m)
    if "transfer" in m and m["transfer"]["zero_shot_languages"]:
        lines += transfer_section(m)
    if "per_class" in m:
        lines += per_class_section(m)
    lines += size_section(m)
    if "adapt" in m:
        lines += adapt_section(m["adapt"])
    if "trim" in m:
        lines += trim_section(m["trim"])
    if "latency_ms" in m:
        lines += latency_section(m)
    if "export" in m:
        lines += export_section(m["export"])
    if m.get("training"):
        lines += training_section(m)
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
