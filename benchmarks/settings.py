"""What one benchmark call measures: its `Settings`, the cells of its sweep, and the seconds each cell may time
for (`CellBudget`). Nothing here imports torch: `distill bench`'s argument parsing builds a `Settings`."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Settings:
    device: str = "cpu"
    backends: list[str] = field(default_factory=lambda: ["torch", "onnxruntime"])
    precisions: list[str] = field(default_factory=lambda: ["fp32", "bf16", "int8-dynamic"])
    batches: list[int] = field(default_factory=lambda: [1])
    seqs: list[int] = field(default_factory=lambda: [128])
    threads: list[int] = field(default_factory=lambda: [os.cpu_count() or 1])  # CPU only
    lengths: list[int] | None = None  # real token lengths for the length-mix cells
    texts: list[str] | None = None  # sentences for the tokenisation rows
    warmup: int = 5
    min_runs: int = 10
    max_runs: int = 1000
    rel_ci_width: float = 0.05
    confidence: float = 0.95
    max_seconds: float = 120.0  # timing budget over all cells (loading, export, warm-up not counted)
    # True: max_seconds is the wall time of the whole call, probes, loading, export and warm-up included; each cell
    # times for an equal share of what is left when it starts (at least min_runs each, even past the budget).
    # `distill bench --max-seconds` means this; the pipeline's bench stage keeps the timing-only budget.
    budget_includes_setup: bool = False
    cuda_graphs: bool = False
    probe: bool = True
    dry_run: bool = False
    command: str = ""

    def stopping_rule(self) -> dict[str, Any]:
        """`interleaved_until_settled`'s arguments that end a variant's timing, but for the cell's time budget."""
        return {
            "min_runs": self.min_runs,
            "max_runs": self.max_runs,
            "rel_width": self.rel_ci_width,
            "confidence": self.confidence,
        }


@dataclass(frozen=True)
class Cell:
    """Where a row was measured: batch size, sequence length (None: the length mix) and the thread count
    (None: not set per row, as for tokenisation)."""

    batch: int
    seq: int | None
    threads: int | None


def cells(settings: Settings) -> list[tuple[int, int | None]]:
    """(batch, seq) of every cell of one thread count; seq None = the length mix."""
    fixed: list[tuple[int, int | None]] = [(b, s) for b in settings.batches for s in settings.seqs]
    mix: list[tuple[int, int | None]] = [(b, None) for b in settings.batches] if settings.lengths else []
    return fixed + mix


class CellBudget:
    """The seconds each cell may time for, asked once per cell in sweep order, after its warm-up.

    With `settings.budget_includes_setup` the budget is the whole call's wall time from `started`: what the
    imports, probes, loading and exporting the models (re-exporting a teacher to ONNX can take longer than the
    timing) and the warm-ups took is spent, and a cell's timing gets an equal share of what is left. Otherwise
    every cell gets `max_seconds / cells`, setup and warm-up not counted."""

    def __init__(self, settings: Settings, cells: int, started: float) -> None:
        self.settings, self.started = settings, started
        self.cells = self.cells_left = max(1, cells)
        self.setup_s = time.perf_counter() - started

    def next_cell(self) -> float:
        if not self.settings.budget_includes_setup:
            return self.settings.max_seconds / self.cells
        left = self.settings.max_seconds - (time.perf_counter() - self.started)
        share = max(0.0, left) / self.cells_left
        self.cells_left = max(1, self.cells_left - 1)
        return share

    def setup_line(self) -> str:
        """How much of the budget the setup took, said before the timing starts."""
        spent, total = self.setup_s, self.settings.max_seconds
        if spent >= total:
            return (
                f"setup (imports, probes, loading and exporting the models) took {spent:.1f} s, the whole {total:g} s "
                f"budget: each cell gets its {self.settings.min_runs} minimum runs"
            )
        return f"setup (imports, probes, loading and exporting the models) took {spent:.1f} s of the {total:g} s budget"
