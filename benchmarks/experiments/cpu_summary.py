"""Summarise two back-to-back CPU benchmark runs into benchmarks/results/cpu.md (+ cpu.json).

    python -m polydistill.benchmarks.experiments.cpu_summary RUN1_DIR RUN2_DIR OUT_STEM

Reads each run's results.json, checks the issue's targets on run 1 (best student ≥ 30× lower p50
than the fp32 PyTorch teacher and ≥ 10× lower than the teacher's best int8 export; the teacher's
best backend's efficiency against the matmul peak of its precision) and compares every row's p50
between the runs (within 10%, or the row is marked unsettled).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from polydistill.benchmarks.rows import row_cell
from polydistill.io import atomic_write_json, atomic_write_text

REPEAT_TOLERANCE = 0.10


def row_key(row: dict[str, Any]) -> tuple:
    return (row["stage"], row["model"], row["backend"], row["precision"], row["batch"], row["seq"], row["threads"])


def compare_runs(first: list[dict[str, Any]], second: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each row of `first` with the p50 of the same row in `second` and whether they agree.

    A row agrees when the p50s differ by at most 10% of the first; one that does not, or that did
    not settle in either run, is marked `settled: false`.
    """
    other = {row_key(r): r for r in second}
    out = []
    for row in first:
        twin = other.get(row_key(row))
        p50_2 = twin["p50_ms"] if twin else None
        drift = abs(p50_2 - row["p50_ms"]) / row["p50_ms"] if p50_2 is not None else None
        both_settled = bool(row["settled"] and twin and twin["settled"])
        repeatable = drift is not None and drift <= REPEAT_TOLERANCE
        out.append({**row, "p50_ms_run2": p50_2, "drift": drift, "settled": both_settled and repeatable})
    return out


def targets(rows: list[dict[str, Any]], seq: int = 128, *, bf16_hardware: bool = True) -> dict[str, Any]:
    """The issue's three targets at batch 1 and sequence `seq`, from the forward rows."""
    fixed = [r for r in rows if r["stage"] == "forward" and r["batch"] == 1 and r["seq"] == seq]
    teachers = [r for r in fixed if r["role"] == "teacher"]
    # the XLM-R-base architecture is the teacher the targets are about, when it was measured
    if any(r["model"] == "xlmr-base-arch" for r in teachers):
        teachers = [r for r in teachers if r["model"] == "xlmr-base-arch"]
    students = [r for r in fixed if r["role"] == "student"]
    if not teachers or not students:
        return {}
    fp32 = min((r for r in teachers if r["backend"] == "torch" and r["precision"] == "fp32"), key=lambda r: r["p50_ms"])
    int8 = [r for r in teachers if r["precision"].startswith("int8") and r["backend"] == "onnxruntime"]
    best_int8 = min(int8, key=lambda r: r["p50_ms"]) if int8 else None
    best_student = min(students, key=lambda r: r["p50_ms"])
    best_teacher = min(teachers, key=lambda r: r["p50_ms"])
    return {
        "teacher_fp32": fp32,
        "teacher_best_int8": best_int8,
        "teacher_best": best_teacher,
        "best_student": best_student,
        "speedup_vs_fp32": fp32["p50_ms"] / best_student["p50_ms"],
        "speedup_vs_int8": best_int8["p50_ms"] / best_student["p50_ms"] if best_int8 else None,
        # emulated bf16 (no bf16 instructions) makes its probe, hence its efficiency, meaningless
        "teacher_best_efficiency": max(
            (r["efficiency"] or 0.0) for r in teachers if not (r["precision"] == "bf16" and not bf16_hardware)
        ),
    }


