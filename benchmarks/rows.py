"""The rows of a results document: a measured row (`make_row`, keys `ROW_FIELDS`), a row for what was not run
(`skip_row`), and the one console line each measured row is said as."""

from __future__ import annotations

import os
import resource
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from polydistill.benchmarks.flops import efficiency
from polydistill.benchmarks.settings import Cell
from polydistill.benchmarks.variants import Variant

ROW_FIELDS = (
    "stage", "model", "role", "backend", "precision", "device", "batch", "seq", "threads",
    "p50_ms", "p90_ms", "p99_ms", "mean_ms", "stdev_ms", "runs", "ci_low_ms", "ci_high_ms", "ci_rel_width",
    "settled", "throughput", "flops", "efficiency", "peak_rss_mb", "rss_mb", "accuracy", "size_mb", "samples_ms",
)  # fmt: skip
"""Keys every row has (values may be null); GPU rows add `peak_gpu_mb`."""


@dataclass(frozen=True)
class RowLabel:
    """What a row timed: the stage (`forward` or `tokenize`), the model with its role, and how it ran."""

    stage: str
    model: str
    role: str
    backend: str
    precision: str | None
    device: str


def forward_label(v: Variant) -> RowLabel:
    return RowLabel("forward", v.source.label, v.source.role, v.backend, v.precision, v.device)


def peak_rss_mb() -> float:
    """High-water mark of this process's resident memory (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def current_rss_mb() -> float | None:
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def make_row(
    label: RowLabel,
    cell: Cell,
    stats: dict[str, Any],
    *,
    flops: float | None = None,
    peak: float | None = None,
    accuracy: float | None = None,
    size_mb: float | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One result row; throughput = batch / p50 (sequences per second)."""
    p50, batch = stats["p50"], cell.batch
    row: dict[str, Any] = {
        "stage": label.stage, "model": label.model, "role": label.role, "backend": label.backend,
        "precision": label.precision, "device": label.device, "batch": batch, "seq": cell.seq,
        "threads": cell.threads,
        "p50_ms": p50, "p90_ms": stats["p90"], "p99_ms": stats["p99"], "mean_ms": stats["mean"],
        "stdev_ms": stats["stdev"], "runs": stats["runs"], "ci_low_ms": stats.get("ci_low"),
        "ci_high_ms": stats.get("ci_high"), "ci_rel_width": stats.get("ci_rel_width"),
        "settled": bool(stats.get("settled", False)),
        "throughput": batch / (p50 / 1000.0) if p50 > 0 else None,
        "flops": flops, "efficiency": efficiency(flops, p50, peak),
        "peak_rss_mb": round(peak_rss_mb(), 1), "rss_mb": _round(current_rss_mb(), 1),
        "accuracy": accuracy, "size_mb": _round(size_mb, 3),
        "samples_ms": [round(x, 5) for x in stats.get("samples_ms", [])],
    }  # fmt: skip
    row.update(extra or {})
    return row


def _round(x: float | None, digits: int) -> float | None:
    return None if x is None else round(x, digits)


def skip_row(v: Variant, where: dict[str, Any], reason: str) -> dict[str, Any]:
    """A variant not run, at `where` (some of batch, seq, threads; empty: nowhere), and why."""
    return {
        "model": v.source.label, "role": v.source.role, "backend": v.backend, "precision": v.precision,
        "device": v.device, "cuda_graph": v.cuda_graph, **where, "reason": reason,
    }  # fmt: skip


def describe_error(exc: BaseException) -> str:
    """One line: the exception and the innermost source line that raised it."""
    text = str(exc).strip().splitlines()
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" [at {Path(frames[-1].filename).name}:{frames[-1].lineno} {frames[-1].line}]" if frames else ""
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300] + where[:200]


def row_cell(row: dict[str, Any], key: str, spec: str) -> str:
    """A row's optional field as a Markdown table cell: formatted with `spec`, or "–" where it is missing or None."""
    return format(row[key], spec) if row.get(key) is not None else "–"


def row_line(row: dict[str, Any]) -> str:
    settled = "" if row["settled"] else " (not settled)"
    eff = f", eff {row['efficiency']:.1%}" if row.get("efficiency") is not None else ""
    seq = row["seq"] if row["seq"] is not None else "mix"
    return (
        f"{row['model']} {row['backend']} {row['precision'] or ''} {row['device']}"
        f"{' graph' if row.get('cuda_graph') else ''} b{row['batch']} s{seq}"
        f": p50 {row['p50_ms']:.3f} ms, {row['throughput']:.1f} seq/s{eff}, {row['runs']} runs{settled}"
    )
