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
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from polydistill.benchmarks.environment import collect_environment
from polydistill.benchmarks.flops import efficiency, encoder_flops
from polydistill.benchmarks.latency import (
    Timer,
    cuda_event_timer,
    host_timer,
    interleaved_until_settled,
    synced_host_timer,
)
from polydistill.benchmarks.probe import peak_flops_per_s, probe_peaks
from polydistill.benchmarks.variants import (
    Source,
    Variant,
    expand_variants,
    fixed_inputs,
    length_mix_inputs,
    ort_callable,
    ort_has_cuda,
    ort_session,
    prepare_onnx,
    prepare_torch,
    torch_callable,
)

SCHEMA = "polydistill-bench/1"
ROW_FIELDS = (
    "stage", "model", "role", "backend", "precision", "device", "batch", "seq", "threads",
    "p50_ms", "p90_ms", "p99_ms", "mean_ms", "stdev_ms", "runs", "ci_low_ms", "ci_high_ms", "ci_rel_width",
    "settled", "throughput", "flops", "efficiency", "peak_rss_mb", "rss_mb", "accuracy", "size_mb", "samples_ms",
)  # fmt: skip
"""Keys every row has (values may be null); GPU rows add `peak_gpu_mb`."""


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


def cells(settings: Settings) -> list[tuple[int, int | None]]:
    """(batch, seq) of every cell of one thread count; seq None = the length mix."""
    fixed: list[tuple[int, int | None]] = [(b, s) for b in settings.batches for s in settings.seqs]
    mix: list[tuple[int, int | None]] = [(b, None) for b in settings.batches] if settings.lengths else []
    return fixed + mix