def render(doc1: dict[str, Any], rows: list[dict[str, Any]], goal: dict[str, Any], command: str) -> str:
    env = doc1["environment"]
    cpu = env.get("cpu", {})
    lines = [
        "# CPU latency: XLM-R-base-architecture teacher vs students",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {cpu.get('model')} — {env.get('cores')} cores; flags: {', '.join(cpu.get('flags', []))}. "
        f"torch {env['versions'].get('torch')}, onnxruntime {env['versions'].get('onnxruntime')}.",
        "",
        "The XLM-R-base teacher has **random weights** (no pretrained XLM-R is reachable here): its rows are",
        "latency only. Accuracies are those of the quickstart run's own models.",
        "",
    ]
    if goal:
        t, s = goal["teacher_fp32"], goal["best_student"]
        ok = "met" if goal["speedup_vs_fp32"] >= 30 else "NOT met"
        lines += [
            "## Targets (batch 1, sequence 128)",
            "",
            "| target | measured | |",
            "|---|---|---|",
            f"| best student ≥ 30× lower p50 than the fp32 PyTorch teacher | {goal['speedup_vs_fp32']:.1f}× "
            f"({s['model']} {s['backend']} {s['precision']} {s['p50_ms']:.2f} ms vs {t['p50_ms']:.1f} ms) | {ok} |",
        ]
        if goal["teacher_best_int8"] is not None:
            i8 = goal["teacher_best_int8"]
            ok = "met" if goal["speedup_vs_int8"] >= 10 else "NOT met"
            lines.append(
                f"| best student ≥ 10× lower p50 than the teacher's best int8 export | {goal['speedup_vs_int8']:.1f}× "
                f"(teacher {i8['precision']} ONNX {i8['p50_ms']:.1f} ms) | {ok} |"
            )
        eff = goal["teacher_best_efficiency"]
        ok = "met" if eff >= 0.5 else "NOT met"
        best = max(
            (r for r in [goal["teacher_fp32"], goal["teacher_best_int8"]] if r), key=lambda r: r["efficiency"] or 0
        )
        lines.append(
            f"| teacher's best backend ≥ 50% of the matmul peak of its precision | {eff:.0%} "
            f"(e.g. {best['backend']} {best['precision']} {(best['efficiency'] or 0):.0%}; "
            f"bf16 excluded where emulated) | {ok} |"
        )
    lines += [
        "",
        "## All rows (run 1; run 2's p50 beside it; settled = settled in both runs and p50s within 10%)",
        "",
        "| model | role | backend | precision | seq | p50 ms | p50 ms run 2 | drift | p90 ms | p99 ms | seq/s "
        "| efficiency | accuracy | MB | settled |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r["stage"] != "forward":
            continue
        seq = r["seq"] if r["seq"] is not None else "length mix"
        run2, drift = row_cell(r, "p50_ms_run2", ".2f"), row_cell(r, "drift", ".1%")
        eff, acc, size = row_cell(r, "efficiency", ".1%"), row_cell(r, "accuracy", ".3f"), row_cell(r, "size_mb", ".1f")
        lines.append(
            f"| {r['model']} | {r['role']} | {r['backend']} | {r['precision']} | {seq} | {r['p50_ms']:.2f} | {run2} "
            f"| {drift} | {r['p90_ms']:.2f} | {r['p99_ms']:.2f} | {r['throughput']:.1f} | {eff} | {acc} | {size} "
            f"| {'yes' if r['settled'] else 'no'} |"
        )
    tok = [r for r in rows if r["stage"] == "tokenize"]
    for r in tok:
        lines.append(f"\nTokenisation, timed apart: {r['model']} p50 {r['p50_ms']:.2f} ms per batch of {r['batch']}.")
    peaks = doc1.get("peaks", {}).get("cpu", {})
    if peaks:
        lines += ["", "## Matmul peaks measured on this machine (GFLOP/s)", ""]
        for threads, kinds in peaks.items():
            cells = [f"{k} {v['gflops']:.0f}" if "gflops" in v else f"{k} unavailable" for k, v in kinds.items()]
            lines.append(f"- {threads} threads: " + ", ".join(cells))
    lines += ["", "Full documents: `cpu/run1/results.{json,md}`, `cpu/run2/results.{json,md}`.", ""]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    run1, run2, stem = Path(argv[0]), Path(argv[1]), Path(argv[2])
    doc1 = json.loads((run1 / "results.json").read_text())
    doc2 = json.loads((run2 / "results.json").read_text())
    rows = compare_runs(doc1["results"], doc2["results"])
    bf16 = bool(doc1["environment"].get("cpu", {}).get("has_bf16"))
    goal = targets(doc1["results"], bf16_hardware=bf16)
    command = doc1.get("command", "")
    slim = [{k: v for k, v in r.items() if k != "samples_ms"} for r in rows]
    summary = {
        "command": command,
        "environment": doc1["environment"],
        "targets": targets(slim, bf16_hardware=bf16),
        "results": slim,
    }
    atomic_write_json(stem.with_suffix(".json"), summary)
    atomic_write_text(stem.with_suffix(".md"), render(doc1, rows, goal, command))
    print(f"wrote {stem.with_suffix('.md')} and {stem.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
