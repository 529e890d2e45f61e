"""The graph rewrites int8-smooth and int8-blocks make before onnxruntime quantizes (`export/blocks.py`):
SmoothQuant on the FFN input matrices, with the activation ranges it is calibrated on, and the word embedding
stored int8 with one scale per row."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper

from polydistill.errors import DistillError
from polydistill.export.calibration import Batch
from polydistill.export.dynamic_int8 import _word_embedding_nodes

# picked in an uncommitted sweep on the flagship student (alpha 0.5 kept fewer labels than 0.75, 1.0 no more;
# blocks of 32 no more than 128); the committed measure is benchmarks/results/int8-sensitivity-four-layers.md
SMOOTH_ALPHA = 0.75
SMOOTH_BLOCK_SIZE = 128  # int8-smooth's FFN output blocks


def activation_ranges(
    model: onnx.ModelProto, tensors: list[str], calibration: Sequence[Batch]
) -> dict[str, np.ndarray]:
    """The largest |value| of each channel (last axis) of each named fp32 tensor, over the real tokens
    (attention_mask 1) of every calibration batch, from onnxruntime running a copy of `model` that outputs them."""
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    del probe.graph.output[:]
    probe.graph.output.extend(
        onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None) for name in tensors
    )
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # the tensors keep their names
    sess = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
    feeds = {node.name for node in sess.get_inputs()}
    ranges: dict[str, np.ndarray] = {}
    for batch in calibration:
        real = batch["attention_mask"].astype(bool)
        outputs = sess.run(tensors, {name: value for name, value in batch.items() if name in feeds})
        for name, value in zip(tensors, outputs, strict=True):
            peak = np.abs(value[real]).max(axis=0)
            ranges[name] = np.maximum(ranges[name], peak) if name in ranges else peak
    return ranges


def smooth_activations(model: onnx.ModelProto, matmuls: list[str], ranges: dict[str, np.ndarray], alpha: float) -> None:
    """SmoothQuant (Xiao et al. 2023, "SmoothQuant: Accurate and Efficient Post-Training Quantization for Large
    Language Models", ICML): for each named MatMul with activation X and constant weight W, in place,

        s_j = max|X_j| ** alpha / max|W_j,:| ** (1 - alpha)
        X W = (X / s) (s W)       # a Mul by 1/s before the MatMul, W's rows multiplied by s

    the product is unchanged in exact arithmetic, but the activation's outlier channels shrink toward the rest,
    and the weight, quantized per column, takes up the difference. `ranges[X]` is max|X_j| (`activation_ranges`).
    MatMuls that read the same X share one Mul and one s."""
    graph = model.graph
    initializers = {init.name: init for init in graph.initializer}
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        if node.name in matmuls:
            readers.setdefault(node.input[0], []).append(node)
    for activation, nodes in readers.items():
        if any(sum(n.input[1] in other.input for other in graph.node) != 1 for n in nodes):
            raise DistillError(f"smoothing: a weight of {[n.name for n in nodes]} is shared with another node")
        weights = [numpy_helper.to_array(initializers[n.input[1]]).astype(np.float32) for n in nodes]
        weight_peak = np.max([np.abs(w).max(axis=1) for w in weights], axis=0)
        scale = ranges[activation] ** alpha / np.maximum(weight_peak, 1e-8) ** (1 - alpha)
        scale = np.where((ranges[activation] > 0) & (weight_peak > 0), scale, 1.0).astype(np.float32)
        for node, weight in zip(nodes, weights, strict=True):
            initializers[node.input[1]].CopyFrom(numpy_helper.from_array(weight * scale[:, None], node.input[1]))
        inverse, smoothed = f"{nodes[0].name}_smooth_inverse", f"{nodes[0].name}_smoothed_input"
        graph.initializer.append(numpy_helper.from_array(1.0 / scale, inverse))
        first = min(list(graph.node).index(n) for n in nodes)
        graph.node.insert(
            first, onnx.helper.make_node("Mul", [activation, inverse], [smoothed], name=f"{nodes[0].name}_smooth")
        )
        for node in nodes:
            node.input[0] = smoothed


def quantize_word_embedding_rows(model: onnx.ModelProto) -> None:
    """Replace the word-embedding table (the Gather that reads `input_ids`) by an int8 table with one fp32
    scale per row, in place: Gather(int8 rows) -> Cast -> Mul(Gather(scales)). A rare piece's row keeps
    its own range instead of sharing one scale with the whole 250k-row table."""
    graph = model.graph
    initializers = {init.name: init for init in graph.initializer}
    gathers = [node for node in _word_embedding_nodes(graph) if node.input[0] in initializers]
    if len(gathers) != 1:
        raise DistillError(f"expected one word-embedding Gather reading input_ids, found {len(gathers)}")
    gather = gathers[0]
    table_name, ids = gather.input[0], gather.input[1]
    if sum(table_name in node.input for node in graph.node) != 1:
        raise DistillError(f"the word embedding {table_name!r} is shared with another node: not quantized")
    table = numpy_helper.to_array(initializers[table_name]).astype(np.float32)
    scale = np.abs(table).max(axis=1, keepdims=True) / 127.0
    scale[scale == 0] = 1.0  # an all-zero row stays zero
    quantized = np.clip(np.round(table / scale), -127, 127).astype(np.int8)
    graph.initializer.remove(initializers[table_name])
    graph.initializer.extend([
        numpy_helper.from_array(quantized, f"{table_name}_int8"),
        numpy_helper.from_array(scale.astype(np.float32), f"{table_name}_row_scale"),
    ])  # fmt: skip
    out, at = gather.output[0], list(graph.node).index(gather)
    rows, floats, scales = f"{out}_int8", f"{out}_float", f"{out}_scale"
    replacement = [
        helper.make_node("Gather", [f"{table_name}_int8", ids], [rows], name=f"{gather.name}_int8", axis=0),
        helper.make_node("Cast", [rows], [floats], name=f"{gather.name}_cast", to=onnx.TensorProto.FLOAT),
        helper.make_node("Gather", [f"{table_name}_row_scale", ids], [scales], name=f"{gather.name}_scale", axis=0),
        helper.make_node("Mul", [floats, scales], [out], name=f"{gather.name}_dequantize"),
    ]
    graph.node.remove(gather)
    for offset, node in enumerate(replacement):
        graph.node.insert(at + offset, node)
