"""Token-classifier export axes, and onnxruntime's optimizer: every layer's Attention fused, parity kept."""

import numpy as np
import onnx
import pytest
import torch
from torch import nn
from transformers import XLMRobertaConfig, XLMRobertaForSequenceClassification, XLMRobertaForTokenClassification

from polydistill.errors import DistillError
from polydistill.export.onnx import MODEL_FILE, export_onnx, logits_axes, max_logit_diff, run_onnx
from polydistill.export.optimize import (
    AttentionShape,
    OptimizeGate,
    attention_shape,
    attention_shape_from_config,
    check_attention_fused,
    count_ops,
    optimize_export,
)


def _config(tokenizer, num_labels: int, layers: int = 3, hidden: int = 32, heads: int = 2) -> XLMRobertaConfig:
    config = XLMRobertaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=64,
        max_position_embeddings=514,
        pad_token_id=1,
        num_labels=num_labels,
    )
    config._attn_implementation = "eager"
    return config


def _tiny(cls, tokenizer, num_labels: int, **kw) -> nn.Module:
    torch.manual_seed(0)
    model = cls(_config(tokenizer, num_labels, **kw))
    with torch.no_grad():  # wider than the 0.02 init, so logits and labels differ between tokens
        for param in model.parameters():
            if param.dim() > 1:
                param.normal_(0.0, 0.2)
    return model.eval()


def _drop_one_head(model: nn.Module) -> None:
    """What head pruning leaves: 1 head of size 16 per layer, q/k/v width 16 while the hidden size stays 32."""
    for layer in model.roberta.encoder.layer:
        attn = layer.attention.self
        for name in ("query", "key", "value"):
            old, new = getattr(attn, name), nn.Linear(32, 16)
            new.weight.data, new.bias.data = old.weight.data[:16].clone(), old.bias.data[:16].clone()
            setattr(attn, name, new)
        out = layer.attention.output
        dense = nn.Linear(16, 32)
        dense.weight.data, dense.bias.data = out.dense.weight.data[:, :16].clone(), out.dense.bias.data.clone()
        out.dense = dense
        attn.num_attention_heads, attn.attention_head_size, attn.all_head_size = 1, 16, 16
        attn.scaling = 16**-0.5
    model.config.num_attention_heads = 1


