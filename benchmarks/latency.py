"""Interleaved latency measurement: warm up every variant, then time them round-robin.

Interleaving makes machine drift (frequency, a noisy neighbour) hit each variant equally, so the
ratio between two variants measured in one call can be trusted more than their absolute values.

`interleaved_until_settled` keeps timing until each median's confidence interval is narrow enough
(see `median_ci`) or a time budget runs out; `benchmarks/harness.py` builds on it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any

import numpy as np
import torch


def summarize(samples_ms: list[float]) -> dict[str, float]:
    """p50/p90/p99, mean and stdev (ms) of a list of timings."""
    if not samples_ms:
        raise ValueError("no timings to summarise")
    a = np.asarray(samples_ms, dtype=np.float64)
    return {
        "p50": float(np.percentile(a, 50)),
        "p90": float(np.percentile(a, 90)),
        "p99": float(np.percentile(a, 99)),
        "mean": float(a.mean()),
        "stdev": float(a.std(ddof=1)) if len(a) > 1 else 0.0,
        "runs": len(a),
    }


def interleaved_latency(
    variants: dict[str, Callable[[], object]],
    *,
    runs: int,
    warmup: int,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, dict[str, float]]:
    """Time each callable `runs` times, round-robin, after `warmup` untimed calls each.

    Each callable must finish its work before returning (synchronise GPU work inside it).
    `clock` is injectable so the arithmetic can be tested with a fake clock.
    """
    if runs < 1 or warmup < 0:
        raise ValueError("runs must be >= 1 and warmup >= 0")
    for fn in variants.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(runs):
        for name, fn in variants.items():
            start = clock()
            fn()
            samples[name].append((clock() - start) * 1000.0)
    return {name: summarize(values) for name, values in samples.items()}


# ----------------------------------------------------------------------------------------------
# Timers, a confidence interval for the median, and interleaving that stops once the medians settle.

Timer = Callable[[Callable[[], object]], float]
"""Runs a callable once and returns how long it took, in milliseconds."""


def host_timer(clock: Callable[[], float] = time.perf_counter) -> Timer:
    """Wall-clock timer: right for CPU work, which is finished when the call returns."""

    def time_once(fn: Callable[[], object]) -> float:
        start = clock()
        fn()
        return (clock() - start) * 1000.0

    return time_once


def cuda_event_timer() -> Timer:
    """CUDA-event timer for work on torch's current stream.

    The device is synchronised first, so the start event is not queued behind earlier work; the
    end event is waited for, so host launch gaps inside the call are part of the time, as they are
    for a user.
    """
    start = torch.cuda.Event(enable_timing=True)
    end = torch.cuda.Event(enable_timing=True)

    def time_once(fn: Callable[[], object]) -> float:
        torch.cuda.synchronize()
        start.record()
        fn()
        end.record()
        end.synchronize()
        return float(start.elapsed_time(end))

    return time_once


def synced_host_timer(clock: Callable[[], float] = time.perf_counter) -> Timer:
    """Wall clock between two full device synchronisations: for GPU work on streams torch does not
    own (onnxruntime's CUDA execution provider)."""

    def time_once(fn: Callable[[], object]) -> float:
        torch.cuda.synchronize()
        start = clock()
        fn()
        torch.cuda.synchronize()
        return (clock() - start) * 1000.0

    return time_once


@lru_cache(maxsize=4096)
def _median_ci_rank(n: int, confidence: float) -> int:
    """Largest k >= 1 with P(x_(k) <= median <= x_(n+1-k)) >= confidence, or 0 if none exists.

    For any continuous distribution the number of samples below the true median is Binomial(n, 1/2),
    so that coverage is 1 - 2 * P(B <= k - 1). Computed in log space to stay finite for large n.
    """
    if n < 1:
        return 0
    alpha = 1.0 - confidence
    log_half_n = -n * math.log(2.0)
    cum = 0.0  # P(B <= k - 1)
    k = 0
    for i in range(n // 2 + 1):
        log_pmf = math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + log_half_n
        if 2.0 * (cum + math.exp(log_pmf)) > alpha:
            break
        cum += math.exp(log_pmf)
        k = i + 1
    return k


def median_ci(samples: Sequence[float], confidence: float = 0.95) -> tuple[float, float] | None:
    """Distribution-free confidence interval for the median (order statistics, exact binomial).

    Returns (x_(k), x_(n+1-k)) of the sorted samples, or None when there are too few samples for
    the requested confidence (fewer than 6 for 95%).
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError("confidence must be in (0, 1)")
    k = _median_ci_rank(len(samples), confidence)
    if k == 0:
        return None
    ordered = sorted(samples)
    return float(ordered[k - 1]), float(ordered[len(ordered) - k])


def ci_relative_width(samples: Sequence[float], confidence: float = 0.95) -> float | None:
    """(upper - lower) / median of the median's confidence interval; None if it is undefined."""
    ci = median_ci(samples, confidence)
    if ci is None:
        return None
    p50 = float(np.percentile(np.asarray(samples, dtype=np.float64), 50))
    if p50 <= 0.0:
        return None
    return (ci[1] - ci[0]) / p50


def is_settled(samples: Sequence[float], *, rel_width: float, confidence: float = 0.95) -> bool:
    """True when the median's `confidence` interval is no wider than `rel_width` times the median."""
    width = ci_relative_width(samples, confidence)
    return width is not None and width <= rel_width


def interleaved_until_settled(
    variants: dict[str, Callable[[], object]],
    *,
    timers: dict[str, Timer] | None = None,
    min_runs: int = 10,
    max_runs: int = 1000,
    rel_width: float = 0.05,
    confidence: float = 0.95,
    max_seconds: float = 60.0,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, dict[str, Any]]:
    """Round-robin timing (no warm-up: do it before) until every median is settled or time is up.

    Each round times every still-active variant once, in the order of `variants`. A variant leaves
    the rounds once it has `min_runs` samples and its median's confidence interval is within
    `rel_width` of the median, or once it has `max_runs` samples. The loop also stops when
    `max_seconds` of `clock` time have passed and every variant has at least `min_runs` samples. Each result is
    `summarize()` plus `samples_ms`, `ci_low`, `ci_high`, `ci_rel_width` and `settled`.
    """
    if min_runs < 1 or max_runs < min_runs:
        raise ValueError("need 1 <= min_runs <= max_runs")
    timers = timers or {}
    default = host_timer(clock)
    samples: dict[str, list[float]] = {name: [] for name in variants}
    active = list(variants)
    deadline = clock() + max_seconds
    while active:
        for name in active:
            samples[name].append(timers.get(name, default)(variants[name]))
        active = [
            name
            for name in active
            if len(samples[name]) < max_runs
            and not (
                len(samples[name]) >= min_runs and is_settled(samples[name], rel_width=rel_width, confidence=confidence)
            )
        ]
        # min_runs is a floor: the time budget only decides how far past it a variant may go
        if clock() >= deadline and all(len(samples[name]) >= min_runs for name in active):
            break
    results: dict[str, dict[str, Any]] = {}
    for name, values in samples.items():
        ci = median_ci(values, confidence)
        stats: dict[str, Any] = dict(summarize(values))
        stats["samples_ms"] = values
        stats["ci_low"] = ci[0] if ci else None
        stats["ci_high"] = ci[1] if ci else None
        stats["ci_rel_width"] = ci_relative_width(values, confidence)
        stats["settled"] = len(values) >= min_runs and is_settled(values, rel_width=rel_width, confidence=confidence)
        results[name] = stats
    return results
