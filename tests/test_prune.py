"""Structured pruning: whole heads (the hidden width shrinks with them) and FFN neurons, the same in every
layer, leaving models that stock transformers classes reload with identical logits."""

import copy
import json
import re

import pytest
import torch
from transformers import (
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    BertConfig,
    BertForSequenceClassification,
    XLMRobertaConfig,
    XLMRobertaForSequenceClassification,
    XLMRobertaForTokenClassification,
)

from polydistill.export.onnx import export_onnx
from polydistill.students.prune import PruneConfig, check_consistency, prune, prune_with_summary

VOCAB, HIDDEN, HEADS, HEAD_SIZE, FFN, LAYERS = 300, 64, 4, 16, 128, 2


def tiny(model_cls=XLMRobertaForSequenceClassification, config_cls=XLMRobertaConfig, seed: int = 0):
    """A seeded 2-layer model, hidden 64 = 4 heads x 16, FFN 128, eager attention (as the project uses)."""
    extra = {"max_position_embeddings": 66, "pad_token_id": 1} if config_cls is XLMRobertaConfig else {}
    config = config_cls(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        intermediate_size=FFN,
        num_labels=3,
        attn_implementation="eager",
        **extra,
    )
    torch.manual_seed(seed)
    return model_cls(config).eval()


@pytest.fixture(scope="module")
def inputs() -> dict[str, torch.Tensor]:
    ids = torch.randint(3, VOCAB, (3, 12), generator=torch.Generator().manual_seed(1))
    ids[2, 8:] = 1  # right padding, as the tokenizer pads
    return {"input_ids": ids, "attention_mask": (ids != 1).long()}


def logits(model, inputs) -> torch.Tensor:
    with torch.inference_mode():
        return model(**inputs).logits


def test_heads_and_ffn_shrink_every_layer_alike_and_keep_vocab_positions_and_labels():
    model, summary = prune_with_summary(tiny(), PruneConfig(heads=0.25, ffn=0.5))
    config = model.config
    assert (config.num_attention_heads, config.hidden_size, config.intermediate_size) == (3, 48, 64)
    for layer in model.roberta.encoder.layer:
        attention = layer.attention.self
        assert (attention.num_attention_heads, attention.attention_head_size, attention.all_head_size) == (3, 16, 48)
        assert attention.scaling == HEAD_SIZE**-0.5
        assert attention.query.weight.shape == attention.value.weight.shape == (48, 48)
        assert layer.intermediate.dense.weight.shape == (64, 48)
    assert model.roberta.embeddings.word_embeddings.weight.shape == (VOCAB, 48)
    assert model.roberta.embeddings.position_embeddings.weight.shape == (66, 48)
    assert model.classifier.out_proj.weight.shape == (3, 48)
    assert [len(k) for k in summary.kept_heads] == [3, 3] and len(summary.kept_hidden) == 48
    assert (summary.before.heads, summary.after.heads, summary.after.head_size) == (4, 3, 16)
    assert (summary.before.hidden, summary.after.hidden, summary.before.ffn, summary.after.ffn) == (64, 48, 128, 64)
    assert summary.after.params < summary.before.params
    assert summary.after.params == sum(p.numel() for p in model.parameters())
    assert "heads 4 -> 3" in str(summary)


@pytest.mark.parametrize(
    "model_cls, config_cls, auto_cls",
    [
        (XLMRobertaForSequenceClassification, XLMRobertaConfig, AutoModelForSequenceClassification),
        (XLMRobertaForTokenClassification, XLMRobertaConfig, AutoModelForTokenClassification),
        (BertForSequenceClassification, BertConfig, AutoModelForSequenceClassification),  # has a pooler
    ],
)
def test_pruned_model_reloads_through_from_pretrained_with_identical_logits(
    tmp_path, inputs, model_cls, config_cls, auto_cls
):
    model = prune(tiny(model_cls, config_cls), PruneConfig(heads=0.25, ffn=0.5))
    model.save_pretrained(tmp_path)
    reloaded = auto_cls.from_pretrained(tmp_path, attn_implementation="eager").eval()
    assert type(reloaded) is model_cls
    assert reloaded.config.num_attention_heads == 3 and reloaded.config.hidden_size == 48
    expected = logits(model, inputs)
    assert expected.shape[-1] == 3  # labels untouched (token classification: one row per token)
    assert (logits(reloaded, inputs) - expected).abs().max() <= 1e-5


def test_pruning_nothing_returns_the_same_model_and_logits(inputs):
    original = tiny()
    model, summary = prune_with_summary(copy.deepcopy(original), PruneConfig())
    assert torch.equal(logits(model, inputs), logits(original, inputs))
    assert summary.before == summary.after
    state = model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in original.state_dict().items())


