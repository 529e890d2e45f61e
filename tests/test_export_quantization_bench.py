"""benchmarks/experiments/quantization.py: run-dir reading, flagging, and a tiny end-to-end pass over a fake run."""

import json

import pytest
import torch
import yaml
from transformers import XLMRobertaForSequenceClassification

from polydistill.benchmarks.experiments.quantization import (
    FP32,
    JSON_FILE,
    MD_FILE,
    flag_drops,
    main,
    read_run,
    render_markdown,
)
from polydistill.errors import DistillError
from polydistill.export.onnx import export_onnx

LANGS = ["eng_Latn", "yor_Latn"]


def _fake_run(root, data_path: str, tokenizer=None, texts=None, tiny_xlmr_config=None):
    """runs/quick/20260101-000000 under `root`, as `distill run` started in `root` would leave it."""
    run = root / "runs" / "quick" / "20260101-000000"
    (run / "checkpoints" / "student").mkdir(parents=True)
    recipe = {"name": "quick", "output_dir": "runs", "data": {"path": data_path, "languages": LANGS, "max_length": 64}}
    (run / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    if tokenizer is None:
        (run / "onnx" / "student-fp32").mkdir(parents=True)
        (run / "onnx" / "student-fp32" / "model.onnx").write_bytes(b"")
        return run
    config = tiny_xlmr_config(len(tokenizer), num_hidden_layers=1, num_labels=7)
    config._attn_implementation = "eager"
    torch.manual_seed(0)
    student = XLMRobertaForSequenceClassification(config).eval()
    student.save_pretrained(run / "checkpoints" / "student")
    tokenizer.save_pretrained(run / "checkpoints" / "student")
    export_onnx(student, tokenizer, run / "onnx" / "student-fp32", texts[:4])
    return run


def test_read_run_resolves_relative_data_path_from_where_the_run_started(tmp_path, monkeypatch):
    data = tmp_path / "shared" / "sib"
    data.mkdir(parents=True)
    run = _fake_run(tmp_path, "shared/sib")
    monkeypatch.chdir(tmp_path / "runs")  # not where the run was started
    got = read_run(run)
    assert got.data_path == data and got.languages == LANGS and got.max_length == 64
    with pytest.raises(DistillError, match="data folder not found"):
        read_run(run, str(tmp_path / "nowhere"))
    (run / "onnx" / "student-fp32" / "model.onnx").unlink()
    with pytest.raises(DistillError, match="no onnx/student-fp32/model.onnx"):
        read_run(run)


def test_flagging_and_markdown():
    def row(acc: dict[str, float], size: int, p50: float) -> dict:
        return {
            "size_bytes": size,
            "accuracy": acc,
            "mean_accuracy": sum(acc.values()) / len(acc),
            "mean_agreement_with_fp32": 0.9,
            "latency_ms": {"p50": p50},
        }

    rows = {
        FP32: row({"eng_Latn": 0.80, "yor_Latn": 0.60}, 4_000_000, 2.0),
        "int8-dynamic": row({"eng_Latn": 0.805, "yor_Latn": 0.585}, 1_000_000, 1.0),
        "int8-static-minmax": row({"eng_Latn": 0.795, "yor_Latn": 0.600}, 1_000_000, 1.0),
    }
    flag_drops(rows, 0.01)
    assert rows["int8-dynamic"]["flagged_languages"] == ["yor_Latn"]
    assert rows["int8-dynamic"]["max_drop_vs_fp32"] == pytest.approx(0.015)
    assert rows["int8-static-minmax"]["flagged_languages"] == [] and rows[FP32]["flagged_languages"] == []
    doc = {
        "command": "python -m polydistill.benchmarks.experiments.quantization RUN",
        "run_dir": "RUN",
        "data": {"languages": LANGS, "test_sentences": {"eng_Latn": 204, "yor_Latn": 204}},
        "setup": {"batch": 1, "seq": 128, "threads": 2, "runs": 100, "max_drop": 0.01},
        "notes": {"quantized_from": "fp32-optimized", "reduce_range_auto": True, "failed": {"x": "boom"}},
        "variants": rows,
    }
    md = render_markdown(doc)
    assert "`python -m polydistill.benchmarks.experiments.quantization RUN`" in md
    assert "| int8-dynamic | 1.00 | 4.00 | 1.00 | 2.00 | 0.6950 | 0.9000 | 1.5 | yor_Latn |" in md
    assert "| yor_Latn | 0.600 | **0.585** | 0.600 |" in md and "- x: boom" in md


def test_end_to_end_on_a_tiny_fake_run(tmp_path, sib200_path, tiny_tokenizer, small_texts, tiny_xlmr_config):
    run = _fake_run(tmp_path, str(sib200_path), tiny_tokenizer, small_texts, tiny_xlmr_config)
    out = tmp_path / "results"
    argv = [str(run), "--out", str(out), "--max-eval", "6", "--runs", "2", "--warmup", "0"]
    assert main(argv + ["--calibration-sentences", "8", "--threads", "1"]) == 0
    doc = json.loads((out / JSON_FILE).read_text())
    expected = {"fp32", "fp32-optimized", "int8-dynamic", "int8-dynamic-fp32-emb", "int8-dynamic-fp32-emb-node"}
    expected |= {f"int8-static-{m}" for m in ("minmax", "entropy", "percentile")}
    assert expected <= set(doc["variants"]) and not doc["notes"]["failed"]
    for name, row in doc["variants"].items():
        assert set(row["accuracy"]) == set(LANGS), name
        assert row["latency_ms"]["runs"] == 2 and row["size_bytes"] > 0
    assert doc["variants"]["fp32"]["mean_agreement_with_fp32"] == 1.0
    assert doc["variants"]["fp32-optimized"]["mean_agreement_with_fp32"] == 1.0
    sizes = {k: v["size_bytes"] for k, v in doc["variants"].items()}
    assert sizes["int8-dynamic"] < sizes["int8-dynamic-fp32-emb-node"] <= sizes["int8-dynamic-fp32-emb"] < sizes["fp32"]
    assert doc["command"].startswith(f"python -m polydistill.benchmarks.experiments.quantization {run}")
    assert "| int8-static-entropy |" in (out / MD_FILE).read_text()
    assert sorted(p.name for p in run.iterdir()) == ["checkpoints", "onnx", "recipe.yaml"], "run dir left alone"
