"""ONNX export of classifiers, each followed by onnxruntime and a comparison with PyTorch.

The TorchScript exporter (`dynamo=False`) over an eager-attention model is used on purpose:
it is the only combination for which onnxruntime's BERT optimizer fuses Attention (stack facts).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from distill.errors import DistillError
from distill.io import atomic_directory

INPUT_NAMES = ["input_ids", "attention_mask"]
MODEL_FILE = "model.onnx"


@dataclass(frozen=True)
class ExportResult:
    directory: Path
    max_abs_diff: float  # fp32 ONNX vs PyTorch logits on the parity sentences


class _LogitsOnly(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits


def export_onnx(
    model: nn.Module,
    tokenizer,
    out_dir: str | Path,
    parity_texts: list[str],
    *,
    tolerance: float = 1e-4,
    opset: int = 17,
) -> ExportResult:
    """Export `model` to `out_dir/model.onnx` with config and tokenizer beside it.

    The export is run in onnxruntime on `parity_texts` (real sentences, padded as a batch) and
    compared with PyTorch; if the largest logit difference exceeds `tolerance`, nothing is
    written and `DistillError` is raised.
    """
    if not parity_texts:
        raise DistillError("export needs at least one parity sentence")
    model = model.eval()
    batch = tokenizer(parity_texts, padding=True, truncation=True, max_length=128, return_tensors="pt")
    inputs = {name: batch[name] for name in INPUT_NAMES}
    with torch.inference_mode():
        expected = model(**inputs).logits.float().numpy()
    result: dict[str, float] = {}

    def write(tmp: Path) -> None:
        path = tmp / MODEL_FILE
        with torch.no_grad():
            torch.onnx.export(
                _LogitsOnly(model).eval(),  # a train-mode wrapper would put the model back in train mode
                (inputs["input_ids"], inputs["attention_mask"]),
                str(path),
                dynamo=False,
                input_names=INPUT_NAMES,
                output_names=["logits"],
                dynamic_axes={
                    "input_ids": {0: "batch", 1: "sequence"},
                    "attention_mask": {0: "batch", 1: "sequence"},
                    "logits": {0: "batch"},
                },
                opset_version=opset,
            )
        got = run_onnx(path, {k: v.numpy() for k, v in inputs.items()})
        diff = float(np.max(np.abs(got - expected)))
        if not diff <= tolerance:  # also catches NaN
            raise DistillError(
                f"ONNX parity gate failed: max |logit diff| {diff:.3g} > tolerance {tolerance:g}; nothing written"
            )
        result["diff"] = diff
        model.config.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)

    directory = atomic_directory(out_dir, write)
    return ExportResult(directory=directory, max_abs_diff=result["diff"])


def session(path: str | Path, threads: int | None = None, *, spinning: bool = True) -> ort.InferenceSession:
    """A CPU onnxruntime session. Benchmarks that interleave onnxruntime with PyTorch pass
    `spinning=False`: idle onnxruntime threads otherwise busy-wait and steal the cores from the
    PyTorch call that runs next."""
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run_onnx(path: str | Path, inputs: dict[str, np.ndarray]) -> np.ndarray:
    sess = session(path)
    feed = {i.name: inputs[i.name].astype(np.int64) for i in sess.get_inputs()}
    return sess.run(None, feed)[0]


def copy_sidecar_files(src_dir: Path, dst_dir: Path) -> None:
    """Config and tokenizer files travel with every variant of an exported model."""
    for item in src_dir.iterdir():
        if item.name != MODEL_FILE and item.is_file():
            shutil.copy2(item, dst_dir / item.name)
