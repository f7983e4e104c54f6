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

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
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
        on_batch: Crop, resize and flip whole batches at once with tensor ops
            (:class:`BatchCropFlip`) instead of each frame through PIL: the same
            RandomResizedCrop and flip distributions, without the per-frame Python work
            (1.2x the training frames per second of the 28 px DeiT-6H teacher on 2 CPU
            cores, ``benchmarks/augment_on_batch.py``). Needs ``auto_augment`` None and
            ``re_prob`` 0.
    """

    scale_min: float = 0.08
    hflip: float = 0.5
    auto_augment: str | None = 'rand-m9-mstd0.5-inc1'
    re_prob: float = 0.25
    mixup: float = 0.0
    cutmix: float = 0.0
    label_smoothing: float = 0.0
    on_batch: bool = False

    def __post_init__(self) -> None:
        if not 0.0 < self.scale_min <= 1.0:
            raise ValueError(f'scale_min must be in (0, 1], got {self.scale_min}')
        for name in ('hflip', 're_prob', 'label_smoothing'):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f'{name} must be in [0, 1], got {getattr(self, name)}')
        if self.mixup < 0 or self.cutmix < 0:
            raise ValueError('mixup and cutmix alphas must be >= 0')
        if self.on_batch and (self.auto_augment is not None or self.re_prob > 0):
            raise ValueError('on_batch augmentation has no RandAugment or random erasing')

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
    """timm's DeiT training transform for this model's input size, channels and stats
    (a :class:`BatchCropFlip` for the training loop when ``augment.on_batch``)."""
    if augment.on_batch:
        return BatchCropFlip(model, augment)
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


_CROP_TRIES = 10


class BatchCropFlip:
    """RandomResizedCrop + horizontal flip + normalisation of a ``uint8`` batch, at once.

    Per frame, like torchvision's RandomResizedCrop on a square frame: an area share in
    ``[scale_min, 1]`` and an aspect ratio in ``[3/4, 4/3]`` (log-uniform), redrawn up
    to 10 times until the crop fits, placed uniformly; then a flip with probability
    ``hflip``.
    One affine grid per frame and one bilinear ``grid_sample`` for the batch resample
    the crops to the model's input size; the model's mean and std normalise them.
    """

    def __init__(self, model: ModelConfig, augment: AugmentConfig) -> None:
        self.size = model.img_size
        self.scale_min = augment.scale_min
        self.hflip = augment.hflip
        self.mean = torch.tensor(model.mean).view(1, -1, 1, 1)
        self.std = torch.tensor(model.std).view(1, -1, 1, 1)

    def __call__(self, frames: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """``frames [B, C, H, W]`` uint8 -> model input ``[B, C, size, size]`` float."""
        n = frames.shape[0]

        def uniform(low: float, high: float, *shape: int) -> torch.Tensor:
            return low + (high - low) * torch.rand(*shape, generator=generator)

        # torchvision's rule: up to 10 draws of (area, ratio) per frame, the first crop
        # that fits the frame wins; none fits: the whole (square) frame
        area = uniform(self.scale_min, 1.0, n, _CROP_TRIES)
        ratio = torch.exp(uniform(math.log(3 / 4), math.log(4 / 3), n, _CROP_TRIES))
        widths = torch.sqrt(area * ratio)  # shares of the frame's side
        heights = torch.sqrt(area / ratio)
        fits = (widths <= 1.0) & (heights <= 1.0)
        first = fits.float().argmax(dim=1, keepdim=True)
        found = fits.any(dim=1)
        width = torch.where(found, widths.gather(1, first)[:, 0], 1.0)
        height = torch.where(found, heights.gather(1, first)[:, 0], 1.0)
        cx = (2 * torch.rand(n, generator=generator) - 1) * (1 - width)
        cy = (2 * torch.rand(n, generator=generator) - 1) * (1 - height)
        flip = torch.where(torch.rand(n, generator=generator) < self.hflip, -1.0, 1.0)
        theta = torch.zeros(n, 2, 3)
        theta[:, 0, 0], theta[:, 0, 2] = width * flip, cx
        theta[:, 1, 1], theta[:, 1, 2] = height, cy
        device = frames.device
        x = frames.to(device, torch.float32) / 255.0
        grid = F.affine_grid(
            theta.to(device), [n, x.shape[1], self.size, self.size], align_corners=False
        )
        x = F.grid_sample(x, grid, mode='bilinear', padding_mode='border', align_corners=False)
        return (x - self.mean.to(device)) / self.std.to(device)


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
        self.batch_transform: BatchCropFlip | None = None
        if isinstance(transform, BatchCropFlip):
            # items are the frames themselves ([C, H, W] uint8); the training loop
            # augments each batch with ``batch_transform``
            self.batch_transform = transform
            self.tensors = torch.from_numpy(_channels(frames, in_chans))

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self.batch_transform is not None:
            return self.tensors[index], self.labels[index], self.in_domain[index]
        frame = self.frames[index]
        image = Image.fromarray(frame[..., :3] if frame.ndim == 3 else frame)
        if image.mode != self.mode:
            image = image.convert(self.mode)
        return self.transform(image), self.labels[index], self.in_domain[index]


def _channels(frames: np.ndarray, in_chans: int) -> np.ndarray:
    """``uint8 [N, H, W(, 3|4)]`` -> ``[N, in_chans, H, W]``, converted as PIL converts
    (ITU-R 601-2 luma for grey from colour; grey repeated for colour)."""
    if frames.ndim == 3:
        grey = frames[:, None]
        return np.ascontiguousarray(grey if in_chans == 1 else np.repeat(grey, 3, axis=1))
    rgb = frames[..., :3]
    if in_chans == 1:
        luma = rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        return np.ascontiguousarray(np.clip(np.rint(luma), 0, 255).astype(np.uint8)[:, None])
    return np.ascontiguousarray(rgb.transpose(0, 3, 1, 2))
