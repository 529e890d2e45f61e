"""`distill bench`: benchmark teachers and students across backends, precisions and devices.

    distill bench MODEL_OR_RUN [MODEL_OR_RUN ...] [--device cpu|cuda] [--batch 1 8] [--seq 128]
                  [--threads 1 2] [--out DIR] [--max-seconds S] [--dry-run] ...

`add_bench_parser(subparsers)` adds the sub-command to `distill`'s parser and `run_bench(args)` runs
it. Nothing here imports `datasets` or `torch_pruning`, so benchmarks/gpu.sh can run
`python benchmarks/from_checkout.py bench` from an uninstalled checkout on a machine that has neither.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from polydistill.benchmarks.report import render_markdown, write_outputs
from polydistill.benchmarks.settings import Settings
from polydistill.benchmarks.variants import BACKENDS, DEVICES, PRECISIONS, ort_has_cuda, parse_sources
from polydistill.console import QUIET, VERBOSE, add_verbosity_flags, silent, third_party_quiet, verbosity_of
from polydistill.errors import DistillError

# beside the runs, not in the repository's benchmarks/results/ (which holds the committed, documented results)
DEFAULT_OUT = "runs/bench"
DEFAULT_PRECISIONS = {"cpu": "fp32,bf16,int8-dynamic", "cuda": "fp32,bf16,fp16"}
EXIT_USER_ERROR = 2


def _int_list(values: list[str]) -> list[int]:
    """`--batch 1 8` and `--batch 1,8` alike."""
    out = []
    for value in values:
        for part in str(value).split(","):
            if part.strip():
                n = int(part)
                if n < 1:
                    raise DistillError(f"bench: {n} is not a positive integer")
                out.append(n)
    return out


def _csv(value: str | None, allowed: tuple[str, ...], what: str) -> list[str] | None:
    if value is None:
        return None
    items = [v.strip() for v in value.split(",") if v.strip()]
    bad = [v for v in items if v not in allowed]
    if bad:
        raise DistillError(f"bench: unknown {what} {', '.join(bad)} (choose from {', '.join(allowed)})")
    return items


def read_lengths(spec: str) -> list[int]:
    """`--lengths 12,40,77` or `--lengths FILE` (one or more integers per line)."""
    path = Path(spec)
    text = path.read_text() if path.is_file() else spec
    try:
        lengths = [int(tok) for tok in text.replace(",", " ").split()]
    except ValueError as exc:
        raise DistillError(f"bench: --lengths {spec!r}: not a file or comma-separated integers") from exc
    if not lengths or min(lengths) < 1:
        raise DistillError("bench: --lengths needs positive integers")
    return lengths


def read_texts(path: str) -> list[str]:
    """`--texts` as trim-vocab reads a corpus (`polydistill.data.read_corpus`): .tsv text column, .conllu, or lines."""
    from polydistill.data import read_corpus  # lazy: the parser must build without datasets and torch

    return read_corpus(path, "bench: --texts")


def add_bench_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add `bench` to a `parser.add_subparsers()` object; returns the sub-parser."""
    p = subparsers.add_parser(
        "bench",
        help="benchmark models: latency, throughput, efficiency, memory (JSON + Markdown + Pareto plot)",
        description=(
            "Each MODEL_OR_RUN is xlmr-base-arch, xlmr-arch:LxH[:vV] (random weights), a Hugging Face model dir, "
            "an ONNX export dir (model.onnx + config.json) or a run dir (runs/<name>/<timestamp>); prefix "
            "teacher= or student= to set its role."
        ),
    )
    p.add_argument("models", nargs="+", metavar="MODEL_OR_RUN")
    p.add_argument("--device", choices=DEVICES, default="cpu")
    p.add_argument("--backends", help=f"comma list of {', '.join(BACKENDS)} (default: torch, plus onnxruntime "
                   "on CPU or where onnxruntime has CUDA)")  # fmt: skip
    p.add_argument("--precisions", help=f"comma list of {', '.join(PRECISIONS)} (default cpu: "
                   f"{DEFAULT_PRECISIONS['cpu']}; cuda: {DEFAULT_PRECISIONS['cuda']})")  # fmt: skip
    p.add_argument("--batch", nargs="+", default=["1"], help="batch sizes (default 1)")
    p.add_argument("--seq", nargs="+", default=["128"], help="sequence lengths (default 128)")
    p.add_argument("--threads", nargs="+", help="CPU thread counts to sweep (default: all cores)")
    p.add_argument("--lengths", help="length mix: comma-separated token lengths or a file of them")
    p.add_argument("--texts", help="sentences (a SIB-200 .tsv, a .conllu or one a line): tokenisation rows (and "
                   "the length mix if --lengths is not given)")  # fmt: skip
    p.add_argument("--out", help=f"output folder (default {DEFAULT_OUT}/<UTC time>-<device>)")
    p.add_argument(
        "--max-seconds",
        type=float,
        default=120.0,
        help="wall-time budget of the whole benchmark: probes, loading and exporting the models, warm-up and "
        "timing (default 120); each cell still gets --min-runs, and writing the results comes after",
    )
    p.add_argument("--min-runs", type=int, default=10)
    p.add_argument("--max-runs", type=int, default=1000)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument(
        "--ci-width",
        type=float,
        default=0.05,
        help="settled when the median's 95%% CI, full width, is at most this fraction of it (default 0.05)",
    )
    p.add_argument("--cuda-graphs", action="store_true", help="also time torch CUDA variants as CUDA graph replays")
    p.add_argument("--no-probe", action="store_true", help="skip the matmul peak probes (no efficiency column)")
    add_verbosity_flags(p, quiet="print only the results table and where it was written")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="plumbing check: built-in architectures shrunk, batch <= 2, seq <= 16, few runs",
    )
    return p


