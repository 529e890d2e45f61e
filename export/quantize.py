"""Post-training quantization of exported ONNX models with onnxruntime, one artifact directory per variant.

Every variant reads `src_dir/model.onnx` (an `export_onnx` or `optimize_export` directory), writes
`out_dir/model.onnx` with the config and tokenizer files beside it, and swaps `out_dir` in atomically:
a failure leaves no half-written variant behind.

    none                    fp32 copy
    int8-dynamic            weights int8 ahead of time, activations quantized per batch (all ops ORT can)
    int8-dynamic-fp32-emb   the same, but the word embedding stays fp32 (it dominates a multilingual model's
                            file, and its rows for rare scripts are the ones int8 rounds hardest)
    int8-static             QDQ with activation ranges calibrated on real sentences (MinMax/Entropy/Percentile)
    int8-blocks             the FFN matrices 8-bit with a scale per block of 32 input rows (MatMulNBits), their
                            activations quantized per block of 32 at run time; the word embedding int8 with a
                            scale per row; attention dynamic int8 (an optimized graph with the embedding unfused)
    int8-smooth             dynamic int8 at nearly its speed with int8-blocks' labels: the FFN input matrices
                            smoothed (SmoothQuant: activation channels divided by calibrated scales that their
                            weight rows absorb), the FFN output matrices by blocks of 128, the word embedding per
                            row, the rest dynamic int8; needs calibration sentences
    fp16                    half-precision weights and compute, fp32 inputs/outputs: the GPU path (int8
                            MatMulInteger has no CUDA kernels)
"""

from __future__ import annotations

import contextlib
import io
import logging
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnx
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_dynamic,
    quantize_static,
)

from polydistill.benchmarks.environment import cpu_info
from polydistill.config import EXPORT_MODES, ExportVariant
from polydistill.errors import DistillError
from polydistill.export.onnx import INPUT_NAMES, MODEL_FILE, copy_sidecar_files
from polydistill.io import atomic_directory

Mode = ExportVariant  # the modes, defined once in the recipe schema
MODES = EXPORT_MODES
# modes that quantize the word-embedding Gather themselves: optimized with fuse_embedding=False
EMBEDDING_GATHER_MODES = ("int8-blocks", "int8-smooth")
# modes that need real sentences (`calibration` batches)
CALIBRATED_MODES = ("int8-static", "int8-smooth")
# the ONNX metadata key a quantized model records its mode under (benchmarks read it back)
MODE_METADATA_KEY = "polydistill.quantization"
CalibrationName = Literal["minmax", "entropy", "percentile"]
CALIBRATION_METHODS: dict[str, CalibrationMethod] = {
    "minmax": CalibrationMethod.MinMax,
    "entropy": CalibrationMethod.Entropy,
    "percentile": CalibrationMethod.Percentile,
}
# Quantizing an already-fused graph fails ("Unable to find data type for weight_name") without this (stack facts)
_FUSED_GRAPH_OPTIONS = {"DefaultTensorType": onnx.TensorProto.FLOAT}
Batch = dict[str, np.ndarray]


def cpu_has_vnni() -> bool:
    """True when this x86 CPU has AVX-512 VNNI or AVX-VNNI (int8 dot products without overflow)."""
    return cpu_info()["has_vnni"]


def _reduce_range(reduce_range: bool | None) -> bool:
    """7-bit weights on CPUs without VNNI: there, the u8×s8 multiply-add onnxruntime uses on AVX2
    (VPMADDUBSW) can saturate its 16-bit intermediates with full-range weights."""
    return (not cpu_has_vnni()) if reduce_range is None else reduce_range


def quantize_dynamic_int8(
    src_dir: str | Path, out_dir: str | Path, *, reduce_range: bool | None = None, per_channel: bool = False
) -> Path:
    """Dynamic int8 (weights int8 ahead of time, activations quantized per batch) of `src_dir/model.onnx`.

    `reduce_range=None` picks 7-bit weights on CPUs without VNNI (see `_reduce_range`). `per_channel` gives
    each weight column its own scale instead of one per matrix: on the sib200-e5-small student it raised
    label agreement with PyTorch from 93.5% to 95.9% at the same file size (CHANGELOG.md, 2026-12-04).
    """
    return _dynamic_int8(Path(src_dir), out_dir, _reduce_range(reduce_range), {"per_channel": per_channel})


