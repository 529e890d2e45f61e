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
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import onnx
from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process
from onnxruntime.transformers.float16 import convert_float_to_float16

from polydistill.config import EXPORT_MODES, ExportVariant
from polydistill.errors import DistillError
from polydistill.export.blocks import (
    MODE_METADATA_KEY,
    ffn_matmuls,
    ffn_parts,
    quantize_int8_blocks,
    quantize_int8_smooth,
)
from polydistill.export.calibration import (
    CALIBRATION_METHODS,
    Batch,
    BatchReader,
    CalibrationName,
    calibration_batches,
)
from polydistill.export.dynamic_int8 import (
    _FUSED_GRAPH_OPTIONS,
    _reduce_range,
    cpu_has_vnni,
    quantize_dynamic_int8,
    quantize_dynamic_int8_fp32_embedding,
    word_embedding_gathers,
)
from polydistill.export.dynamic_int8 import (
    _preprocessing_advice_hidden as _preprocessing_advice_hidden,  # re-exported: tests/test_console.py
)
from polydistill.export.onnx import MODEL_FILE, copy_sidecar_files
from polydistill.export.smooth import (
    SMOOTH_ALPHA,
    SMOOTH_BLOCK_SIZE,
    activation_ranges,
    quantize_word_embedding_rows,
    smooth_activations,
)
from polydistill.io import atomic_directory

# the one entry point of every mode: the dispatcher and its modes here, the modes' pieces re-exported from the
# modules that hold them, so callers import all of it from polydistill.export.quantize
__all__ = [
    "CALIBRATED_MODES", "CALIBRATION_METHODS", "EMBEDDING_GATHER_MODES", "MODES", "MODE_METADATA_KEY",
    "SMOOTH_ALPHA", "SMOOTH_BLOCK_SIZE", "Batch", "BatchReader", "CalibrationName", "Mode", "activation_ranges",
    "calibration_batches", "convert_fp16", "copy_fp32", "cpu_has_vnni", "ffn_matmuls", "ffn_parts", "quantize",
    "quantize_dynamic_int8", "quantize_dynamic_int8_fp32_embedding", "quantize_int8_blocks", "quantize_int8_smooth",
    "quantize_static_int8", "quantize_word_embedding_rows", "smooth_activations", "word_embedding_gathers",
]  # fmt: skip

Mode = ExportVariant  # the modes, defined once in the recipe schema
MODES = EXPORT_MODES
# modes that quantize the word-embedding Gather themselves: optimized with fuse_embedding=False
EMBEDDING_GATHER_MODES = ("int8-blocks", "int8-smooth")
# modes that need real sentences (`calibration` batches)
CALIBRATED_MODES = ("int8-static", "int8-smooth")


# ----------------------------------------------------------------------------------------------
# static int8


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
# fp16 and the dispatcher


def convert_fp16(src_dir: str | Path, out_dir: str | Path) -> Path:
    """fp16 weights and compute with fp32 logits out (`keep_io_types`), for onnxruntime on GPU.

    Inputs are int64 ids either way; keeping the output fp32 means callers need no change.
    onnxruntime's CPU provider runs it too (with casts), which is what the tests use.
    """
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
