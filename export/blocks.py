"""int8-blocks and int8-smooth: int8 modes that treat a transformer's FFN matrices apart from the rest (by blocks
of input rows with MatMulNBits, or smoothed), from an optimized graph whose word embedding is still a Gather."""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import onnx
from onnxruntime.quantization import QuantType, quantize_dynamic

from polydistill.errors import DistillError
from polydistill.export.calibration import Batch
from polydistill.export.dynamic_int8 import _FUSED_GRAPH_OPTIONS, _preprocessing_advice_hidden, _reduce_range
from polydistill.export.onnx import MODEL_FILE, copy_sidecar_files
from polydistill.export.smooth import (
    SMOOTH_ALPHA,
    SMOOTH_BLOCK_SIZE,
    activation_ranges,
    quantize_word_embedding_rows,
    smooth_activations,
)
from polydistill.io import atomic_directory

# the ONNX metadata key a quantized model records its mode under (benchmarks read it back)
MODE_METADATA_KEY = "polydistill.quantization"

BLOCK_SIZE = 32
# MatMulNBits' accuracy_level 4: int8 compute, each activation row quantized per block of BLOCK_SIZE values
_INT8_COMPUTE = 4
_GELU_OPS = ("Gelu", "BiasGelu", "FastGelu")


def quantize_int8_blocks(
    src_dir: str | Path, out_dir: str | Path, *, per_channel: bool = True, reduce_range: bool | None = None
) -> Path:
    """int8 where one scale per tensor costs labels, dynamic int8 elsewhere, from an optimized graph whose word
    embedding is still a Gather (`optimize_export(..., fuse_embedding=False)`):

    - the FFN matrices (the MatMuls into and out of each GELU) become onnxruntime's MatMulNBits: 8-bit weights
      with one scale per 32 consecutive input rows of each column, the activations quantized to int8 per
      block of 32 at run time (accuracy_level 4);
    - the word embedding is stored int8 with one scale per row;
    - the fused Attention and the other MatMuls are dynamic int8 (one weight scale per column with `per_channel`;
      `reduce_range` as in `quantize_dynamic_int8`).

    Why: dynamic int8 gives a whole activation tensor one scale per batch. The GELU output that feeds the FFN
    output projection has a few channels far larger than the rest, so that one scale leaves most of its values
    a handful of levels (benchmarks/results/int8-sensitivity.md); a scale per 32 values follows them. The
    embedding's rare pieces likewise lose least with a scale of their own. MatMulNBits is slower than
    MatMulInteger on CPU, so it is used only where the labels need it. Needs onnxruntime's `onnx_ir` dependency.
    """
    src_dir = Path(src_dir)
    reduce_range = _reduce_range(reduce_range)

    def write(tmp: Path) -> None:
        model = onnx.load(str(src_dir / MODEL_FILE))
        quantize_word_embedding_rows(model)
        into_gelu, out_of_gelu = ffn_parts(model.graph)
        if not into_gelu + out_of_gelu:
            raise DistillError(_NO_FFN.format(mode="int8-blocks", path=src_dir / MODEL_FILE))
        _blocks_then_dynamic(model, into_gelu + out_of_gelu, BLOCK_SIZE, tmp / MODEL_FILE, per_channel, reduce_range)
        _record_mode(tmp / MODEL_FILE, "int8-blocks")
        copy_sidecar_files(src_dir, tmp)

    return atomic_directory(out_dir, write)


_NO_FFN = "{mode}: no MatMul next to a GELU in {path}: it takes the optimized graph (export.optimize true)"


def _blocks_then_dynamic(
    model: onnx.ModelProto, blocks: list[str], block_size: int, out_file: Path, per_channel: bool, reduce_range: bool
) -> None:
    """The MatMuls named in `blocks` as 8-bit MatMulNBits (int8 compute, activations per block of `block_size`),
    then every other MatMul and the fused Attention dynamic int8; writes `out_file`."""
    DefaultWeightOnlyQuantConfig, MatMulNBitsQuantizer = _matmul_nbits_quantizer()
    config = DefaultWeightOnlyQuantConfig(
        block_size=block_size, is_symmetric=True, accuracy_level=_INT8_COMPUTE, bits=8, op_types_to_quantize=("MatMul",)
    )
    others = [node.name for node in model.graph.node if node.op_type == "MatMul" and node.name not in blocks]
    quantizer = MatMulNBitsQuantizer(model, algo_config=config, nodes_to_exclude=others)
    quantizer.process()
    with tempfile.TemporaryDirectory(dir=out_file.parent.parent, prefix=".blocks.") as scratch:
        middle = Path(scratch) / MODEL_FILE
        quantizer.model.save_model_to_file(str(middle), use_external_data_format=False)
        with _preprocessing_advice_hidden():
            quantize_dynamic(
                middle, out_file, weight_type=QuantType.QInt8, per_channel=per_channel, reduce_range=reduce_range,
                op_types_to_quantize=["MatMul", "Attention"], extra_options=dict(_FUSED_GRAPH_OPTIONS),
            )  # fmt: skip


