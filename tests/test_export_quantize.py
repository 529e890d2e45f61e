"""Quantization variants: each writes a complete artifact directory, keeps labels, and changes what it says."""

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from transformers import XLMRobertaForSequenceClassification

from polydistill.errors import DistillError
from polydistill.export.onnx import MODEL_FILE, export_onnx, label_agreement, pytorch_reference, run_onnx
from polydistill.export.optimize import optimize_export
from polydistill.export.quantize import (
    MODE_METADATA_KEY,
    MODES,
    BatchReader,
    activation_ranges,
    calibration_batches,
    convert_fp16,
    ffn_matmuls,
    ffn_parts,
    quantize,
    quantize_dynamic_int8,
    quantize_dynamic_int8_fp32_embedding,
    quantize_static_int8,
    quantize_word_embedding_rows,
    smooth_activations,
    word_embedding_gathers,
)

REPO = Path(__file__).resolve().parents[1]
SIDECARS = {"config.json", "tokenizer.json", "tokenizer_config.json"}


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_tokenizer, small_texts, tiny_xlmr_config):
    """fp32 and optimized fp32 exports of a tiny classifier whose labels vary between sentences, the
    PyTorch reference on held-out sentences, and calibration batches of other real sentences."""
    config = tiny_xlmr_config(len(tiny_tokenizer), num_labels=7)
    config._attn_implementation = "eager"
    torch.manual_seed(0)
    model = XLMRobertaForSequenceClassification(config)
    with torch.no_grad():  # see export/optimum_artifacts.py: labels that differ between sentences
        for name, param in model.named_parameters():
            if param.dim() > 1:
                param.normal_(
                    0.0, 0.6 if (".query." in name or ".key." in name) else 0.5 if "classifier" in name else 0.2
                )
    model.eval()
    root = tmp_path_factory.mktemp("quantize")
    fp32 = export_onnx(model, tiny_tokenizer, root / "fp32", small_texts[:8]).directory
    optimized = optimize_export(fp32, root / "optimized", model, tiny_tokenizer, small_texts[:8]).directory
    gather = optimize_export(fp32, root / "gather", model, tiny_tokenizer, small_texts[:8], fuse_embedding=False)
    probe = small_texts[1::12]  # 50 sentences of all three languages
    inputs, expected = pytorch_reference(model, tiny_tokenizer, probe)
    assert len(set(expected.argmax(-1).tolist())) > 1
    calibration = calibration_batches(tiny_tokenizer, small_texts[2::15], batch_size=8)
    return {
        "fp32": fp32,
        "optimized": optimized,
        "optimized_gather": gather.directory,
        "inputs": inputs,
        "expected": expected,
        "calibration": calibration,
    }


def _agreement(directory, exported) -> float:
    return label_agreement(run_onnx(directory / MODEL_FILE, exported["inputs"]), exported["expected"])


def _assert_close_to_pytorch(directory, exported, rel: float = 0.3) -> None:
    """int8 of a random tiny model: logits within `rel` of the logit spread on average, and the labels
    of the more confident half of the sentences mostly kept. A broken variant (collapsed, wrong scales)
    misses both by far; the thresholds leave room for 7-bit weights (reduce_range) on non-VNNI CPUs."""
    got, want = run_onnx(directory / MODEL_FILE, exported["inputs"]), exported["expected"]
    assert np.abs(got - want).mean() / want.std() < rel
    top2 = np.sort(want, -1)[:, -2:]
    confident = (top2[:, 1] - top2[:, 0]) > np.median(top2[:, 1] - top2[:, 0])
    assert np.mean(got.argmax(-1)[confident] == want.argmax(-1)[confident]) >= 0.75


def _size(directory) -> int:
    return (directory / MODEL_FILE).stat().st_size


def _initializer_types(directory) -> dict[str, int]:
    return {t.name: t.data_type for t in onnx.load(str(directory / MODEL_FILE)).graph.initializer}


