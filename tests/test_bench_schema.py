"""The benchmark document's schema, sources and variants, and the report files (tiny models, few runs)."""

import json
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from polydistill.benchmarks.harness import SCHEMA, run_benchmark
from polydistill.benchmarks.report import pareto_front, render_markdown, write_outputs
from polydistill.benchmarks.rows import ROW_FIELDS, RowLabel, make_row
from polydistill.benchmarks.settings import Cell, Settings
from polydistill.benchmarks.variants import expand_variants, parse_sources, unsupported
from polydistill.errors import DistillError

REPO = Path(__file__).resolve().parents[1]
TOP_LEVEL = {
    "schema",
    "complete",
    "dry_run",
    "command",
    "environment",
    "settings",
    "peaks",
    "results",
    "skipped",
    "notes",
}


def check_document(doc: dict) -> None:
    assert TOP_LEVEL <= set(doc)
    assert doc["schema"] == SCHEMA
    env = doc["environment"]
    assert {"cpu", "cores", "versions", "env", "gpu"} <= set(env)
    assert {"model", "flags", "has_avx512", "has_vnni", "has_amx"} <= set(env["cpu"])
    assert env["versions"]["torch"]
    for row in doc["results"]:
        assert set(ROW_FIELDS) <= set(row), set(ROW_FIELDS) - set(row)
        assert row["stage"] in ("forward", "tokenize")
        assert row["p99_ms"] >= row["p90_ms"] >= row["p50_ms"] > 0
        assert row["throughput"] == pytest.approx(row["batch"] / (row["p50_ms"] / 1000))
        assert isinstance(row["settled"], bool) and row["runs"] == len(row["samples_ms"])
        if row["stage"] == "forward":
            assert row["flops"] > 0 and row["backend"] in ("torch", "onnxruntime")
            if row["device"] == "cuda" and row["backend"] == "torch":
                assert "peak_gpu_mb" in row
    json.dumps(doc, allow_nan=False)  # strict JSON: no NaN or objects


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory, small_texts, tiny_tokenizer):
    import torch

    from polydistill.config import ScratchConfig
    from polydistill.models import build_scratch_teacher

    torch.manual_seed(0)
    cfg = ScratchConfig(vocab_size=600, hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64)
    model = build_scratch_teacher(cfg, len(tiny_tokenizer), ["a", "b", "c"])
    path = tmp_path_factory.mktemp("hf") / "tiny"
    model.save_pretrained(path, safe_serialization=True)
    tiny_tokenizer.save_pretrained(path)
    return path


def test_harness_on_cpu_writes_the_documented_schema(tmp_path, hf_dir, small_texts):
    sources = parse_sources(f"teacher={hf_dir}") + parse_sources("xlmr-arch:2x32", dry_run=True)
    settings = Settings(
        device="cpu", backends=["torch", "onnxruntime"], precisions=["fp32", "int8-dynamic"], batches=[2], seqs=[8],
        threads=[1], texts=small_texts[:12], warmup=1, min_runs=3, max_runs=4, max_seconds=1.0, dry_run=True,
    )  # fmt: skip
    import torch

    torch.set_num_threads(2)
    progress = []
    doc = run_benchmark(
        sources, settings, say=lambda _line: None, on_progress=lambda d: progress.append(len(d["results"]))
    )
    check_document(doc)
    assert doc["complete"] is True and progress
    assert torch.get_num_threads() == 2  # the thread sweep (1 thread) restores torch's setting
    forward = [r for r in doc["results"] if r["stage"] == "forward"]
    combos = {(r["model"], r["backend"], r["precision"]) for r in forward}
    for model in ("tiny", "xlmr-arch:2x32 (dry-run: 2x64)"):
        for combo in (
            ("torch", "fp32"),
            ("torch", "int8-dynamic"),
            ("onnxruntime", "fp32"),
            ("onnxruntime", "int8-dynamic"),
        ):
            assert (model, *combo) in combos, (model, combo)
    assert {r["role"] for r in forward} == {"teacher", "student"}
    assert all(r["threads"] == 1 for r in forward)
    # the length mix comes from the texts, tokenized by the only tokenizer; its rows have seq None
    mix = [r for r in forward if r["seq"] is None]
    assert mix and all(r["length_mix"]["batches"] >= 1 for r in mix)
    assert doc["settings"]["length_mix"]["count"] == 12
    tokenize = [r for r in doc["results"] if r["stage"] == "tokenize"]
    assert len(tokenize) == 1 and tokenize[0]["model"] == "tiny" and tokenize[0]["flops"] is None
    assert doc["peaks"]["cpu"]["1"]["fp32"]["gflops"] > 0
    assert any("RANDOM weights" in n for n in doc["notes"])
    # outputs: JSON round-trips, Markdown has the tables, nothing temporary is left behind
    written = write_outputs(tmp_path / "out", doc)
    assert json.loads(written["json"].read_text()) == json.loads(json.dumps(doc))
    md = written["markdown"].read_text()
    assert "## Forward pass" in md and "## Tokenisation" in md and "| tiny | teacher | torch | fp32 |" in md
    assert "pareto" not in written  # no accuracies known
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]


