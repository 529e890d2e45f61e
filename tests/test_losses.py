"""Distillation losses checked against values computed by hand."""

import math

import pytest
import torch

from polydistill.errors import RecipeError
from polydistill.features import FEATURES, features_for, forward_features
from polydistill.losses import (
    AttentionKL,
    ClsMSE,
    CrossEntropy,
    HiddenMSE,
    LogitKL,
    LogitMSE,
    MiniLMRelations,
    PooledContrastive,
    PooledCosine,
    PooledMSE,
    WeightedLoss,
    aligned,
    check_loss_specs,
    map_layers,
    needs,
)


def test_logit_kl_matches_hand_computed_value_with_temperature_squared_scaling():
    student = torch.tensor([[0.0, math.log(3.0)]])  # softmax at T=1: [1/4, 3/4]
    teacher = torch.tensor([[0.0, 0.0]])  # [1/2, 1/2]
    # KL(teacher || student) = 1/2 ln(1/2 / 1/4) + 1/2 ln(1/2 / 3/4) = 1/2 ln 2 + 1/2 ln(2/3)
    expected_t1 = 0.5 * math.log(2.0) + 0.5 * math.log(2.0 / 3.0)
    assert LogitKL(temperature=1.0)(student, teacher).item() == pytest.approx(expected_t1, rel=1e-6)
    # at T=2 the student's logits halve: softmax([0, ln3 / 2]) = [1/(1+√3), √3/(1+√3)], times T² = 4
    p = [1 / (1 + math.sqrt(3)), math.sqrt(3) / (1 + math.sqrt(3))]
    expected_t2 = 4 * (0.5 * math.log(0.5 / p[0]) + 0.5 * math.log(0.5 / p[1]))
    assert LogitKL(temperature=2.0)(student, teacher).item() == pytest.approx(expected_t2, rel=1e-6)


def test_logit_kl_is_zero_when_student_equals_teacher_and_averages_over_the_batch():
    logits = torch.randn(5, 7)
    assert LogitKL(2.0)(logits, logits).item() == pytest.approx(0.0, abs=1e-6)
    one = LogitKL()(torch.tensor([[0.0, math.log(3.0)]]), torch.zeros(1, 2))
    two = LogitKL()(torch.tensor([[0.0, math.log(3.0)], [0.0, 0.0]]), torch.zeros(2, 2))
    assert two.item() == pytest.approx(one.item() / 2, rel=1e-6)


def test_cross_entropy_hand_value():
    logits = torch.tensor([[0.0, math.log(3.0)]])
    assert CrossEntropy()(logits, torch.tensor([1])).item() == pytest.approx(-math.log(0.75), rel=1e-6)


def test_weighted_loss_sums_terms_with_recipe_weights():
    student = torch.tensor([[0.0, math.log(3.0)]])
    teacher = torch.zeros(1, 2)
    labels = torch.tensor([1])
    loss = WeightedLoss({"logit_kl": {"weight": 2.0, "temperature": 1.0}, "cross_entropy": {"weight": 0.5}})
    total, parts = loss(student_logits=student, teacher_logits=teacher, labels=labels)
    kl = 0.5 * math.log(2.0) + 0.5 * math.log(2.0 / 3.0)
    assert parts == pytest.approx({"logit_kl": kl, "cross_entropy": -math.log(0.75)}, rel=1e-6)
    assert total.item() == pytest.approx(2.0 * kl + 0.5 * -math.log(0.75), rel=1e-6)


# --- the losses added for feature distillation ------------------------------------------------

KL_2 = 0.5 * math.log(2.0) + 0.5 * math.log(2.0 / 3.0)  # KL([1/2, 1/2] || [1/4, 3/4])


def test_logit_mse_hand_value():
    student = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    assert LogitMSE()(student, torch.zeros(2, 2)).item() == pytest.approx((1 + 4 + 9 + 16) / 4)
    assert LogitMSE()(student, student).item() == 0.0


