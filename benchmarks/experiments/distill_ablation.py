"""Which losses and which student size keep the teacher's accuracy in every language?

Runs a grid of distillations on SIB-200 — loss combinations × student sizes × seeds — from one trained
teacher, through the same `distill run` pipeline users run (stages teacher → distill, the teacher
loaded from its checkpoint so it is identical in every cell), and writes

    benchmarks/results/distill_ablation.json   every cell: per-language accuracy, params, retention
    benchmarks/results/distill_ablation.md     retention vs parameters, mean ± std over seeds

    python -m polydistill.benchmarks.experiments.distill_ablation \
        --teacher runs/sib200-tiny-student/latest/checkpoints/teacher

Retention = student mean test accuracy / teacher mean test accuracy; worst-language retention =
min over languages of student accuracy / teacher accuracy (both from the seed-mean per language).
The teacher's outputs are cached on disk (distill.cache) on the first cell and read by all others.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from polydistill.benchmarks.outputs import command_line, write_results
from polydistill.pipeline import run_recipe
from polydistill.recipe import load_recipe

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "sib200-tiny-student.yaml"

LOSSES = {
    "KL+CE": "{logit_kl: {weight: 1.0, temperature: 2.0}, cross_entropy: {weight: 0.5}}",
    "KL+CE+relations": "{logit_kl: {weight: 1.0, temperature: 2.0}, cross_entropy: {weight: 0.5}, "
    "minilm_relations: {weight: 1.0, relation_heads: 2}}",
    "KL+CE+hidden": "{logit_kl: {weight: 1.0, temperature: 2.0}, cross_entropy: {weight: 0.5}, "
    "hidden_mse: {weight: 1.0}}",
}


def _size(layers: int, hidden: int, ffn: int, init: str = "teacher") -> list[str]:
    return [
        "student.layers=null",
        f"student.num_layers={layers}",
        f"student.hidden_size={hidden}",
        f"student.intermediate_size={ffn}",
        f"student.init={init}",
    ]


# name -> student overrides: layers spread evenly over the teacher's, heads of the teacher's head size (64).
# With the 6 x 384 SIB teacher (14.1M parameters) the 8,000 x hidden embedding dominates: 2L-128 is 9.8%
# of it, 1L-128 9.3%, 2L-64 4.6%.
SIZES = {
    "2L-128": _size(2, 128, 256),
    "1L-128": _size(1, 128, 512),
    "2L-64": _size(2, 64, 256),
    "2L-128-random": _size(2, 128, 256, init="random"),
}


def _one_thread() -> None:
    import torch

    torch.set_num_threads(1)


def run_cell(recipe: Path, teacher: Path, losses: str, size: list[str], seed: int, out: Path) -> dict[str, Any]:
    overrides = [
        f"teacher.model={teacher}",
        "stages=[teacher, distill]",
        f"output_dir={out}",
        f"distill.losses={losses}",
        f"seed={seed}",
        *size,
    ]
    started = time.perf_counter()
    directory = run_recipe(load_recipe(recipe, overrides), say=lambda _line: None)
    metrics = json.loads((directory / "metrics.json").read_text())
    return {
        "overrides": overrides,
        "seconds": round(time.perf_counter() - started, 1),
        "distill_seconds": metrics["timings_s"]["distill"],
        "languages": {lang: row["student"] for lang, row in metrics["languages"].items()},
        "teacher_languages": {lang: row["teacher"] for lang, row in metrics["languages"].items()},
        "params": metrics["params"]["student"],
        "teacher_params": metrics["params"]["teacher"],
        "best_epoch": metrics["training"]["student"]["best_epoch"],
    }


def summarise(cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for losses, size in dict.fromkeys((c["losses"], c["size"]) for c in cells):
        group = [c for c in cells if (c["losses"], c["size"]) == (losses, size)]
        teacher = group[0]["teacher_languages"]
        teacher_mean = float(np.mean(list(teacher.values())))
        means = [float(np.mean(list(c["languages"].values()))) for c in group]
        per_lang = {lang: float(np.mean([c["languages"][lang] for c in group])) for lang in teacher}
        ratio = {lang: per_lang[lang] / teacher[lang] for lang in teacher}
        worst = min(ratio, key=ratio.get)
        rows.append({
            "losses": losses, "size": size, "seeds": [c["seed"] for c in group],
            "params": group[0]["params"], "param_ratio": group[0]["params"] / group[0]["teacher_params"],
            "teacher_mean": teacher_mean, "student_mean": float(np.mean(means)), "student_std": float(np.std(means)),
            "retention": float(np.mean(means)) / teacher_mean,
            "worst_language": worst, "worst_retention": ratio[worst],
            "per_language_mean": per_lang, "distill_seconds": [c["distill_seconds"] for c in group],
        })  # fmt: skip
    return rows


def render(doc: dict[str, Any]) -> str:
    t = doc["teacher"]
    lines = [
        "# Distillation ablation: losses × student sizes × seeds (SIB-200, 15 languages)",
        "",
        f"Command: `{doc['command']}` — {doc['seconds'] / 60:.0f} min on this machine (2-core CPU).",
        "",
        f"Teacher: `{t['path']}`, {t['params'] / 1e6:.2f}M parameters, mean test accuracy {t['mean']:.3f}. Every "
        "cell runs `distill run recipes/sib200-tiny-student.yaml` with the overrides in the JSON (stages teacher → "
        "distill, teacher loaded from its checkpoint). Retention = student mean accuracy / teacher mean accuracy; "
        "worst language = the lowest per-language ratio (per-language accuracy averaged over seeds first).",
        "",
        "| losses | student | params (all) | of teacher | mean acc (± std over seeds) | retention | "
        "worst language | its retention |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in doc["rows"]:
        lines.append(
            f"| {r['losses']} | {r['size']} | {r['params'] / 1e3:.0f}k | {r['param_ratio']:.1%} "
            f"| {r['student_mean']:.3f} ± {r['student_std']:.3f} | {r['retention']:.1%} "
            f"| {r['worst_language']} | {r['worst_retention']:.1%} |"
        )
    sizes = dict.fromkeys(r["size"] for r in doc["rows"])
    losses = dict.fromkeys(r["losses"] for r in doc["rows"])
    lines += ["", "Sizes: " + "; ".join(f"`{k}`: {' '.join(SIZES[k])}" for k in sizes if k in SIZES), ""]
    lines += ["Losses: " + "; ".join(f"`{k}`: `{LOSSES[k]}`" for k in losses if k in LOSSES), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", required=True, help="checkpoint dir of the trained teacher (a run's)")
    parser.add_argument("--recipe", default=str(RECIPE))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--losses", nargs="+", choices=list(LOSSES), default=list(LOSSES))
    parser.add_argument("--sizes", nargs="+", choices=list(SIZES), default=list(SIZES))
    parser.add_argument("--out", default="benchmarks/results/distill_ablation", help="output path, no extension")
    parser.add_argument("--runs-dir", help="where the cells' run directories go (default: a temporary folder)")
    parser.add_argument(
        "--jobs", type=int, default=1, help="cells run at once, one thread each (small students scale better so)"
    )
    args = parser.parse_args(argv)
    teacher = Path(args.teacher).resolve()
    started = time.perf_counter()
    cells = []
    with tempfile.TemporaryDirectory(prefix="ablation-") as scratch:
        runs = Path(args.runs_dir or scratch)
        grid = [(size, losses, seed) for size in args.sizes for losses in args.losses for seed in args.seeds]
        # one cell of each (size, losses) first: they write the teacher caches the other seeds then read
        first = [cell for cell in grid if cell[2] == args.seeds[0]]
        rest = [cell for cell in grid if cell[2] != args.seeds[0]]
        with ProcessPoolExecutor(args.jobs, mp_context=get_context("spawn"), initializer=_one_thread) as pool:
            for batch in (first, rest):
                futures = [
                    pool.submit(run_cell, Path(args.recipe), teacher, LOSSES[losses], SIZES[size], seed, runs)
                    for size, losses, seed in batch
                ]
                for (size, losses, seed), future in zip(batch, futures, strict=True):
                    cell = future.result()
                    cells.append({"losses": losses, "size": size, "seed": seed, **cell})
                    mean = np.mean(list(cell["languages"].values()))
                    print(f"{size} {losses} seed {seed}: mean {mean:.3f} ({cell['seconds']} s)", flush=True)
    teacher_langs = cells[0]["teacher_languages"]
    doc = {
        "command": command_line("polydistill.benchmarks.experiments.distill_ablation", argv),
        "seconds": round(time.perf_counter() - started, 1),
        "teacher": {
            "path": str(args.teacher),
            "params": cells[0]["teacher_params"],
            "languages": teacher_langs,
            "mean": float(np.mean(list(teacher_langs.values()))),
        },  # fmt: skip
        "rows": summarise(cells),
        "cells": cells,
    }
    write_results(args.out, doc, render(doc))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
