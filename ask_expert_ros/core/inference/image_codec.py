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


MAX_COMPRESSED_PIXELS = 1 << 24
"""Largest JPEG/PNG accepted, in pixels (16.8 M: 4K UHD and 12-Mpx sensors fit). The
decoder allocates what the file's header declares before it reads the data, so a
600-byte JPEG declaring 30000x30000 would otherwise take 2.7 GB; the header is read
first and such a file refused. At the cap, a frame costs about 0.5 GB in transient
memory through the edge pipeline (decode, RGB, float tensor, resize)."""

_PNG_MAGIC = b'\x89PNG\r\n\x1a\n'
# JPEG markers without a length field: TEM, RSTn, SOI, EOI
_JPEG_STANDALONE = frozenset((0x01, *range(0xD0, 0xDA)))
# SOFn (frame headers); C4 (DHT), C8 (JPG), CC (DAC) share the range but are not
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def _check_png_chunks(buffer: bytes, fmt: str) -> None:
    """Every chunk of a PNG up to IEND lies inside the file.

    OpenCV's decoder allocates the length a chunk declares before reading it: a 218-byte
    PNG whose IEND declared 2**31 bytes took 2 GB (found by fuzzing).

    Raises:
        UnsupportedImageError: A chunk declares more bytes than the file has left.
    """
    pos = 8
    while pos + 8 <= len(buffer):
        length = int.from_bytes(buffer[pos : pos + 4], 'big')
        kind = buffer[pos + 4 : pos + 8]
        if pos + 12 + length > len(buffer):
            raise UnsupportedImageError(
                f'cannot decode compressed image (format {fmt!r}): PNG chunk {kind!r} '
                f'declares {length} bytes, the file has {len(buffer) - pos - 12} left'
            )
        if kind == b'IEND':
            return
        pos += 12 + length


def _declared_size(buffer: bytes, fmt: str) -> tuple[int, int] | None:
    """(width, height) a PNG's IHDR or a JPEG's frame header declares; None when the file
    has no complete header, which the decoder then refuses without allocating.

    The JPEG walk skips bytes between markers as libjpeg does, so the frame header found
    is the one the decoder would use (libjpeg refuses a scan before a frame header).

    Raises:
        UnsupportedImageError: The file is neither JPEG nor PNG.
    """
    if buffer.startswith(_PNG_MAGIC):
        _check_png_chunks(buffer, fmt)
        if len(buffer) < 24 or buffer[12:16] != b'IHDR':
            return None
        return int.from_bytes(buffer[16:20], 'big'), int.from_bytes(buffer[20:24], 'big')
    if not buffer.startswith(b'\xff\xd8'):
        raise UnsupportedImageError(
            f'cannot decode compressed image (format {fmt!r}): neither JPEG nor PNG '
            f'(starts {buffer[:8].hex()})'
        )
    pos = 2
    while True:
        pos = buffer.find(b'\xff', pos)
        while 0 <= pos < len(buffer) - 1 and buffer[pos + 1] == 0xFF:
            pos += 1  # fill bytes
        if pos < 0 or pos + 1 >= len(buffer):
            return None
        marker = buffer[pos + 1]
        pos += 2
        if marker == 0x00 or marker in _JPEG_STANDALONE:
            continue
        if marker in _JPEG_SOF:
            if pos + 7 > len(buffer):
                return None
            height = int.from_bytes(buffer[pos + 3 : pos + 5], 'big')
            return int.from_bytes(buffer[pos + 5 : pos + 7], 'big'), height
        if marker == 0xDA or pos + 2 > len(buffer):  # a scan before any frame header
            return None
        pos += int.from_bytes(buffer[pos : pos + 2], 'big')


def decode_compressed(fmt: str, data: bytes | memoryview | np.ndarray) -> np.ndarray:
    """A ``sensor_msgs/CompressedImage`` payload (JPEG or PNG) -> ``uint8`` RGB or mono.

    The file type is taken from its first bytes, not from ``fmt`` (a label for messages).

    Raises:
        UnsupportedImageError: Empty, neither JPEG nor PNG, larger than
            :data:`MAX_COMPRESSED_PIXELS`, or not decodable.
    """
    buffer = np.frombuffer(data, dtype=np.uint8) if not isinstance(data, np.ndarray) else data
    if buffer.size == 0:
        raise UnsupportedImageError(f'empty compressed image ({fmt!r})')
    # a copy of the file (microseconds next to decoding it) for bytes.find in the walk
    width, height = _declared_size(buffer.tobytes(), fmt) or (0, 0)
    if width * height > MAX_COMPRESSED_PIXELS:
        raise UnsupportedImageError(
            f'compressed image ({fmt!r}) declares {width}x{height} pixels, more than the '
            f'{MAX_COMPRESSED_PIXELS} accepted'
        )
    try:
        decoded = cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED)
    except cv2.error as exc:  # OpenCV asserts on some corrupt headers instead of failing
        raise UnsupportedImageError(f'cannot decode compressed image ({fmt!r}): {exc}') from exc
    if decoded is None:
        raise UnsupportedImageError(f'cannot decode compressed image (format {fmt!r})')
    if decoded.dtype == np.uint16:
        decoded = (decoded.astype(np.uint16) >> 8).astype(np.uint8)
    elif decoded.dtype != np.uint8:
        raise UnsupportedImageError(f'compressed image ({fmt!r}) decodes to {decoded.dtype}')
    if decoded.ndim == 2:
        return decoded
    if decoded.shape[2] == 4:
        return cv2.cvtColor(decoded, cv2.COLOR_BGRA2RGB)
    if decoded.shape[2] != 3:
        raise UnsupportedImageError(f'compressed image with {decoded.shape[2]} channels')
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
