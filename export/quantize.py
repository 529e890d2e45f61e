"""Post-training quantization of exported ONNX models with onnxruntime."""

from __future__ import annotations

from pathlib import Path

import onnx
from onnxruntime.quantization import QuantType, quantize_dynamic

from distill.io import atomic_directory
from export.onnx import MODEL_FILE, copy_sidecar_files


def cpu_has_vnni() -> bool:
    """True when this x86 CPU has AVX-512 VNNI or AVX-VNNI (int8 dot products without overflow)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_vnni" in flags or "avx_vnni" in flags


def quantize_dynamic_int8(src_dir: str | Path, out_dir: str | Path, *, reduce_range: bool | None = None) -> Path:
    """Dynamic int8 (weights int8 ahead of time, activations quantized per batch) of `src_dir/model.onnx`.

    `reduce_range=None` picks 7-bit weights on CPUs without VNNI: there, the u8×s8 multiply-add
    onnxruntime uses on AVX2 can saturate 16-bit intermediates with full-range weights.
    """
    src_dir = Path(src_dir)
    if reduce_range is None:
        reduce_range = not cpu_has_vnni()

    def write(tmp: Path) -> None:
        quantize_dynamic(
            src_dir / MODEL_FILE,
            tmp / MODEL_FILE,
            weight_type=QuantType.QInt8,
            reduce_range=reduce_range,
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
        copy_sidecar_files(src_dir, tmp)

    return atomic_directory(out_dir, write)
