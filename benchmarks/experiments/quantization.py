"""Every quantization variant of a pipeline run's student: per-language accuracy, size and CPU latency.

    python -m polydistill.benchmarks.experiments.quantization RUN_DIR [--out benchmarks/results] [--languages a,b] \
        [--max-eval N]

RUN_DIR is `runs/<name>/<timestamp>/` (or `.../latest`): `checkpoints/student`, `onnx/student-fp32` and
`recipe.yaml` with `data.path` and `data.languages`. From the fp32 export this builds

    fp32-optimized               onnxruntime's transformer optimizer, gated (all Attention fused, parity)
    int8-dynamic                 reduce_range chosen for this CPU (7-bit weights without VNNI)
    int8-dynamic-{7,8}bit        the other reduce_range setting, to show what the choice costs or saves
    int8-dynamic-fp32-emb        MatMul/Attention only (every Gather, so the word embedding, stays fp32)
    int8-dynamic-fp32-emb-node   everything but the word-embedding Gather (nodes_to_exclude)
    int8-static-{minmax,entropy,percentile}   QDQ calibrated on the dev split of every language

and evaluates each, fp32 included, on every language's test split: accuracy, label agreement with
fp32, file size, and p50 latency at batch 1 × 128 tokens (real dev tokens), all variants timed
interleaved in one call. A variant that loses more than `--max-drop` (1 point) on any language against
fp32 is flagged: a mean can hide one language collapsing (onnxruntime#9599). Quantized variants are
built from the optimized graph (what `distill export` ships) unless `--no-optimize`.

Writes `quantization.json` and `quantization.md` (with the exact command) into `--out`. Like the rest
of `benchmarks/`, `datasets` is imported only when this runs, never at import.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from polydistill.errors import DistillError

JSON_FILE, MD_FILE = "quantization.json", "quantization.md"
FP32 = "fp32"


@dataclass(frozen=True)
class RunData:
    """What the benchmark needs from a run directory."""

    run_dir: Path
    data_path: Path
    languages: list[str]
    max_length: int


def read_run(run_dir: str | Path, data_override: str | None = None) -> RunData:
    """Read `recipe.yaml`; a relative `data.path` is taken from where the run was started (the folder
    above `output_dir`), which is not necessarily the current directory."""
    import yaml

    run_dir = Path(run_dir).resolve()
    for need in ("recipe.yaml", "checkpoints/student", "onnx/student-fp32/model.onnx"):
        if not (run_dir / need).exists():
            raise DistillError(f"{run_dir} is not a finished run with a student export: no {need}")
    recipe = yaml.safe_load((run_dir / "recipe.yaml").read_text(encoding="utf-8"))
    data = recipe.get("data") or {}
    if data_override is None and not data.get("path"):
        raise DistillError(f"{run_dir}/recipe.yaml has no data.path (hub data): pass --data FOLDER")
    path = Path(data_override or data["path"])
    if not path.is_absolute() and not path.exists():
        started_in = run_dir.parent.parent
        for _ in Path(recipe.get("output_dir", "runs")).parts:
            started_in = started_in.parent
        path = started_in / path
    if not path.is_dir():
        raise DistillError(f"data folder not found: {path} (pass --data FOLDER)")
    return RunData(run_dir, path, list(data["languages"]), int(data.get("max_length", 128)))


def spread(items: list, n: int | None) -> list:
    """At most `n` items taken evenly through the list (languages are contiguous in it)."""
    if n is None or n >= len(items):
        return list(items)
    return items[:: max(1, len(items) // n)][:n]


def evaluate(
    path: Path, encoded: dict, pad_id: int, threads: int | None, batch_size: int = 64
) -> dict[str, np.ndarray]:
    """Predicted labels per language on length-bucketed, right-padded batches (as the pipeline evaluates)."""
    from polydistill.data import collate, length_batches
    from polydistill.export.onnx import session

    sess = session(path, threads)
    predictions = {}
    for lang, enc in encoded.items():
        labels = np.zeros(len(enc), dtype=np.int64)
        for indices in length_batches([len(x) for x in enc.input_ids], batch_size, shuffle=False):
            batch = collate(enc, indices, pad_id)
            feed = {"input_ids": batch["input_ids"].numpy(), "attention_mask": batch["attention_mask"].numpy()}
            labels[indices] = sess.run(None, feed)[0].argmax(-1)
        predictions[lang] = labels
    return predictions


def latency_input(tokenizer, texts: list[str], seq: int) -> dict[str, np.ndarray]:
    """One row of exactly `seq` real tokens: dev sentences run together, between <s> and </s>."""
    stream = [t for ids in tokenizer(texts)["input_ids"] for t in ids[1:-1]]
    if not stream:
        raise DistillError("no dev tokens for the latency input")
    while len(stream) < seq - 2:
        stream = stream + stream
    row = [tokenizer.bos_token_id, *stream[: seq - 2], tokenizer.eos_token_id]
    return {"input_ids": np.array([row], dtype=np.int64), "attention_mask": np.ones((1, seq), dtype=np.int64)}


def build_variants(
    run: RunData,
    work: Path,
    model,
    tokenizer,
    parity_texts: list[str],
    calibration_texts: list[str],
    *,
    optimize: bool,
    say: Callable[[str], None],
) -> tuple[dict[str, Path], dict[str, Any]]:
    """name -> artifact directory, plus notes (fusion, reduce_range, calibration, failures)."""
    from polydistill.export.optimize import optimize_export
    from polydistill.export.quantize import (
        calibration_batches,
        cpu_has_vnni,
        quantize_dynamic_int8,
        quantize_dynamic_int8_fp32_embedding,
        quantize_static_int8,
    )

    fp32 = run.run_dir / "onnx" / "student-fp32"
    variants: dict[str, Path] = {FP32: fp32}
    auto_reduce = not cpu_has_vnni()
    notes: dict[str, Any] = {"reduce_range_auto": auto_reduce, "failed": {}}
    base = fp32
    if optimize:
        try:
            opt = optimize_export(fp32, work / "fp32-optimized", model, tokenizer, parity_texts)
        except DistillError as exc:  # e.g. heads pruned unevenly: quantize the plain graph, say why
            notes["failed"]["fp32-optimized"] = str(exc)
            say(f"optimizer: {exc}; quantizing the unoptimized graph")
        else:
            variants["fp32-optimized"] = base = opt.directory
            notes["fusion"] = {"layers": opt.shape.num_layers, **{op: n for op, n in opt.fused.items() if n}}
            notes["optimized_max_abs_diff"] = opt.max_abs_diff
    notes["quantized_from"] = "fp32-optimized" if base != fp32 else FP32
    other_bits = "8bit" if auto_reduce else "7bit"
    batches = calibration_batches(tokenizer, calibration_texts, max_length=run.max_length)
    notes["calibration"] = {"sentences": len(calibration_texts), "batches": len(batches), "split": "dev"}
    builders: dict[str, Callable[[Path], Path]] = {
        "int8-dynamic": lambda out: quantize_dynamic_int8(base, out, reduce_range=auto_reduce),
        f"int8-dynamic-{other_bits}": lambda out: quantize_dynamic_int8(base, out, reduce_range=not auto_reduce),
        "int8-dynamic-fp32-emb": lambda out: quantize_dynamic_int8_fp32_embedding(base, out, how="op-types"),
        "int8-dynamic-fp32-emb-node": lambda out: quantize_dynamic_int8_fp32_embedding(base, out, how="exclude-node"),
    }
    for method in ("minmax", "entropy", "percentile"):
        builders[f"int8-static-{method}"] = lambda out, m=method: quantize_static_int8(base, out, batches, method=m)
    for name, build in builders.items():
        t0 = time.perf_counter()
        try:
            variants[name] = build(work / name)
        except Exception as exc:  # one failing variant is a result, not the end of the benchmark
            notes["failed"][name] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            say(f"{name}: FAILED ({notes['failed'][name]})")
            continue
        say(f"{name}: built in {time.perf_counter() - t0:.1f} s")
    return variants, notes


def run_benchmark(args: argparse.Namespace, say: Callable[[str], None] = print) -> dict[str, Any]:
    from polydistill.benchmarks.environment import collect_environment
    from polydistill.benchmarks.latency import interleaved_latency
    from polydistill.config import DataConfig
    from polydistill.data import encode, load_task_data
    from polydistill.export.artifact import load_classifier_dir
    from polydistill.export.onnx import MODEL_FILE, session

    run = read_run(args.run_dir, args.data)
    languages = [x.strip() for x in args.languages.split(",")] if args.languages else run.languages
    unknown = sorted(set(languages) - set(run.languages))
    if unknown:
        raise DistillError(f"languages {unknown} are not in the run's data.languages {run.languages}")
    cfg = DataConfig(
        path=str(run.data_path),
        languages=languages,
        max_length=run.max_length,
        max_train_per_language=1,  # only dev (calibration, parity) and test (evaluation) are used
        max_eval_per_language=args.max_eval,
    )
    data = load_task_data(cfg)
    model, tokenizer, task = load_classifier_dir(run.run_dir / "checkpoints" / "student")
    if task != "sequence":
        raise DistillError("the quantization benchmark evaluates sentence classifiers (SIB-200)")
    dev = data.texts("dev")
    parity = spread(dev, 64)
    calibration = spread(dev, args.calibration_sentences)
    encoded = {
        lang: encode(tokenizer, ds["text"], ds["label"], run.max_length) for lang, ds in data.splits["test"].items()
    }
    threads = args.threads or os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="polydistill-quant.", dir=args.work) as scratch:
        work = Path(args.keep) if args.keep else Path(scratch)
        variants, notes = build_variants(
            run, work, model, tokenizer, parity, calibration, optimize=not args.no_optimize, say=say
        )
        rows: dict[str, dict[str, Any]] = {}
        predictions = {}
        for name, directory in variants.items():
            predictions[name] = evaluate(directory / MODEL_FILE, encoded, tokenizer.pad_token_id, threads)
        for name, directory in variants.items():
            accuracy = {
                lang: float(np.mean(predictions[name][lang] == np.array(encoded[lang].labels))) for lang in encoded
            }
            agreement = {lang: float(np.mean(predictions[name][lang] == predictions[FP32][lang])) for lang in encoded}
            rows[name] = {
                "size_bytes": (directory / MODEL_FILE).stat().st_size,
                "accuracy": accuracy,
                "mean_accuracy": float(np.mean(list(accuracy.values()))),
                "agreement_with_fp32": agreement,
                "mean_agreement_with_fp32": float(
                    np.mean(np.concatenate([predictions[name][g] == predictions[FP32][g] for g in encoded]))
                ),
            }
        say(f"evaluated {len(variants)} variants on {sum(len(e) for e in encoded.values())} test sentences")
        feed = latency_input(tokenizer, dev, args.seq)
        sessions = {name: session(d / MODEL_FILE, threads, spinning=False) for name, d in variants.items()}
        calls = {name: (lambda s=s: s.run(None, feed)) for name, s in sessions.items()}
        latency = interleaved_latency(calls, runs=args.runs, warmup=args.warmup)
        for name, stats in latency.items():
            rows[name]["latency_ms"] = {k: stats[k] for k in ("p50", "p90", "mean", "stdev", "runs")}
    flag_drops(rows, args.max_drop)
    command = "python -m polydistill.benchmarks.experiments.quantization " + shlex.join(args.argv)
    return {
        "command": command,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "run_dir": str(run.run_dir),
        "data": {
            "path": str(run.data_path),
            "languages": languages,
            "test_sentences": {k: len(v) for k, v in encoded.items()},
        },
        "setup": {
            "batch": 1,
            "seq": args.seq,
            "threads": threads,
            "runs": args.runs,
            "warmup": args.warmup,
            "max_drop": args.max_drop,
            "latency_input": "real dev tokens, no padding",
        },  # fmt: skip
        "notes": notes,
        "variants": rows,
        "environment": collect_environment(),
    }


def flag_drops(rows: dict[str, dict[str, Any]], max_drop: float) -> None:
    """Add each variant's worst per-language drop against fp32 and the languages that lose more than `max_drop`."""
    base = rows[FP32]["accuracy"]
    for row in rows.values():
        drops = {lang: base[lang] - acc for lang, acc in row["accuracy"].items()}
        row["max_drop_vs_fp32"] = max(drops.values())
        row["flagged_languages"] = sorted(lang for lang, d in drops.items() if d > max_drop + 1e-9)


