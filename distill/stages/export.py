"""Stage `export`: every variant in `export.variants` through `distill export`'s gated path, scored per language."""

from __future__ import annotations

import dataclasses
from typing import Any

from polydistill.config import (
    onnx_model_name,
)
from polydistill.data import (
    gold_labels,
)
from polydistill.errors import DistillError
from polydistill.export.artifact import ExportOptions, export_directory
from polydistill.export.card import teacher_card_source, write_card
from polydistill.export.onnx import session
from polydistill.run_state import Run
from polydistill.scoring import export_line, gate_variant, onnx_predictions


def stage_export(run: Run) -> None:
    """Every variant in `export.variants` through `distill export`'s gated path, then scored per language.

    Each variant is its own artifact directory, onnx/student-<variant>/ (student-fp32 for "none"), whose folder
    name is the variant's name everywhere (`onnx_model_name`):
    parity-gated fp32 export, optimizer with the fused-Attention check, the quantization, a model card.
    It is then run on every language's test split: label agreement with the PyTorch student and the accuracy drop per
    language; a variant that loses more than `export.max_drop_points` in any language is flagged.
    """
    if run.student is None:
        raise DistillError("stage 'export' needs a student: put 'distill' before it in 'stages'")
    cfg = run.recipe.export
    dev_texts = run.data.texts("dev")
    # the checkpoint holds the student's own tokenizer (the trimmed one after stage trim): export_directory
    # tokenises the parity and calibration sentences with it, and the test sets are scored in its encoding
    student_dir = run.directory / "checkpoints" / run.student_name
    torch_predictions = run.predictions[run.student_name]
    test = run.student_encoded["test"]
    gold = {lang: gold_labels(enc) for lang, enc in test.items()}
    report: dict[str, Any] = {}
    for variant in cfg.variants:
        name = onnx_model_name(variant)  # its folder, and its name in metrics.json, the report and bench rows
        options = ExportOptions(
            **cfg.export_settings(), mode=variant,
            languages=list(run.recipe.data.languages), name=f"{run.recipe.name} {name}",
            teacher=teacher_card_source(run.recipe.teacher.model),
        )  # fmt: skip
        # dev sentences of every language: the parity gate, and the calibration set of int8-static and int8-smooth
        summary = export_directory(student_dir, run.directory / "onnx" / name, dev_texts, options)
        run.onnx_dirs[variant] = summary.directory
        sess = session(summary.directory / "model.onnx")
        for lang, enc in test.items():
            run.predictions.setdefault(name, {})[lang] = onnx_predictions(sess, enc, run.student_pad_id)
        entry = {
            "directory": str(summary.directory.relative_to(run.directory)),
            "size_mb": round(summary.model_bytes / 1e6, 3),
            "fp32_max_abs_diff": summary.fp32_max_abs_diff,
            "optimized_max_abs_diff": summary.optimized_max_abs_diff,
            "fused_attention": summary.fused_attention,
            **gate_variant(run.predictions[name], torch_predictions, gold, cfg.max_drop_points),
        }
        report[variant] = entry
        card_metrics = {lang: {"accuracy": v["accuracy"], "accuracy (PyTorch fp32)": v["pytorch_accuracy"]}
                        for lang, v in entry["languages"].items()}  # fmt: skip
        write_card(summary.directory, dataclasses.replace(summary.card, metrics=card_metrics))
        run.say(export_line(variant, entry))
    run.metrics["export"] = {
        "exported_from": run.student_name,  # the PyTorch model every variant is an export of
        "max_drop_points": cfg.max_drop_points,
        "parity_sentences": min(cfg.parity_sentences, len(dev_texts)),
        "parity_tolerance": cfg.parity_tolerance,
        "variants": report,
    }
