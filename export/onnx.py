"""ONNX export of classifiers, each followed by onnxruntime and a comparison with PyTorch.

Sequence classifiers (logits `[batch, labels]`) and token classifiers (logits `[batch, sequence, labels]`)
go through the same path; only the output's dynamic axes differ.

The TorchScript exporter (`dynamo=False`) over an eager-attention model is used on purpose:
it is the only combination for which onnxruntime's BERT optimizer fuses Attention (stack facts).
"""

from __future__ import annotations

import shutil
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from polydistill.errors import DistillError
from polydistill.io import atomic_directory

INPUT_NAMES = ["input_ids", "attention_mask"]
MODEL_FILE = "model.onnx"


@dataclass(frozen=True)
class ExportResult:
    directory: Path
    max_abs_diff: float  # fp32 ONNX vs PyTorch logits on the parity sentences
    task: str = "sequence"  # "sequence" or "token": what the logits are per


def logits_axes(ndim: int) -> dict[int, str]:
    """Dynamic axes of the logits output: per sentence `[batch, labels]` or per token `[batch, sequence, labels]`.

    A token classifier exported with only the batch axis dynamic would get its sequence length
    frozen to the export batch's, and fail (or silently mis-shape) on any other length.
    """
    if ndim == 2:
        return {0: "batch"}
    if ndim == 3:
        return {0: "batch", 1: "sequence"}
    raise DistillError(f"cannot export logits of rank {ndim}: expected [batch, labels] or [batch, sequence, labels]")


class _LogitsOnly(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits


def write_onnx_graph(
    model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, path: str | Path, *, opset: int = 17
) -> None:
    """The one `torch.onnx.export` call: TorchScript exporter, logits only, dynamic batch and sequence axes.

    No check is made here; callers compare the graph with PyTorch (see `export_onnx`).
    """
    model = model.eval()
    with torch.no_grad(), _known_export_warnings_hidden():
        ndim = model(input_ids=input_ids[:1], attention_mask=attention_mask[:1]).logits.ndim
        torch.onnx.export(
            _LogitsOnly(model).eval(),  # a train-mode wrapper would put the model back in train mode
            (input_ids, attention_mask),
            str(path),
            dynamo=False,
            input_names=INPUT_NAMES,
            output_names=["logits"],
            dynamic_axes={
                "input_ids": {0: "batch", 1: "sequence"},
                "attention_mask": {0: "batch", 1: "sequence"},
                "logits": logits_axes(ndim),
            },
            opset_version=opset,
        )


@contextmanager
def _known_export_warnings_hidden() -> Iterator[None]:
    """The warnings every export of these encoders raises, hidden for this call only (matched by category and
    message; any other warning still shows):

    - DeprecationWarning "You are using the legacy TorchScript-based ONNX export": chosen on purpose (see the
      module's docstring), shown only where DeprecationWarnings are (tests, `python -W default`), and the
      DeprecationWarning "The feature will be removed" that exporter raises about its own logging set-up.

    - TracerWarning "Converting a tensor to a Python boolean": transformers' mask code (masking_utils) tests
      whether the keys outnumber the mask's columns. In an encoder without a cache they never do, at any batch
      size or length, so the trace keeping that test's answer as a constant loses nothing.
    - UserWarning "Exporting aten::index operator of advanced indexing": the exporter saying which ONNX ops
      spell the lookup, not that anything was approximated.

    Either way `export_onnx` then checks the graph against PyTorch on real sentences before it is kept."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "You are using the legacy TorchScript-based ONNX export", DeprecationWarning)
        warnings.filterwarnings("ignore", "The feature will be removed", DeprecationWarning, r"torch\.onnx\.")
        warnings.filterwarnings("ignore", "Converting a tensor to a Python boolean", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", "Exporting aten::index operator of advanced indexing", UserWarning)
        yield


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
    expected = _torch_logits(model, inputs)
    result: dict[str, float] = {}

    def write(tmp: Path) -> None:
        path = tmp / MODEL_FILE
        write_onnx_graph(model, inputs["input_ids"], inputs["attention_mask"], path, opset=opset)
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
    task = "token" if expected.ndim == 3 else "sequence"
    return ExportResult(directory=directory, max_abs_diff=result["diff"], task=task)


def _torch_logits(model: nn.Module, inputs: dict[str, torch.Tensor]) -> np.ndarray:
    with torch.inference_mode():
        return model(**inputs).logits.float().numpy()


def pytorch_reference(
    model: nn.Module, tokenizer, texts: list[str], *, max_length: int = 128
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Right-padded int64 inputs for `texts` and the eval-mode PyTorch logits on them.

    The reference every derived graph (optimized, quantized) is compared with: the same sentences
    and padding as the export's own parity gate.
    """
    if not texts:
        raise DistillError("a parity check needs at least one sentence")
    batch = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    inputs = {name: batch[name] for name in INPUT_NAMES}
    expected = _torch_logits(model.eval(), inputs)
    return {k: v.numpy().astype(np.int64) for k, v in inputs.items()}, expected


def max_logit_diff(got: np.ndarray, expected: np.ndarray, attention_mask: np.ndarray | None = None) -> float:
    """Largest |difference| of two logit arrays; for token logits, over real positions only when a mask is given.

    NaN anywhere gives NaN, so a `diff <= tolerance` check fails on it.
    """
    if got.shape != expected.shape:
        raise DistillError(f"logit shapes differ: {got.shape} vs {expected.shape}")
    delta = np.abs(got.astype(np.float64) - expected.astype(np.float64))
    if attention_mask is not None and delta.ndim == 3:
        delta = delta[attention_mask.astype(bool)]
    return float(np.max(delta))


def label_agreement(logits: np.ndarray, reference: np.ndarray, attention_mask: np.ndarray | None = None) -> float:
    """Share of argmax labels equal to the reference's: per sentence, or per real token for token logits."""
    got, want = logits.argmax(-1), reference.argmax(-1)
    if got.ndim == 2 and attention_mask is not None:
        keep = attention_mask.astype(bool)
        got, want = got[keep], want[keep]
    return float(np.mean(got == want))


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
