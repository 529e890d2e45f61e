"""`distill` command line: run and validate recipes, benchmark models.

Every `DistillError` becomes one line on stderr and exit code 2; nothing else is caught, so a
real bug still shows its traceback.
"""

from __future__ import annotations

import argparse
import sys

from distill.errors import DistillError

EXIT_USER_ERROR = 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="distill", description="Distil multilingual teachers into small students.")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run a recipe's stages and write a run directory")
    run.add_argument("recipe", help="path to a recipe YAML file")
    run.add_argument("overrides", nargs="*", metavar="key.path=value", help="override recipe values")

    validate = sub.add_parser("validate", help="check a recipe (and its data paths) without running it")
    validate.add_argument("recipe")
    validate.add_argument("overrides", nargs="*", metavar="key.path=value")

    from benchmarks.cli import add_bench_parser
    from export.cli import add_export_parser

    add_bench_parser(sub)
    add_export_parser(sub)
    args = parser.parse_args(argv)
    try:
        return _dispatch(args)
    except DistillError as exc:
        print(f"distill: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("distill: interrupted", file=sys.stderr)
        return 130


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "export":
        from export.cli import run_export

        return run_export(args)
    if args.command == "bench":
        from benchmarks.cli import run_bench

        return run_bench(args)
    from distill.config import load_recipe

    recipe = load_recipe(args.recipe, args.overrides)
    if args.command == "validate":
        print(f"recipe {args.recipe} is valid: {recipe.name}, stages {' → '.join(recipe.stages)}")
        return 0
    import datasets

    from distill.pipeline import run_recipe

    datasets.disable_progress_bars()
    run_recipe(recipe)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