def fake_onnx(path: Path, op: str) -> None:
    """A one-node graph standing in for an export: MatMul (fp32) or DynamicQuantizeLinear (int8)."""
    path.mkdir(parents=True)
    if op == "MatMul":
        node = helper.make_node("MatMul", ["x", "w"], ["y"])
        init = [helper.make_tensor("w", TensorProto.FLOAT, [2, 2], [1.0, 0.0, 0.0, 1.0])]
    else:
        node = helper.make_node("DynamicQuantizeLinear", ["x"], ["y", "s", "z"])
        init = []
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 2])], [], init)
    onnx.save(helper.make_model(graph), str(path / "model.onnx"))
    config = {
        "vocab_size": 10,
        "hidden_size": 4,
        "num_hidden_layers": 1,
        "num_attention_heads": 1,
        "intermediate_size": 8,
    }
    (path / "config.json").write_text(json.dumps(config))


def test_run_dir_sources_carry_accuracies_and_native_files_win(tmp_path, hf_dir):
    run = tmp_path / "runs" / "quick" / "20260101-000000"
    for role in ("teacher", "student"):
        (run / "checkpoints").mkdir(parents=True, exist_ok=True)
        (run / "checkpoints" / role).symlink_to(hf_dir)
    fake_onnx(run / "onnx" / "student-fp32", "MatMul")
    fake_onnx(run / "onnx" / "student-int8-dynamic", "DynamicQuantizeLinear")
    mean = {"teacher": 0.8, "student": 0.7, "student_onnx_int8-dynamic": 0.69}
    (run / "metrics.json").write_text(json.dumps({"mean": mean}))
    sources = parse_sources(str(run))
    assert [(s.label, s.role, s.kind, s.onnx_precision) for s in sources] == [
        ("quick/20260101-000000/teacher", "teacher", "hf", None),
        ("quick/20260101-000000/student", "student", "hf", None),
        ("quick/20260101-000000/student", "student", "onnx", "fp32"),
        ("quick/20260101-000000/student", "student", "onnx", "int8-dynamic"),
    ]
    variants, skipped = expand_variants(
        sources, backends=["torch", "onnxruntime"], precisions=["fp32", "int8-dynamic", "int8-static"], device="cpu"
    )
    by_key = {(v.source.role, v.backend, v.precision): v for v in variants}
    assert by_key[("teacher", "torch", "fp32")].accuracy == 0.8
    assert by_key[("student", "torch", "fp32")].accuracy == 0.7
    int8 = by_key[("student", "onnxruntime", "int8-dynamic")]
    assert int8.origin == "native" and int8.source.path.name == "student-int8-dynamic" and int8.accuracy == 0.69
    fp32 = by_key[("student", "onnxruntime", "fp32")]
    assert fp32.origin == "native" and fp32.source.path.name == "student-fp32" and fp32.accuracy is None
    assert by_key[("student", "onnxruntime", "int8-static")].origin == "quantized here"
    assert by_key[("teacher", "onnxruntime", "fp32")].origin == "exported here"
    assert len(by_key) == len(variants)  # no duplicate (model, backend, precision)
    assert all(s["reason"] for s in skipped) and any(s["precision"] == "int8-static" for s in skipped)


def test_builtin_architectures_and_bad_sources():
    (base,) = parse_sources("xlmr-base-arch")
    assert base.role == "teacher" and base.random_weights
    assert base.config["vocab_size"] == 250002 and base.config["num_hidden_layers"] == 12
    (student,) = parse_sources("xlmr-arch:4x384")
    assert student.role == "student" and student.config["num_attention_heads"] == 6
    assert student.config["intermediate_size"] == 1536
    (small,) = parse_sources("teacher=xlmr-arch:2x128:v30000")
    assert small.role == "teacher" and small.config["vocab_size"] == 30000
    with pytest.raises(DistillError, match="neither a built-in"):
        parse_sources("/no/such/model")


