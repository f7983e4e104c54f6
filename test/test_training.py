"""The plain trainer: schedule, augmentation, and that it actually learns."""

from __future__ import annotations

import itertools

import pytest
import torch

from ask_expert_ros.core.inference.backends import cpu_has_bf16
from ask_expert_ros.core.inference.models import ModelConfig, create_model
from ask_expert_ros.core.training import training
from ask_expert_ros.core.training.training import (
    TrainConfig,
    lr_at,
    random_shift,
    train_classifier,
)


def tiny(class_names: tuple[str, ...]) -> ModelConfig:
    """One 192-dim block on 8x8 grey frames: trains in a second."""
    return ModelConfig(
        variant='deit_3h',
        class_names=class_names,
        img_size=8,
        patch_size=4,
        depth=1,
        in_chans=1,
        mean=(0.0,),
        std=(1.0,),
    )


def test_warmup_then_cosine() -> None:
    """10 steps, 2 warm-up: 0.5, 1.0 x peak, then cos decay from 1 to 0 over 8 steps."""
    lrs = [lr_at(s, 10, 2, 1.0) for s in range(10)]
    assert lrs[:2] == [0.5, 1.0]
    assert lrs[2] == pytest.approx(1.0)
    assert lrs[6] == pytest.approx(0.5)  # halfway through the cosine
    assert all(a >= b for a, b in itertools.pairwise(lrs[1:]))


def test_random_shift_keeps_shape_and_moves_content() -> None:
    x = torch.zeros(1, 1, 6, 6)
    x[..., 3, 3] = 1.0
    g = torch.Generator().manual_seed(3)
    moved = [random_shift(x, 1, g) for _ in range(20)]
    assert all(m.shape == x.shape for m in moved)
    assert any(not torch.equal(m, x) for m in moved)
    assert random_shift(x, 0, g) is x


def test_learns_a_separable_problem() -> None:
    """Bright vs dark 8x8 frames: a 1-block ViT separates them within a few epochs."""
    torch.manual_seed(0)
    config = tiny(('dark', 'bright'))
    labels = torch.arange(64) % 2
    inputs = labels.float().view(-1, 1, 1, 1).expand(-1, 1, 8, 8) + 0.1 * torch.randn(64, 1, 8, 8)
    model = create_model(config)
    history = train_classifier(
        model,
        inputs,
        labels,
        TrainConfig(epochs=8, batch_size=16, warmup_epochs=1),
        progress=False,
    )
    assert history.loss[-1] < history.loss[0]
    assert not model.training
    with torch.no_grad():
        assert (model(inputs).argmax(dim=1) == labels).float().mean() == 1.0


@pytest.mark.skipif(not cpu_has_bf16(), reason='this CPU has no avx512_bf16/AMX')
def test_cpu_bf16_autocast_trains_and_keeps_fp32_weights(monkeypatch) -> None:
    """``cpu_bf16``: the forward runs under bf16 autocast on the CPU (seen by the
    autocast calls), the weights stay fp32, and the same problem is learnt."""
    calls: list[tuple[str, torch.dtype, bool]] = []
    real = torch.autocast

    def spy(device_type: str, dtype: torch.dtype | None = None, enabled: bool = True, **kw):
        calls.append((device_type, dtype, enabled))
        return real(device_type, dtype=dtype, enabled=enabled, **kw)

    monkeypatch.setattr(training.torch, 'autocast', spy)
    torch.manual_seed(0)
    labels = torch.arange(64) % 2
    inputs = labels.float().view(-1, 1, 1, 1).expand(-1, 1, 8, 8) + 0.1 * torch.randn(64, 1, 8, 8)
    model = create_model(tiny(('dark', 'bright')))
    config = TrainConfig(epochs=8, batch_size=16, warmup_epochs=1, cpu_bf16=True)
    history = train_classifier(model, inputs, labels, config, progress=False)
    assert calls and all(c == ('cpu', torch.bfloat16, True) for c in calls)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert history.loss[-1] < history.loss[0]
    with torch.no_grad():
        assert (model(inputs).argmax(dim=1) == labels).float().mean() == 1.0


@pytest.mark.parametrize(
    ('kwargs', 'error'),
    [({'epochs': 0}, 'epochs'), ({'lr': 0}, 'lr'), ({'max_shift': -1}, 'max_shift')],
)
def test_bad_train_config(kwargs, error) -> None:
    with pytest.raises(ValueError, match=error):
        TrainConfig(**kwargs)