def test_hidden_mse_counts_only_real_tokens_and_averages_layers():
    mask = torch.tensor([[1, 0]])
    layer1 = torch.tensor([[[1.0, 2.0], [100.0, -100.0]]])  # the second token is padding
    layer2 = torch.tensor([[[1.0, 1.0], [7.0, 7.0]]])
    zeros = torch.zeros(1, 2, 2)
    loss = HiddenMSE()
    # layer 1: (1 + 4) / (1 token × 2 dims) = 2.5; layer 2: (1 + 1) / 2 = 1; mean 1.75
    assert loss([layer1, layer2], [zeros, zeros], mask).item() == pytest.approx(1.75)
    changed = layer1.clone()
    changed[0, 1] = torch.tensor([-3.0, 5.0])
    assert loss([changed, layer2], [zeros, zeros], mask).item() == pytest.approx(1.75)
    assert loss([layer1], [layer1], mask).item() == 0.0


def test_hidden_mse_learns_a_projection_when_widths_differ():
    loss = WeightedLoss({"hidden_mse": {"weight": 1.0}}, student_hidden_size=2, teacher_hidden_size=3)
    params = dict(loss.named_parameters())
    assert {tuple(p.shape) for p in params.values()} == {(3, 2), (3,)}
    projection = loss.terms["hidden_mse"].projection
    with torch.no_grad():
        projection.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))
        projection.bias.zero_()
    student = torch.tensor([[[1.0, 2.0]]])  # maps to [1, 2, 3]
    mask = torch.ones(1, 1)
    total, _ = loss(student_hidden=[student], teacher_hidden=[torch.tensor([[[1.0, 2.0, 3.0]]])], attention_mask=mask)
    assert total.item() == pytest.approx(0.0, abs=1e-7)
    total, _ = loss(student_hidden=[student], teacher_hidden=[torch.zeros(1, 1, 3)], attention_mask=mask)
    assert total.item() == pytest.approx((1 + 4 + 9) / 3)
    total.backward()
    assert projection.weight.grad is not None and projection.weight.grad.abs().sum() > 0
    # equal widths: no projection, nothing to train; unequal widths without sizes: a clear error
    assert (
        list(WeightedLoss({"hidden_mse": {"weight": 1.0}}, student_hidden_size=3, teacher_hidden_size=3).parameters())
        == []
    )
    with pytest.raises(ValueError, match="student_hidden_size"):
        HiddenMSE()([student], [torch.zeros(1, 1, 3)], mask)


def _rows(*rows: list[float]) -> torch.Tensor:
    return torch.tensor([list(rows)])  # [B=1, heads=1, T, T]


def test_attention_kl_hand_value_on_two_tokens():
    teacher = _rows([0.5, 0.5], [0.5, 0.5])
    student = _rows([0.25, 0.75], [0.5, 0.5])
    mask = torch.ones(1, 2)
    # row 1 costs KL_2, row 2 costs 0; mean over the two rows
    assert AttentionKL()([student], [teacher], mask).item() == pytest.approx(KL_2 / 2, rel=1e-5)
    assert AttentionKL()([teacher], [teacher], mask).item() == pytest.approx(0.0, abs=1e-7)
    # two layer pairs: their mean
    assert AttentionKL()([student, teacher], [teacher, teacher], mask).item() == pytest.approx(KL_2 / 4, rel=1e-5)


def test_attention_kl_ignores_padded_queries_and_keys():
    mask = torch.tensor([[1, 1, 0]])
    teacher = _rows([0.5, 0.5, 0.0], [0.5, 0.5, 0.0], [0.2, 0.3, 0.5])
    student = _rows([0.25, 0.75, 0.0], [0.5, 0.5, 0.0], [0.9, 0.1, 0.0])
    assert AttentionKL()([student], [teacher], mask).item() == pytest.approx(KL_2 / 2, rel=1e-5)
    student_changed = _rows([0.25, 0.75, 0.4], [0.5, 0.5, 0.2], [0.0, 0.0, 1.0])
    assert AttentionKL()([student_changed], [teacher], mask).item() == pytest.approx(KL_2 / 2, rel=1e-5)


def test_attention_kl_per_head_when_head_counts_match_else_head_average():
    mask = torch.ones(1, 2)
    teacher = torch.tensor([[[[1.0, 0.0], [1.0, 0.0]], [[0.0, 1.0], [0.0, 1.0]]]])  # 2 heads, one-hot rows
    uniform = torch.full((1, 2, 2, 2), 0.5)
    # per head: KL([1, 0] || [1/2, 1/2]) = ln 2 (0 · log 0 counts as 0)
    assert AttentionKL()([uniform], [teacher], mask).item() == pytest.approx(math.log(2.0), rel=1e-5)
    # one student head against two teacher heads: the teacher's head average is [1/2, 1/2]
    one_head = torch.tensor([[[[0.25, 0.75], [0.25, 0.75]]]])
    assert AttentionKL()([one_head], [teacher], mask).item() == pytest.approx(KL_2, rel=1e-5)