def test_unsupported_combinations_say_why():
    assert unsupported("torch", "fp32", "cpu") is None
    assert unsupported("torch", "bf16", "cpu") is None
    assert "CPU" in unsupported("torch", "fp16", "cpu")
    assert "CUDA" in unsupported("onnxruntime", "int8-dynamic", "cuda", ort_cuda=True)
    assert "CUDAExecutionProvider" in unsupported("onnxruntime", "fp32", "cuda", ort_cuda=False)
    assert unsupported("onnxruntime", "fp16", "cuda", ort_cuda=True) is None


def test_pareto_front_and_plot(tmp_path):
    assert pareto_front([(10.0, 0.8), (5.0, 0.7), (20.0, 0.75), (1.0, 0.5), (5.0, 0.6)]) == [3, 1, 0]
    stats = {"p50": 5.0, "p90": 6.0, "p99": 7.0, "mean": 5.5, "stdev": 0.5, "runs": 10, "settled": True}

    def row(p50: float, accuracy: float, size_mb: float, role: str = "student", batch: int = 1) -> dict:
        label = RowLabel("forward", "m", role, "onnxruntime", "int8-dynamic", "cpu")
        cell = Cell(batch=batch, seq=128, threads=2)
        return make_row(label, cell, {**stats, "p50": p50}, accuracy=accuracy, size_mb=size_mb)

    doc = {
        "results": [row(5.0, 0.70, 10.0), row(50.0, 0.80, 1100.0, role="teacher"), row(60.0, 0.75, 400.0, batch=8)],
        "complete": True,
    }
    written = write_outputs(tmp_path, doc)
    assert written["pareto"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Incomplete" not in render_markdown(doc)


def test_benchmarks_import_without_datasets_or_torch_pruning():
    """The GPU path must work where neither is installed: block both and import every module."""
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('datasets', 'torch_pruning'):\n"
        "            raise ImportError('blocked: ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import polydistill.cli, polydistill.benchmarks.harness, polydistill.benchmarks.report\n"
        "import polydistill.benchmarks.variants, polydistill.benchmarks.probe\n"
        "import polydistill.benchmarks.environment, polydistill.benchmarks.flops, polydistill.benchmarks.latency\n"
        "import polydistill.benchmarks.measure, polydistill.benchmarks.rows, polydistill.benchmarks.settings\n"
        "import polydistill.benchmarks.tokenization\n"
        "try:\n"
        "    polydistill.cli.main(['bench', '--help'])\n"
        "except SystemExit as e:\n"
        "    assert e.code == 0\n"
        "assert 'datasets' not in sys.modules and 'torch_pruning' not in sys.modules\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "MODEL_OR_RUN" in done.stdout


def test_prepared_4d_mask_gives_the_same_logits(tiny_teacher):
    """CUDA-graph variants feed additive_mask(...) instead of the 0/1 mask: the logits must not change."""
    import torch

    from polydistill.benchmarks.variants import additive_mask

    ids = torch.randint(3, 500, (3, 10))
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0  # right padding on one row
    ids[1, 6:] = 1
    with torch.inference_mode():
        expected = tiny_teacher(input_ids=ids, attention_mask=mask).logits
        got = tiny_teacher(input_ids=ids, attention_mask=additive_mask(mask, torch.float32)).logits
    assert torch.allclose(got, expected, atol=1e-5)


def test_run_dir_sources_name_other_exports_by_their_folder_and_read_old_or_new_metric_names(tmp_path, hf_dir):
    from polydistill.config import variant_mean

    run = tmp_path / "runs" / "quick" / "20260101-000000"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "student").symlink_to(hf_dir)
    fake_onnx(run / "onnx" / "student-int8-smooth", "DynamicQuantizeLinear")
    (run / "metrics.json").write_text(json.dumps({"mean": {"student": 0.7, "student-int8-smooth": 0.68}}))
    smooth = next(s for s in parse_sources(str(run)) if s.kind == "onnx")
    assert smooth.label == "quick/20260101-000000/student-int8-smooth"  # the folder's name, as in metrics.json
    assert smooth.accuracy == {"onnxruntime/int8-dynamic": 0.68}
    assert variant_mean({"student_onnx_int8-smooth": 0.5}, "int8-smooth") == 0.5  # a run written before the rename
    assert variant_mean({"student-fp32": 0.6}, "none") == 0.6 and variant_mean({}, "fp16") is None
