"""Labelled image sets that need no download.

The built-in one is scikit-learn's handwritten digits (1797 scans, 8x8, 17 grey
levels), which ship inside the scikit-learn wheel.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

DIGIT_NAMES = ('zero', 'one', 'two', 'three', 'four', 'five', 'six', 'seven', 'eight', 'nine')


@dataclass(frozen=True)
class LabelledImages:
    """A train/test split of ``uint8`` frames ``[N, H, W(, C)]`` with integer labels."""

    class_names: tuple[str, ...]
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray


def digits(test_fraction: float = 0.3, seed: int = 0) -> LabelledImages:
    """scikit-learn's digits as ``uint8 [N, 8, 8]`` frames, split stratified by class."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f'test_fraction must be in (0, 1), got {test_fraction}')
    bunch = load_digits()
    # 0..16 grey levels -> 0..255, the range a camera frame has
    images = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)
    labels = bunch.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        images, labels, test_size=test_fraction, random_state=seed, stratify=labels
    )
    return LabelledImages(DIGIT_NAMES, x_train, y_train, x_test, y_test)


def channel_stats(images: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of ``uint8`` frames, on the [0, 1] scale."""
    x = images.astype(np.float64) / 255.0
    if x.ndim == 3:
        x = x[..., None]
    axes = tuple(range(x.ndim - 1))
    return tuple(x.mean(axis=axes).tolist()), tuple(np.maximum(x.std(axis=axes), 1e-3).tolist())
