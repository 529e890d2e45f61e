"""The CPU summary's repeatability rule and target arithmetic on synthetic rows."""

import pytest

from polydistill.benchmarks.experiments.cpu_summary import compare_runs, targets


def row(model, role, backend, precision, p50, *, settled=True, efficiency=0.1, seq=128):
    return {
        "stage": "forward", "model": model, "role": role, "backend": backend, "precision": precision,
        "batch": 1, "seq": seq, "threads": 2, "p50_ms": p50, "settled": settled, "efficiency": efficiency,
    }  # fmt: skip


def test_rows_drifting_more_than_ten_percent_between_runs_are_unsettled():
    first = [row("t", "teacher", "torch", "fp32", 100.0), row("s", "student", "torch", "fp32", 10.0)]
    second = [row("t", "teacher", "torch", "fp32", 109.0), row("s", "student", "torch", "fp32", 11.5)]
    out = compare_runs(first, second)
    assert out[0]["settled"] is True and out[0]["drift"] == pytest.approx(0.09)
    assert out[1]["settled"] is False and out[1]["drift"] == pytest.approx(0.15)


def test_a_row_unsettled_or_missing_in_either_run_stays_unsettled():
    first = [row("t", "teacher", "torch", "fp32", 100.0), row("s", "student", "torch", "fp32", 10.0)]
    second = [row("t", "teacher", "torch", "fp32", 100.0, settled=False)]
    out = compare_runs(first, second)
    assert [r["settled"] for r in out] == [False, False]
    assert out[1]["p50_ms_run2"] is None


def test_targets_use_the_fp32_teacher_the_best_int8_teacher_and_the_best_student():
    rows = [
        row("t", "teacher", "torch", "fp32", 300.0, efficiency=0.6),
        row("t", "teacher", "onnxruntime", "int8-dynamic", 120.0, efficiency=0.3),
        row("t", "teacher", "onnxruntime", "fp32", 250.0),
        row("s", "student", "onnxruntime", "int8-dynamic", 2.0),
        row("s", "student", "torch", "fp32", 4.0),
        row("s", "student", "torch", "fp32", 1.0, seq=None),  # length mix: not a target row
    ]
    goal = targets(rows)
    assert goal["speedup_vs_fp32"] == pytest.approx(150.0)
    assert goal["speedup_vs_int8"] == pytest.approx(60.0)
    assert goal["teacher_best_efficiency"] == pytest.approx(0.6)