def settings_from_args(args: argparse.Namespace) -> Settings:
    device = args.device
    backends = _csv(args.backends, BACKENDS, "backend")
    if backends is None:
        backends = ["torch"] + (["onnxruntime"] if device == "cpu" or ort_has_cuda() else [])
    precisions = _csv(args.precisions, PRECISIONS, "precision") or DEFAULT_PRECISIONS[device].split(",")
    settings = Settings(
        device=device,
        backends=backends,
        precisions=precisions,
        batches=_int_list(args.batch),
        seqs=_int_list(args.seq),
        threads=_int_list(args.threads) if args.threads else [os.cpu_count() or 1],
        lengths=read_lengths(args.lengths) if args.lengths else None,
        texts=read_texts(args.texts) if args.texts else None,
        warmup=args.warmup,
        min_runs=args.min_runs,
        max_runs=args.max_runs,
        rel_ci_width=args.ci_width,
        max_seconds=args.max_seconds,
        budget_includes_setup=True,
        cuda_graphs=args.cuda_graphs,
        probe=not args.no_probe,
        dry_run=args.dry_run,
        command=os.environ.get("BENCH_COMMAND") or shlex.join([sys.executable, *sys.argv]),
    )
    if args.dry_run:
        settings.batches = sorted({min(b, 2) for b in settings.batches})
        settings.seqs = sorted({min(s, 16) for s in settings.seqs})
        settings.lengths = [min(n, 16) for n in settings.lengths] if settings.lengths else None
        settings.texts = settings.texts[:16] if settings.texts else None
        settings.warmup, settings.min_runs = min(settings.warmup, 1), min(settings.min_runs, 3)
        settings.max_runs, settings.max_seconds = min(settings.max_runs, 6), min(settings.max_seconds, 1.0)
    if settings.min_runs < 1 or settings.max_runs < settings.min_runs or settings.warmup < 0:
        raise DistillError("bench: need --warmup >= 0 and 1 <= --min-runs <= --max-runs")
    if device == "cpu" and settings.cuda_graphs:
        raise DistillError("bench: --cuda-graphs needs --device cuda")
    return settings


def run_bench(args: argparse.Namespace) -> int:
    """Run the benchmark the parsed `args` describe; writes results into --out. Returns 0. With -q only the
    table and the closing lines are printed, not each model's preparation and cell."""
    verbosity = verbosity_of(args)
    with third_party_quiet(verbosity < VERBOSE, datasets=bool(args.texts)):  # only --texts reads with datasets
        say = silent if verbosity == QUIET else (lambda line: print(line, flush=True))
        _, doc, written = bench_from_args(args, say=say)
    print(render_markdown(doc).split("## Forward pass", 1)[-1].split("\n## ", 1)[0].strip())
    print("bench: wrote " + ", ".join(str(p) for p in written.values()))
    return 0


def bench_from_args(
    args: argparse.Namespace, say: Callable[[str], None]
) -> tuple[Path, dict[str, Any], dict[str, Path]]:
    """What `distill bench` does with its parsed arguments, short of printing the table (the Python API's
    `polydistill.bench` calls it too): (output folder, results document, the files written). --max-seconds counts
    from here, imports included; writing the results comes after it and is said with its time."""
    started = time.perf_counter()
    from polydistill.benchmarks.harness import run_benchmark  # lazy: torch and transformers; the parser stays light

    settings = settings_from_args(args)
    sources = [s for spec in args.models for s in parse_sources(spec, dry_run=settings.dry_run)]
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    out = Path(args.out) if args.out else Path(DEFAULT_OUT) / f"{stamp}-{settings.device}"
    say(f"bench: {len(sources)} model(s), device {settings.device}, writing to {out}")

    def checkpoint(doc: dict[str, Any]) -> None:  # partial results survive a timeout or a kill
        write_outputs(out, doc, plot=False)

    doc = run_benchmark(sources, settings, say=say, on_progress=checkpoint, started=started)
    timed = time.perf_counter()
    written = write_outputs(out, doc)
    done = time.perf_counter()
    say(
        f"bench: {done - started:.1f} s in all against --max-seconds {settings.max_seconds:g} "
        f"(the last {done - timed:.1f} s writing the results and the plot)"
    )
    return out, doc, written
