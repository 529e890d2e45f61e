"""One cell of the sweep: every variant warmed up (which also measures its GPU memory), then all of them timed
round-robin until settled or out of time; the `stage: "forward"` rows, from token ids already on the device."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from polydistill.benchmarks.flops import encoder_flops
from polydistill.benchmarks.latency import (
    Timer,
    cuda_event_timer,
    host_timer,
    interleaved_until_settled,
    synced_host_timer,
)
from polydistill.benchmarks.probe import peak_flops_per_s
from polydistill.benchmarks.rows import describe_error, forward_label, make_row, skip_row
from polydistill.benchmarks.settings import Cell, Settings
from polydistill.benchmarks.variants import Variant, fixed_inputs, length_mix_inputs, ort_callable, torch_callable


@dataclass
class Warm:
    """A variant warmed up at one cell, ready to be timed."""

    variant: Variant
    call: Callable[[], object]
    keep: Any  # what `call` needs alive until the timing is done
    timer: Timer
    flops: float
    extra: dict[str, Any]  # row fields beyond ROW_FIELDS: peak_gpu_mb, length_mix


def max_tokens(config: dict[str, Any]) -> int:
    """Longest input the position table allows (RoBERTa-style models offset positions by pad id + 1)."""
    positions = int(config.get("max_position_embeddings") or 512)
    if config.get("model_type", "xlm-roberta") in ("xlm-roberta", "roberta", "camembert"):
        positions -= int(config.get("pad_token_id", 1)) + 1
    return positions


def measure_cell(
    variants: list[Variant],
    sessions: dict[str, Any],
    cell: Cell,
    settings: Settings,
    peaks: dict[str, Any],
    budget: Callable[[], float],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Warm up and time every variant at one cell; returns (rows, skipped). `budget` is asked for the timing's
    seconds once, after the warm-up, so a wall-time budget (`CellBudget`) counts the warm-up too."""
    warm: dict[str, Warm] = {}
    skipped: list[dict[str, Any]] = []
    for v in variants:
        feeds, reason = _inputs(v, cell, settings.lengths or [])
        if reason is not None:
            skipped.append(skip_row(v, asdict(cell), reason))
            continue
        try:
            fn, keep, extra = _warm_up(v, sessions, feeds, settings.warmup)
        except Exception as exc:  # one variant failing (OOM, a missing kernel) must not end the sweep
            skipped.append(skip_row(v, asdict(cell), describe_error(exc)))
            if v.device == "cuda":
                torch.cuda.empty_cache()
            continue
        warm[v.name] = _ready(v, fn, keep, extra, feeds, cell)
    rows: list[dict[str, Any]] = []
    budget_s = budget()
    calls = {name: w.call for name, w in warm.items()}
    if calls:
        timers = {name: w.timer for name, w in warm.items()}
        results = interleaved_until_settled(calls, timers=timers, max_seconds=budget_s, **settings.stopping_rule())
        rows = [_forward_row(warm[name], cell, stats, peaks) for name, stats in results.items()]
    warm.clear()
    if settings.device == "cuda":
        torch.cuda.empty_cache()
    return rows, skipped


def _inputs(v: Variant, cell: Cell, lengths: list[int]) -> tuple[list[dict[str, Any]], str | None]:
    """The batches `v` is timed on at `cell`, or no batches and why it is not run there."""
    limit = max_tokens(v.source.config)
    vocab = int(v.source.config["vocab_size"])
    if cell.seq is not None and cell.seq > limit:
        return [], f"seq {cell.seq} > the model's {limit} positions"
    if cell.seq is None and v.cuda_graph:
        return [], "CUDA graphs need one fixed input shape; not run on the length mix"
    if cell.seq is None:
        return length_mix_inputs(cell.batch, [min(n, limit) for n in lengths], vocab), None
    return [fixed_inputs(cell.batch, cell.seq, vocab)], None


def _warm_up(
    v: Variant, sessions: dict[str, Any], feeds: list[dict[str, Any]], warmup: int
) -> tuple[Callable[[], object], Any, dict[str, Any]]:
    """(`v`'s timed callable on `feeds`, what it needs alive, row fields) after `warmup` calls (and every shape of
    a length mix at least once); the fields hold a CUDA variant's peak GPU memory, weights included, when torch
    can tell it."""
    on_gpu = v.device == "cuda" and v.backend == "torch"
    if on_gpu:
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    if v.backend == "torch":
        fn, keep = torch_callable(v, feeds)
    else:
        fn, keep = ort_callable(v, sessions[v.name], feeds)
    for _ in range(max(warmup, len(feeds))):
        fn()
    extra: dict[str, Any] = {}
    if v.device == "cuda":
        torch.cuda.synchronize()
        extra["peak_gpu_mb"] = None
    if on_gpu:
        weights = sum(t.numel() * t.element_size() for t in [*v.model.parameters(), *v.model.buffers()])
        extra["peak_gpu_mb"] = round((weights + torch.cuda.max_memory_allocated() - before) / 2**20, 1)
    return fn, keep, extra


def _ready(
    v: Variant, fn: Callable[[], object], keep: Any, extra: dict[str, Any], feeds: list[dict[str, Any]], cell: Cell
) -> Warm:
    """The warmed-up variant with its analytic FLOPs per call and, on the length mix, what the batches held."""
    widths = [f["input_ids"].shape[1] for f in feeds]
    flops = float(np.mean([encoder_flops(v.source.config, cell.batch, w) for w in widths]))
    if cell.seq is None:
        real = [int(f["attention_mask"].sum()) for f in feeds]
        extra["length_mix"] = {
            "batches": len(feeds), "mean_tokens_per_seq": float(np.mean(real)) / cell.batch,
            "mean_padded_len": float(np.mean(widths)), "max_padded_len": int(max(widths)),
        }  # fmt: skip
    return Warm(v, fn, keep, _timer(v), flops, extra)


def _timer(v: Variant) -> Timer:
    if v.device != "cuda":
        return host_timer()
    return cuda_event_timer() if v.backend == "torch" else synced_host_timer()


def _forward_row(w: Warm, cell: Cell, stats: dict[str, Any], peaks: dict[str, Any]) -> dict[str, Any]:
    v = w.variant
    return make_row(
        forward_label(v), cell, stats, flops=w.flops, peak=peak_flops_per_s(peaks, v.device, v.precision, cell.threads),
        accuracy=v.accuracy, size_mb=v.size_mb,
        extra={
            **w.extra, "cuda_graph": v.cuda_graph, "origin": v.origin, "params": v.params,
            "size_source": v.size_source, "random_weights": v.source.random_weights, "notes": list(v.notes),
        },
    )  # fmt: skip
