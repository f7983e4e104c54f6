"""Camera frames -> model input tensors, with the preprocessing stored in the model config.

Frames are ``uint8`` arrays ``[H, W]`` (mono) or ``[H, W, C]`` (RGB order, C = 3; an
alpha channel is dropped), as a ``[N, H, W(, C)]`` batch or a list of frames of
any sizes. The whole batch is converted, resized and normalised with tensor ops;
no Python loop touches pixels. Per batch: one host copy (``np.stack`` of a frame
list; a ``[N, H, W, C]`` array is used as it is), uint8 moved to the device (4x
fewer bytes than float), one conversion to contiguous float ``NCHW``, the resize, and
normalisation as a single in-place multiply-add (``x * 1/(255 std) - mean/std``)
applied on the smaller side of the resize (resizing is linear, so the order does not
change the result). The output is C-contiguous, so a backend reads it without a copy.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ask_expert_ros.core.errors import UnsupportedImageError
from ask_expert_ros.core.inference.models import ModelConfig

# ITU-R BT.601 luma, the weights OpenCV's RGB2GRAY uses
_LUMA = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)


class Preprocessor:
    """Resize + normalise frames for one model config.

    Args:
        config: The model's config (input size, channels, mean, std, filter).
        device: Where the output tensor lives.
    """

    def __init__(self, config: ModelConfig, device: str | torch.device = 'cpu') -> None:
        self.size = config.img_size
        self.in_chans = config.in_chans
        self.mode = config.interpolation
        self.device = torch.device(device)
        self.mean = torch.tensor(config.mean, device=self.device).view(1, -1, 1, 1)
        self.std = torch.tensor(config.std, device=self.device).view(1, -1, 1, 1)
        # (p / 255 - mean) / std == p * scale + shift, for pixel values p in [0, 255]
        self.scale = 1.0 / (255.0 * self.std)
        self.shift = -self.mean / self.std

    def __call__(self, frames: np.ndarray | Sequence[np.ndarray]) -> torch.Tensor:
        """Frames -> ``float32 [N, in_chans, img_size, img_size]``."""
        if isinstance(frames, np.ndarray):
            return self._batch(frames)
        frames = list(frames)
        if not frames:
            return torch.zeros((0, self.in_chans, self.size, self.size), device=self.device)
        if len(frames) == 1:  # np.stack's Python-level checks cost more than the copy
            frame = np.asarray(frames[0])
            # torch warns on read-only memory (a DDS sample's bytes): copy that one
            return self._batch((frame if frame.flags.writeable else frame.copy())[None])
        shapes = {f.shape for f in frames}
        if len(shapes) == 1:
            return self._batch(np.stack(frames))
        return torch.cat([self._batch(f[None]) for f in frames])

    def _batch(self, batch: np.ndarray) -> torch.Tensor:
        x, normalised = self._resized(batch, normalise_small=True)
        if not normalised:
            x = self._normalise(x)
        return x.contiguous()

    def resize_uint8(self, frame: np.ndarray) -> np.ndarray:
        """One frame at this model's input size, as ``uint8`` pixels: what the model would
        see before normalisation (same filter and antialiasing), rounded.

        Used by the edge to send the expert its input resolution instead of the camera's.
        Returns ``[S, S]`` for a one-channel model or a mono frame, else ``[S, S, 3]``.
        """
        frame = np.asarray(frame)
        if frame.shape[:2] == (self.size, self.size) and (
            frame.ndim == 2 or (self.in_chans == 3 and frame.shape[-1] == 3)
        ):
            return np.ascontiguousarray(frame)
        x, _ = self._resized(frame[None], normalise_small=False)
        out = x[0].round_().clamp_(0, 255).to(torch.uint8).permute(1, 2, 0).cpu().numpy()
        return np.ascontiguousarray(out[..., 0] if out.shape[-1] == 1 else out)

    def patches(self, patches: np.ndarray) -> torch.Tensor:
        """``uint8 [B, n, p, p(, C)]`` patches -> normalised ``float32 [B, n, C_model, p, p]``.

        RGB patches are reduced to luma for a one-channel model and grey patches
        broadcast to three channels, as for whole frames.
        """
        if patches.dtype != np.uint8 or patches.ndim not in (4, 5):
            raise UnsupportedImageError(
                f'expected uint8 patches [B, n, p, p(, C)], got {patches.dtype} {patches.shape}'
            )
        b, n = patches.shape[:2]
        flat = patches.reshape(b * n, *patches.shape[2:])
        if flat.ndim == 3:
            flat = flat[..., None]
        x = torch.from_numpy(np.ascontiguousarray(flat)).to(self.device)
        x = x.permute(0, 3, 1, 2)[:, :3].to(torch.float32, memory_format=torch.contiguous_format)
        if x.shape[1] == 3 and self.in_chans == 1:
            x = (x * _LUMA.to(x.device)).sum(dim=1, keepdim=True)
        x = self._normalise(x)
        return x.reshape(b, n, *x.shape[1:]).contiguous()

    def _resized(self, batch: np.ndarray, normalise_small: bool) -> tuple[torch.Tensor, bool]:
        """Checked uint8 frames -> float ``NCHW`` at the model size, and whether they were
        normalised already (upscaling normalises the smaller input first)."""
        if batch.ndim == 3:
            batch = batch[..., None]
        if batch.ndim != 4 or batch.shape[1] == 0 or batch.shape[2] == 0:
            raise UnsupportedImageError(
                f'expected frames [N, H, W] or [N, H, W, C] with H, W > 0, got {batch.shape}'
            )
        if batch.shape[-1] not in (1, 3, 4):
            raise UnsupportedImageError(f'expected 1, 3 or 4 channels, got {batch.shape[-1]}')
        if batch.dtype != np.uint8:
            raise UnsupportedImageError(f'expected uint8 pixels, got {batch.dtype}')
        x = torch.from_numpy(np.ascontiguousarray(batch)).to(self.device)
        x = x.permute(0, 3, 1, 2)[:, :3].to(torch.float32, memory_format=torch.contiguous_format)
        if x.shape[1] == 3 and self.in_chans == 1:
            x = (x * _LUMA.to(x.device)).sum(dim=1, keepdim=True)
        resize = x.shape[-2:] != (self.size, self.size)
        if normalise_small and resize and x.shape[-2] * x.shape[-1] < self.size * self.size:
            x = self._normalise(x)  # upscaling: normalise the smaller input
            normalised = True
        else:
            normalised = False
        if resize:
            antialias = self.mode != 'nearest' and (
                x.shape[-1] > self.size or x.shape[-2] > self.size
            )
            x = F.interpolate(
                x,
                size=(self.size, self.size),
                mode=self.mode,
                antialias=antialias,
                **({} if self.mode == 'nearest' else {'align_corners': False}),
            )
        return x, normalised

    def _normalise(self, x: torch.Tensor) -> torch.Tensor:
        """Pixel values [0, 255] -> normalised model input, grey broadcast to RGB if needed."""
        if x.shape[1] == self.in_chans:
            return x.mul_(self.scale).add_(self.shift)  # x is our own fresh tensor
        return torch.addcmul(self.shift, x, self.scale)  # [N, 1] -> [N, 3]: one new tensor
