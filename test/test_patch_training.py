"""Patch dropping in training (issue 16, item 4): the option, the draws, the trainer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ask_expert_ros.core.inference.models import ModelConfig, create_model
from ask_expert_ros.core.inference.patches import forward_with_cls_attention, keep_count
from ask_expert_ros.core.training import training
from ask_expert_ros.core.training.patch_training import (
    PatchDropConfig,
    PatchDropper,
    TokenSubsetModel,
    image_patches,
)
from ask_expert_ros.core.training.recipe import RecipeConfig
from ask_expert_ros.core.training.training import TrainConfig, train_classifier


def tiny(variant: str = 'deit_3h') -> ModelConfig:
    """One block on 8x8 grey frames in 2 px patches: a 4x4 grid, N = 16."""
    return ModelConfig(
        variant=variant,  # type: ignore[arg-type]
        class_names=('a', 'b', 'c'),
        img_size=8,
        patch_size=2,
        depth=1,
        in_chans=1,
        mean=(0.0,),
        std=(1.0,),
    )


def toy_data() -> tuple[torch.Tensor, torch.Tensor]:
    """48 noisy frames whose brightness says the class (0, 1 or 2)."""
    g = torch.Generator().manual_seed(1)
    labels = torch.arange(48) % 3
    return torch.randn(48, 1, 8, 8, generator=g) + labels.float().view(-1, 1, 1, 1), labels


@pytest.mark.parametrize(
    ('data', 'message'),
    [
        ({'mode': 'centre'}, 'mode must be one of'),
        ({'min_keep': 0.0}, 'min_keep must be in'),
        ({'min_keep': 1.5}, 'min_keep must be in'),
        ({'prob': -0.1}, 'prob must be in'),
        ({'prob': 1.01}, 'prob must be in'),
        ({'source': 'first'}, 'source must be one of'),
        ({'keep': 0.5}, 'unknown settings'),
        ('random', 'must be a mapping'),
    ],
)
def test_bad_patch_drop_settings_are_rejected(data, message) -> None:
    with pytest.raises(ValueError, match=message):
        PatchDropConfig.from_dict(data)


def test_patch_drop_settings_from_yaml_data() -> None:
    assert PatchDropConfig.from_dict(None) is None
    config = PatchDropConfig.from_dict({'mode': 'attention', 'min_keep': 0.3, 'prob': 0.5})
    assert config == PatchDropConfig(mode='attention', min_keep=0.3, prob=0.5)


@pytest.mark.parametrize(
    ('stage', 'message'),
    [
        ('student', 'also trains the edge model'),
        ('teacher', 'applies only to the stages'),
        ('specialist_teacher', 'applies only to the stages'),
    ],
)
def test_recipe_takes_patch_drop_only_for_experts_and_generalist(stage, message) -> None:
    with pytest.raises(ValueError, match=message):
        RecipeConfig.from_dict({'stages': {stage: {'patch_drop': {'mode': 'random'}}}})


def test_recipe_patch_drop_for_experts_and_the_generalist_stage() -> None:
    """The generalist stage starts from the student's settings, then its own."""
    config = RecipeConfig.from_dict(
        {
            'stages': {
                'student': {'epochs': 7, 'lr': 5e-4},
                'generalist': {'lr': 1e-4, 'patch_drop': {'mode': 'random', 'min_keep': 0.3}},
                'specialist_student': {'patch_drop': {'mode': 'attention', 'prob': 0.5}},
            }
        }
    )
    general = config.stage('generalist')
    assert (general.epochs, general.lr) == (7, 1e-4)
    assert general.patch_drop == PatchDropConfig(mode='random', min_keep=0.3)
    assert config.stage('student').patch_drop is None
    expert = config.stage('specialist_student')
    assert expert.train_config(0, 0, False).patch_drop == PatchDropConfig('attention', prob=0.5)
    assert RecipeConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match=r'stage specialist_student: patch_drop\.min_keep'):
        RecipeConfig.from_dict({'stages': {'specialist_student': {'patch_drop': {'min_keep': 2}}}})


def test_recipe_without_patch_drop_reads_as_before() -> None:
    """No stage names patch_drop: to_dict has no such key (eval.json comparisons hold)."""
    stages = RecipeConfig().to_dict()['stages']
    assert set(stages) == {'teacher', 'student', 'specialist_teacher', 'specialist_student'}
    assert all('patch_drop' not in s for s in stages.values())
    assert RecipeConfig().stage('generalist') == RecipeConfig().stage('student')