def test_token_classifier_export_has_dynamic_batch_and_sequence_axes(tmp_path, tiny_tokenizer, small_texts):
    model = _tiny(XLMRobertaForTokenClassification, tiny_tokenizer, 5)
    result = export_onnx(model, tiny_tokenizer, tmp_path / "tok", small_texts[:8])
    assert result.task == "token" and result.max_abs_diff <= 1e-4
    dims = onnx.load(str(result.directory / MODEL_FILE)).graph.output[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["batch", "sequence", 5]
    # another batch size and another (longer) padded length than the export saw
    batch = tiny_tokenizer(small_texts[300:303], padding=True, return_tensors="np")
    assert batch["input_ids"].shape[1] != 0
    got = run_onnx(result.directory / MODEL_FILE, dict(batch))
    with torch.inference_mode():
        expected = model(**{k: torch.from_numpy(v) for k, v in batch.items()}).logits.numpy()
    assert got.shape == expected.shape == (3, batch["input_ids"].shape[1], 5)
    assert max_logit_diff(got, expected, batch["attention_mask"]) <= 1e-4
    assert len(set(expected.argmax(-1)[batch["attention_mask"].astype(bool)].tolist())) > 1


def test_logits_axes_reject_other_ranks():
    assert logits_axes(2) == {0: "batch"}
    assert logits_axes(3) == {0: "batch", 1: "sequence"}
    with pytest.raises(DistillError, match="rank 4"):
        logits_axes(4)


@pytest.mark.slow
@pytest.mark.parametrize("cls", [XLMRobertaForSequenceClassification, XLMRobertaForTokenClassification])
def test_optimizer_fuses_attention_in_every_layer_and_keeps_parity(tmp_path, tiny_tokenizer, small_texts, cls):
    model = _tiny(cls, tiny_tokenizer, 3, layers=3)
    fp32 = export_onnx(model, tiny_tokenizer, tmp_path / "fp32", small_texts[:8]).directory
    assert count_ops(fp32 / MODEL_FILE, "Attention") == 0
    result = optimize_export(fp32, tmp_path / "opt", model, tiny_tokenizer, small_texts[200:216])
    assert result.shape == AttentionShape(num_layers=3, num_heads=2, hidden_size=32)
    assert result.shape == attention_shape_from_config(model.config)
    assert result.fused_attention == 3 == count_ops(result.directory / MODEL_FILE, "Attention")
    assert result.fused["SkipLayerNormalization"] > 0
    assert result.max_abs_diff <= 1e-4
    assert {p.name for p in result.directory.iterdir()} >= {"model.onnx", "config.json", "tokenizer.json"}


def test_fewer_heads_per_layer_still_fuse_with_explicit_qkv_width(tmp_path, tiny_tokenizer, small_texts):
    model = _tiny(XLMRobertaForSequenceClassification, tiny_tokenizer, 3, layers=2)
    _drop_one_head(model)
    assert attention_shape(model) == AttentionShape(num_layers=2, num_heads=1, hidden_size=16)
    fp32 = export_onnx(model, tiny_tokenizer, tmp_path / "fp32", small_texts[:8]).directory
    result = optimize_export(fp32, tmp_path / "opt", model, tiny_tokenizer, small_texts[200:216])
    assert result.fused_attention == 2
    assert result.max_abs_diff <= 1e-4


def test_pruned_student_from_students_prune_fuses(tmp_path, tiny_tokenizer, small_texts):
    from polydistill.students.prune import PruneConfig, prune

    model = _tiny(XLMRobertaForSequenceClassification, tiny_tokenizer, 3, layers=2, hidden=64, heads=4)
    pruned = prune(model, PruneConfig(heads=0.5, ffn=0.5)).eval()
    assert attention_shape(pruned) == AttentionShape(num_layers=2, num_heads=2, hidden_size=32)
    fp32 = export_onnx(pruned, tiny_tokenizer, tmp_path / "fp32", small_texts[:8]).directory
    result = optimize_export(fp32, tmp_path / "opt", pruned, tiny_tokenizer, small_texts[200:216])
    assert result.fused_attention == 2 and result.max_abs_diff <= 1e-4


def test_wrong_head_count_fails_the_gate_and_writes_nothing(tmp_path, tiny_tokenizer, small_texts):
    model = _tiny(XLMRobertaForSequenceClassification, tiny_tokenizer, 3, layers=2)
    _drop_one_head(model)
    fp32 = export_onnx(model, tiny_tokenizer, tmp_path / "fp32", small_texts[:8]).directory
    wrong = AttentionShape(num_layers=2, num_heads=2, hidden_size=32)  # the config before pruning
    # the optimizer still fuses every layer, into Attention nodes that compute the wrong thing:
    # only the parity gate notices
    with pytest.raises(DistillError, match="optimized ONNX parity gate failed"):
        optimize_export(fp32, tmp_path / "opt", model, tiny_tokenizer, small_texts[:8], gate=OptimizeGate(shape=wrong))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fp32"]


def test_layers_with_different_head_counts_are_refused(tiny_tokenizer):
    model = _tiny(XLMRobertaForSequenceClassification, tiny_tokenizer, 3, layers=2)
    model.roberta.encoder.layer[0].attention.self.num_attention_heads = 1
    with pytest.raises(DistillError, match="same number of heads in every layer"):
        attention_shape(model)


def test_check_attention_fused():
    check_attention_fused(4, 4)
    with pytest.raises(DistillError, match="3 of 4 layers"):
        check_attention_fused(3, 4)


def test_max_logit_diff_ignores_padding_only_for_token_logits():
    mask = np.array([[1, 1, 0]])
    a = np.zeros((1, 3, 2), dtype=np.float32)
    b = a.copy()
    b[0, 2] = 5.0  # a padded position
    assert max_logit_diff(a, b, mask) == 0.0
    assert max_logit_diff(a, b) == 5.0
    assert np.isnan(max_logit_diff(a, np.full_like(a, np.nan), mask))


def test_sdpa_attention_does_not_fuse_and_the_gate_says_so(tmp_path, tiny_tokenizer, small_texts):
    model = _tiny(XLMRobertaForSequenceClassification, tiny_tokenizer, 3, layers=2)
    model.config._attn_implementation = "sdpa"
    fp32 = export_onnx(model, tiny_tokenizer, tmp_path / "fp32", small_texts[:8]).directory
    with pytest.raises(DistillError, match="fused Attention in 0 of 2 layers.*eager"):
        optimize_export(fp32, tmp_path / "opt", model, tiny_tokenizer, small_texts[:8])
    assert not (tmp_path / "opt").exists()