def test_progressive_weights_pull_the_model_towards_its_domain() -> None:
    """Two copies of the same inputs, one labelled 'dark', one 'bright' (= D_I).

    Unweighted, the best answer is p(bright) = 1/2. With weight omega on D_I it is
    omega / (omega + 1): 14/15 ~ 0.93 at the last epoch. The model trained with W = 14
    must lean to D_I, the one with W = 1 must not.
    """
    config = tiny(('dark', 'bright'))
    torch.manual_seed(0)
    inputs = torch.rand(64, 1, 8, 8).repeat(2, 1, 1, 1)
    labels = torch.cat([torch.zeros(64, dtype=torch.long), torch.ones(64, dtype=torch.long)])
    p_bright = {}
    for w in (1.0, 14.0):
        torch.manual_seed(0)
        model = create_model(config)
        train_classifier(
            model,
            inputs,
            labels,
            TrainConfig(epochs=6, batch_size=32, warmup_epochs=0),
            progress=False,
            in_domain=labels == 1,
            max_weight=w,
        )
        with torch.no_grad():
            p_bright[w] = model(inputs[:64]).softmax(dim=1)[:, 1].mean().item()
    assert 0.35 < p_bright[1.0] < 0.65
    assert p_bright[14.0] > 0.8


def test_distillation_uses_the_teacher() -> None:
    """With labels all 0 and a teacher that always says 1, the student ends torn 50/50."""
    torch.manual_seed(0)
    config = tiny(('a', 'b'))

    class AlwaysB(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.tensor([[0.0, 1.0]]).expand(len(x), 2)

    inputs = torch.rand(64, 1, 8, 8)
    model = create_model(config)
    train_classifier(
        model,
        inputs,
        torch.zeros(64, dtype=torch.long),
        TrainConfig(epochs=8, batch_size=32, warmup_epochs=0),
        progress=False,
        teacher=AlwaysB(),
    )
    with torch.no_grad():
        p = model(inputs).softmax(dim=1).mean(dim=0)
    assert 0.35 < p[1].item() < 0.65  # 1/2 CE(y) + 1/2 CE(teacher) is minimised at 1/2


def test_killed_run_resumes_to_the_same_weights(tmp_path, monkeypatch) -> None:
    """4 epochs straight == a run killed right after saving epoch 2, then resumed."""
    config = tiny(('a', 'b'))
    inputs, labels = torch.rand(40, 1, 8, 8), torch.arange(40) % 2
    train = TrainConfig(epochs=4, batch_size=16, warmup_epochs=1, max_shift=1)
    torch.manual_seed(1)
    straight = create_model(config)
    train_classifier(straight, inputs, labels, train, progress=False)

    ckpt = tmp_path / 'run.ckpt'
    real_save = training._save_checkpoint

    def save_then_die(path, model, optimizer, generator, history, epoch, scaler=None):
        real_save(path, model, optimizer, generator, history, epoch, scaler)
        if epoch == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(training, '_save_checkpoint', save_then_die)
    torch.manual_seed(1)
    with pytest.raises(KeyboardInterrupt):
        train_classifier(
            create_model(config), inputs, labels, train, progress=False, checkpoint=ckpt
        )
    monkeypatch.setattr(training, '_save_checkpoint', real_save)
    assert torch.load(ckpt, weights_only=False)['epoch'] == 1
    resumed = create_model(config)  # a new process: fresh weights, state from the file
    history = train_classifier(resumed, inputs, labels, train, progress=False, checkpoint=ckpt)
    assert len(history.loss) == 4
    for (name, a), b in zip(
        straight.state_dict().items(), resumed.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(a, b, msg=name)


def _frames_dataset(n: int = 40, seed: int = 0, on_batch: bool = False):
    import numpy as np

    from ask_expert_ros.core.training.augment import AugmentConfig, FrameDataset, train_transform

    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 256, size=(n, 6, 6), dtype=np.uint8)
    labels = np.arange(n) % 2
    config = tiny(('a', 'b'))
    augment = AugmentConfig(scale_min=0.5, hflip=0.5)  # DeiT's RandAugment + erasing
    if on_batch:
        augment = AugmentConfig(
            scale_min=0.5, hflip=0.5, auto_augment=None, re_prob=0.0, on_batch=True
        )
    return config, FrameDataset(frames, labels, train_transform(config, augment), 1, labels == 1)


@pytest.mark.parametrize('on_batch', [False, True], ids=['per_frame', 'on_batch'])
def test_augmented_frames_resume_to_the_same_weights(tmp_path, monkeypatch, on_batch) -> None:
    """RandAugment, crops and erasing draw from seeded RNGs: a resumed run matches."""
    config, dataset = _frames_dataset(on_batch=on_batch)
    train = TrainConfig(epochs=3, batch_size=16, warmup_epochs=1)
    torch.manual_seed(1)
    straight = create_model(config)
    train_classifier(straight, dataset, None, train, progress=False, max_weight=14.0)
    real_save = training._save_checkpoint

    def save_then_die(path, model, optimizer, generator, history, epoch, scaler=None):
        real_save(path, model, optimizer, generator, history, epoch, scaler)
        if epoch == 0:
            raise KeyboardInterrupt

    ckpt = tmp_path / 'aug.ckpt'
    monkeypatch.setattr(training, '_save_checkpoint', save_then_die)
    torch.manual_seed(1)
    with pytest.raises(KeyboardInterrupt):
        train_classifier(
            create_model(config),
            dataset,
            None,
            train,
            progress=False,
            checkpoint=ckpt,
            max_weight=14.0,
        )
    monkeypatch.setattr(training, '_save_checkpoint', real_save)
    resumed = create_model(config)
    train_classifier(
        resumed, dataset, None, train, progress=False, checkpoint=ckpt, max_weight=14.0
    )
    for (name, a), b in zip(
        straight.state_dict().items(), resumed.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(a, b, msg=name)


def test_mixup_and_label_smoothing_train() -> None:
    """DeiT's generalist recipe (Mixup/CutMix + smoothing) runs on full, even batches."""
    from ask_expert_ros.core.training.augment import AugmentConfig

    config, dataset = _frames_dataset(n=36)
    model = create_model(config)
    augment = AugmentConfig(mixup=0.8, cutmix=1.0, label_smoothing=0.1)
    history = train_classifier(
        model,
        dataset,
        None,
        TrainConfig(epochs=1, batch_size=16),
        progress=False,
        augment=augment,
        num_classes=2,
    )
    assert len(history.loss) == 1 and history.loss[0] > 0
    with pytest.raises(ValueError, match='num_classes'):
        train_classifier(
            model, dataset, None, TrainConfig(epochs=1), progress=False, augment=augment
        )
    with pytest.raises(ValueError, match='no full batch'):
        train_classifier(
            model,
            dataset,
            None,
            TrainConfig(epochs=1, batch_size=64),
            progress=False,
            augment=augment,
            num_classes=2,
        )


def test_batch_crop_flip_is_the_preprocessor_at_full_scale_and_mirrors_when_flipping() -> None:
    import numpy as np

    from ask_expert_ros.core.inference.preprocess import Preprocessor
    from ask_expert_ros.core.training.augment import AugmentConfig, BatchCropFlip

    config = ModelConfig(
        variant='deit_3h',
        class_names=('a', 'b'),
        img_size=12,
        patch_size=4,
        depth=1,
        in_chans=1,
        mean=(0.3,),
        std=(0.2,),
    )
    frames = np.random.default_rng(0).integers(0, 256, size=(9, 12, 12), dtype=np.uint8)
    batch = torch.from_numpy(frames[:, None])
    reference = Preprocessor(config)(frames)
    g = torch.Generator().manual_seed(0)

    def crop(scale_min: float, hflip: float) -> BatchCropFlip:
        aug = AugmentConfig(scale_min, hflip, None, 0.0, on_batch=True)
        return BatchCropFlip(config, aug)

    torch.testing.assert_close(crop(1.0, 0.0)(batch, g), reference, atol=1e-4, rtol=0)
    torch.testing.assert_close(crop(1.0, 1.0)(batch, g), reference.flip(-1), atol=1e-4, rtol=0)
    # small crops, magnified: every frame changes, the pixel range stays the frame's
    cropped = crop(0.2, 0.0)(batch, g)
    assert cropped.shape == reference.shape
    assert ((cropped - reference).abs().flatten(1).amax(1) > 0.1).all()
    assert cropped.min() >= reference.min() - 1e-4 and cropped.max() <= reference.max() + 1e-4


def test_batch_crop_flip_converts_colour_frames_as_pil_does() -> None:
    import numpy as np
    from PIL import Image

    from ask_expert_ros.core.training.augment import AugmentConfig, FrameDataset, train_transform

    frames = np.random.default_rng(1).integers(0, 256, size=(5, 8, 8, 3), dtype=np.uint8)
    aug = AugmentConfig(1.0, 0.0, None, 0.0, on_batch=True)
    grey = FrameDataset(frames, np.zeros(5, np.int64), train_transform(tiny(('a', 'b')), aug), 1)
    for i, frame in enumerate(frames):
        pil = np.asarray(Image.fromarray(frame).convert('L'))
        assert np.abs(grey[i][0][0].numpy().astype(int) - pil).max() <= 1
    with pytest.raises(ValueError, match='RandAugment'):
        AugmentConfig(on_batch=True)  # DeiT's default keeps RandAugment: per frame only
