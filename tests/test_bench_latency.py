"""Interleaving, percentiles, the median's confidence interval and the settled rule, on a fake clock
(no assertion ever depends on the real clock)."""

from fractions import Fraction
from math import comb

import pytest

from polydistill.benchmarks.latency import (
    host_timer,
    interleaved_until_settled,
    is_settled,
    median_ci,
)


def exact_rank(n: int, confidence: float) -> int:
    """The order-statistic rank from exact integer binomial sums (reference for the log-space version)."""
    alpha = Fraction(1) - Fraction(confidence)
    k, cum = 0, 0
    for i in range(n // 2 + 1):
        if 2 * Fraction(cum + comb(n, i), 2**n) > alpha:
            break
        cum += comb(n, i)
        k = i + 1
    return k


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.calls: list[str] = []

    def __call__(self) -> float:
        return self.now

    def variant(self, name: str, costs_s):
        costs = iter(costs_s)

        def fn():
            self.calls.append(name)
            self.now += next(costs)

        return fn


def test_median_ci_matches_exact_binomial_ranks_and_known_values():
    for n in range(1, 160):
        samples = [float(i) for i in range(1, n + 1)]
        k = exact_rank(n, 0.95)
        ci = median_ci(samples, 0.95)
        if k == 0:
            assert ci is None
        else:
            assert ci == (float(k), float(n + 1 - k))
    assert median_ci([1.0] * 5) is None  # 2 / 32 > 0.05: five samples cannot give a 95% CI
    assert median_ci([3, 1, 2, 6, 5, 4]) == (1.0, 6.0)  # n = 6: min and max (coverage 31/32)
    assert median_ci([float(i) for i in range(1, 21)]) == (6.0, 15.0)  # n = 20: x(6), x(15), coverage 95.9%


def test_settled_needs_a_narrow_interval():
    tight = [10.0 + 0.01 * (i % 7) for i in range(30)]
    wide = [10.0 + 5.0 * (i % 7) for i in range(30)]
    assert is_settled(tight, rel_width=0.05)
    assert not is_settled(wide, rel_width=0.05)
    assert not is_settled([10.0] * 5, rel_width=0.05)  # too few samples for any CI
    assert is_settled([10.0] * 6, rel_width=0.0)


def test_rounds_interleave_and_settled_variants_leave():
    clock = FakeClock()
    steady = clock.variant("steady", [0.010] * 100)
    # alternates 5 ms / 15 ms: the median's CI never narrows below 5%
    noisy = clock.variant("noisy", [0.005, 0.015] * 50)
    result = interleaved_until_settled(
        {"steady": steady, "noisy": noisy},
        timers={"steady": host_timer(clock), "noisy": host_timer(clock)},
        min_runs=6,
        max_runs=20,
        rel_width=0.05,
        max_seconds=100.0,
        clock=clock,
    )
    # round-robin in the given order; steady settles after min_runs, noisy runs on alone to max_runs
    assert clock.calls[:12] == ["steady", "noisy"] * 6
    assert clock.calls[12:] == ["noisy"] * 14
    assert result["steady"]["settled"] is True and result["steady"]["runs"] == 6
    assert result["steady"]["p50"] == pytest.approx(10.0)
    assert result["steady"]["ci_rel_width"] == pytest.approx(0.0)
    assert result["noisy"]["settled"] is False and result["noisy"]["runs"] == 20
    assert result["noisy"]["p50"] == pytest.approx(10.0)  # median of ten 5s and ten 15s
    assert result["noisy"]["p90"] == pytest.approx(15.0)
    assert result["noisy"]["ci_low"] == pytest.approx(5.0) and result["noisy"]["ci_high"] == pytest.approx(15.0)
    assert len(result["noisy"]["samples_ms"]) == 20


def test_time_budget_stops_the_rounds_unsettled():
    clock = FakeClock()
    slow = clock.variant("slow", [1.0, 2.0] * 50)  # one or two seconds per call: a wide interval
    result = interleaved_until_settled(
        {"slow": slow}, min_runs=3, max_runs=100, rel_width=0.05, max_seconds=3.5, clock=clock
    )
    assert result["slow"]["runs"] == 3  # 1 + 2 + 1 = 4 s: past the budget once min_runs is reached
    assert result["slow"]["settled"] is False
    assert result["slow"]["p50"] == pytest.approx(1000.0)


def test_min_runs_is_a_floor_even_past_the_time_budget():
    clock = FakeClock()
    slow = clock.variant("slow", [1.0] * 100)  # one second per call
    result = interleaved_until_settled(
        {"slow": slow}, min_runs=10, max_runs=100, rel_width=0.05, max_seconds=3.5, clock=clock
    )
    assert result["slow"]["runs"] == 10
    assert result["slow"]["settled"] is True  # ten identical samples: a zero-width interval


def test_percentiles_on_a_fake_clock():
    clock = FakeClock()
    fn = clock.variant("a", [i / 1000.0 for i in range(1, 101)])  # 1, 2, ..., 100 ms
    r = interleaved_until_settled({"a": fn}, min_runs=100, max_runs=100, max_seconds=1e9, clock=clock)["a"]
    assert r["p50"] == pytest.approx(50.5)
    assert r["p90"] == pytest.approx(90.1)
    assert r["p99"] == pytest.approx(99.01)
    assert r["mean"] == pytest.approx(50.5)
    assert r["stdev"] == pytest.approx(29.011, abs=1e-3)


def test_bad_run_counts_are_rejected():
    with pytest.raises(ValueError):
        interleaved_until_settled({"a": lambda: None}, min_runs=5, max_runs=4)
    with pytest.raises(ValueError):
        median_ci([1.0, 2.0], confidence=1.0)
