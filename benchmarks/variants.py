"""What is benchmarked: sources (a model to load or build) and variants (source × backend × precision
× device), how each is loaded, exported or quantized, and the zero-argument callable that is timed.

This module decides which variants exist; the rest lives by responsibility and is re-exported here, so
callers import all of it from polydistill.benchmarks.variants:
  benchmarks/sources.py              Source and Variant, the sources a command-line argument names
  benchmarks/inputs.py               the token ids fed to a variant
  benchmarks/torch_backend.py        torch variants: loading, casting, the timed call
  benchmarks/onnxruntime_backend.py  ONNX variants: export, quantization (by export/quantize.py), the timed call

Nothing here imports `datasets` or `torch_pruning`; torch, transformers and onnxruntime are imported
inside functions, so `--help` and the schema tests stay light.
"""

from __future__ import annotations

from typing import Any

from polydistill.benchmarks.inputs import fixed_inputs, length_mix_inputs
from polydistill.benchmarks.onnxruntime_backend import (
    export_onnx_fp32,
    ort_callable,
    ort_has_cuda,
    ort_session,
    prepare_onnx,
)
from polydistill.benchmarks.sources import (
    BUILTIN_NUM_LABELS,
    DRY_RUN_ARCH,
    ONNX_FILE,
    ROLES,
    XLMR_BASE_ARCH,
    Source,
    Variant,
    builtin_config,
    hf_source,
    onnx_precision,
    onnx_source,
    parse_sources,
    run_dir_sources,
)
from polydistill.benchmarks.torch_backend import (
    additive_mask,
    cpu_has_bf16,
    load_torch_model,
    prepare_torch,
    torch_callable,
)

__all__ = [
    "BACKENDS", "BUILTIN_NUM_LABELS", "DEVICES", "DRY_RUN_ARCH", "ONNX_FILE", "PRECISIONS", "ROLES",
    "XLMR_BASE_ARCH", "Source", "Variant", "additive_mask", "builtin_config", "cpu_has_bf16", "expand_variants",
    "export_onnx_fp32", "fixed_inputs", "hf_source", "length_mix_inputs", "load_torch_model", "onnx_precision",
    "onnx_source", "ort_callable", "ort_has_cuda", "ort_session", "parse_sources", "prepare_onnx", "prepare_torch",
    "run_dir_sources", "torch_callable", "unsupported",
]  # fmt: skip

BACKENDS = ("torch", "onnxruntime")
PRECISIONS = ("fp32", "bf16", "fp16", "int8-dynamic", "int8-static")
DEVICES = ("cpu", "cuda")


def unsupported(backend: str, precision: str, device: str, *, ort_cuda: bool = False) -> str | None:
    """Why this combination is not benchmarked, or None if it is."""
    if backend == "torch":
        if precision == "fp16" and device == "cpu":
            return "torch fp16 on CPU: no fast kernels; not benchmarked"
        if precision == "int8-dynamic" and device == "cuda":
            return "torch dynamic int8 (torch.ao) runs on CPU only"
        if precision == "int8-static":
            return "static int8 is benchmarked with onnxruntime only"
        return None
    if backend == "onnxruntime":
        if device == "cuda" and not ort_cuda:
            return "onnxruntime has no CUDAExecutionProvider here (install onnxruntime-gpu)"
        if precision == "bf16":
            return "onnxruntime bf16 is not benchmarked"
        if precision == "fp16" and device == "cpu":
            return "onnxruntime fp16 on CPU: no fast kernels; not benchmarked"
        if precision.startswith("int8") and device == "cuda":
            return "onnxruntime int8 (MatMulInteger / DynamicQuantizeLinear) has no CUDA kernels"
        return None
    return f"unknown backend {backend!r}"


def expand_variants(
    sources: list[Source],
    *,
    backends: list[str],
    precisions: list[str],
    device: str,
    cuda_graphs: bool = False,
    ort_cuda: bool = False,
) -> tuple[list[Variant], list[dict[str, Any]]]:
    """(variants, skipped) for every source × backend × precision on `device`.

    Native weights (a checkpoint, an ONNX file as it is) come first, then variants quantized from an
    existing ONNX file, then ONNX exports made here from PyTorch weights; each (model, role, backend,
    precision) is kept once, from the first of these that provides it.
    """
    native: list[Variant] = []
    from_onnx: list[Variant] = []  # quantized / converted from an ONNX file that exists
    exported: list[Variant] = []  # exported to ONNX here from PyTorch weights
    skipped: list[dict[str, Any]] = []
    for src in sources:
        if src.kind == "onnx":
            assert src.onnx_precision is not None
            native.append(Variant(src, "onnxruntime", src.onnx_precision, device))
            if src.onnx_precision == "fp32":
                for p in precisions:
                    if p in ("int8-dynamic", "int8-static", "fp16"):
                        origin = "converted here" if p == "fp16" else "quantized here"
                        from_onnx.append(Variant(src, "onnxruntime", p, device, origin=origin))
            continue
        for backend in backends:
            for p in precisions:
                if backend == "torch":
                    native.append(Variant(src, backend, p, device))
                else:
                    exported.append(Variant(src, backend, p, device, origin="exported here"))
    variants: list[Variant] = []
    seen: set[tuple[str, str, str, str]] = set()
    for v in native + from_onnx + exported:
        key = (v.source.label, v.source.role, v.backend, v.precision)
        if key in seen:
            continue
        if v.backend not in backends:
            skipped.append(_skip(v, f"backend {v.backend} not selected (--backends)"))
            continue
        reason = unsupported(v.backend, v.precision, device, ort_cuda=ort_cuda)
        if reason:
            skipped.append(_skip(v, reason))
            continue
        seen.add(key)
        variants.append(v)
        if cuda_graphs and device == "cuda" and v.backend == "torch":
            variants.append(Variant(v.source, v.backend, v.precision, device, cuda_graph=True, origin=v.origin))
    return variants, skipped


def _skip(v: Variant, reason: str) -> dict[str, Any]:
    return {
        "model": v.source.label, "role": v.source.role, "backend": v.backend, "precision": v.precision,
        "device": v.device, "reason": reason,
    }  # fmt: skip
