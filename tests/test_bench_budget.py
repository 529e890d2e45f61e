"""`distill bench --max-seconds`: the budget covers the whole command (imports, probes, loading and exporting the
models, warm-up), each cell timing for a share of what is left; results go under runs/bench/ by default."""

from __future__ import annotations

import time

from polydistill.benchmarks.settings import CellBudget, Settings
from polydistill.cli import main


def test_a_wall_time_budget_gives_each_cell_an_equal_share_of_what_setup_left():
    settings = Settings(max_seconds=12.0, budget_includes_setup=True, min_runs=3)
    budget = CellBudget(settings, 2, started=time.perf_counter() - 8.0)
    assert "took 8.0 s of the 12 s budget" in budget.setup_line()
    assert 1.9 < budget.next_cell() <= 2.0  # (12 - 8) / 2 cells
    assert 3.9 < budget.next_cell() <= 4.0  # the first cell took no time: the last one gets all that is left
    late = CellBudget(settings, 3, started=time.perf_counter() - 20.0)
    assert late.next_cell() == 0.0 and "the whole 12 s budget: each cell gets its 3 minimum runs" in late.setup_line()


def test_the_timing_only_budget_of_the_pipeline_stage_is_unchanged():
    fixed = CellBudget(Settings(max_seconds=12.0), 3, started=time.perf_counter() - 20.0)
    assert fixed.next_cell() == fixed.next_cell() == 4.0


def test_bench_writes_under_runs_bench_and_says_what_its_budget_covered(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    args = ["bench", "xlmr-arch:2x32", "--dry-run", "--no-probe", "--backends", "torch", "--precisions", "fp32"]
    assert main(args) == 0
    out = capsys.readouterr().out
    (written,) = (tmp_path / "runs" / "bench").iterdir()
    assert written.name.endswith("-cpu") and (written / "results.json").is_file()
    assert "setup (imports, probes, loading and exporting the models) took" in out
    assert "s in all against --max-seconds 1 (the last" in out  # --dry-run caps the budget at 1 s
    assert not (tmp_path / "benchmarks").exists()