def max_tokens(config: dict[str, Any]) -> int:
    """Longest input the position table allows (RoBERTa-style models offset positions by pad id + 1)."""
    positions = int(config.get("max_position_embeddings") or 512)
    if config.get("model_type", "xlm-roberta") in ("xlm-roberta", "roberta", "camembert"):
        positions -= int(config.get("pad_token_id", 1)) + 1
    return positions


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
    *,
    stage: str,
    model: str,
    role: str,
    backend: str,
    precision: str | None,
    device: str,
    batch: int,
    seq: int | None,
    threads: int | None,
    stats: dict[str, Any],
    flops: float | None = None,
    peak: float | None = None,
    accuracy: float | None = None,
    size_mb: float | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One result row; throughput = batch / p50 (sequences per second)."""
    p50 = stats["p50"]
    row: dict[str, Any] = {
        "stage": stage, "model": model, "role": role, "backend": backend, "precision": precision,
        "device": device, "batch": batch, "seq": seq, "threads": threads,
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


def _timer(v: Variant) -> Timer:
    if v.device != "cuda":
        return host_timer()
    return cuda_event_timer() if v.backend == "torch" else synced_host_timer()


def _error(exc: BaseException) -> str:
    """One line: the exception and the innermost source line that raised it."""
    text = str(exc).strip().splitlines()
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" [at {Path(frames[-1].filename).name}:{frames[-1].lineno} {frames[-1].line}]" if frames else ""
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300] + where[:200]


def measure_cell(
    variants: list[Variant],
    sessions: dict[str, Any],
    *,
    batch: int,
    seq: int | None,
    threads: int | None,
    settings: Settings,
    peaks: dict[str, Any],
    budget: Callable[[], float],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Warm up and time every variant at one cell; returns (rows, skipped). `budget` is asked for the timing's
    seconds once, after the warm-up, so a wall-time budget (`CellBudget`) counts the warm-up too."""
    import torch

    calls: dict[str, Callable[[], object]] = {}
    timers: dict[str, Timer] = {}
    alive: dict[str, Any] = {}
    info: dict[str, dict[str, Any]] = {}
    skipped: list[dict[str, Any]] = []
    cell = {"batch": batch, "seq": seq, "threads": threads}
    for v in variants:
        limit = max_tokens(v.source.config)
        vocab = int(v.source.config["vocab_size"])
        if seq is not None and seq > limit:
            skipped.append(_skip_row(v, cell, f"seq {seq} > the model's {limit} positions"))
            continue
        if seq is None and v.cuda_graph:
            skipped.append(_skip_row(v, cell, "CUDA graphs need one fixed input shape; not run on the length mix"))
            continue
        if seq is None:
            feeds = length_mix_inputs(batch, [min(n, limit) for n in settings.lengths or []], vocab)
        else:
            feeds = [fixed_inputs(batch, seq, vocab)]
        on_gpu = v.device == "cuda" and v.backend == "torch"
        try:
            if on_gpu:
                torch.cuda.synchronize()
                before = torch.cuda.memory_allocated()
                torch.cuda.reset_peak_memory_stats()
            if v.backend == "torch":
                fn, keep = torch_callable(v, feeds)
            else:
                fn, keep = ort_callable(v, sessions[v.name], feeds)
            for _ in range(max(settings.warmup, len(feeds))):  # every shape of a length mix at least once
                fn()
            extra: dict[str, Any] = {}
            if v.device == "cuda":
                torch.cuda.synchronize()
                extra["peak_gpu_mb"] = None
            if on_gpu:
                weights = sum(t.numel() * t.element_size() for t in [*v.model.parameters(), *v.model.buffers()])
                extra["peak_gpu_mb"] = round((weights + torch.cuda.max_memory_allocated() - before) / 2**20, 1)
        except Exception as exc:  # one variant failing (OOM, a missing kernel) must not end the sweep
            skipped.append(_skip_row(v, cell, _error(exc)))
            if v.device == "cuda":
                torch.cuda.empty_cache()
            continue
        widths = [f["input_ids"].shape[1] for f in feeds]
        flops = float(np.mean([encoder_flops(v.source.config, batch, w) for w in widths]))
        if seq is None:
            real = [int(f["attention_mask"].sum()) for f in feeds]
            extra["length_mix"] = {
                "batches": len(feeds), "mean_tokens_per_seq": float(np.mean(real)) / batch,
                "mean_padded_len": float(np.mean(widths)), "max_padded_len": int(max(widths)),
            }  # fmt: skip
        calls[v.name], timers[v.name], alive[v.name] = fn, _timer(v), keep
        info[v.name] = {"variant": v, "flops": flops, "extra": extra}
    rows: list[dict[str, Any]] = []
    budget_s = budget()
    if calls:
        results = interleaved_until_settled(
            calls,
            timers=timers,
            min_runs=settings.min_runs,
            max_runs=settings.max_runs,
            rel_width=settings.rel_ci_width,
            confidence=settings.confidence,
            max_seconds=budget_s,
        )
        for name, stats in results.items():
            v, flops, extra = info[name]["variant"], info[name]["flops"], info[name]["extra"]
            rows.append(
                make_row(
                    stage="forward",
                    model=v.source.label,
                    role=v.source.role,
                    backend=v.backend,
                    precision=v.precision,
                    device=v.device,
                    batch=batch,
                    seq=seq,
                    threads=threads,
                    stats=stats,
                    flops=flops,
                    peak=peak_flops_per_s(peaks, v.device, v.precision, threads),
                    accuracy=v.accuracy,
                    size_mb=v.size_mb,
                    extra={
                        **extra,
                        "cuda_graph": v.cuda_graph,
                        "origin": v.origin,
                        "params": v.params,
                        "size_source": v.size_source,
                        "random_weights": v.source.random_weights,
                        "notes": list(v.notes),
                    },
                )  # fmt: skip
            )
    alive.clear()
    if settings.device == "cuda":
        torch.cuda.empty_cache()
    return rows, skipped