@pytest.mark.parametrize('mode', ['random', 'attention'])
def test_draws_keep_ceil_rho_n_patches(mode) -> None:
    """rho uniform in [0.25, 1]; every frame keeps ceil(rho * 16) distinct ascending
    patches; attention keeps the edge's top-scoring ones."""
    torch.manual_seed(0)
    model = create_model(tiny('deit_4h'))
    scorer = create_model(tiny()).eval()
    config = PatchDropConfig(mode=mode, min_keep=0.25, prob=1.0)
    dropper = PatchDropper(config, model, scorer)
    x = torch.randn(6, 1, 8, 8)
    rhos = []
    for _ in range(20):
        rho = dropper.draw()
        assert rho is not None and 0.25 <= rho <= 1.0
        rhos.append(rho)
        idx = dropper.indices(x, rho)
        n = keep_count(16, rho)
        assert dropper.count(rho) == n
        assert idx.shape == (6, n)
        assert bool((idx.diff(dim=1) > 0).all()) and int(idx.min()) >= 0 and int(idx.max()) < 16
        if mode == 'attention':
            _, scores = forward_with_cls_attention(scorer, x)
            top = scores.argsort(dim=1, descending=True, stable=True)[:, :n].sort(dim=1).values
            assert torch.equal(idx, top)
    assert max(rhos) - min(rhos) > 0.3  # spread over the range, not one value


def test_prob_sets_the_share_of_dropped_batches() -> None:
    model = create_model(tiny())
    never = PatchDropper(PatchDropConfig(prob=0.0), model)
    always = PatchDropper(PatchDropConfig(prob=1.0), model)
    half = PatchDropper(PatchDropConfig(prob=0.5), model)
    assert all(never.draw() is None for _ in range(50))
    assert all(always.draw() is not None for _ in range(50))
    assert 60 < sum(half.draw() is not None for _ in range(200)) < 140


def test_draws_depend_on_seed_and_epoch_only() -> None:
    """Reseeded per epoch: a resumed run draws what the uninterrupted one drew."""
    model = create_model(tiny())
    a, b = PatchDropper(PatchDropConfig(), model), PatchDropper(PatchDropConfig(), model)
    first = [a.draw() for _ in range(5)]
    a.start_epoch(1)
    second = [a.draw() for _ in range(5)]
    b.start_epoch(1)
    assert [b.draw() for _ in range(5)] == second != first


def test_attention_mode_needs_a_matching_edge_model() -> None:
    model = create_model(tiny())
    with pytest.raises(ValueError, match='needs the edge model'):
        PatchDropper(PatchDropConfig(mode='attention'), model)
    other = create_model(ModelConfig('deit_3h', ('a', 'b', 'c'), img_size=16, patch_size=4))
    with pytest.raises(ValueError, match='one input size'):
        PatchDropper(PatchDropConfig(mode='attention'), model, other)
    with pytest.raises(ValueError, match='needs the edge model'):
        train_classifier(
            model,
            *toy_data(),
            TrainConfig(epochs=1, patch_drop=PatchDropConfig(mode='attention')),
            progress=False,
        )


def test_token_subset_model_is_the_model_on_every_patch() -> None:
    """All 16 patches in order: the subset forward equals the model's own."""
    torch.manual_seed(0)
    model = create_model(tiny()).eval()
    x = torch.randn(3, 1, 8, 8)
    patches = image_patches(x, 2)
    assert patches.shape == (3, 16, 1, 2, 2)
    torch.testing.assert_close(patches[:, 5, 0], x[:, 0, 2:4, 2:4])  # row 1, col 1
    net = TokenSubsetModel(model)
    every = torch.arange(16).expand(3, -1)
    torch.testing.assert_close(net(x, every), model(x), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(net(x), model(x))


@pytest.mark.parametrize('mode', ['random', 'attention'])
def test_a_training_step_on_patch_subsets_changes_the_weights(mode) -> None:
    torch.manual_seed(0)
    model = create_model(tiny('deit_4h'))
    scorer = create_model(tiny())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    inputs, labels = toy_data()
    drop = PatchDropConfig(mode=mode, min_keep=0.2, prob=1.0)
    history = train_classifier(
        model,
        inputs[:16],
        labels[:16],
        TrainConfig(epochs=1, batch_size=16, warmup_epochs=0, patch_drop=drop),
        progress=False,
        patch_scorer=scorer,
    )
    assert len(history.loss) == 1 and np.isfinite(history.loss[0])
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
    assert 'patch_embed.proj.weight' in changed and 'head.weight' in changed
    assert not model.training  # handed back in eval mode, unwrapped


def _toy_run(patch_drop: PatchDropConfig | None) -> training.TrainHistory:
    torch.manual_seed(0)
    model = create_model(tiny())
    inputs, labels = toy_data()
    config = TrainConfig(
        epochs=2, batch_size=16, warmup_epochs=1, max_shift=1, seed=0, patch_drop=patch_drop
    )
    return train_classifier(model, inputs, labels, config, progress=False)


def test_without_patch_drop_training_is_unchanged() -> None:
    """The loss of this toy run as the trainer gave it before patch dropping existed
    (pinned from that code, same seed); a config that never drops (prob 0) trains the
    same too: the dropper's draws do not touch the run's random streams."""
    off = _toy_run(None)
    assert off.loss == pytest.approx([0.9593693812688192, 0.36784783999125165], rel=1e-4)
    assert off.accuracy == pytest.approx([0.3958333333333333, 0.8125])
    never = _toy_run(PatchDropConfig(prob=0.0))
    assert never.loss == off.loss and never.accuracy == off.accuracy
    dropped = _toy_run(PatchDropConfig(prob=1.0))
    assert dropped.loss != off.loss
