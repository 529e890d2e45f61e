"""The torch backend of a benchmark: the source's classifier loaded or built (fp32, bf16, fp16 or torch.ao
dynamic int8) and the timed call, optionally replayed from a CUDA graph.

torch and transformers are imported inside functions: `distill --help` imports this module and stays torch-free.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from polydistill.benchmarks.environment import cpu_info
from polydistill.benchmarks.sources import Source, Variant
from polydistill.errors import DistillError


def load_torch_model(src: Source, device: str, cache: dict[tuple[str, str, str], Any]):
    """The source's classifier in fp32 on `device`, eval mode, eager attention (cached)."""
    import torch  # lazy: --help stays torch-free

    key = (src.label, src.role, device)
    if key in cache:
        return cache[key]
    if src.kind == "builtin":
        from transformers import XLMRobertaConfig, XLMRobertaForSequenceClassification  # lazy: --help stays torch-free

        config = XLMRobertaConfig(**src.config)
        config._attn_implementation = "eager"
        torch.manual_seed(0)
        with torch.device(device):  # random init directly on the device: much faster on a GPU
            model = XLMRobertaForSequenceClassification(config)
    elif src.kind == "hf":
        from transformers import (  # lazy: --help stays torch-free
            AutoModelForSequenceClassification,
            AutoModelForTokenClassification,
        )

        from polydistill.models import load_model_folder  # lazy: --help stays torch-free

        # a token classifier loads as one; anything else (a sentence classifier, a bare encoder) as a
        # sentence classifier, as documented
        token = any(a.endswith("ForTokenClassification") for a in src.config.get("architectures") or [])
        auto = AutoModelForTokenClassification if token else AutoModelForSequenceClassification
        model, _ = load_model_folder(src.path, "bench", auto, attn_implementation="eager")
        model = model.to(device)
    else:
        raise DistillError(f"bench: {src.label} is an ONNX export: it has no PyTorch weights")
    cache[key] = model.eval()
    return cache[key]


def prepare_torch(v: Variant, cache: dict) -> None:
    """Set `v.model` (and its size) for the torch backend."""
    import torch  # lazy: --help stays torch-free

    base = load_torch_model(v.source, v.device, cache)
    params = sum(p.numel() for p in base.parameters())
    v.params = params
    if v.precision == "fp32" or (v.precision == "bf16" and v.device == "cpu"):
        v.model = base
        if v.precision == "bf16":
            hw = cpu_has_bf16()
            v.notes.append(
                "CPU bf16 via torch.autocast" + ("" if hw else " on a CPU without bf16 instructions (emulated)")
            )
    elif v.precision in ("bf16", "fp16"):
        dtype = torch.bfloat16 if v.precision == "bf16" else torch.float16
        key = (v.source.label, v.source.role, f"{v.device}:{v.precision}")
        if key not in cache:
            cache[key] = copy.deepcopy(base).to(dtype=dtype).eval()
        v.model = cache[key]
        v.notes.append(f"weights cast to {v.precision}")
    elif v.precision == "int8-dynamic":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.ao.quantization is deprecated in favour of torchao
            v.model = torch.ao.quantization.quantize_dynamic(
                copy.deepcopy(base), {torch.nn.Linear}, dtype=torch.qint8
            ).eval()
        v.notes.append("torch.ao.quantization.quantize_dynamic on nn.Linear (deprecated torch API)")
    weights = v.source.path / "model.safetensors" if v.source.path else None
    if v.precision == "fp32" and weights is not None and weights.is_file():
        v.size_mb, v.size_source = weights.stat().st_size / 1e6, "file"
    elif v.precision in ("fp32", "bf16", "fp16"):
        v.size_mb, v.size_source = params * (4 if v.precision == "fp32" else 2) / 1e6, "params"


def cpu_has_bf16() -> bool:
    return bool(cpu_info()["has_bf16"])


def torch_callable(v: Variant, feeds: list[dict[str, np.ndarray]]) -> tuple[Callable[[], object], list[Any]]:
    """(call, keep_alive). Inputs are moved to the device beforehand: no host→device copy is timed."""
    import torch  # lazy: --help stays torch-free

    tensors = [{k: torch.from_numpy(a).to(v.device) for k, a in feed.items()} for feed in feeds]
    model = v.model
    autocast = v.precision == "bf16" and v.device == "cpu"
    if v.cuda_graph:
        if len(tensors) != 1:
            raise RuntimeError("CUDA graphs need one fixed input shape")
        # transformers builds the mask with a host scalar copied to the GPU, which capture forbids;
        # a prepared 4D mask is used as it is (same logits: tests/test_bench_schema.py)
        dtype = next(model.parameters()).dtype
        static = {**tensors[0], "attention_mask": additive_mask(tensors[0]["attention_mask"], dtype)}
        with torch.inference_mode():
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(3):
                    model(**static)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                out = model(**static).logits
        return graph.replay, [graph, static, out]
    cycle = itertools.cycle(tensors)

    def call() -> object:
        with torch.inference_mode():
            ctx = torch.autocast("cpu", dtype=torch.bfloat16) if autocast else contextlib.nullcontext()
            with ctx:
                return model(**next(cycle)).logits

    return call, [tensors]


def additive_mask(mask, dtype):
    """(batch, seq) 0/1 mask -> (batch, 1, seq, seq) additive mask: 0 to attend, dtype's minimum to not."""
    import torch  # lazy: --help stays torch-free

    batch, seq = mask.shape
    keep = mask[:, None, None, :].to(dtype)
    return ((1.0 - keep) * torch.finfo(dtype).min).expand(batch, 1, seq, seq)
