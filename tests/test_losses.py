"""Distillation losses checked against values computed by hand."""

import math

import pytest
import torch

from distill.losses import CrossEntropy, LogitKL, WeightedLoss


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