def test_head_pruning_slices_every_coupled_tensor_with_the_same_indices():
    """The dependency graph must cut heads from q/k/v rows and the output projection's columns, and the
    kept hidden channels from embeddings, LayerNorms and every projection (token classifier included)."""
    original = tiny(XLMRobertaForTokenClassification)
    model, summary = prune_with_summary(copy.deepcopy(original), PruneConfig(heads=0.25))
    hid = torch.tensor(summary.kept_hidden)
    before = original.state_dict()
    for key, value in model.state_dict().items():
        want = before[key]
        match = re.search(r"layer\.(\d+)\.", key)
        if match:
            kept = summary.kept_heads[int(match.group(1))]
            heads = torch.tensor([h * HEAD_SIZE + d for h in kept for d in range(HEAD_SIZE)])
        if ".attention.self." in key:
            want = want[heads][:, hid] if key.endswith("weight") else want[heads]
        elif key.endswith("attention.output.dense.weight"):
            want = want[hid][:, heads]
        elif key.endswith(("intermediate.dense.weight", "classifier.weight", "_embeddings.weight")):
            want = want[:, hid]
        elif key.endswith(("LayerNorm.weight", "LayerNorm.bias", "dense.weight", "dense.bias")) and (
            "intermediate" not in key
        ):
            want = want[hid]
        assert torch.equal(value, want), key


def test_taylor_importance_uses_the_batches_and_can_keep_other_channels(inputs):
    original = tiny()
    batches = [
        {**inputs, "labels": torch.tensor([0, 1, 2])},
        {**{k: v[:2] for k, v in inputs.items()}, "labels": torch.tensor([2, 2])},
    ]
    original.roberta.embeddings.word_embeddings.weight.requires_grad_(False)  # frozen stays frozen
    cfg = PruneConfig(heads=0.25, ffn=0.5)
    magnitude, by_magnitude = prune_with_summary(copy.deepcopy(original), cfg)
    taylor, by_taylor = prune_with_summary(
        copy.deepcopy(original), PruneConfig(**{**vars(cfg), "importance": "taylor"}), batches
    )
    assert {k: v.shape for k, v in taylor.state_dict().items()} == {
        k: v.shape for k, v in magnitude.state_dict().items()
    }
    assert (by_taylor.kept_heads, by_taylor.kept_hidden) != (by_magnitude.kept_heads, by_magnitude.kept_hidden)
    assert logits(taylor, inputs).isfinite().all()
    assert all(p.grad is None for p in taylor.parameters())
    assert not taylor.roberta.embeddings.word_embeddings.weight.requires_grad
    assert taylor.roberta.encoder.layer[0].attention.self.query.weight.requires_grad
    with pytest.raises(ValueError, match="taylor.*needs batches"):
        prune(copy.deepcopy(original), PruneConfig(ffn=0.5, importance="taylor"))


def test_ffn_only_pruning_removes_exactly_the_dead_neurons(inputs):
    """Neurons whose weights in and out are zero contribute nothing: removing them must not change the logits,
    and magnitude importance must pick exactly them."""
    model = tiny()
    dead = {}
    with torch.no_grad():
        for i, layer in enumerate(model.roberta.encoder.layer):
            dead[i] = torch.randperm(FFN, generator=torch.Generator().manual_seed(i))[: FFN // 2]
            layer.intermediate.dense.weight[dead[i]] = 0
            layer.intermediate.dense.bias[dead[i]] = 0
            layer.output.dense.weight[:, dead[i]] = 0
    original = copy.deepcopy(model)
    model = prune(model, PruneConfig(ffn=0.5))
    assert (model.config.num_attention_heads, model.config.hidden_size, model.config.intermediate_size) == (4, 64, 64)
    for i, (old, new) in enumerate(zip(original.roberta.encoder.layer, model.roberta.encoder.layer, strict=True)):
        alive = sorted(set(range(FFN)) - set(dead[i].tolist()))
        assert torch.equal(new.intermediate.dense.weight, old.intermediate.dense.weight[alive])
        assert torch.equal(new.output.dense.weight, old.output.dense.weight[:, alive])
        assert torch.equal(new.attention.self.query.weight, old.attention.self.query.weight)
    torch.testing.assert_close(logits(model, inputs), logits(original, inputs), atol=1e-6, rtol=0)


def test_round_to_and_impossible_fractions():
    assert prune(tiny(), PruneConfig(ffn=0.3, round_to=16)).config.intermediate_size == 80  # 128 - 38 = 90 -> 80
    with pytest.raises(ValueError, match="must be in"):
        PruneConfig(heads=1.0)
    with pytest.raises(ValueError, match="leave none"):
        prune(tiny(), PruneConfig(heads=0.9))  # 4 heads: removing 90% rounds to removing all


def test_consistency_check_names_what_disagrees_with_the_config():
    model = prune(tiny(), PruneConfig(heads=0.25))
    model.config.intermediate_size = 100
    with pytest.raises(ValueError, match="intermediate.dense.weight"):
        check_consistency(model)


def test_pruned_model_exports_to_onnx_with_parity(tmp_path, tiny_teacher, tiny_tokenizer, small_texts):
    model = prune(tiny_teacher, PruneConfig(heads=0.5, ffn=0.5))  # 2 heads x 16 -> 1 x 16, FFN 64 -> 32
    result = export_onnx(model, tiny_tokenizer, tmp_path / "onnx", small_texts[:8])
    assert result.max_abs_diff <= 1e-4
    config = json.loads((result.directory / "config.json").read_text())
    assert (config["num_attention_heads"], config["hidden_size"], config["intermediate_size"]) == (1, 16, 32)
