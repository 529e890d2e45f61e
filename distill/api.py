"""The Python API: `polydistill.run`, `polydistill.export_checkpoint`, `polydistill.trim_vocab`, `polydistill.bench`
(README, "Python API").

Each is the command of the same name without the shell: the same recipe loading and overrides, the same
defaults (read from the command's own parser) and the same code path (`run_recipe`, `export_from_args`,
`trim_from_args`, `bench_from_args`), returning what was written instead of printing it. Progress goes to the
`polydistill` logger (printed to stdout while nobody configured logging, see polydistill.console.library_logging);
transformers' and datasets' bars and logs are held back for the call and restored after it. Mistakes raise
`polydistill.errors.DistillError` with the command's one-line message.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from polydistill.benchmarks.cli import add_bench_parser, bench_from_args
from polydistill.cli import add_trim_vocab_parser, trim_from_args
from polydistill.config import EmbedRecipe, Recipe, apply_override, recipe_to_dict
from polydistill.console import NORMAL, QUIET, library_logging, third_party_quiet
from polydistill.errors import DistillError
from polydistill.export.cli import add_export_parser, export_from_args
from polydistill.recipe import load_recipe, parse_recipe

Overrides = Sequence[str] | Mapping[str, Any]


@dataclass(frozen=True)
class RunResult:
    """A finished run: its directory (checkpoints/, onnx/, report.md, run.log) and its metrics.json."""

    directory: Path
    metrics: dict[str, Any]

    def accuracy_table(self) -> list[dict[str, Any]]:
        """One row per language: `language`, `zero_shot`, then each model's test score (`metrics["metric"]`:
        accuracy, or word accuracy for POS) under the model's name, as metrics.json's `languages` holds them.
        `pandas.DataFrame(result.accuracy_table())` makes it a table."""
        zero_shot = set(self.metrics.get("zero_shot_languages", []))
        return [
            {"language": lang, "zero_shot": lang in zero_shot, **scores}
            for lang, scores in self.metrics["languages"].items()
        ]

    @property
    def report(self) -> Path:
        return self.directory / "report.md"


def run(recipe: str | Path | Recipe, overrides: Overrides | None = None, *, quiet: bool = False) -> RunResult:
    """Run a distillation recipe, as `distill run` does; returns the run directory and its metrics.

    `recipe`: a recipe file or a loaded `polydistill.config.Recipe`. `overrides`: `["key.path=value", ...]` as on
    the command line, or `{"key.path": value}`. `quiet`: only the end-of-run summary is logged (run.log still
    gets every line)."""
    loaded = _with_overrides(recipe, overrides)
    from polydistill.pipeline import run_recipe  # lazy: torch; `import polydistill` and its API stay torch-free

    with library_logging() as say:
        directory = run_recipe(loaded, say=say, verbosity=QUIET if quiet else NORMAL)
    return RunResult(directory, json.loads((directory / "metrics.json").read_text(encoding="utf-8")))


def export_checkpoint(
    model_dir: str | Path, out_dir: str | Path, quantize: str = "int8-dynamic", **options: Any
) -> Any:
    """`distill export MODEL_DIR OUT_DIR --quantize MODE`; returns its `polydistill.export.artifact.ExportSummary`
    (`.line()` is the command's summary). `options` are the command's long options with underscores (`texts="dev.txt"`,
    `no_optimize=True`, `overwrite=True`, ...), with its defaults; without `texts` a run's checkpoint is gated
    on that run's dev sentences."""
    args = _command_args(add_export_parser, ["export", str(model_dir), str(out_dir)], {"quantize": quantize, **options})
    with library_logging() as say, third_party_quiet():
        return export_from_args(args, say)


def trim_vocab(model_dir: str | Path, out_dir: str | Path, corpus: Sequence[str | Path], **options: Any) -> Any:
    """`distill trim-vocab MODEL_DIR OUT_DIR --corpus FILE ...`; returns its `polydistill.cli.TrimResult` (the report
    of what was kept and the coverage). `options`: `top_k`, `min_freq`, `coverage_file` (a list), `overwrite`."""
    argv = ["trim-vocab", str(model_dir), str(out_dir), "--corpus", *map(str, corpus)]
    args = _command_args(add_trim_vocab_parser, argv, options)
    with third_party_quiet():
        return trim_from_args(args)


def bench(models: Sequence[str | Path], **options: Any) -> tuple[Path, dict[str, Any]]:
    """`distill bench MODEL_OR_RUN ...`; returns (output folder, results document as in results.json). `options`
    are the command's long options with underscores (`max_seconds=15`, `batch=[1, 8]`, `out="runs/bench/x"`,
    `dry_run=True`, ...), with its defaults."""
    args = _command_args(add_bench_parser, ["bench", *map(str, models)], options)
    with library_logging() as say, third_party_quiet(datasets=bool(args.texts)):
        out, doc, _ = bench_from_args(args, say)
    return out, doc


def _with_overrides(recipe: str | Path | Recipe, overrides: Overrides | None) -> Recipe:
    """The recipe to run: a file loaded as `distill run` loads it, or a loaded Recipe, with `overrides` applied
    and the whole validated again."""
    pairs = _override_strings(overrides)
    if isinstance(recipe, Recipe):
        raw = recipe_to_dict(recipe)
        for override in pairs:
            apply_override(raw, override)
        return parse_recipe(raw)
    if isinstance(recipe, EmbedRecipe):
        raise DistillError("polydistill.run is for distillation recipes; run an embedding-kd recipe with `distill run`")
    return load_recipe(recipe, pairs)


def _override_strings(overrides: Overrides | None) -> list[str]:
    """`key.path=value` strings; a mapping's values are written as JSON, which the override parser reads as YAML."""
    if overrides is None:
        return []
    if isinstance(overrides, Mapping):
        return [f"{key}={json.dumps(value)}" for key, value in overrides.items()]
    if isinstance(overrides, str):
        raise TypeError("overrides: a list of 'key.path=value' strings or a mapping, not one string")
    return list(overrides)


def _command_args(
    add_parser: Callable[[Any], argparse.ArgumentParser], argv: list[str], options: Mapping[str, Any]
) -> argparse.Namespace:
    """The sub-command's parsed `argv` (so every default is the command line's), then `options` over it by their
    destination names; a name the command does not have is a TypeError, as for any Python call."""
    parser = argparse.ArgumentParser(prog="distill")
    add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    positional = {"command", "model_dir", "out_dir", "models"}
    unknown = sorted(k for k in options if k in positional or not hasattr(args, k))
    if unknown:
        raise TypeError(f"{argv[0]}: unexpected option(s) {', '.join(unknown)}")
    for key, value in options.items():
        setattr(args, key, value)
    return args
