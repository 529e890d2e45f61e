"""Matrix-product probes: what this machine's fp32 / bf16 / fp16 / int8 matmul actually reaches.

Each probe grows a square n×n×n product (n doubling from a start size) until one product takes at
least `target_ms` or n reaches `max_n`, then repeats it until `min_seconds` have been spent.
`gflops` is the best repetition (a peak), `median_gflops` the median. int8 rates are integer
GOP/s, stored under the same keys. Random data, never zeros (zeros can run faster).

Probes on the CPU:  torch fp32 / bf16 matmul, torch._int_mm (int8), and onnxruntime's
                    MatMulInteger (u8×s8, the kernel onnxruntime's int8 models use), as "int8-ort".
Probes on CUDA:     torch fp32 (under the current float32 matmul precision) / bf16 / fp16,
                    torch._int_mm (int8, B column-major).
Each entry is {"gflops", "median_gflops", "n", "reps", "threads"} or {"unavailable": reason}.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from polydistill.benchmarks.latency import Timer, cuda_event_timer, host_timer

# which probe(s) bound each benchmark precision; the best available one is the peak
PEAK_KEYS: dict[str, tuple[str, ...]] = {
    "fp32": ("fp32",),
    "bf16": ("bf16",),
    "fp16": ("fp16",),
    "int8-dynamic": ("int8", "int8-ort"),
    "int8-static": ("int8", "int8-ort"),
}


def _torch_matmul(device: str, kind: str, n: int) -> Callable[[], object]:
    gen = torch.Generator(device=device).manual_seed(n)  # drawn where they are used: no host copy
    if kind == "int8":
        a = torch.randint(-128, 128, (n, n), dtype=torch.int8, generator=gen, device=device)
        b = torch.randint(-128, 128, (n, n), dtype=torch.int8, generator=gen, device=device)
        if device == "cuda":
            b = b.t()  # column-major B: the layout cuBLASLt's int8 kernels want
        return lambda: torch._int_mm(a, b)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[kind]
    a = torch.randn(n, n, generator=gen, device=device).to(dtype)
    b = torch.randn(n, n, generator=gen, device=device).to(dtype)
    return lambda: torch.matmul(a, b)


def _ort_matmul_integer(n: int, threads: int | None) -> Callable[[], object]:
    import onnx  # lazy: onnx and onnxruntime may be missing where benchmarks/gpu.sh runs; the probe is then unavailable
    import onnxruntime as ort  # lazy: as onnx
    from onnx import TensorProto, helper  # lazy: as onnx

    node = helper.make_node("MatMulInteger", ["A", "B"], ["Y"])
    graph = helper.make_graph(
        [node],
        "probe",
        [helper.make_tensor_value_info("A", TensorProto.UINT8, [n, n])],
        [helper.make_tensor_value_info("Y", TensorProto.INT32, [n, n])],
        initializer=[
            onnx.numpy_helper.from_array(np.random.default_rng(n).integers(-128, 128, (n, n), dtype=np.int8), "B")
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = min(model.ir_version, 8)
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    sess = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    feed = {"A": np.random.default_rng(n + 1).integers(0, 256, (n, n), dtype=np.uint8)}
    return lambda: sess.run(None, feed)


def probe_one(
    make: Callable[[int], Callable[[], object]],
    timer: Timer,
    *,
    start_n: int,
    max_n: int,
    target_ms: float,
    min_seconds: float,
    max_reps: int = 50,
) -> dict[str, Any]:
    """Grow n until one product takes `target_ms`, then time it repeatedly (see module docstring)."""
    n = start_n
    while True:
        fn = make(n)
        fn()  # warm-up: kernel selection, allocation
        first = timer(fn)
        if first >= target_ms or n * 2 > max_n:
            break
        n *= 2
    times = [first]
    spent = first / 1000.0
    while spent < min_seconds and len(times) < max_reps:
        times.append(timer(fn))
        spent += times[-1] / 1000.0
    flop = 2.0 * n**3
    rates = sorted(flop / (t / 1000.0) / 1e9 for t in times if t > 0)
    if not rates:
        raise RuntimeError("timer returned no positive duration")
    return {"gflops": rates[-1], "median_gflops": float(np.median(rates)), "n": n, "reps": len(times)}


def probe_peaks(
    devices: list[str],
    cpu_threads: list[int],
    *,
    quick: bool = False,
    say: Callable[[str], None] = print,
) -> dict[str, Any]:
    """{"cpu": {"<threads>": {kind: entry}}, "cuda": {kind: entry}} for the devices asked for.

    `quick` (dry runs) keeps every product tiny. torch's thread count is restored afterwards.
    """
    peaks: dict[str, Any] = {}
    if "cpu" in devices:
        previous = torch.get_num_threads()
        peaks["cpu"] = {}
        try:
            for threads in cpu_threads:
                torch.set_num_threads(threads)
                entry: dict[str, Any] = {}
                makers: dict[str, Callable[[int], Callable[[], object]]] = {
                    kind: (lambda n, k=kind: _torch_matmul("cpu", k, n)) for kind in ("fp32", "bf16", "int8")
                }
                makers["int8-ort"] = lambda n, t=threads: _ort_matmul_integer(n, t)
                for kind, make in makers.items():
                    entry[kind] = _safe_probe(
                        make,
                        host_timer(),
                        start_n=64 if quick else 256,
                        max_n=128 if quick else 2048,
                        target_ms=1.0 if quick else 20.0,
                        min_seconds=0.02 if quick else 0.3,
                    )
                    entry[kind]["threads"] = threads
                    say(f"peak cpu {kind} @{threads} threads: {_describe(entry[kind])}")
                peaks["cpu"][str(threads)] = entry
        finally:
            torch.set_num_threads(previous)
    if "cuda" in devices and torch.cuda.is_available():
        peaks["cuda"] = {}
        for kind in ("fp32", "bf16", "fp16", "int8"):
            peaks["cuda"][kind] = _safe_probe(
                lambda n, k=kind: _torch_matmul("cuda", k, n),
                cuda_event_timer(),
                start_n=256 if quick else 1024,
                max_n=512 if quick else 16384,
                target_ms=0.5 if quick else 2.0,
                min_seconds=0.02 if quick else 0.2,
            )
            say(f"peak cuda {kind}: {_describe(peaks['cuda'][kind])}")
        peaks["cuda"]["float32_matmul_precision"] = torch.get_float32_matmul_precision()
        torch.cuda.empty_cache()
    return peaks


def _safe_probe(make, timer: Timer, **kwargs: Any) -> dict[str, Any]:
    try:
        return probe_one(make, timer, **kwargs)
    except Exception as exc:  # a missing kernel is a result ("unavailable"), not a crash
        return {"unavailable": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]}


def _describe(entry: dict[str, Any]) -> str:
    if "unavailable" in entry:
        return f"unavailable ({entry['unavailable']})"
    return f"{entry['gflops']:.1f} G(FL)OP/s best, {entry['median_gflops']:.1f} median, n={entry['n']}"


def peak_flops_per_s(peaks: dict[str, Any], device: str, precision: str, threads: int | None) -> float | None:
    """Best measured rate (FLOP/s or OP/s) among the probes that bound `precision` on `device`."""
    table = peaks.get(device) or {}
    if device == "cpu":
        table = table.get(str(threads)) or {}
    rates = [
        table[key]["gflops"] * 1e9
        for key in PEAK_KEYS.get(precision, ())
        if isinstance(table.get(key), dict) and "gflops" in table[key]
    ]
    return max(rates) if rates else None
