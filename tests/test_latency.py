"""Latency arithmetic on a fake clock (no timing assertions on the real one)."""

import pytest

from polydistill.benchmarks.latency import interleaved_latency, summarize


def test_summarize_percentiles():
    s = summarize([float(i) for i in range(1, 101)])
    assert s["p50"] == pytest.approx(50.5)
    assert s["p90"] == pytest.approx(90.1)
    assert s["mean"] == pytest.approx(50.5)
    assert s["runs"] == 100


def test_interleaved_latency_alternates_variants_and_skips_warmup():
    now = [0.0]
    calls = []

    def clock():
        return now[0]

    def make(name, cost):
        def fn():
            calls.append(name)
            now[0] += cost

        return fn

    result = interleaved_latency({"a": make("a", 0.002), "b": make("b", 0.010)}, runs=3, warmup=2, clock=clock)
    assert calls == ["a", "a", "b", "b"] + ["a", "b"] * 3
    assert result["a"]["p50"] == pytest.approx(2.0)
    assert result["b"]["p50"] == pytest.approx(10.0)
    assert result["a"]["runs"] == 3
