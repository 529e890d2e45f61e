"""onnxruntime's transformer optimizer over an exported classifier, gated on full Attention fusion and parity.

Fusion is what makes the ONNX model fast on CPU (one Attention kernel per layer instead of ~15 small
ops), and it fails silently: the optimizer writes a valid, slower graph when a pattern does not match.
So the number of fused Attention nodes is checked against the number of layers, and the optimized
graph is run against PyTorch on real sentences like the plain export is.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import onnx
from onnxruntime.transformers.fusion_options import FusionOptions
from onnxruntime.transformers.optimizer import optimize_model
from torch import nn

from polydistill.errors import DistillError
from polydistill.export.onnx import MODEL_FILE, copy_sidecar_files, max_logit_diff, pytorch_reference, run_onnx
from polydistill.io import atomic_directory

# XLM-R, BERT and their pruned or layer-dropped students all match the "bert" fusion patterns
MODEL_TYPE = "bert"


@dataclass(frozen=True)
class AttentionShape:
    """What onnxruntime's optimizer needs to know, plus the layer count to check fusion against.

    `hidden_size` is the width of the q/k/v projections (`num_heads * head_size`), which equals the
    model's hidden size only while no heads were pruned.
    """

    num_layers: int
    num_heads: int
    hidden_size: int


@dataclass(frozen=True)
class OptimizeResult:
    directory: Path
    fused: dict[str, int]  # fused operator -> count, as onnxruntime reports it
    shape: AttentionShape
    max_abs_diff: float  # optimized fp32 ONNX vs PyTorch on the parity sentences

    @property
    def fused_attention(self) -> int:
        return self.fused.get("Attention", 0)


def attention_shape(model: nn.Module) -> AttentionShape:
    """Read heads and q/k/v width from the self-attention modules themselves, not from the config.

    After head pruning the config may lag behind the modules (transformers 5 has no `prune_heads`
    to keep them in step), and it is the modules' shapes that were exported.
    """
    shapes = [
        (int(m.num_attention_heads), int(m.attention_head_size))
        for m in model.modules()
        if hasattr(m, "num_attention_heads") and hasattr(m, "attention_head_size")
    ]
    if not shapes:
        raise DistillError(f"no self-attention modules (num_attention_heads, attention_head_size) in {type(model)}")
    if len(set(shapes)) != 1:
        found = sorted({f"{h} heads × {d}" for h, d in shapes})
        raise DistillError(
            f"layers differ in attention shape ({', '.join(found)}): onnxruntime's optimizer takes one "
            "num_heads for the whole graph, so prune the same number of heads in every layer"
        )
    heads, head_size = shapes[0]
    return AttentionShape(num_layers=len(shapes), num_heads=heads, hidden_size=heads * head_size)


def attention_shape_from_config(config) -> AttentionShape:
    """The same from a config alone (an unpruned checkpoint directory)."""
    return AttentionShape(
        num_layers=int(config.num_hidden_layers),
        num_heads=int(config.num_attention_heads),
        hidden_size=int(config.hidden_size),
    )


def optimize_graph(
    src: str | Path, dst: str | Path, shape: AttentionShape, *, fuse_embedding: bool = True
) -> dict[str, int]:
    """Run the optimizer on `src` and save to `dst`; returns the fused-operator counts.

    num_heads and hidden_size are always passed: transformers 5 reshapes q/k/v with a -1 head count,
    which the optimizer can only resolve from these arguments. `fuse_embedding=False` keeps the word
    embedding a plain Gather (int8-blocks quantizes its table row by row) instead of EmbedLayerNormalization.
    """
    options = FusionOptions(MODEL_TYPE)
    options.enable_embed_layer_norm = fuse_embedding
    optimized = optimize_model(
        str(src), model_type=MODEL_TYPE, num_heads=shape.num_heads, hidden_size=shape.hidden_size, use_gpu=False,
        optimization_options=options,
    )  # fmt: skip
    optimized.save_model_to_file(str(dst), use_external_data_format=False)
    return {op: int(n) for op, n in optimized.get_fused_operator_statistics().items()}


def count_ops(path: str | Path, op_type: str) -> int:
    """Nodes of `op_type` in the saved graph: the count a reader of the file would see."""
    return sum(node.op_type == op_type for node in onnx.load(str(path), load_external_data=False).graph.node)


def check_attention_fused(fused_attention: int, num_layers: int) -> None:
    """Raise unless every layer's attention became one fused Attention node."""
    if fused_attention != num_layers:
        raise DistillError(
            f"onnxruntime fused Attention in {fused_attention} of {num_layers} layers: export with "
            "attn_implementation='eager' and dynamo=False, keep the same head count in every layer, and pass "
            "num_heads/hidden_size matching the q/k/v width"
        )


@dataclass(frozen=True)
class OptimizeGate:
    """What the optimized graph must pass before `optimize_export` writes it.

    `shape` overrides the attention shape read from the model (`attention_shape`); `require_full_fusion`
    makes a layer whose attention did not fuse an error.
    """

    tolerance: float = 1e-4  # max |logit diff| against PyTorch on the parity sentences
    shape: AttentionShape | None = None
    require_full_fusion: bool = True


def optimize_export(
    src_dir: str | Path,
    out_dir: str | Path,
    model: nn.Module,
    tokenizer,
    parity_texts: list[str],
    *,
    gate: OptimizeGate = OptimizeGate(),
    fuse_embedding: bool = True,
) -> OptimizeResult:
    """Optimize `src_dir/model.onnx` (an `export_onnx` directory) into `out_dir`, gated twice.

    Nothing is written unless every layer's attention fused (when `gate.require_full_fusion`) and the
    optimized graph's logits are within `gate.tolerance` of PyTorch's on `parity_texts`. For token
    classifiers only real (unpadded) positions are compared: the fused kernel may leave other
    values in padded positions, which no user reads. `fuse_embedding`: see `optimize_graph`.
    """
    src_dir = Path(src_dir)
    shape = gate.shape or attention_shape(model)
    inputs, expected = pytorch_reference(model, tokenizer, parity_texts)
    result: dict[str, object] = {}

    def write(tmp: Path) -> None:
        fused = optimize_graph(src_dir / MODEL_FILE, tmp / MODEL_FILE, shape, fuse_embedding=fuse_embedding)
        attention = count_ops(tmp / MODEL_FILE, "Attention")
        if gate.require_full_fusion:
            check_attention_fused(attention, shape.num_layers)
        diff = max_logit_diff(run_onnx(tmp / MODEL_FILE, inputs), expected, inputs["attention_mask"])
        if not diff <= gate.tolerance:  # also catches NaN
            raise DistillError(
                f"optimized ONNX parity gate failed: max |logit diff| {diff:.3g} > tolerance {gate.tolerance:g}; "
                "nothing written"
            )
        copy_sidecar_files(src_dir, tmp)
        result.update(fused={**fused, "Attention": attention}, diff=diff)

    directory = atomic_directory(out_dir, write)
    return OptimizeResult(
        directory=directory,
        fused=result["fused"],  # type: ignore[arg-type]
        shape=shape,
        max_abs_diff=float(result["diff"]),  # type: ignore[arg-type]
    )
