"""Dynamic int8 (weights int8 ahead of time, activations quantized per batch) with onnxruntime, and the pieces
every int8 mode shares: the reduce-range choice, the options a fused graph needs, the hidden pre-processing advice
and the word-embedding lookup's name. `export/quantize.py` dispatches to it."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import onnx
from onnxruntime.quantization import QuantType, quantize_dynamic

from polydistill.benchmarks.environment import cpu_info
from polydistill.errors import DistillError
from polydistill.export.onnx import MODEL_FILE, copy_sidecar_files
from polydistill.io import atomic_directory

# Quantizing an already-fused graph fails ("Unable to find data type for weight_name") without this (stack facts)
_FUSED_GRAPH_OPTIONS = {"DefaultTensorType": onnx.TensorProto.FLOAT}


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
