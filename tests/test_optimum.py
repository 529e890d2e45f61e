"""Exported artifact directories load in optimum-onnx and give the labels plain onnxruntime gives.

Runs only under .venv-optimum (optimum-onnx 0.1.0 needs transformers < 4.58): `make test-optimum`
produces the artifacts with the main venv (`python tests/optimum_artifacts.py`), then runs this file
with `--noconftest` (conftest needs `datasets`, which .venv-optimum lacks) and OPTIMUM_ARTIFACTS set.
In the main venv the whole module is reported as skipped, never as passed. Nothing here imports
polydistill code: the expected labels come from expected.json.
"""

import json
import os
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.optimum

ort_models = pytest.importorskip(
    "optimum.onnxruntime", reason="optimum-onnx is only in .venv-optimum: run `make test-optimum`"
)
torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def artifacts() -> tuple[Path, dict]:
    root = os.environ.get("OPTIMUM_ARTIFACTS")
    if not root:  # under optimum a missing artifact is a failure, not a skip
        pytest.fail("OPTIMUM_ARTIFACTS is not set: run `make test-optimum`")
    path = Path(root)
    if not (path / "expected.json").is_file():
        pytest.fail(f"no expected.json in {path}: run `python tests/optimum_artifacts.py {path}` with .venv")
    return path, json.loads((path / "expected.json").read_text(encoding="utf-8"))


def _load(directory: Path, task: str):
    cls = (
        ort_models.ORTModelForSequenceClassification
        if task == "sequence"
        else ort_models.ORTModelForTokenClassification
    )
    return cls.from_pretrained(directory, provider="CPUExecutionProvider")


def _real(labels: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Labels of real tokens only, for token classifiers (padding positions are nobody's answer)."""
    return labels[mask.astype(bool)] if labels.ndim == 2 else labels


@pytest.mark.parametrize("name", ["sequence-fp32", "sequence-int8-dynamic", "token-int8-dynamic"])
def test_optimum_loads_artifact_and_matches_onnxruntime_labels(artifacts, name):
    root, expected = artifacts
    entry = expected["artifacts"][name]
    model = _load(root / name, entry["task"])
    ids = torch.tensor(entry["input_ids"])
    mask = torch.tensor(entry["attention_mask"])
    logits = model(input_ids=ids, attention_mask=mask).logits.detach().cpu().numpy()
    mask_np = mask.numpy()
    got = _real(logits.argmax(-1), mask_np)
    want = _real(np.asarray(entry["labels_onnxruntime"]), mask_np)
    assert len(set(want.tolist())) > 1, "expected labels are constant: the check would prove little"
    np.testing.assert_array_equal(got, want)
    np.testing.assert_allclose(logits, np.asarray(entry["logits_onnxruntime"]), atol=1e-4)
    if entry["mode"] == "none":  # fp32: PyTorch's labels too
        np.testing.assert_array_equal(got, _real(np.asarray(entry["labels_pytorch"]), mask_np))
    labels = model.config.id2label
    assert len(labels) == logits.shape[-1]


@pytest.mark.parametrize("name", ["sequence-int8-dynamic", "token-int8-dynamic"])
def test_tokenizer_saved_by_transformers_5_loads_in_optimum_stack(artifacts, name):
    """The folder is usable end to end in the optimum stack: its tokenizer reproduces the ids."""
    from transformers import AutoTokenizer

    root, expected = artifacts
    entry = expected["artifacts"][name]
    tokenizer = AutoTokenizer.from_pretrained(root / name)
    batch = tokenizer(expected["texts"], padding=True, truncation=True, max_length=128, return_tensors="np")
    assert batch["input_ids"].tolist() == entry["input_ids"]
    assert batch["attention_mask"].tolist() == entry["attention_mask"]
