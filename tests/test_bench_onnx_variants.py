"""The bench's ONNX variants made here: exported from PyTorch weights, then quantized or converted by
export/quantize.py (the one implementation), each a complete directory that onnxruntime runs."""

import numpy as np
import onnx
import pytest

from polydistill.benchmarks.variants import (
    ONNX_FILE,
    Variant,
    fixed_inputs,
    onnx_precision,
    ort_session,
    parse_sources,
    prepare_onnx,
)


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """int8-static and fp16 variants of a dry-run architecture, sharing one fp32 export."""
    source = parse_sources("xlmr-arch:2x64", dry_run=True)[0]
    workdir, cache = tmp_path_factory.mktemp("bench"), {}
    variants = {}
    for precision in ("fp32", "int8-static", "fp16"):
        variants[precision] = Variant(source, "onnxruntime", precision, "cpu", origin="exported here")
        prepare_onnx(variants[precision], workdir, cache)
    return variants


@pytest.mark.parametrize("precision", ["int8-static", "fp16"])
def test_made_variants_hold_what_their_precision_says_and_run(made, precision):
    v = made[precision]
    assert onnx_precision(v.onnx_file) == precision
    assert v.onnx_file.name == ONNX_FILE and (v.onnx_file.parent / "config.json").is_file()  # sidecars travel
    assert v.size_mb and v.size_source == "file"
    assert any("export/quantize.py" in note for note in v.notes)
    logits = ort_session(v.onnx_file, threads=1, device="cpu").run(None, fixed_inputs(2, 16, 1000))[0]
    assert logits.shape == (2, 7) and logits.dtype == np.float32 and np.isfinite(logits).all()


def test_static_int8_quantizes_the_matmuls_only(made):
    graph = onnx.load(str(made["int8-static"].onnx_file)).graph
    dequantized = {out for node in graph.node if node.op_type == "DequantizeLinear" for out in node.output}
    readers = {node.op_type for node in graph.node if dequantized & set(node.input)}
    assert "MatMul" in readers and "Gather" not in readers  # the embedding stays fp32
    assert made["int8-static"].size_mb < made["fp32"].size_mb
