"""The paper's training losses: progressive weighting and hard-label distillation (§4.3).

* eq. (1): ``omega(t) = 1 + t / T * (W - 1)`` for epoch ``t`` of ``T`` (W = 14 in the paper);
* eq. (2): a sample's weight is ``omega(t)`` when it lies in the expert's domain D_I, else 1;
* eq. (3): ``L = sum_i w_i * [CE(m(x_i), y_i) / 2 + CE(m(x_i), argmax M(x_i)) / 2]``.

Over a mini-batch the sum of eq. (3) is divided by the batch size, so the loss scale
does not grow with it; the relative weights of the samples are those of the paper.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

DEFAULT_MAX_WEIGHT = 14.0


def progressive_weight(
    epoch: int, total_epochs: int, max_weight: float = DEFAULT_MAX_WEIGHT
) -> float:
    """eq. (1): 1 at the first epoch, rising linearly to ``max_weight`` at ``total_epochs``."""
    if total_epochs < 1 or not 0 <= epoch <= total_epochs:
        raise ValueError(f'need 0 <= epoch <= total_epochs >= 1, got {epoch}/{total_epochs}')
    if max_weight < 1:
        raise ValueError(f'max_weight W must be >= 1, got {max_weight}')
    return 1.0 + epoch / total_epochs * (max_weight - 1.0)


def sample_weights(in_domain: torch.Tensor, omega: float) -> torch.Tensor:
    """eq. (2): ``omega`` for samples in D_I (``in_domain`` True), 1 for the others."""
    ones = torch.ones(in_domain.shape, dtype=torch.float32, device=in_domain.device)
    return torch.where(in_domain.bool(), ones * omega, ones)


def hard_distillation_loss(
    student_logits: torch.Tensor,
    labels: torch.Tensor,
    teacher_logits: torch.Tensor | None = None,
    weights: torch.Tensor | None = None,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """eq. (3) over a batch (mean over samples of the weighted per-sample loss).

    Args:
        student_logits: ``[N, C]``.
        labels: ``[N]`` ground truth, or ``[N, C]`` class probabilities (Mixup/CutMix).
        teacher_logits: ``[N, C]``; None trains on the labels alone (a teacher itself).
        weights: ``[N]`` sample weights (eq. 2); None weighs every sample 1.
        label_smoothing: On the ground-truth term only (the teacher's label stays hard).
    """
    ce_label = F.cross_entropy(
        student_logits, labels, reduction='none', label_smoothing=label_smoothing
    )
    if teacher_logits is None:
        per_sample = ce_label
    else:
        teacher_label = teacher_logits.detach().argmax(dim=1)
        ce_teacher = F.cross_entropy(student_logits, teacher_label, reduction='none')
        per_sample = 0.5 * ce_label + 0.5 * ce_teacher
    if weights is not None:
        per_sample = per_sample * weights
    return per_sample.mean()
