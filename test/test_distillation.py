"""eqs. (1)-(3) of the paper, each value worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from ask_expert_ros.core.training.distillation import (
    hard_distillation_loss,
    progressive_weight,
    sample_weights,
)


@pytest.mark.parametrize(
    ('t', 'total', 'w', 'expected'),
    [
        (0, 200, 14.0, 1.0),  # first epoch: plain training on D
        (100, 200, 14.0, 7.5),  # 1 + 0.5 * 13
        (200, 200, 14.0, 14.0),  # last epoch: W
        (3, 4, 1.0, 1.0),  # W = 1 switches the schedule off
    ],
)
def test_progressive_weight(t, total, w, expected) -> None:
    assert progressive_weight(t, total, w) == pytest.approx(expected)


@pytest.mark.parametrize(
    ('args', 'error'),
    [((5, 4, 14.0), 'epoch'), ((0, 0, 14.0), 'epoch'), ((1, 4, 0.5), 'max_weight')],
)
def test_progressive_weight_rejects_nonsense(args, error) -> None:
    with pytest.raises(ValueError, match=error):
        progressive_weight(*args)


def test_sample_weights() -> None:
    in_domain = torch.tensor([True, False, True])
    assert sample_weights(in_domain, 7.5).tolist() == [7.5, 1.0, 7.5]


def test_hard_distillation_loss_by_hand() -> None:
    """Two classes, uniform student logits: every CE is log 2.

    Sample 0: label 0, teacher says 0 -> 1/2 log2 + 1/2 log2 = log 2, weight 3.
    Sample 1: label 1, teacher says 0 -> also log 2 (uniform student), weight 1.
    Mean of weighted losses = (3 + 1) / 2 * log 2 = 2 log 2.
    """
    student = torch.zeros(2, 2)
    labels = torch.tensor([0, 1])
    teacher = torch.tensor([[5.0, 0.0], [2.0, 1.0]])
    loss = hard_distillation_loss(student, labels, teacher, torch.tensor([3.0, 1.0]))
    assert loss.item() == pytest.approx(2 * math.log(2))


def test_teacher_hard_label_counts_half() -> None:
    """Student sure of class 0 (logits 0 vs -inf-ish): CE to 0 is ~0, CE to 1 is ~10.

    Label 1, teacher 0: 1/2 * 10 + 1/2 * 0 = 5 (up to the softmax tail).
    """
    student = torch.tensor([[10.0, 0.0]])
    loss = hard_distillation_loss(student, torch.tensor([1]), torch.tensor([[1.0, 0.0]]))
    ce_to_1 = torch.nn.functional.cross_entropy(student, torch.tensor([1])).item()
    ce_to_0 = torch.nn.functional.cross_entropy(student, torch.tensor([0])).item()
    assert loss.item() == pytest.approx(0.5 * ce_to_1 + 0.5 * ce_to_0)
    assert 4.9 < loss.item() < 5.1


def test_no_teacher_is_plain_cross_entropy_and_no_teacher_gradient() -> None:
    student = torch.randn(4, 3, requires_grad=True)
    labels = torch.tensor([0, 1, 2, 0])
    plain = torch.nn.functional.cross_entropy(student, labels)
    assert hard_distillation_loss(student, labels).item() == pytest.approx(plain.item())
    teacher = torch.randn(4, 3, requires_grad=True)
    hard_distillation_loss(student, labels, teacher).backward()
    assert teacher.grad is None and student.grad is not None


def test_soft_targets_and_label_smoothing() -> None:
    """Mixup's probability targets and smoothing act on the ground-truth term only."""
    logits = torch.tensor([[2.0, 0.0]])
    log_p = torch.log_softmax(logits, dim=1)[0]
    soft = torch.tensor([[0.25, 0.75]])
    expected = -(0.25 * log_p[0] + 0.75 * log_p[1])
    assert hard_distillation_loss(logits, soft).item() == pytest.approx(expected.item())
    # smoothing 0.2 over 2 classes: target (0.9, 0.1); the teacher term stays hard (class 1)
    teacher = torch.tensor([[0.0, 5.0]])
    smoothed = -(0.9 * log_p[0] + 0.1 * log_p[1])
    want = 0.5 * smoothed - 0.5 * log_p[1]
    got = hard_distillation_loss(logits, torch.tensor([0]), teacher, label_smoothing=0.2)
    assert got.item() == pytest.approx(want.item())