def _matmul_nbits_quantizer() -> tuple[Any, Any]:
    """onnxruntime's (DefaultWeightOnlyQuantConfig, MatMulNBitsQuantizer). Their module calls
    `logging.basicConfig(level=INFO)` when imported, after which every node it visits, and every later INFO line
    of any library, reaches the console: the root logger is put back as it was."""
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    from onnxruntime.quantization.matmul_nbits_quantizer import (  # lazy: its import calls basicConfig, undone below
        DefaultWeightOnlyQuantConfig,
        MatMulNBitsQuantizer,
    )

    root.setLevel(level)
    root.handlers[:] = handlers
    return DefaultWeightOnlyQuantConfig, MatMulNBitsQuantizer


def _record_mode(model_file: Path, mode: str) -> None:
    """Write `mode` into the model's metadata: graphs of int8-blocks and int8-smooth share their operators."""
    model = onnx.load(str(model_file))
    onnx.helper.set_model_props(model, {MODE_METADATA_KEY: mode})
    onnx.save(model, str(model_file))


def quantize_int8_smooth(
    src_dir: str | Path,
    out_dir: str | Path,
    calibration: Sequence[Batch],
    *,
    per_channel: bool = True,
    reduce_range: bool | None = None,
) -> Path:
    """int8-blocks' labels at close to dynamic int8's speed, from an optimized graph whose word embedding is
    still a Gather (`optimize_export(..., fuse_embedding=False)`) and real sentences (`calibration`):

    - the FFN input matrices (into each GELU) stay MatMulInteger, but their activation is smoothed first
      (`smooth_activations`, SmoothQuant with alpha `SMOOTH_ALPHA`): the few LayerNorm channels far larger than
      the rest are divided down and their weight rows multiplied up by the same amounts, so one activation
      scale per tensor no longer leaves the other channels a handful of levels;
    - the FFN output matrices (out of each GELU) are MatMulNBits by blocks of `SMOOTH_BLOCK_SIZE`, as in
      int8-blocks: the GELU output's outliers could only be smoothed into a Mul the graph pays for at run time;
    - the word embedding int8 per row, the fused Attention and the other MatMuls dynamic int8.

    Why: on the sib200-e5-small student, int8-blocks kept 99.2% of the labels but ran no faster than fp32 (15.16
    against 14.61 ms); int8-smooth keeps 99.3% (benchmarks/results/int8-sensitivity-four-layers.md) at 12.40 ms
    in the flagship's bench, 5.3x below the teacher (docs/results.md, "The flagship").
    """
    if not calibration:
        raise DistillError("int8-smooth needs calibration batches (real tokenized sentences)")
    src_dir = Path(src_dir)
    reduce_range = _reduce_range(reduce_range)

    def write(tmp: Path) -> None:
        model = onnx.load(str(src_dir / MODEL_FILE))
        into_gelu, out_of_gelu = ffn_parts(model.graph)
        if not into_gelu or not out_of_gelu:
            raise DistillError(_NO_FFN.format(mode="int8-smooth", path=src_dir / MODEL_FILE))
        nodes = {node.name: node for node in model.graph.node}
        ranges = activation_ranges(model, [nodes[name].input[0] for name in into_gelu], calibration)
        smooth_activations(model, into_gelu, ranges, SMOOTH_ALPHA)
        quantize_word_embedding_rows(model)
        _blocks_then_dynamic(model, out_of_gelu, SMOOTH_BLOCK_SIZE, tmp / MODEL_FILE, per_channel, reduce_range)
        _record_mode(tmp / MODEL_FILE, "int8-smooth")
        copy_sidecar_files(src_dir, tmp)

    return atomic_directory(out_dir, write)


def ffn_matmuls(graph: onnx.GraphProto) -> list[str]:
    """Names of the MatMuls with a constant weight that feed a GELU or read its output: a transformer's FFN."""
    into_gelu, out_of_gelu = ffn_parts(graph)
    return [node.name for node in graph.node if node.name in {*into_gelu, *out_of_gelu}]


def ffn_parts(graph: onnx.GraphProto) -> tuple[list[str], list[str]]:
    """(MatMuls with a constant weight whose output a GELU reads, those that read a GELU's output), by name."""
    weights = {init.name for init in graph.initializer}
    gelu_inputs = {name for node in graph.node if node.op_type in _GELU_OPS for name in node.input}
    gelu_outputs = {name for node in graph.node if node.op_type in _GELU_OPS for name in node.output}
    matmuls = [node for node in graph.node if node.op_type == "MatMul" and node.input[1] in weights]
    into_gelu = [node.name for node in matmuls if node.output[0] in gelu_inputs]
    out_of_gelu = [node.name for node in matmuls if node.input[0] in gelu_outputs]
    return into_gelu, out_of_gelu
