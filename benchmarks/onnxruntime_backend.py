"""The onnxruntime backend of a benchmark: the source's ONNX file, or one exported here from its PyTorch weights
and quantized or converted here by export/quantize.py (the one implementation of every ONNX precision), and the
timed session call.

onnx, onnxruntime and torch are imported inside functions: `distill --help` imports this module and stays light.
"""

from __future__ import annotations

import itertools
import json
import re
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from polydistill.benchmarks.inputs import fixed_inputs
from polydistill.benchmarks.sources import ONNX_FILE, Source, Variant
from polydistill.benchmarks.torch_backend import load_torch_model
from polydistill.errors import DistillError
from polydistill.io import atomic_directory

STATIC_CALIBRATION_BATCHES = 8  # random-id batches of 1 × 32 tokens that static int8 is calibrated on


def export_onnx_fp32(src: Source, out_dir: Path, cache: dict, *, opset: int = 17) -> tuple[Path, float]:
    """TorchScript ONNX export (dynamo=False, eager attention, as export/onnx.py) of the source's
    CPU fp32 model into `out_dir`; returns (file, max |logit diff| vs PyTorch on a 2×16 input)."""
    import torch  # lazy: --help stays torch-free

    from polydistill.export.onnx import write_onnx_graph  # lazy: it imports torch; --help stays torch-free

    model = load_torch_model(src, "cpu", cache)
    ids, mask = (torch.from_numpy(a) for a in fixed_inputs(2, 16, src.config["vocab_size"]).values())

    def write(tmp: Path) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            write_onnx_graph(model, ids, mask, tmp / ONNX_FILE, opset=opset)
        (tmp / "config.json").write_text(json.dumps(src.config))

    atomic_directory(out_dir, write)
    with torch.inference_mode():
        expected = model(input_ids=ids, attention_mask=mask).logits.numpy()
    sess = ort_session(out_dir / ONNX_FILE, threads=None, device="cpu")
    got = sess.run(None, {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})[0]
    return out_dir / ONNX_FILE, float(np.max(np.abs(got - expected)))


def prepare_onnx(v: Variant, workdir: Path, cache: dict) -> None:
    """Set `v.onnx_file`: the source's own file, or one exported / quantized / converted into `workdir`."""
    src = v.source
    if src.kind == "onnx" and v.origin == "native":
        v.onnx_file = src.path / ONNX_FILE
    else:
        v.onnx_file = _made_here(v, workdir, cache)
    v.size_mb = sum(p.stat().st_size for p in v.onnx_file.parent.iterdir() if _is_onnx_weight_file(p)) / 1e6
    v.size_source = "file"


def _made_here(v: Variant, workdir: Path, cache: dict) -> Path:
    """The variant's file made from the source's fp32 ONNX file (exported here first if the source has none) by
    export/quantize.py, the one implementation of every ONNX precision; the variant's notes say how."""
    from polydistill.export.quantize import (  # lazy: it imports onnxruntime; --help stays light
        convert_fp16,
        quantize_dynamic_int8,
        quantize_static_int8,
    )

    src = v.source
    out = workdir / re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{src.label}-{src.role}")
    fp32_file = _fp32_file(v, out / "fp32", cache)
    if v.precision == "fp32":
        return fp32_file
    if v.precision == "int8-dynamic":
        made = quantize_dynamic_int8(fp32_file.parent, out / "int8-dynamic")
        v.notes.append("dynamic int8 quantized here with export/quantize.py")
    elif v.precision == "int8-static":
        ids = [fixed_inputs(1, 32, src.config["vocab_size"], seed=i) for i in range(STATIC_CALIBRATION_BATCHES)]
        made = quantize_static_int8(fp32_file.parent, out / "int8-static", ids, op_types=("MatMul",))
        v.notes.append("static int8 (QDQ, MatMul only) quantized here with export/quantize.py on random ids: latency")
    elif v.precision == "fp16":
        made = convert_fp16(fp32_file.parent, out / "fp16")
        v.notes.append("converted to fp16 here with export/quantize.py (onnxruntime.transformers.float16, fp32 I/O)")
    else:
        raise DistillError(f"bench: no onnxruntime {v.precision} variant")
    return made / ONNX_FILE


def _fp32_file(v: Variant, out_dir: Path, cache: dict) -> Path:
    """The source's fp32 ONNX file: its own, or exported into `out_dir` once per source (cached)."""
    src = v.source
    key = ("onnx-fp32", src.label, src.role)
    if key not in cache:
        cache[key] = (src.path / ONNX_FILE, None) if src.kind == "onnx" else export_onnx_fp32(src, out_dir, cache)
    fp32_file, diff = cache[key]
    if diff is not None:
        v.notes.append(f"exported here (TorchScript, opset 17); fp32 max |logit diff| vs torch {diff:.1e}")
    return fp32_file


def _is_onnx_weight_file(p: Path) -> bool:
    return p.is_file() and (p.name == ONNX_FILE or p.suffix == ".data" or p.name.endswith(".onnx_data"))


def ort_session(path: Path, *, threads: int | None, device: str):
    import onnxruntime as ort  # lazy: --help stays light

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # interleaved with PyTorch on the same cores: idle onnxruntime threads must not busy-wait
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    providers: list[Any] = ["CPUExecutionProvider"]
    if device == "cuda":
        providers = [("CUDAExecutionProvider", {"device_id": 0}), "CPUExecutionProvider"]
    sess = ort.InferenceSession(str(path), options, providers=providers)
    if device == "cuda" and sess.get_providers()[0] != "CUDAExecutionProvider":
        raise RuntimeError(f"onnxruntime fell back to {sess.get_providers()} for a CUDA variant")
    return sess


def ort_has_cuda() -> bool:
    try:
        import onnxruntime as ort  # lazy: --help stays light, and onnxruntime may be missing
    except ImportError:
        return False
    return "CUDAExecutionProvider" in ort.get_available_providers()


def ort_callable(v: Variant, sess, feeds: list[dict[str, np.ndarray]]) -> tuple[Callable[[], object], list[Any]]:
    """(call, keep_alive). On CUDA, inputs live on the GPU and are bound with IO binding."""
    names = [i.name for i in sess.get_inputs()]
    full = [{n: f.get(n, np.zeros_like(f["input_ids"])) for n in names} for f in feeds]  # token_type_ids → 0
    if v.device == "cuda":
        import torch  # lazy: --help stays torch-free

        output = sess.get_outputs()[0].name
        bindings, keep = [], []
        for feed in full:
            binding = sess.io_binding()
            for n, a in feed.items():
                t = torch.from_numpy(a).to("cuda").contiguous()
                keep.append(t)
                binding.bind_input(n, "cuda", 0, np.int64, list(t.shape), t.data_ptr())
            binding.bind_output(output, "cuda")
            bindings.append(binding)
        cycle = itertools.cycle(bindings)
        return (lambda: sess.run_with_iobinding(next(cycle))), [bindings, keep]
    cycle_np = itertools.cycle(full)
    return (lambda: sess.run(None, next(cycle_np))), [full]
