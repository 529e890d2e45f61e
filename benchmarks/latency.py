"""Interleaved latency measurement: warm up every variant, then time them round-robin.

Interleaving makes machine drift (frequency, a noisy neighbour) hit each variant equally, so the
ratio between two variants measured in one call can be trusted more than their absolute values.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np


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