def _dynamic_int8(src_dir: Path, out_dir: str | Path, reduce_range: bool, selection: dict) -> Path:
    """The one `quantize_dynamic` call; `selection` narrows which ops or nodes are quantized (and per_channel)."""

    def write(tmp: Path) -> None:
        with _preprocessing_advice_hidden():
            quantize_dynamic(
                src_dir / MODEL_FILE,
                tmp / MODEL_FILE,
                weight_type=QuantType.QInt8,
                reduce_range=reduce_range,
                extra_options=dict(_FUSED_GRAPH_OPTIONS),
                **selection,
            )
        copy_sidecar_files(src_dir, tmp)

    return atomic_directory(out_dir, write)


_PREPROCESSING_ADVICE = ("Please consider to run pre-processing", "Please consider pre-processing")


@contextlib.contextmanager
def _preprocessing_advice_hidden() -> Iterator[None]:
    """`quantize_dynamic` without its advice to run `quant_pre_process` first (logged through the root logger,
    before and after quantizing), for this call only: every other log line still shows.

    Silenced rather than followed, measured on a 3-layer multilingual-e5-small student's optimized graph
    (2026-12-04): the full pre-processing fails on the fused BERT graph ("Incomplete symbolic shape inference"),
    and without its symbolic step it keeps the same ops (fused Attention included) and gives int8 logits
    identical to the last bit on 64 dev sentences, so it would only add a pass. The fused graph's missing types
    are handled by `_FUSED_GRAPH_OPTIONS` instead. `logging.warning` also installs a stderr handler on a root
    logger that has none (`logging.basicConfig`); the root's handlers are put back as they were."""
    root = logging.getLogger()
    handlers = list(root.handlers)

    def not_advice(record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(_PREPROCESSING_ADVICE)

    root.addFilter(not_advice)
    try:
        yield
    finally:
        root.removeFilter(not_advice)
        root.handlers[:] = handlers


def word_embedding_gathers(model_path: str | Path) -> list[str]:
    """Names of the Gather nodes that look up `input_ids` directly: the word-embedding lookup."""
    return [node.name for node in _word_embedding_nodes(onnx.load(str(model_path), load_external_data=False).graph)]


def _word_embedding_nodes(graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    """The Gather nodes that read `input_ids` directly. Position and token-type lookups index computed ids,
    never the graph input, so they are not matched."""
    return [node for node in graph.node if node.op_type == "Gather" and "input_ids" in node.input[1:]]


def quantize_dynamic_int8_fp32_embedding(
    src_dir: str | Path,
    out_dir: str | Path,
    *,
    reduce_range: bool | None = None,
    how: Literal["op-types", "exclude-node"] = "op-types",
    per_channel: bool = False,
) -> Path:
    """Dynamic int8 that leaves the word embedding fp32.

    `how="op-types"` quantizes only MatMul and Attention (every Gather stays fp32: word, position and
    token-type tables); `how="exclude-node"` quantizes everything dynamic int8 would except the
    word-embedding Gather itself. The two differ only by the small position/type tables.
    """
    src_dir = Path(src_dir)
    reduce_range = _reduce_range(reduce_range)
    if how == "op-types":
        selection: dict = {"op_types_to_quantize": ["MatMul", "Attention"]}
    elif how == "exclude-node":
        gathers = word_embedding_gathers(src_dir / MODEL_FILE)
        if not gathers:
            raise DistillError(f"no Gather reads input_ids in {src_dir / MODEL_FILE}: cannot find the word embedding")
        selection = {"nodes_to_exclude": gathers}
    else:
        raise DistillError(f"unknown embedding exclusion {how!r} (choose op-types or exclude-node)")
    return _dynamic_int8(src_dir, out_dir, reduce_range, {**selection, "per_channel": per_channel})


# ----------------------------------------------------------------------------------------------
# static int8


class BatchReader(CalibrationDataReader):
    """Feeds prepared batches to onnxruntime's calibrator.

    `__len__` and `set_range` let `quantize_static` collect one batch at a time
    (`CalibStridedMinMax=1`): the histogram calibrators (Entropy, Percentile) otherwise stack every
    batch's activations into one array, which fails for batches of different sequence lengths and
    holds all of them in memory at once.
    """

    def __init__(self, batches: Sequence[Batch]) -> None:
        if not batches:
            raise DistillError("static quantization needs at least one calibration batch")
        self.batches = [{name: np.asarray(b[name], dtype=np.int64) for name in INPUT_NAMES} for b in batches]
        self.start, self.end = 0, len(self.batches)

    def __len__(self) -> int:
        return len(self.batches)

    def set_range(self, start_index: int, end_index: int) -> None:
        self.start, self.end = start_index, min(end_index, len(self.batches))

    def get_next(self) -> Batch | None:
        if self.start >= self.end:
            return None
        self.start += 1
        return self.batches[self.start - 1]

    def rewind(self) -> None:
        self.start, self.end = 0, len(self.batches)


def calibration_batches(tokenizer, texts: list[str], *, batch_size: int = 8, max_length: int = 128) -> list[Batch]:
    """Real sentences, tokenized and right-padded in length-sorted batches as the pipeline batches them.

    Right padding matters: onnxruntime's fused Attention assumes it, and calibration should see the
    activations inference will.
    """
    from polydistill.data import collate, encode, length_batches

    if not texts:
        raise DistillError("static quantization needs calibration sentences")
    enc = encode(tokenizer, texts, [0] * len(texts), max_length)
    batches = []
    for indices in length_batches([len(x) for x in enc.input_ids], batch_size, shuffle=False):
        batch = collate(enc, indices, tokenizer.pad_token_id)
        batches.append({name: batch[name].numpy() for name in INPUT_NAMES})
    return batches


def quantize_static_int8(
    src_dir: str | Path,
    out_dir: str | Path,
    calibration: Sequence[Batch],
    *,
    method: CalibrationName = "minmax",
    reduce_range: bool | None = None,
    per_channel: bool = False,
    op_types: Sequence[str] = ("MatMul", "Attention", "Gather"),
) -> Path:
    """Static int8 in QDQ format, activation ranges calibrated on `calibration` batches.

    `quant_pre_process` (symbolic shape inference and onnxruntime's basic optimizations) runs
    first: without it, quantizing a fused graph fails for lack of activation types. Activations
    are u8 and weights s8, the combination onnxruntime's x86 kernels take. Only `op_types` are
    quantized: MatMul/Attention are where int8 saves time, Gather shrinks the embedding; quantizing
    the mask arithmetic too gives the Entropy calibrator constant tensors it cannot bin.
    """
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if method not in CALIBRATION_METHODS:
        raise DistillError(f"unknown calibration method {method!r} (choose {', '.join(CALIBRATION_METHODS)})")
    src_dir = Path(src_dir)
    reduce_range = _reduce_range(reduce_range)
    reader = BatchReader(calibration)

    def write(tmp: Path) -> None:
        with tempfile.TemporaryDirectory(dir=tmp.parent, prefix=".calibrate.") as scratch:
            prepared = Path(scratch) / MODEL_FILE
            quant_pre_process(str(src_dir / MODEL_FILE), str(prepared))
            # the calibrators print progress with print(); callers (the CLI) promise one line of output
            with contextlib.redirect_stdout(io.StringIO()):
                quantize_static(
                    prepared,
                    tmp / MODEL_FILE,
                    reader,
                    quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8,
                    calibrate_method=CALIBRATION_METHODS[method],
                    op_types_to_quantize=list(op_types),
                    per_channel=per_channel,
                    reduce_range=reduce_range,
                    extra_options={**_FUSED_GRAPH_OPTIONS, "CalibStridedMinMax": 1},
                )
        copy_sidecar_files(src_dir, tmp)

    return atomic_directory(out_dir, write)


# ----------------------------------------------------------------------------------------------
# int8 by blocks

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
    from onnxruntime.quantization.matmul_nbits_quantizer import DefaultWeightOnlyQuantConfig, MatMulNBitsQuantizer

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


# ----------------------------------------------------------------------------------------------
# SmoothQuant

# picked in an uncommitted sweep on the flagship student (alpha 0.5 kept fewer labels than 0.75, 1.0 no more;
# blocks of 32 no more than 128); the committed measure is benchmarks/results/int8-sensitivity-four-layers.md
SMOOTH_ALPHA = 0.75
SMOOTH_BLOCK_SIZE = 128  # int8-smooth's FFN output blocks


def activation_ranges(
    model: onnx.ModelProto, tensors: list[str], calibration: Sequence[Batch]
) -> dict[str, np.ndarray]:
    """The largest |value| of each channel (last axis) of each named fp32 tensor, over the real tokens
    (attention_mask 1) of every calibration batch, from onnxruntime running a copy of `model` that outputs them."""
    import onnxruntime as ort

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
    from onnx import numpy_helper

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
    from onnx import helper, numpy_helper

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


# ----------------------------------------------------------------------------------------------
# fp16 and the dispatcher


def convert_fp16(src_dir: str | Path, out_dir: str | Path) -> Path:
    """fp16 weights and compute with fp32 logits out (`keep_io_types`), for onnxruntime on GPU.

    Inputs are int64 ids either way; keeping the output fp32 means callers need no change.
    onnxruntime's CPU provider runs it too (with casts), which is what the tests use.
    """
    from onnxruntime.transformers.float16 import convert_float_to_float16

    src_dir = Path(src_dir)

    def write(tmp: Path) -> None:
        model = onnx.load(str(src_dir / MODEL_FILE))
        onnx.save(convert_float_to_float16(model, keep_io_types=True), str(tmp / MODEL_FILE))
        copy_sidecar_files(src_dir, tmp)

    return atomic_directory(out_dir, write)


def copy_fp32(src_dir: str | Path, out_dir: str | Path) -> Path:
    src_dir = Path(src_dir)

    def write(tmp: Path) -> None:
        shutil.copy2(src_dir / MODEL_FILE, tmp / MODEL_FILE)
        copy_sidecar_files(src_dir, tmp)

    return atomic_directory(out_dir, write)


def quantize(
    src_dir: str | Path,
    out_dir: str | Path,
    mode: str,
    calibration: Sequence[Batch] | None = None,
    *,
    calibration_method: CalibrationName = "minmax",
    reduce_range: bool | None = None,
    per_channel: bool = False,
) -> Path:
    """One of `MODES` applied to `src_dir`, written to `out_dir`; `calibration` is needed by `CALIBRATED_MODES`.
    `per_channel`: int8 weights with one scale per output channel (the int8 modes; ignored by none and fp16)."""
    if mode == "none":
        return copy_fp32(src_dir, out_dir)
    if mode == "int8-dynamic":
        return quantize_dynamic_int8(src_dir, out_dir, reduce_range=reduce_range, per_channel=per_channel)
    if mode == "int8-dynamic-fp32-emb":
        return quantize_dynamic_int8_fp32_embedding(
            src_dir, out_dir, reduce_range=reduce_range, per_channel=per_channel
        )
    if mode == "int8-static":
        if not calibration:
            raise DistillError("int8-static needs calibration batches (real tokenized sentences)")
        return quantize_static_int8(
            src_dir, out_dir, calibration, method=calibration_method, reduce_range=reduce_range, per_channel=per_channel
        )
    if mode == "int8-blocks":
        return quantize_int8_blocks(src_dir, out_dir, per_channel=per_channel, reduce_range=reduce_range)
    if mode == "int8-smooth":
        return quantize_int8_smooth(
            src_dir, out_dir, calibration or [], per_channel=per_channel, reduce_range=reduce_range
        )
    if mode == "fp16":
        return convert_fp16(src_dir, out_dir)
    raise DistillError(f"unknown quantization mode {mode!r} (choose {', '.join(MODES)})")