def test_dynamic_int8_of_fused_graph(tmp_path, exported):
    out = quantize_dynamic_int8(exported["optimized"], tmp_path / "int8")
    assert {p.name for p in out.iterdir()} >= SIDECARS | {MODEL_FILE}
    assert _size(out) < _size(exported["optimized"])
    _assert_close_to_pytorch(out, exported)


def _weight_scale_lengths(directory) -> list[int]:
    """Lengths of the weight-scale initializers quantize_dynamic writes (`<weight>_scale`)."""
    graph = onnx.load(str(directory / MODEL_FILE)).graph
    return [int(np.prod(t.dims)) for t in graph.initializer if t.name.endswith("_scale")]


def test_per_channel_int8_gives_each_output_channel_its_own_scale(tmp_path, exported):
    per_matrix = quantize(exported["optimized"], tmp_path / "matrix", "int8-dynamic")
    per_channel = quantize(exported["optimized"], tmp_path / "channel", "int8-dynamic", per_channel=True)
    assert max(_weight_scale_lengths(per_matrix)) == 1
    assert max(_weight_scale_lengths(per_channel)) > 1
    _assert_close_to_pytorch(per_channel, exported)


@pytest.mark.parametrize("how", ["op-types", "exclude-node"])
def test_fp32_embedding_variant_keeps_the_word_embedding_fp32(tmp_path, exported, how):
    src = exported["optimized"]
    (gather,) = word_embedding_gathers(src / MODEL_FILE)
    table = next(n.input[0] for n in onnx.load(str(src / MODEL_FILE)).graph.node if n.name == gather)
    full = quantize_dynamic_int8(src, tmp_path / "int8")
    out = quantize_dynamic_int8_fp32_embedding(src, tmp_path / how, how=how)
    types = _initializer_types(out)
    assert types[table] == onnx.TensorProto.FLOAT, "word embedding must stay fp32"
    assert f"{table}_quantized" not in types
    assert f"{table}_quantized" in _initializer_types(full), "plain dynamic int8 quantizes the embedding"
    assert _size(full) < _size(out) < _size(src)
    assert any(t == onnx.TensorProto.INT8 for t in types.values()), "the MatMul weights are still int8"
    _assert_close_to_pytorch(out, exported)


