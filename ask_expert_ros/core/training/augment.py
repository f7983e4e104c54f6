"""Train-time data: DeiT's augmentation (timm's transforms) over in-memory ``uint8`` frames.

DeiT trains with RandomResizedCrop, horizontal flip, RandAugment ``rand-m9-mstd0.5-inc1``,
random erasing 0.25, Mixup 0.8 / CutMix 1.0 and label smoothing 0.1. The paper keeps
that recipe for the generalist and turns Mixup, CutMix and label smoothing off for the
experts, which would otherwise blur the target subsets. :class:`AugmentConfig` holds
those knobs; the crop resizes every frame (32 px CIFAR, 28 px Fashion-MNIST, 8 px
digits) to the model's input size. Evaluation uses the :class:`Preprocessor` of the
nodes, so what is measured is what runs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from timm.data import Mixup, create_transform

from ask_expert_ros.core.inference.models import ModelConfig


@dataclass(frozen=True)
class AugmentConfig:
    """Train-time augmentation; defaults are DeiT's with the paper's expert changes.

    Attributes:
        scale_min: Smallest area share of RandomResizedCrop (DeiT 0.08).
        hflip: Horizontal flip probability (0 for digits and text, where it changes meaning).
        auto_augment: timm auto-augment policy string, or None for none.
        re_prob: Random-erasing probability.
        mixup / cutmix: Mixup and CutMix alphas (0 turns them off; DeiT 0.8 / 1.0).
        label_smoothing: On the ground-truth term of the loss (DeiT 0.1).
    """

    scale_min: float = 0.08
    hflip: float = 0.5
    auto_augment: str | None = 'rand-m9-mstd0.5-inc1'
    re_prob: float = 0.25
    mixup: float = 0.0
    cutmix: float = 0.0
    label_smoothing: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 < self.scale_min <= 1.0:
            raise ValueError(f'scale_min must be in (0, 1], got {self.scale_min}')
        for name in ('hflip', 're_prob', 'label_smoothing'):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f'{name} must be in [0, 1], got {getattr(self, name)}')
        if self.mixup < 0 or self.cutmix < 0:
            raise ValueError('mixup and cutmix alphas must be >= 0')

    @property
    def mixes(self) -> bool:
        return self.mixup > 0 or self.cutmix > 0

    def mixer(self, num_classes: int) -> Mixup | None:
        """timm's batch Mixup/CutMix (with the label smoothing), or None when both are off."""
        if not self.mixes:
            return None
        return Mixup(
            mixup_alpha=self.mixup,
            cutmix_alpha=self.cutmix,
            label_smoothing=self.label_smoothing,
            num_classes=num_classes,
        )


def train_transform(model: ModelConfig, augment: AugmentConfig):
    """timm's DeiT training transform for this model's input size, channels and stats."""
    return create_transform(
        input_size=(model.in_chans, model.img_size, model.img_size),
        is_training=True,
        scale=(augment.scale_min, 1.0),
        hflip=augment.hflip,
        vflip=0.0,
        color_jitter=0.0,
        auto_augment=augment.auto_augment,
        re_prob=augment.re_prob,
        interpolation='bicubic' if model.interpolation == 'bicubic' else 'bilinear',
        mean=model.mean,
        std=model.std,
    )


class FrameDataset(torch.utils.data.Dataset):
    """``uint8`` frames ``[N, H, W(, 3)]`` + labels (+ D_I flags) through a transform.

    Items are ``(image tensor, label, in_domain flag)``; the flag is False for every
    frame when no ``in_domain`` mask is given.
    """

    def __init__(
        self,
        frames: np.ndarray,
        labels: np.ndarray,
        transform,
        in_chans: int,
        in_domain: np.ndarray | None = None,
    ) -> None:
        if frames.dtype != np.uint8 or frames.ndim not in (3, 4):
            raise ValueError(
                f'expected uint8 frames [N, H, W(, 3)], got {frames.dtype} {frames.shape}'
            )
        if len(frames) != len(labels) or len(frames) == 0:
            raise ValueError(f'need one label per frame (> 0), got {len(frames)}/{len(labels)}')
        if in_domain is not None and len(in_domain) != len(labels):
            raise ValueError('in_domain needs one flag per frame')
        self.frames = frames
        self.labels = torch.as_tensor(np.asarray(labels), dtype=torch.long)
        self.in_domain = (
            torch.zeros(len(labels), dtype=torch.bool)
            if in_domain is None
            else torch.as_tensor(np.asarray(in_domain), dtype=torch.bool)
        )
        self.transform = transform
        self.mode = 'L' if in_chans == 1 else 'RGB'

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        frame = self.frames[index]
        image = Image.fromarray(frame[..., :3] if frame.ndim == 3 else frame)
        if image.mode != self.mode:
            image = image.convert(self.mode)
        return self.transform(image), self.labels[index], self.in_domain[index]