def render_markdown(doc: dict[str, Any]) -> str:
    rows, setup = doc["variants"], doc["setup"]
    languages = doc["data"]["languages"]
    fp32 = rows[FP32]
    lines = [
        "# Quantization variants of the student",
        "",
        f"Command: `{doc['command']}`",
        "",
        f"Run: `{doc['run_dir']}`; {sum(doc['data']['test_sentences'].values())} test sentences in {len(languages)} "
        f"languages; latency batch {setup['batch']} × {setup['seq']} tokens, {setup['threads']} threads, "
        f"p50 of {setup['runs']} interleaved runs. Quantized from: {doc['notes'].get('quantized_from')}; "
        f"reduce_range for int8-dynamic: {doc['notes'].get('reduce_range_auto')}.",
        "",
        "| variant | size MB | × smaller | p50 ms | speed-up | mean acc | agreement | worst drop (pt) | flagged (> "
        f"{100 * setup['max_drop']:g} pt) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        lines.append(
            f"| {name} | {r['size_bytes'] / 1e6:.2f} | {fp32['size_bytes'] / r['size_bytes']:.2f} | "
            f"{r['latency_ms']['p50']:.2f} | {fp32['latency_ms']['p50'] / r['latency_ms']['p50']:.2f} | "
            f"{r['mean_accuracy']:.4f} | {r['mean_agreement_with_fp32']:.4f} | {100 * r['max_drop_vs_fp32']:.1f} | "
            f"{', '.join(r['flagged_languages']) or '-'} |"
        )
    lines += ["", "## Accuracy per language", "", "| language | " + " | ".join(rows) + " |"]
    lines.append("|---|" + "---|" * len(rows))
    for lang in languages:
        cells = []
        for r in rows.values():
            cell = f"{r['accuracy'][lang]:.3f}"
            cells.append(f"**{cell}**" if lang in r["flagged_languages"] else cell)
        lines.append(f"| {lang} | " + " | ".join(cells) + " |")
    failed = doc["notes"].get("failed") or {}
    if failed:
        lines += ["", "## Failed variants", ""] + [f"- {k}: {v}" for k, v in failed.items()]
    lines += [
        "",
        "Bold: more than the allowed drop below fp32 on that language. Agreement: share of test sentences whose",
        "label equals fp32's. Sizes are model.onnx only.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(
        prog="python -m polydistill.benchmarks.experiments.quantization", description=__doc__.splitlines()[0]
    )
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--out", default="benchmarks/results", help="folder for quantization.{json,md}")
    p.add_argument("--data", help="SIB-200 folder (default: the recipe's data.path)")
    p.add_argument("--languages", help="comma list, a subset of the run's languages (default: all)")
    p.add_argument("--max-eval", type=int, help="test (and dev) sentences per language (default: all)")
    p.add_argument("--calibration-sentences", type=int, default=512, help="dev sentences, spread over languages")
    p.add_argument("--threads", type=int, help="onnxruntime threads (default: all cores)")
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--runs", type=int, default=100, help="timed runs per variant (interleaved)")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--max-drop", type=float, default=0.01, help="flag a language losing more (accuracy in [0, 1])")
    p.add_argument("--no-optimize", action="store_true", help="quantize the plain fp32 export")
    p.add_argument("--keep", help="keep the variant artifact directories in this folder")
    p.add_argument("--work", help="scratch folder (default: the system temp folder)")
    args = p.parse_args(argv)
    args.argv = argv
    try:
        import datasets
        from transformers.utils import logging as hf_logging

        datasets.disable_progress_bars()
        hf_logging.disable_progress_bar()
        doc = run_benchmark(args)
        from polydistill.io import atomic_write_json, atomic_write_text

        out = Path(args.out)
        atomic_write_json(out / JSON_FILE, doc)
        atomic_write_text(out / MD_FILE, render_markdown(doc))
    except DistillError as exc:
        print(f"quantization benchmark: error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {out / JSON_FILE} and {out / MD_FILE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
