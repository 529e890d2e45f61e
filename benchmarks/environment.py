"""What a benchmark ran on: CPU model and the flags that decide which kernels exist, versions,
thread-related environment variables, load, and the GPU with its driver when there is one."""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

# flags that decide which fast paths exist: AVX2 only means no VNNI int8 dot products, no bf16/AMX
CPU_FLAG_PATTERN = re.compile(r"^(avx2|fma|f16c|avx512.*|amx.*|.*vnni.*|avx_ne_convert)$")
ENV_VARS = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "TORCH_NUM_THREADS",
    "ORT_NUM_THREADS",
    "TOKENIZERS_PARALLELISM",
    "OMP_PROC_BIND",
    "OMP_PLACES",
    "KMP_AFFINITY",
    "DNNL_MAX_CPU_ISA",
    "ONEDNN_MAX_CPU_ISA",
    "ATEN_CPU_CAPABILITY",
    "CUDA_VISIBLE_DEVICES",
    "PYTORCH_CUDA_ALLOC_CONF",
    "CUBLAS_WORKSPACE_CONFIG",
    "NVIDIA_TF32_OVERRIDE",
)
NVIDIA_SMI_QUERY = "name,driver_version,memory.total,clocks.sm,clocks.max.sm,clocks.mem,power.limit,temperature.gpu"


def cpu_info(cpuinfo: str | None = None) -> dict[str, Any]:
    """Model name and the kernel-relevant flag subset from /proc/cpuinfo (or the given text)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    model, flags = "", []
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and not model:
            model = value.strip()
        elif key in ("flags", "Features") and not flags:
            flags = sorted({f for f in value.split() if CPU_FLAG_PATTERN.match(f)})
    model = model or platform.processor()
    return {
        "model": model,
        "flags": flags,
        "has_avx512": any(f.startswith("avx512") for f in flags),
        "has_vnni": any("vnni" in f for f in flags),
        "has_amx": any(f.startswith("amx") for f in flags),
        "has_bf16": any(f in ("avx512_bf16", "amx_bf16", "avx_ne_convert") for f in flags),
    }


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def nvidia_smi(args: list[str], timeout: float = 20.0) -> str | None:
    """Output of `nvidia-smi ARGS`, or None when it is missing or fails."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        done = subprocess.run([exe, *args], capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def gpu_info() -> dict[str, Any] | None:
    import torch  # lazy: cpu_info stays torch-free for variants, which distill's parser loads

    if not torch.cuda.is_available():
        return None
    props = torch.cuda.get_device_properties(0)
    info: dict[str, Any] = {
        "name": torch.cuda.get_device_name(0),
        "count": torch.cuda.device_count(),
        "capability": ".".join(map(str, torch.cuda.get_device_capability(0))),
        "memory_gb": round(props.total_memory / 2**30, 1),
        "multiprocessors": props.multi_processor_count,
        "torch_cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
    }
    try:  # the legacy flag; newer torch prefers torch.backends.cuda.matmul.fp32_precision
        info["cuda_matmul_allow_tf32"] = bool(torch.backends.cuda.matmul.allow_tf32)
    except Exception as exc:  # a version difference must not stop the benchmark
        info["cuda_matmul_allow_tf32"] = f"unreadable: {type(exc).__name__}"
    query = nvidia_smi([f"--query-gpu={NVIDIA_SMI_QUERY}", "--format=csv,noheader"])
    if query:
        values = [v.strip() for v in query.splitlines()[0].split(",")]
        info["nvidia_smi"] = dict(zip(NVIDIA_SMI_QUERY.split(","), values, strict=False))
        info["driver"] = info["nvidia_smi"].get("driver_version")
    return info


def collect_environment() -> dict[str, Any]:
    import torch  # lazy: cpu_info stays torch-free for variants, which distill's parser loads

    try:
        import onnxruntime as ort  # lazy: may be missing where benchmarks/gpu.sh runs (no providers then)

        providers = ort.get_available_providers()
    except ImportError:
        providers = []
    try:
        affinity = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = None
    return {
        "cpu": cpu_info(),
        "cores": os.cpu_count(),
        "cores_usable": affinity,
        "torch_threads": torch.get_num_threads(),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": {
            name: _version(name)
            for name in ("torch", "transformers", "onnxruntime", "onnxruntime-gpu", "onnx", "numpy", "tokenizers")
        },
        "onnxruntime_providers": providers,
        "env": {name: os.environ.get(name) for name in ENV_VARS if name in os.environ},
        "loadavg_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "gpu": gpu_info(),
    }