def _skip_row(v: Variant, cell: dict[str, Any], reason: str) -> dict[str, Any]:
    return {
        "model": v.source.label, "role": v.source.role, "backend": v.backend, "precision": v.precision,
        "device": v.device, "cuda_graph": v.cuda_graph, **cell, "reason": reason,
    }  # fmt: skip


# ----------------------------------------------------------------------------------------------
# tokenisation


def unique_tokenizers(sources: list[Source]) -> list[Source]:
    """One source per distinct tokenizer: same tokenizer.json content, ignoring the truncation and
    padding state a tokenizer saves after it was last called with them."""
    seen: set[str] = set()
    out = []
    for src in sources:
        if src.tokenizer_dir is None:
            continue
        file = src.tokenizer_dir / "tokenizer.json"
        key = str(src.tokenizer_dir)
        if file.is_file():
            content = json.loads(file.read_text(encoding="utf-8"))
            content.pop("truncation", None)
            content.pop("padding", None)
            key = hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()
        if key not in seen:
            seen.add(key)
            out.append(src)
    return out


def token_lengths(tokenizer_dir: Path, texts: list[str], limit: int = 512) -> list[int]:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    return [min(limit, len(ids)) for ids in tok(texts, truncation=False)["input_ids"]]


def measure_tokenization(
    sources: list[Source], texts: list[str], *, batch: int, seq: int, settings: Settings, budget_s: float
) -> list[dict[str, Any]]:
    """Rows timing tokenizer(batch of texts, padding, truncation to `seq`), rotating through `texts`."""
    from transformers import AutoTokenizer

    calls: dict[str, Callable[[], object]] = {}
    by_name: dict[str, tuple[Source, str]] = {}
    for src in unique_tokenizers(sources):
        tok = AutoTokenizer.from_pretrained(src.tokenizer_dir)
        chunks = [texts[i : i + batch] for i in range(0, max(1, len(texts) - batch + 1), batch)] or [texts]
        state = {"i": 0}

        def call(tok=tok, chunks=chunks, state=state) -> object:
            state["i"] = (state["i"] + 1) % len(chunks)
            return tok(chunks[state["i"]], padding=True, truncation=True, max_length=seq)

        for _ in range(settings.warmup):
            call()
        calls[src.label] = call
        by_name[src.label] = (src, type(tok).__name__)
    if not calls:
        return []
    results = interleaved_until_settled(
        calls, min_runs=settings.min_runs, max_runs=settings.max_runs, rel_width=settings.rel_ci_width,
        confidence=settings.confidence, max_seconds=budget_s,
    )  # fmt: skip
    rows = []
    for name, stats in results.items():
        src, tok_class = by_name[name]
        rows.append(
            make_row(
                stage="tokenize",
                model=src.label,
                role=src.role,
                backend="tokenizers",
                precision=None,
                device="cpu",
                batch=batch,
                seq=seq,
                threads=None,
                stats=stats,
                extra={
                    "notes": [
                        f"{tok_class}, padding=True, truncation to {seq}; TOKENIZERS_PARALLELISM="
                        f"{os.environ.get('TOKENIZERS_PARALLELISM', 'unset')}"
                    ]
                },
            )  # fmt: skip
        )
    return rows