def test_attention_kl_clamps_zero_student_probabilities():
    value = AttentionKL()([_rows([1.0, 0.0])], [_rows([0.5, 0.5])], torch.ones(1, 1)).item()
    expected = 0.5 * math.log(0.5) + 0.5 * (math.log(0.5) - math.log(1e-12))
    assert math.isfinite(value) and value == pytest.approx(expected, rel=1e-4)


def test_minilm_relations_hand_value_on_two_tokens():
    # one relation head: relations are softmax(x xᵀ / √width) rows
    s = math.sqrt(math.log(3.0))
    student_x = torch.tensor([[[0.0], [s]]])  # rows: softmax([0, 0]) = [1/2, 1/2]; softmax([0, ln 3]) = [1/4, 3/4]
    teacher_x = torch.zeros(1, 2, 2)  # every relation uniform (teacher width 2, student width 1)
    student = [(student_x, torch.zeros(1, 2, 1), student_x)]  # QQ and VV each cost KL_2 / 2, KK nothing
    teacher = [(teacher_x, teacher_x, teacher_x)]
    loss = MiniLMRelations(relation_heads=1)
    assert loss(student, teacher, torch.ones(1, 2)).item() == pytest.approx(KL_2, rel=1e-5)
    # a padded third token, whatever its values, changes nothing
    pad_s = torch.cat([student_x, torch.tensor([[[5.0]]])], dim=1)
    pad_t = torch.cat([teacher_x, torch.tensor([[[3.0, -4.0]]])], dim=1)
    pad_k = torch.tensor([[[0.0], [0.0], [-2.0]]])
    padded = loss([(pad_s, pad_k, pad_s)], [(pad_t, pad_t, pad_t)], torch.tensor([[1, 1, 0]]))
    assert padded.item() == pytest.approx(KL_2, rel=1e-5)


def test_minilm_relations_zero_when_relations_match_across_widths():
    """Teacher width 8 (say 2 attention heads of 4), student width 4 (1 head of 4), 2 relation heads.

    Teacher relation head r is [u_r, u_r] (width 4): x xᵀ / √4 = 2 u uᵀ / 2 = u uᵀ. Student head r is
    2^{1/4} u_r rotated (width 2): √2 u uᵀ / √2 = u uᵀ (a rotation keeps dot products). Same relations.
    """
    torch.manual_seed(0)
    c, s = math.cos(0.3), math.sin(0.3)
    rotation = torch.tensor([[c, -s], [s, c]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])

    def pair() -> tuple[torch.Tensor, torch.Tensor]:
        u = torch.randn(2, 3, 2, 2)  # [B, T, relation head, 2]
        teacher = torch.cat([u, u], dim=-1).reshape(2, 3, 8)
        student = (2**0.25 * u @ rotation).reshape(2, 3, 4)
        return student, teacher

    (sq, tq), (sk, tk), (sv, tv) = pair(), pair(), pair()
    loss = MiniLMRelations(relation_heads=2)
    assert loss([(sq, sk, sv)], [(tq, tk, tv)], mask).item() == pytest.approx(0.0, abs=1e-5)
    assert loss([(sq, sk, sv + torch.randn(2, 3, 4))], [(tq, tk, tv)], mask).item() > 1e-3
    with pytest.raises(ValueError, match="student width 4 is not divisible by relation_heads=3"):
        MiniLMRelations(relation_heads=3)([(sq, sk, sv)], [(tq[..., :6], tk[..., :6], tv[..., :6])], mask)
    with pytest.raises(ValueError, match="teacher width 8 is not divisible by relation_heads=3"):
        MiniLMRelations(relation_heads=3)([(tq[..., :6], tk[..., :6], tv[..., :6])], [(tq, tk, tv)], mask)
    with pytest.raises(ValueError, match="relation_heads"):
        MiniLMRelations(relation_heads=2.5)


