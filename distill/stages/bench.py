"""Stage `bench`: the benchmark harness on the run's teacher, student and exports."""

from __future__ import annotations

import os
from typing import Any

from polydistill.benchmarks.harness import Settings, run_benchmark
from polydistill.benchmarks.report import write_outputs
from polydistill.benchmarks.variants import cpu_has_bf16, hf_source, onnx_source
from polydistill.config import (
    headline_int8,
    onnx_model_name,
)
from polydistill.run_state import TEACHER, Run
from polydistill.scoring import score_table


def stage_bench(run: Run) -> None:
    """Every variant of the teacher and student, interleaved, with the benchmark harness.

    Writes `bench/results.{json,md}` and `bench/pareto.png` in the run directory; the teacher's
    PyTorch fp32 and the student's int8 ONNX rows become `metrics.json`'s `latency_ms`.
    """
    cfg = run.recipe.bench
    threads = cfg.threads or os.cpu_count() or 1
    mean = score_table(run)["mean"]
    checkpoints = run.directory / "checkpoints"
    sources = [hf_source(checkpoints / TEACHER, TEACHER, "teacher", {"torch/fp32": mean[TEACHER]})]
    for name in [n for n in run.models if n != TEACHER]:  # the distilled student, and the pruned one
        sources.append(hf_source(checkpoints / name, name, "student", {"torch/fp32": mean[name]}))
    headline = headline_int8(list(run.onnx_dirs))  # export.variants' order: none when export did not run
    wanted = {(TEACHER, "torch", "fp32"): "teacher_torch_fp32"}  # bench rows -> metrics.json's latency_ms
    for variant, directory in run.onnx_dirs.items():
        if variant == "none":
            continue  # the student's fp32 onnxruntime row is exported by the harness itself
        # the headline int8 variant keeps the student's name (as int8-dynamic it replaces the harness's own
        # int8 export of it); the other variants are rows of their own
        label = run.student_name if variant == headline else onnx_model_name(variant)
        source = onnx_source(directory, label, "student")
        if variant == headline:
            wanted[(label, "onnxruntime", source.onnx_precision)] = onnx_model_name(variant)
        source.accuracy[f"onnxruntime/{source.onnx_precision}"] = mean[onnx_model_name(variant)]
        sources.append(source)
    settings = Settings(
        device="cpu",
        precisions=["fp32", "int8-dynamic"] + (["bf16"] if cpu_has_bf16() else []),
        batches=[cfg.batch],
        seqs=[cfg.seq],
        threads=[threads],
        texts=run.data.texts("dev") if cfg.length_mix else None,  # real sentence lengths + tokenisation rows
        warmup=cfg.warmup,
        min_runs=cfg.runs,
        max_seconds=cfg.max_seconds,
        command=f"distill run (stage bench of {run.recipe.name})",
    )
    run.say(f"benchmark: batch {cfg.batch}, sequence {cfg.seq} and the dev length mix, {threads} threads")
    doc = run_benchmark(sources, settings, say=lambda _line: None)
    write_outputs(run.directory / "bench", doc)
    run.metrics["latency_ms"] = _latency_summary(doc["results"], cfg.seq, wanted)
    run.metrics["latency_setup"] = {"batch": cfg.batch, "seq": cfg.seq, "threads": threads, "warmup": cfg.warmup}
    rows = [{k: v for k, v in row.items() if k != "samples_ms"} for row in doc["results"]]
    run.metrics["bench"] = {"results": "bench/results.json", "markdown": "bench/results.md", "rows": rows}
    if (run.directory / "bench" / "pareto.png").exists():
        run.metrics["bench"]["pareto"] = "bench/pareto.png"
    for name, r in run.metrics["latency_ms"].items():
        run.say(f"  {name}: p50 {r['p50']:.2f} ms, p90 {r['p90']:.2f} ms over {r['runs']} runs")


def _latency_summary(
    rows: list[dict[str, Any]], seq: int, wanted: dict[tuple[str, str, str], str]
) -> dict[str, dict[str, float]]:
    """The headline rows at the fixed sequence length, `wanted`: (model, backend, precision) -> their name in
    metrics.json (the teacher's PyTorch fp32 and the student's headline int8 ONNX)."""
    out = {}
    for row in rows:
        key = (row.get("model"), row.get("backend"), row.get("precision"))
        if row.get("stage") == "forward" and row.get("seq") == seq and key in wanted:
            out[wanted[key]] = {
                "p50": row["p50_ms"], "p90": row["p90_ms"], "p99": row["p99_ms"], "mean": row["mean_ms"],
                "stdev": row["stdev_ms"], "runs": row["runs"], "settled": row["settled"],
            }  # fmt: skip
    return out
