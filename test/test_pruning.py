"""Loss-based pruning of a trained ViT into a smaller variant."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_config

from ask_expert_ros.core.inference.models import create_model
from ask_expert_ros.core.inference.taxonomy import PartitionScheme
from ask_expert_ros.core.training.pruning import (
    Importance,
    estimate_importance,
    keep_plan,
    prune_model,
    prune_to_variant,
    student_config,
)


def _batches(n: int = 3, classes: int = 6) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    return [
        (torch.randn(8, 1, 8, 8, generator=g), torch.randint(0, classes, (8,), generator=g))
        for _ in range(n)
    ]


def _randomise(model: torch.nn.Module) -> None:
    """Non-trivial weights everywhere (timm zero-inits the head and some biases)."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)


def test_no_removal_gives_the_teacher_exactly(scheme: PartitionScheme) -> None:
    cfg = tiny_config(scheme, variant='deit_4h')
    teacher = create_model(cfg).eval()
    _randomise(teacher)
    student, s_cfg, importance = prune_to_variant(teacher, cfg, 'deit_4h', _batches())
    assert s_cfg == cfg and importance.batches == 3
    x = _batches(1)[0][0]
    with torch.no_grad():
        assert torch.equal(student.eval()(x), teacher(x))


def test_pruned_shapes_and_weights_come_from_the_teacher(scheme: PartitionScheme) -> None:
    cfg = tiny_config(scheme, variant='deit_6h')
    teacher = create_model(cfg)
    _randomise(teacher)
    student, s_cfg, imp = prune_to_variant(teacher, cfg, 'deit_3h', _batches(), expert_key=(1,))
    assert s_cfg.variant == 'deit_3h' and s_cfg.expert_key == (1,)
    assert (
        imp.heads.shape == (1, 6)
        and imp.neurons.shape == (1, 1536)
        and imp.channels.shape == (384,)
    )
    assert student.embed_dim == 192 and student.blocks[0].attn.num_heads == 3
    assert student.blocks[0].mlp.fc1.out_features == 768
    assert student.blocks[0].attn.qkv.weight.shape == (576, 192)
    plan = keep_plan(imp, 3, 768, 192)
    ch = torch.tensor(plan.channels)
    # q rows of the first kept head, at the kept channels
    h = plan.heads[0][0]
    expected = teacher.blocks[0].attn.qkv.weight[h * 64 : (h + 1) * 64][:, ch]
    assert torch.equal(student.blocks[0].attn.qkv.weight[:64], expected)
    # k rows come from the teacher's k section (offset 6 heads * 64)
    expected_k = teacher.blocks[0].attn.qkv.weight[384 + h * 64 : 384 + (h + 1) * 64][:, ch]
    assert torch.equal(student.blocks[0].attn.qkv.weight[192 : 192 + 64], expected_k)
    assert torch.equal(student.head.weight, teacher.head.weight[:, ch])


def test_importance_keeps_the_heads_that_matter(scheme: PartitionScheme) -> None:
    """Heads 1 and 3 write nothing to the residual stream: their importance is 0."""
    cfg = tiny_config(scheme, variant='deit_4h')
    teacher = create_model(cfg)
    _randomise(teacher)
    with torch.no_grad():
        for h in (1, 3):
            teacher.blocks[0].attn.proj.weight[:, h * 64 : (h + 1) * 64] = 0.0
        teacher.blocks[0].attn.proj.weight[:, 2 * 64 : 3 * 64] *= 5.0  # head 2 dominates
    imp = estimate_importance(teacher, _batches())
    scores = imp.heads[0]
    assert scores[1] == 0 and scores[3] == 0 and scores[0] > 0 and scores[2] > 0
    assert int(scores.argmax()) == 2
    plan = keep_plan(imp, 2, 1024, 256)
    assert plan.heads[0] == (0, 2)
    with pytest.raises(ValueError, match='deit_4h needs 256 / 4'):
        prune_model(teacher, plan, cfg)  # a plan must match the student variant


def test_dead_mlp_neurons_score_zero(scheme: PartitionScheme) -> None:
    """Neurons whose output weights are zero cannot move the loss: importance 0."""
    cfg = tiny_config(scheme, variant='deit_3h')
    teacher = create_model(cfg).eval()
    _randomise(teacher)
    with torch.no_grad():
        teacher.blocks[0].mlp.fc2.weight[:, :100] = 0.0  # neurons 0..99 are dead
    imp = estimate_importance(teacher, _batches())
    assert imp.neurons[0, :100].abs().sum() == 0 and (imp.neurons[0, 100:] > 0).all()


def test_plan_and_variant_errors(scheme: PartitionScheme) -> None:
    imp = Importance(torch.ones(1, 3), torch.ones(1, 768), torch.ones(192), 1)
    with pytest.raises(ValueError, match='cannot keep 4 of 3 heads'):
        keep_plan(imp, 4, 768, 192)
    cfg = tiny_config(scheme, variant='deit_3h')
    with pytest.raises(ValueError, match='cannot prune deit_3h'):
        student_config(cfg, 'deit_6h')
    with pytest.raises(ValueError, match='at least one batch'):
        estimate_importance(create_model(cfg), [])