def test_pooled_cosine_hand_values_and_projection():
    teacher = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    student = torch.tensor([[2.0, 0.0], [0.0, 3.0], [-1.0, 0.0], [1.0, 1.0]])
    # 1 − cos: 0, 1, 2, 1 − 1/√2
    expected = (0 + 1 + 2 + 1 - 1 / math.sqrt(2)) / 4
    assert PooledCosine()(student, teacher).item() == pytest.approx(expected, rel=1e-6)
    loss = WeightedLoss({"pooled_cosine": {"weight": 1.0}}, student_hidden_size=3, teacher_hidden_size=2)
    assert sum(p.numel() for p in loss.parameters()) == 3 * 2 + 2
    total, _ = loss(student_pooled=torch.randn(4, 3), teacher_pooled=teacher)
    total.backward()
    assert loss.terms["pooled_cosine"].projection.weight.grad is not None


def test_pooled_mse_hand_values():
    student = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    teacher = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    assert PooledMSE()(student, teacher).item() == pytest.approx((0 + 4 + 9 + 16) / 4)


def test_cls_mse_hand_values_and_a_projection_for_a_narrower_student():
    student, teacher = torch.tensor([[1.0, 2.0], [0.0, 0.0]]), torch.tensor([[1.0, 0.0], [3.0, 4.0]])
    assert ClsMSE()(student, teacher).item() == pytest.approx((0 + 4 + 9 + 16) / 4)
    narrow = ClsMSE(student_hidden_size=2, teacher_hidden_size=3)
    assert narrow(student, torch.zeros(2, 3)).shape == () and len(list(narrow.parameters())) == 2


def test_pooled_contrastive_hand_values_and_translations_are_not_each_others_negatives():
    identity = torch.eye(2)
    # logits [[1, 0], [0, 1]] at temperature 1: each row's loss is log(1 + e^-1)
    assert PooledContrastive(temperature=1.0)(identity, identity).item() == pytest.approx(math.log(1 + math.exp(-1)))
    # both rows' target is the same vector (one sentence's translations): no negatives left, loss 0
    same_target = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    assert PooledContrastive(temperature=1.0)(identity, same_target).item() == pytest.approx(0.0)
    with pytest.raises(ValueError, match="temperature must be positive"):
        PooledContrastive(temperature=0.0)


def test_weighted_loss_accepts_teacher_features_made_in_inference_mode():
    with torch.inference_mode():
        teacher_logits = torch.randn(2, 3)
        teacher_pooled = torch.randn(2, 4)
        teacher_attn = [torch.softmax(torch.randn(2, 1, 3, 3), -1)]
    student_logits = torch.randn(2, 3, requires_grad=True)
    student_pooled = torch.randn(2, 4, requires_grad=True)
    student_attn = torch.randn(2, 1, 3, 3, requires_grad=True)
    specs = {"logit_mse": {"weight": 1}, "pooled_cosine": {"weight": 1}, "attention_kl": {"weight": 1}}
    total, parts = WeightedLoss(specs)(
        student_logits=student_logits,
        teacher_logits=teacher_logits,
        student_pooled=student_pooled,
        teacher_pooled=teacher_pooled,
        student_attentions=[torch.softmax(student_attn, -1)],
        teacher_attentions=teacher_attn,
        attention_mask=torch.ones(2, 3),
    )
    total.backward()
    assert set(parts) == set(specs) and student_attn.grad is not None and student_pooled.grad is not None


def test_recipes_may_not_set_the_hidden_sizes_and_needs_lists_inputs():
    with pytest.raises(RecipeError, match="taken from the models"):
        check_loss_specs({"hidden_mse": {"weight": 1.0, "student_hidden_size": 4}}, "losses")
    check_loss_specs({"minilm_relations": {"weight": 1.0, "relation_heads": 12}}, "losses")
    assert needs({"logit_kl": {"weight": 1}, "hidden_mse": {"weight": 1}}) == {
        "student_logits",
        "teacher_logits",
        "student_hidden",
        "teacher_hidden",
        "attention_mask",
    }
    assert needs(["cross_entropy"]) == {"student_logits", "labels"}
    with pytest.raises(RecipeError, match="unknown loss"):
        needs(["nope"])