@pytest.mark.parametrize("method", ["minmax", "entropy", "percentile"])
def test_static_int8_qdq_on_fused_graph_with_variable_length_batches(tmp_path, exported, method):
    assert len({b["input_ids"].shape for b in exported["calibration"]}) > 1, "batches must differ in length"
    out = quantize_static_int8(exported["optimized"], tmp_path / method, exported["calibration"], method=method)
    ops = {n.op_type for n in onnx.load(str(out / MODEL_FILE)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Attention"} <= ops
    assert {p.name for p in out.iterdir()} >= SIDECARS | {MODEL_FILE}
    assert _size(out) < _size(exported["optimized"])
    _assert_close_to_pytorch(out, exported)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no scratch files left behind"


def test_static_entropy_on_unfused_graph(tmp_path, exported):
    """The unfused graph has constant mask tensors; quantizing only MatMul/Attention/Gather keeps the
    Entropy calibrator away from them ("Too many bins for data range" otherwise)."""
    out = quantize_static_int8(exported["fp32"], tmp_path / "static", exported["calibration"], method="entropy")
    _assert_close_to_pytorch(out, exported)


def test_fp16_keeps_fp32_io_and_labels(tmp_path, exported):
    out = convert_fp16(exported["optimized"], tmp_path / "fp16")
    model = onnx.load(str(out / MODEL_FILE))
    assert model.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    types = {t.data_type for t in model.graph.initializer}
    assert onnx.TensorProto.FLOAT16 in types and onnx.TensorProto.FLOAT not in types
    assert _size(out) < 0.6 * _size(exported["optimized"])
    logits = run_onnx(out / MODEL_FILE, exported["inputs"])  # onnxruntime's CPU provider runs it too
    assert logits.dtype == np.float32
    # fp16 keeps ~3 significant digits: bound the error relative to the logits' scale (the random model's
    # weights depend on the test order, and 0.06 on logits of size ~3.4 was seen)
    scale = float(np.max(np.abs(exported["expected"])))
    assert np.max(np.abs(logits - exported["expected"])) < 0.03 * scale
    assert _agreement(out, exported) >= 0.98


def test_dispatcher_modes(tmp_path, exported):
    src = exported["optimized"]
    assert set(MODES) == {
        "none", "int8-dynamic", "int8-dynamic-fp32-emb", "int8-static", "int8-blocks", "int8-smooth", "fp16"
    }  # fmt: skip
    copy = quantize(src, tmp_path / "none", "none")
    assert (copy / MODEL_FILE).read_bytes() == (src / MODEL_FILE).read_bytes()
    _assert_close_to_pytorch(quantize(src, tmp_path / "static", "int8-static", exported["calibration"]), exported)
    with pytest.raises(DistillError, match="needs calibration"):
        quantize(src, tmp_path / "nope", "int8-static")
    with pytest.raises(DistillError, match="unknown quantization mode 'int4'"):
        quantize(src, tmp_path / "nope", "int4")
    with pytest.raises(DistillError, match="unknown calibration method"):
        quantize(src, tmp_path / "nope", "int8-static", exported["calibration"], calibration_method="mse")
    assert not (tmp_path / "nope").exists()


def test_failed_quantization_leaves_previous_artifact(tmp_path, exported):
    out = quantize_dynamic_int8(exported["optimized"], tmp_path / "int8")
    before = (out / MODEL_FILE).read_bytes()
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / MODEL_FILE).write_bytes(b"not onnx")
    with pytest.raises(Exception):  # noqa: B017 - whatever onnx raises, the old artifact must survive
        quantize_dynamic_int8(broken, tmp_path / "int8")
    assert (out / MODEL_FILE).read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken", "int8"]


def test_calibration_batches_are_right_padded_real_sentences(tiny_tokenizer, small_texts):
    batches = calibration_batches(tiny_tokenizer, small_texts[:20], batch_size=8)
    assert [len(b["input_ids"]) for b in batches] == [8, 8, 4]
    for b in batches:
        assert b["input_ids"].dtype == np.int64 and set(b) == {"input_ids", "attention_mask"}
        lengths = b["attention_mask"].sum(1)
        for row, n in enumerate(lengths):
            assert b["attention_mask"][row, :n].all() and not b["attention_mask"][row, n:].any()
            assert (b["input_ids"][row, n:] == tiny_tokenizer.pad_token_id).all()
    reader = BatchReader(batches)
    reader.set_range(1, 2)  # what quantize_static's CalibStridedMinMax does: one batch per collection
    assert np.array_equal(reader.get_next()["input_ids"], batches[1]["input_ids"])
    assert reader.get_next() is None
    reader.rewind()
    assert len(reader) == 3 and len(list(iter(reader.get_next, None))) == 3
    with pytest.raises(DistillError):
        BatchReader([])


def _mean_error(directory, exported) -> float:
    got, want = run_onnx(directory / MODEL_FILE, exported["inputs"]), exported["expected"]
    return float(np.abs(got - want).mean() / want.std())


def test_int8_blocks_is_closer_to_pytorch_than_per_tensor_dynamic_int8(tmp_path, exported):
    source = onnx.load(str(exported["optimized_gather"] / MODEL_FILE)).graph
    assert not any(n.op_type == "EmbedLayerNormalization" for n in source.node)  # fuse_embedding=False
    ffn = ffn_matmuls(source)
    layers = sum(n.op_type == "Attention" for n in source.node)
    assert len(ffn) == 2 * layers > 0  # into and out of every layer's GELU
    blocks = quantize(exported["optimized_gather"], tmp_path / "blocks", "int8-blocks", per_channel=True)
    assert {p.name for p in blocks.iterdir()} >= SIDECARS | {MODEL_FILE}
    graph = onnx.load(str(blocks / MODEL_FILE)).graph
    assert sorted(n.name for n in graph.node if n.op_type == "MatMulNBits") == sorted(f"{name}_Q8" for name in ffn)
    assert sum(n.op_type == "QAttention" for n in graph.node) == layers  # attention: dynamic int8
    assert any(t.data_type == onnx.TensorProto.INT8 and t.name.endswith("_int8") for t in graph.initializer)
    assert _size(blocks) < 0.7 * _size(exported["optimized_gather"])  # a tiny model: position table, LayerNorms
    dynamic = quantize_dynamic_int8(exported["optimized"], tmp_path / "dynamic", per_channel=True)
    assert _mean_error(blocks, exported) < _mean_error(dynamic, exported)
    _assert_close_to_pytorch(blocks, exported)


def test_int8_blocks_refuses_a_graph_without_fused_gelu(tmp_path, exported):
    with pytest.raises(DistillError, match="no MatMul next to a GELU .* takes the optimized graph"):
        quantize(exported["fp32"], tmp_path / "blocks", "int8-blocks")
    assert not (tmp_path / "blocks").exists()


def _matmul_graph(weight: np.ndarray) -> onnx.ModelProto:
    """Y = MatMul(X, W) with X [batch, tokens, channels] and an unused attention_mask input, as a model's are fed."""
    from onnx import helper, numpy_helper

    x = helper.make_tensor_value_info("X", onnx.TensorProto.FLOAT, [None, None, weight.shape[0]])
    mask = helper.make_tensor_value_info("attention_mask", onnx.TensorProto.INT64, [None, None])
    y = helper.make_tensor_value_info("Y", onnx.TensorProto.FLOAT, None)
    nodes = [
        helper.make_node("Identity", ["X"], ["H"], name="copy"),
        helper.make_node("MatMul", ["H", "W"], ["Y"], name="mm"),
    ]
    graph = helper.make_graph(nodes, "g", [x, mask], [y], [numpy_helper.from_array(weight.astype(np.float32), "W")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _run(model: onnx.ModelProto, feeds: dict, outputs: list[str]) -> list[np.ndarray]:
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    probe.graph.output.extend(onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in outputs[1:])
    return ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"]).run(outputs, feeds)


def test_activation_ranges_are_per_channel_maxima_over_real_tokens_only():
    x = np.array([[[1.0, -2.0, 0.5], [-3.0, 1.0, 0.0]], [[0.5, 4.0, -1.0], [99.0, 99.0, 99.0]]], np.float32)
    mask = np.array([[1, 1], [1, 0]], np.int64)  # the 99s are padding
    ranges = activation_ranges(_matmul_graph(np.ones((3, 2))), ["H"], [{"X": x, "attention_mask": mask}])
    assert np.allclose(ranges["H"], [3.0, 4.0, 1.0])


def test_smoothing_keeps_the_product_and_shrinks_an_outlier_channel():
    rng = np.random.default_rng(0)
    weight = rng.normal(size=(4, 3))
    x = rng.normal(size=(2, 5, 4)).astype(np.float32)
    x[..., 0] *= 100  # one outlier channel, as LayerNorm outputs have
    model = _matmul_graph(weight)
    (before,) = _run(model, {"X": x, "attention_mask": np.ones((2, 5), np.int64)}, ["Y"])
    ranges = {"H": np.abs(x).max(axis=(0, 1))}
    smooth_activations(model, ["mm"], ranges, alpha=0.75)
    (matmul,) = [n for n in model.graph.node if n.op_type == "MatMul"]
    assert matmul.input[0] == "mm_smoothed_input" and [n.op_type for n in model.graph.node] == [
        "Identity",
        "Mul",
        "MatMul",
    ]
    after, smoothed = _run(model, {"X": x, "attention_mask": np.ones((2, 5), np.int64)}, ["Y", "mm_smoothed_input"])
    assert np.allclose(after, before, rtol=1e-5, atol=1e-4)
    peaks = np.abs(smoothed).max(axis=(0, 1))
    assert peaks[0] / peaks[1:].max() < 0.2 * (ranges["H"][0] / ranges["H"][1:].max())  # the outlier shrank


def test_int8_smooth_smooths_the_ffn_input_and_blocks_the_ffn_output(tmp_path, exported):
    from polydistill.benchmarks.variants import onnx_precision

    into_gelu, out_of_gelu = ffn_parts(onnx.load(str(exported["optimized_gather"] / MODEL_FILE)).graph)
    out = quantize(exported["optimized_gather"], tmp_path / "smooth", "int8-smooth", exported["calibration"])
    assert {p.name for p in out.iterdir()} >= SIDECARS | {MODEL_FILE}
    model = onnx.load(str(out / MODEL_FILE))
    ops = {n.name: n.op_type for n in model.graph.node}
    assert sorted(n for n, op in ops.items() if op == "MatMulNBits") == sorted(f"{n}_Q8" for n in out_of_gelu)
    assert sorted(n for n in ops if n.endswith("_smooth")) == sorted(f"{n}_smooth" for n in into_gelu)
    assert not any(n in ops and ops[n] == "MatMul" for n in into_gelu)  # quantized, not left fp32
    assert {p.key: p.value for p in model.metadata_props}[MODE_METADATA_KEY] == "int8-smooth"
    assert onnx_precision(out / MODEL_FILE) == "int8-smooth"
    _assert_close_to_pytorch(out, exported)


@pytest.mark.slow
def test_block_quantization_leaves_the_root_logger_as_it_was():
    """onnxruntime's MatMulNBits module calls logging.basicConfig(level=INFO) on import. Checked in a fresh
    interpreter: under pytest the root logger already has handlers, and basicConfig then does nothing."""
    import subprocess
    import sys

    code = (
        "import logging\n"
        "from polydistill.export.blocks import _matmul_nbits_quantizer\n"
        "_matmul_nbits_quantizer()\n"
        "import onnxruntime.quantization.matmul_nbits_quantizer\n"  # imported for real above
        "root = logging.getLogger()\n"
        "print(logging.getLevelName(root.level), len(root.handlers))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert done.stdout.split() == ["WARNING", "0"]


def test_int8_smooth_needs_calibration_and_the_optimized_graph(tmp_path, exported):
    with pytest.raises(DistillError, match="int8-smooth needs calibration"):
        quantize(exported["optimized_gather"], tmp_path / "smooth", "int8-smooth")
    with pytest.raises(DistillError, match="int8-smooth: no MatMul next to a GELU"):
        quantize(exported["fp32"], tmp_path / "smooth", "int8-smooth", exported["calibration"])
    assert not (tmp_path / "smooth").exists()


def test_word_embedding_rows_keep_each_row_within_half_a_step(tmp_path, exported):
    model = onnx.load(str(exported["fp32"] / MODEL_FILE))
    (gather,) = word_embedding_gathers(exported["fp32"] / MODEL_FILE)
    (table_name,) = [n.input[0] for n in model.graph.node if n.name == gather]
    table = next(onnx.numpy_helper.to_array(t) for t in model.graph.initializer if t.name == table_name)
    quantize_word_embedding_rows(model)
    stored = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    assert table_name not in stored
    rows, scale = stored[f"{table_name}_int8"], stored[f"{table_name}_row_scale"]
    assert rows.dtype == np.int8 and scale.shape == (table.shape[0], 1)
    assert np.all(np.abs(rows * scale - table) <= scale / 2 + 1e-7)
    onnx.save(model, str(tmp_path / MODEL_FILE))
    assert _mean_error(tmp_path, exported) < 0.05  # a wrong scale axis or sign is off by far more


def test_int8_blocks_names_a_graph_without_a_word_embedding(tmp_path, exported):
    model = onnx.load(str(exported["fp32"] / MODEL_FILE))
    for node in model.graph.node:
        if node.op_type == "Gather" and "input_ids" in node.input[1:]:
            node.input[1] = node.input[1] + "_renamed"
    with pytest.raises(DistillError, match="one word-embedding Gather reading input_ids, found 0"):
        quantize_word_embedding_rows(model)
