"""The ablation table's retention numbers are computed the way its header says."""

import pytest

from polydistill.benchmarks.experiments.distill_ablation import render, summarise


def _cell(seed, student, losses="KL+CE", size="2L-64"):
    teacher = {"a": 0.5, "b": 0.4}
    return {"losses": losses, "size": size, "seed": seed, "languages": student, "teacher_languages": teacher,
            "params": 100, "teacher_params": 1000, "distill_seconds": 1.0}  # fmt: skip


def test_retention_uses_seed_means_and_the_worst_language_ratio():
    cells = [_cell(0, {"a": 0.5, "b": 0.30}), _cell(1, {"a": 0.6, "b": 0.34}), _cell(0, {"a": 0.1, "b": 0.1}, "X")]
    rows = summarise(cells)
    assert [(r["losses"], r["seeds"]) for r in rows] == [("KL+CE", [0, 1]), ("X", [0])]
    row = rows[0]
    assert row["teacher_mean"] == pytest.approx(0.45)
    assert row["student_mean"] == pytest.approx((0.40 + 0.47) / 2)
    assert row["retention"] == pytest.approx(0.435 / 0.45)
    assert row["per_language_mean"] == pytest.approx({"a": 0.55, "b": 0.32})
    assert (row["worst_language"], row["worst_retention"]) == ("b", pytest.approx(0.8))
    assert row["param_ratio"] == pytest.approx(0.1)
    doc = {"command": "c", "seconds": 60, "teacher": {"path": "t", "params": 1000, "mean": 0.45}, "rows": rows}
    assert "| KL+CE | 2L-64 | 0k | 10.0% | 0.435 ± 0.035 | 96.7% | b | 80.0% |" in render(doc)
