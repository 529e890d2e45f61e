"""ONNX export is gated on parity with PyTorch; int8 keeps labels."""

import numpy as np
import pytest
import torch

from polydistill.errors import DistillError
from polydistill.export.onnx import export_onnx, run_onnx
from polydistill.export.quantize import quantize_dynamic_int8


def test_export_matches_pytorch_on_real_sentences_with_dynamic_axes(
    tmp_path, tiny_teacher, tiny_tokenizer, small_texts
):
    result = export_onnx(tiny_teacher, tiny_tokenizer, tmp_path / "onnx", small_texts[:8])
    assert result.max_abs_diff <= 1e-4
    assert not any(m.training for m in tiny_teacher.modules()), "export must leave the model in eval mode"
    assert {p.name for p in result.directory.iterdir()} >= {"model.onnx", "config.json", "tokenizer.json"}
    # other batch size and sequence length than the export used
    batch = tiny_tokenizer(small_texts[20:23], padding=True, return_tensors="np")
    got = run_onnx(result.directory / "model.onnx", dict(batch))
    with torch.inference_mode():
        expected = tiny_teacher(**{k: torch.from_numpy(v) for k, v in batch.items()}).logits.numpy()
    assert got.shape == (3, 3)
    assert np.max(np.abs(got - expected)) <= 1e-4


def test_parity_gate_failure_writes_nothing(tmp_path, tiny_teacher, tiny_tokenizer, small_texts):
    with pytest.raises(DistillError, match="parity gate failed"):
        export_onnx(tiny_teacher, tiny_tokenizer, tmp_path / "onnx", small_texts[:4], tolerance=-1.0)
    assert not (tmp_path / "onnx").exists()
    assert list(tmp_path.iterdir()) == []


def test_dynamic_int8_is_smaller_and_runs(tmp_path, tiny_teacher, tiny_tokenizer, small_texts):
    fp32 = export_onnx(tiny_teacher, tiny_tokenizer, tmp_path / "fp32", small_texts[:4]).directory
    int8 = quantize_dynamic_int8(fp32, tmp_path / "int8")
    assert (int8 / "model.onnx").stat().st_size < (fp32 / "model.onnx").stat().st_size
    assert (int8 / "tokenizer.json").exists()
    batch = tiny_tokenizer(small_texts[:4], padding=True, return_tensors="np")
    assert run_onnx(int8 / "model.onnx", dict(batch)).shape == (4, 3)
