"""Benchmark harness: every variant warmed up, then timed in interleaved rounds per cell.

A cell is one (threads, batch, sequence) point of the sweep, or (threads, batch, length mix). In a
cell, every variant gets `warmup` untimed calls (which also measure its GPU memory), then all of
them are timed round-robin by `interleaved_until_settled` until each median's 95% confidence
interval is within `rel_ci_width` of the median or the cell's share of `max_seconds` is spent;
a row whose median did not settle says `settled: false`.

Tokenisation is timed in its own rounds and reported in its own rows (`stage: "tokenize"`); model
rows (`stage: "forward"`) time the forward pass only, from token ids already on the device.

The result is one JSON-able dict (schema in benchmarks/README.md):
  {"schema", "complete", "dry_run", "command", "environment", "settings", "peaks", "results",
   "skipped", "notes", "started_utc", "finished_utc"}

This module runs the whole call; settings.py holds `Settings`, the cells and their budget, measure.py
times one cell, tokenization.py the tokenisation rows, and rows.py builds the rows.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from polydistill.benchmarks.environment import collect_environment
from polydistill.benchmarks.measure import measure_cell
from polydistill.benchmarks.probe import probe_peaks
from polydistill.benchmarks.rows import describe_error, row_line, skip_row
from polydistill.benchmarks.settings import Cell, CellBudget, Settings, cells
from polydistill.benchmarks.tokenization import measure_tokenization, token_lengths, unique_tokenizers
from polydistill.benchmarks.variants import (
    Source,
    Variant,
    expand_variants,
    ort_has_cuda,
    ort_session,
    prepare_onnx,
    prepare_torch,
)
from polydistill.errors import DistillError

SCHEMA = "polydistill-bench/1"


@dataclass
class Sweep:
    """What the steps of one `run_benchmark` call share: its settings, the results document they fill, and
    where they say what they do and checkpoint the document."""

    settings: Settings
    doc: dict[str, Any]
    say: Callable[[str], None]
    progress: Callable[[dict[str, Any]], None]

    def record(self, rows: list[dict[str, Any]], skipped: list[dict[str, Any]] | None = None) -> None:
        """Rows (and what was not run) into the document, each row said, then the document checkpointed."""
        self.doc["results"].extend(rows)
        self.doc["skipped"].extend(skipped or [])
        for row in rows:
            self.say("  " + row_line(row))
        self.progress(self.doc)


def run_benchmark(
    sources: list[Source],
    settings: Settings,
    *,
    say: Callable[[str], None] = print,
    on_progress: Callable[[dict[str, Any]], None] | None = None,
    started: float | None = None,
) -> dict[str, Any]:
    """Probe peaks, prepare every variant, sweep the cells; returns the results document. `started`: the
    `time.perf_counter()` at which a wall-time budget (`settings.budget_includes_setup`) began, when the
    caller spent some of it already (default: now)."""
    started = time.perf_counter() if started is None else started
    settings = replace(settings)  # the length mix derived from texts below stays in this copy

    if settings.device == "cuda" and not torch.cuda.is_available():
        raise DistillError("bench: --device cuda but torch sees no CUDA device")
    sweep = Sweep(settings, _new_document(sources, settings), say, on_progress or (lambda _doc: None))
    previous_threads = torch.get_num_threads()
    thread_list = settings.threads if settings.device == "cpu" else [previous_threads]
    workdir = tempfile.TemporaryDirectory(prefix="polydistill-bench-")
    cache: dict[Any, Any] = {}  # the models loaded to prepare the variants stay loaded until the sweep is done
    try:
        _length_mix_from_texts(sources, sweep)
        if settings.probe:
            devices = ["cpu"] + (["cuda"] if settings.device == "cuda" else [])
            sweep.doc["peaks"] = probe_peaks(devices, thread_list, quick=settings.dry_run, say=say)
            sweep.progress(sweep.doc)
        ready = _prepare(sources, sweep, Path(workdir.name), cache)
        grid = cells(settings)
        token_cells = [(b, s) for b, s in grid if s is not None] if settings.texts else []
        budget = CellBudget(settings, len(thread_list) * len(grid) + len(token_cells), started)
        if settings.budget_includes_setup:
            say(budget.setup_line())
        for threads in thread_list:
            _time_forward(ready, threads, threads if settings.device == "cpu" else previous_threads, sweep, budget)
        for batch, seq in token_cells:
            assert seq is not None and settings.texts is not None
            sweep.record(
                measure_tokenization(
                    sources, settings.texts, batch=batch, seq=seq, settings=settings, budget_s=budget.next_cell()
                )
            )
    finally:
        torch.set_num_threads(previous_threads)
        workdir.cleanup()
    doc = sweep.doc
    doc["environment"]["loadavg_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    doc["finished_utc"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    doc["complete"] = True
    return doc


def _new_document(sources: list[Source], settings: Settings) -> dict[str, Any]:
    """The results document before anything is measured (`complete` false)."""
    return {
        "schema": SCHEMA,
        "complete": False,
        "dry_run": settings.dry_run,
        "command": settings.command,
        "started_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "environment": collect_environment(),
        "settings": _settings_summary(settings),
        "peaks": {},
        "results": [],
        "skipped": [],
        "notes": _notes(sources, settings),
    }


def _length_mix_from_texts(sources: list[Source], sweep: Sweep) -> None:
    """Without --lengths, the length mix is --texts' token lengths under the first source's tokenizer."""
    settings = sweep.settings
    if settings.lengths is None and settings.texts:
        tokenizers = unique_tokenizers(sources)
        if tokenizers:
            settings.lengths = token_lengths(tokenizers[0].tokenizer_dir, settings.texts)
            sweep.doc["settings"]["length_mix"] = _length_summary(
                settings.lengths, f"--texts tokenized by {tokenizers[0].label}"
            )


def _prepare(sources: list[Source], sweep: Sweep, workdir: Path, cache: dict[Any, Any]) -> list[Variant]:
    """Every variant of the sources loaded, exported or quantized; the ones that failed are skipped rows."""
    settings = sweep.settings
    variants, skipped = expand_variants(
        sources, backends=settings.backends, precisions=settings.precisions, device=settings.device,
        cuda_graphs=settings.cuda_graphs, ort_cuda=ort_has_cuda(),
    )  # fmt: skip
    sweep.doc["skipped"].extend(skipped)
    ready: list[Variant] = []
    for v in variants:
        sweep.say(f"preparing {v.name}")
        try:
            if v.backend == "torch":
                prepare_torch(v, cache)
            else:
                prepare_onnx(v, workdir, cache)
            ready.append(v)
        except Exception as exc:
            sweep.doc["skipped"].append(skip_row(v, {}, f"preparation failed: {describe_error(exc)}"))
    return ready


def _time_forward(ready: list[Variant], threads: int, row_threads: int, sweep: Sweep, budget: CellBudget) -> None:
    """Every cell of the grid at one thread count (CPU) with the onnxruntime sessions opened for it;
    `row_threads` is what the rows say."""
    settings = sweep.settings
    if settings.device == "cpu":
        torch.set_num_threads(threads)
    sessions: dict[str, Any] = {}
    for v in [v for v in ready if v.backend == "onnxruntime"]:
        try:
            sessions[v.name] = ort_session(v.onnx_file, threads=threads if v.device == "cpu" else None, device=v.device)
        except Exception as exc:
            sweep.doc["skipped"].append(skip_row(v, {"threads": threads}, f"session failed: {describe_error(exc)}"))
    active = [v for v in ready if v.backend == "torch" or v.name in sessions]
    for batch, seq in cells(settings):
        sweep.say(f"cell: threads {threads}, batch {batch}, seq {seq if seq is not None else 'length mix'}")
        rows, skipped = measure_cell(
            active, sessions, Cell(batch, seq, row_threads), settings, sweep.doc["peaks"], budget.next_cell
        )
        sweep.record(rows, skipped)
    sessions.clear()


def _length_summary(lengths: list[int], origin: str) -> dict[str, Any]:
    a = np.asarray(lengths)
    return {
        "from": origin, "count": len(lengths), "mean": float(a.mean()), "p50": float(np.percentile(a, 50)),
        "p90": float(np.percentile(a, 90)), "max": int(a.max()),
    }  # fmt: skip


def _settings_summary(settings: Settings) -> dict[str, Any]:
    out = {k: v for k, v in asdict(settings).items() if k not in ("lengths", "texts", "command")}
    out["length_mix"] = _length_summary(settings.lengths, "--lengths") if settings.lengths else None
    out["texts"] = len(settings.texts) if settings.texts else 0
    out["ci_method"] = "distribution-free order-statistic CI of the median (exact binomial)"
    return out


def _notes(sources: list[Source], settings: Settings) -> list[str]:
    notes = [
        "efficiency = flops / (p50_ms / 1000) / the best measured matmul rate of that precision on that device "
        "(and thread count); flops are analytic (benchmarks/flops.py), embeddings excluded.",
        "peak_rss_mb is the process's resident high-water mark when the row was measured: it includes every "
        "model loaded before, so compare rss between runs, not rows.",
    ]
    random = sorted({s.label for s in sources if s.random_weights})
    if random:
        notes.append(
            f"{', '.join(random)}: built-in architectures with RANDOM weights — latency and size only, no accuracy."
        )
    if settings.dry_run:
        notes.append("DRY RUN: built-in architectures shrunk to 2 layers × 64 hidden, few runs; numbers mean nothing.")
    return notes