def test_map_layers():
    assert map_layers(6, 12, "uniform") == [(0, 1), (1, 3), (2, 5), (3, 7), (4, 9), (5, 11)]
    assert map_layers(4, 12, "uniform") == [(0, 2), (1, 5), (2, 8), (3, 11)]
    assert map_layers(3, 3, "uniform") == [(0, 0), (1, 1), (2, 2)]
    assert map_layers(6, 12, "last") == [(5, 11)]
    assert map_layers(3, 12, [0, 5, 11]) == [(0, 0), (1, 5), (2, 11)]
    student, teacher = aligned(["s0", "s1", "s2"], [f"t{i}" for i in range(12)], map_layers(3, 12, [0, 5, 11]))
    assert (student, teacher) == (["s0", "s1", "s2"], ["t0", "t5", "t11"])
    for args, message in [
        ((6, 12, "middle"), "'uniform', 'last' or a list"),
        ((3, 12, [0, 5]), "2 teacher layers for 3 student layers"),
        ((2, 12, [0, 12]), r"\[12\] are not teacher layer indices"),
        ((2, 12, [-1, 3]), "not teacher layer indices"),
        ((2, 12, [True, 3]), "not teacher layer indices"),
        ((0, 12, "last"), "num_student must be a positive"),
        ((8, 4, "uniform"), "no more student layers than teacher layers"),
    ]:
        with pytest.raises(ValueError, match=message):
            map_layers(*args)


# --- forward_features on a tiny random model ----------------------------------------------------


def _tiny(cls_name: str = "XLMRobertaForSequenceClassification", **overrides):
    import transformers

    config = transformers.XLMRobertaConfig(
        vocab_size=100,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        attn_implementation=overrides.pop("attn_implementation", "eager"),
        **overrides,
    )
    torch.manual_seed(0)
    return getattr(transformers, cls_name)(config).eval()


def test_forward_features_shapes_and_values():
    model = _tiny()
    ids = torch.randint(3, 100, (2, 5))
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    out = forward_features(model, ids, mask, set(FEATURES))
    assert out["logits"].shape == (2, 2)
    assert len(out["hidden"]) == 2 and all(h.shape == (2, 5, 16) for h in out["hidden"])
    assert len(out["attentions"]) == 2 and all(a.shape == (2, 2, 5, 5) for a in out["attentions"])
    assert len(out["qkv"]) == 2 and all(len(t) == 3 and all(x.shape == (2, 5, 16) for x in t) for t in out["qkv"])
    assert out["pooled"].shape == (2, 16)
    reference = model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
    # hidden[0] is the first layer's output, not the embeddings
    assert torch.allclose(out["hidden"][0], reference.hidden_states[1])
    assert torch.allclose(out["hidden"][1], reference.hidden_states[2])
    # layer 1's query is its query map applied to layer 0's output
    query = model.roberta.encoder.layer[1].attention.self.query
    assert torch.allclose(out["qkv"][1][0], query(reference.hidden_states[1]), atol=1e-6)
    assert torch.allclose(out["pooled"][1], reference.hidden_states[2][1, :3].mean(0), atol=1e-6)
    # only what is asked for
    assert set(forward_features(model, ids, mask, {"pooled"})) == {"pooled"}


def test_forward_features_removes_hooks_and_lets_gradients_through():
    model = _tiny().train()
    ids = torch.randint(3, 100, (2, 4))
    out = forward_features(model, ids, torch.ones(2, 4), {"qkv"})
    assert all(not m._forward_hooks for m in model.modules())
    sum(x.pow(2).sum() for layer in out["qkv"] for x in layer).backward()
    for layer in model.roberta.encoder.layer:
        assert layer.attention.self.key.weight.grad.abs().sum() > 0


def test_forward_features_refuses_what_it_cannot_give():
    ids, mask = torch.randint(3, 100, (1, 4)), torch.ones(1, 4)
    with pytest.raises(ValueError, match="eager"):
        forward_features(_tiny(attn_implementation="sdpa"), ids, mask, {"attentions"})
    with pytest.raises(ValueError, match="attention dropout"):
        forward_features(_tiny().train(), ids, mask, {"attentions"})
    bare = _tiny("XLMRobertaModel")
    with pytest.raises(ValueError, match="no head"):
        forward_features(bare, ids, mask, {"logits"})
    with pytest.raises(ValueError, match="unknown features"):
        forward_features(bare, ids, mask, {"hiddens"})
    assert len(forward_features(bare, ids, mask, {"qkv", "hidden"})["qkv"]) == 2
    assert features_for({"student_qkv", "teacher_qkv", "attention_mask"}, "student") == {"qkv"}
