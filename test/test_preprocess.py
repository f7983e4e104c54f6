"""Frames -> model input: channels, resizing, normalisation, bad frames."""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytest
import torch

from ask_expert_ros.core.errors import UnsupportedImageError
from ask_expert_ros.core.inference.engine import FrameBatch, _preprocessor
from ask_expert_ros.core.inference.models import ModelConfig
from ask_expert_ros.core.inference.preprocess import Preprocessor

RGB = ModelConfig(
    variant='deit_3h',
    class_names=('a',),
    img_size=32,
    patch_size=16,
    mean=(0.5, 0.5, 0.5),
    std=(0.25, 0.25, 0.25),
    interpolation='bilinear',
)
GREY = ModelConfig(
    variant='deit_3h',
    class_names=('a',),
    img_size=8,
    patch_size=4,
    in_chans=1,
    mean=(0.0,),
    std=(1.0,),
    interpolation='nearest',
)


def test_normalisation_values() -> None:
    """A flat 255 frame -> (1.0 - 0.5) / 0.25 = 2.0 everywhere, at the model's size."""
    x = Preprocessor(RGB)(np.full((2, 32, 32, 3), 255, dtype=np.uint8))
    assert x.shape == (2, 3, 32, 32) and x.dtype == torch.float32
    torch.testing.assert_close(x, torch.full_like(x, 2.0))


def test_rgb_to_grey_uses_luma() -> None:
    frame = np.zeros((1, 8, 8, 3), dtype=np.uint8)
    frame[..., 1] = 255  # pure green -> 0.587
    x = Preprocessor(GREY)(frame)
    torch.testing.assert_close(x, torch.full((1, 1, 8, 8), 0.587))


def test_grey_to_rgb_and_resize_and_mixed_sizes() -> None:
    frames = [np.full((16, 16), 128, dtype=np.uint8), np.full((40, 24), 128, dtype=np.uint8)]
    x = Preprocessor(RGB)(frames)
    assert x.shape == (2, 3, 32, 32)
    torch.testing.assert_close(x, torch.full_like(x, (128 / 255 - 0.5) / 0.25))


def test_alpha_dropped() -> None:
    frame = np.zeros((1, 32, 32, 4), dtype=np.uint8)
    frame[..., 3] = 255
    torch.testing.assert_close(Preprocessor(RGB)(frame), torch.full((1, 3, 32, 32), -2.0))


@pytest.mark.parametrize(
    ('frames', 'error'),
    [
        (np.zeros((1, 0, 8), dtype=np.uint8), 'H, W > 0'),
        (np.zeros((1, 8, 8, 2), dtype=np.uint8), '1, 3 or 4 channels'),
        (np.zeros((1, 8, 8), dtype=np.float32), 'uint8'),
        (np.zeros((8,), dtype=np.uint8), 'expected frames'),
    ],
)
def test_bad_frames(frames, error) -> None:
    with pytest.raises(UnsupportedImageError, match=error):
        Preprocessor(GREY)(frames)


@pytest.mark.parametrize('size', [8, 32, 45])  # upscale, none, downscale (antialiased)
def test_matches_reference_and_is_contiguous(size: int) -> None:
    """The fused multiply-add, applied before or after the resize, equals the textbook
    order: /255, resize, -mean, /std (float32 rounding only)."""
    frames = np.random.default_rng(0).integers(0, 256, (3, size, size, 3), dtype=np.uint8)
    cfg = RGB
    x = Preprocessor(cfg)(frames)
    assert x.is_contiguous() and x.shape == (3, 3, 32, 32)
    ref = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255
    if size != 32:
        ref = torch.nn.functional.interpolate(
            ref, size=(32, 32), mode='bilinear', align_corners=False, antialias=size > 32
        )
    ref = (ref - 0.5) / 0.25
    torch.testing.assert_close(x, ref, rtol=0, atol=1e-5)


def test_one_read_only_frame_is_not_written_and_matches_the_batch_path() -> None:
    """A DDS sample's pixels are read-only: no torch warning, the frame is left as it was."""
    rng = np.random.default_rng(3)
    frame = rng.integers(0, 256, (40, 24, 3), dtype=np.uint8)
    before = frame.copy()
    frame.flags.writeable = False
    preprocess = Preprocessor(RGB)
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        one = preprocess([frame])
    torch.testing.assert_close(one, preprocess(np.stack([before, before]))[:1])
    np.testing.assert_array_equal(frame, before)


def test_frame_batches_share_one_preprocessor_per_signature() -> None:
    other_classes = dataclasses.replace(RGB, class_names=('b', 'c'))
    first = FrameBatch([np.zeros((32, 32, 3), np.uint8)])
    second = FrameBatch([np.zeros((32, 32, 3), np.uint8)])
    first.inputs(RGB)
    second.inputs(other_classes)  # other classes, the same preprocessing
    assert _preprocessor(RGB, torch.device('cpu')) is _preprocessor(
        other_classes, torch.device('cpu')
    )
    assert _preprocessor(RGB, torch.device('cpu')) is not _preprocessor(GREY, torch.device('cpu'))
