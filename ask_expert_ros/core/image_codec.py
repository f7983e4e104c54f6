"""sensor_msgs/Image and CompressedImage payloads <-> numpy frames, without ROS.

The fields are passed as plain values so both transport adapters (rclpy and
Cyclone DDS) share one implementation of the rules: ``step`` may include row
padding, 16-bit encodings honour ``is_bigendian``, BGR(A) is reordered to RGB,
alpha is dropped. Decoded frames are ``uint8 [H, W]`` (mono) or ``[H, W, 3]`` RGB.
"""

from __future__ import annotations

from typing import Literal

import cv2
import numpy as np

from ask_expert_ros.core.errors import UnsupportedImageError

# encoding -> (channels, bytes per channel, channel order to take for RGB / mono)
_LAYOUTS: dict[str, tuple[int, int, tuple[int, ...]]] = {
    'mono8': (1, 1, (0,)),
    '8UC1': (1, 1, (0,)),
    'rgb8': (3, 1, (0, 1, 2)),
    'bgr8': (3, 1, (2, 1, 0)),
    '8UC3': (3, 1, (2, 1, 0)),  # OpenCV's default order
    'rgba8': (4, 1, (0, 1, 2)),
    'bgra8': (4, 1, (2, 1, 0)),
    '8UC4': (4, 1, (2, 1, 0)),
    'mono16': (1, 2, (0,)),
    '16UC1': (1, 2, (0,)),
}
SUPPORTED_ENCODINGS = tuple(_LAYOUTS)
CompressedFormat = Literal['jpeg', 'png']


def decode_image(
    height: int,
    width: int,
    encoding: str,
    step: int,
    data: bytes | memoryview | np.ndarray,
    is_bigendian: bool = False,
) -> np.ndarray:
    """A ``sensor_msgs/Image`` payload -> ``uint8`` RGB or mono frame.

    Raises:
        UnsupportedImageError: Unknown encoding, zero size, or a buffer shorter than
            ``height * step`` or a ``step`` shorter than a row.
    """
    if encoding not in _LAYOUTS:
        raise UnsupportedImageError(
            f'unsupported encoding {encoding!r}; supported: {", ".join(SUPPORTED_ENCODINGS)}'
        )
    if height <= 0 or width <= 0:
        raise UnsupportedImageError(f'empty image {width}x{height}')
    channels, depth, order = _LAYOUTS[encoding]
    row = width * channels * depth
    if step < row:
        raise UnsupportedImageError(f'step {step} shorter than a row of {row} bytes ({encoding})')
    buffer = np.frombuffer(data, dtype=np.uint8) if not isinstance(data, np.ndarray) else data
    if buffer.size < height * step:
        raise UnsupportedImageError(
            f'image data has {buffer.size} bytes; {height} rows of step {step} need '
            f'{height * step}'
        )
    rows = buffer[: height * step].reshape(height, step)[:, :row]
    if depth == 2:
        dtype = np.dtype('>u2' if is_bigendian else '<u2')
        pixels16 = rows.copy().view(dtype).reshape(height, width)
        return (pixels16 >> 8).astype(np.uint8)  # keep the 8 most significant bits
    pixels = rows.reshape(height, width, channels)
    if channels == 1:
        return pixels[..., 0]
    if order == (0, 1, 2) and channels == 3:
        return pixels
    return np.ascontiguousarray(pixels[..., list(order)])


def encode_image(frame: np.ndarray) -> tuple[int, int, str, int, bytes]:
    """``uint8 [H, W]`` or ``[H, W, 3]`` RGB -> (height, width, encoding, step, data)."""
    if frame.dtype != np.uint8 or frame.ndim not in (2, 3) or 0 in frame.shape:
        raise UnsupportedImageError(
            f'expected a non-empty uint8 frame, got {frame.dtype} {frame.shape}'
        )
    if frame.ndim == 3 and frame.shape[2] != 3:
        raise UnsupportedImageError(f'expected 3 channels (RGB), got {frame.shape[2]}')
    height, width = frame.shape[:2]
    encoding = 'mono8' if frame.ndim == 2 else 'rgb8'
    step = width * (1 if frame.ndim == 2 else 3)
    return height, width, encoding, step, np.ascontiguousarray(frame).tobytes()


def decode_compressed(fmt: str, data: bytes | memoryview | np.ndarray) -> np.ndarray:
    """A ``sensor_msgs/CompressedImage`` payload (JPEG or PNG) -> ``uint8`` RGB or mono."""
    buffer = np.frombuffer(data, dtype=np.uint8) if not isinstance(data, np.ndarray) else data
    if buffer.size == 0:
        raise UnsupportedImageError(f'empty compressed image ({fmt!r})')
    decoded = cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED)
    if decoded is None:
        raise UnsupportedImageError(f'cannot decode compressed image (format {fmt!r})')
    if decoded.dtype != np.uint8:
        decoded = (decoded.astype(np.uint16) >> 8).astype(np.uint8)
    if decoded.ndim == 2:
        return decoded
    if decoded.shape[2] == 4:
        return cv2.cvtColor(decoded, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)


def encode_compressed(
    frame: np.ndarray, fmt: CompressedFormat = 'jpeg', quality: int = 90
) -> tuple[str, bytes]:
    """RGB or mono ``uint8`` frame -> (format string as image_transport writes it, bytes)."""
    if frame.ndim == 3:
        frame = cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)
    if fmt == 'jpeg':
        ok, buf = cv2.imencode('.jpg', frame, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    elif fmt == 'png':
        ok, buf = cv2.imencode('.png', frame)
    else:
        raise ValueError(f"compressed format must be 'jpeg' or 'png', got {fmt!r}")
    if not ok:
        raise UnsupportedImageError(f'cannot encode frame {frame.shape} as {fmt}')
    kind = 'mono8' if frame.ndim == 2 else 'bgr8'
    return f'{kind}; {fmt} compressed {kind}', buf.tobytes()