# ----------------------------------------------------------------------------------------------
# the whole sweep


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
    import torch

    started = time.perf_counter() if started is None else started
    settings = replace(settings)  # the length mix derived from texts below stays in this copy

    if settings.device == "cuda" and not torch.cuda.is_available():
        from polydistill.errors import DistillError

        raise DistillError("bench: --device cuda but torch sees no CUDA device")
    doc: dict[str, Any] = {
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
    progress = on_progress or (lambda _doc: None)
    previous_threads = torch.get_num_threads()
    thread_list = settings.threads if settings.device == "cpu" else [previous_threads]
    workdir = tempfile.TemporaryDirectory(prefix="polydistill-bench-")
    try:
        if settings.lengths is None and settings.texts:
            tokenizers = unique_tokenizers(sources)
            if tokenizers:
                settings.lengths = token_lengths(tokenizers[0].tokenizer_dir, settings.texts)
                doc["settings"]["length_mix"] = _length_summary(
                    settings.lengths, f"--texts tokenized by {tokenizers[0].label}"
                )
        if settings.probe:
            devices = ["cpu"] + (["cuda"] if settings.device == "cuda" else [])
            doc["peaks"] = probe_peaks(devices, thread_list, quick=settings.dry_run, say=say)
            progress(doc)
        variants, skipped = expand_variants(
            sources, backends=settings.backends, precisions=settings.precisions, device=settings.device,
            cuda_graphs=settings.cuda_graphs, ort_cuda=ort_has_cuda(),
        )  # fmt: skip
        doc["skipped"].extend(skipped)
        cache: dict[Any, Any] = {}
        ready: list[Variant] = []
        for v in variants:
            say(f"preparing {v.name}")
            try:
                if v.backend == "torch":
                    prepare_torch(v, cache)
                else:
                    prepare_onnx(v, Path(workdir.name), cache)
                ready.append(v)
            except Exception as exc:
                doc["skipped"].append(_skip_row(v, {}, f"preparation failed: {_error(exc)}"))
        grid = cells(settings)
        token_cells = [(b, s) for b, s in grid if s is not None] if settings.texts else []
        budget = CellBudget(settings, len(thread_list) * len(grid) + len(token_cells), started)
        if settings.budget_includes_setup:
            say(budget.setup_line())
        for threads in thread_list:
            if settings.device == "cpu":
                torch.set_num_threads(threads)
            sessions: dict[str, Any] = {}
            for v in [v for v in ready if v.backend == "onnxruntime"]:
                try:
                    sessions[v.name] = ort_session(
                        v.onnx_file, threads=threads if v.device == "cpu" else None, device=v.device
                    )
                except Exception as exc:
                    doc["skipped"].append(_skip_row(v, {"threads": threads}, f"session failed: {_error(exc)}"))
            active = [v for v in ready if v.backend == "torch" or v.name in sessions]
            for batch, seq in grid:
                say(f"cell: threads {threads}, batch {batch}, seq {seq if seq is not None else 'length mix'}")
                row_threads = threads if settings.device == "cpu" else previous_threads
                rows, cell_skips = measure_cell(
                    active, sessions, batch=batch, seq=seq, threads=row_threads,
                    settings=settings, peaks=doc["peaks"], budget=budget.next_cell,
                )  # fmt: skip
                doc["results"].extend(rows)
                doc["skipped"].extend(cell_skips)
                for row in rows:
                    say("  " + _row_line(row))
                progress(doc)
            sessions.clear()
        for batch, seq in token_cells:
            assert seq is not None and settings.texts is not None
            rows = measure_tokenization(
                sources, settings.texts, batch=batch, seq=seq, settings=settings, budget_s=budget.next_cell()
            )
            doc["results"].extend(rows)
            for row in rows:
                say("  " + _row_line(row))
            progress(doc)
    finally:
        torch.set_num_threads(previous_threads)
        workdir.cleanup()
    doc["environment"]["loadavg_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    doc["finished_utc"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    doc["complete"] = True
    return doc


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


def _row_line(row: dict[str, Any]) -> str:
    settled = "" if row["settled"] else " (not settled)"
    eff = f", eff {row['efficiency']:.1%}" if row.get("efficiency") is not None else ""
    seq = row["seq"] if row["seq"] is not None else "mix"
    return (
        f"{row['model']} {row['backend']} {row['precision'] or ''} {row['device']}"
        f"{' graph' if row.get('cuda_graph') else ''} b{row['batch']} s{seq}"
        f": p50 {row['p50_ms']:.3f} ms, {row['throughput']:.1f} seq/s{eff}, {row['runs']} runs{settled}"
    )


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
