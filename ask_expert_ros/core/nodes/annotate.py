"""Draw a frame's final result on it, for the rviz image display.

The label, its score and who answered (edge, expert, fallback, invalid) go on a
dark banner at the top; a border in the source's colour makes the source visible
at a glance even on a thumbnail. In patch offload the patches that were sent to the
expert are outlined (the expert's patch grid stretched over the camera frame, as the
edge resizes it for the expert). Tiny frames (8x8 digits) are enlarged with nearest
neighbour so the text is readable and the pixels stay sharp; big frames keep their
size and get a proportionally bigger font.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np

from ask_expert_ros.core.errors import UnsupportedImageError
from ask_expert_ros.core.inference.engine import ResultSource
from ask_expert_ros.core.nodes.messages import FinalResult

# RGB colours per source: green edge, blue expert, orange fallback, red invalid
COLOURS = {
    ResultSource.EDGE: (40, 200, 40),
    ResultSource.EXPERT: (40, 120, 255),
    ResultSource.FALLBACK: (255, 150, 0),
    ResultSource.INVALID: (230, 30, 30),
}
PATCH_COLOUR = (255, 230, 0)  # yellow: the outline of each patch sent to the expert
MIN_SIDE = 160  # frames whose short side is smaller are enlarged to about this
MAX_SIDE = 1920  # ... but never so much that the long side exceeds this
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def scale_for(height: int, width: int) -> int:
    """Integer enlargement for a ``height`` x ``width`` frame (1: keep its size)."""
    wanted = math.ceil(MIN_SIDE / min(height, width))
    allowed = max(1, MAX_SIDE // max(height, width))
    return max(1, min(wanted, allowed))


def caption(result: FinalResult) -> str:
    """The banner text: ``'cat 0.91 [expert]'``; ``'? [invalid]'`` without a label."""
    source = ResultSource(result.source).name.lower()
    if result.source == ResultSource.INVALID or result.label < 0:
        return f'? [{source}]'
    return f'{result.label_name or result.label} {result.score:.2f} [{source}]'


def annotate(pixels: np.ndarray, result: FinalResult) -> np.ndarray:
    """An RGB ``uint8`` copy of the frame with label, score and who answered.

    Args:
        pixels: ``uint8 [H, W]`` mono or ``[H, W, 3]`` RGB frame; left untouched.
        result: The frame's final result.

    Raises:
        UnsupportedImageError: Not a non-empty ``uint8`` mono or RGB frame.
    """
    if (
        pixels.dtype != np.uint8
        or pixels.ndim not in (2, 3)
        or (pixels.ndim == 3 and pixels.shape[2] != 3)
        or 0 in pixels.shape
    ):
        raise UnsupportedImageError(
            f'annotate needs a uint8 [H, W] or [H, W, 3] frame, got {pixels.dtype} {pixels.shape}'
        )
    frame = np.repeat(pixels[..., None], 3, axis=2) if pixels.ndim == 2 else pixels
    scale = scale_for(*frame.shape[:2])
    if scale > 1:
        frame = cv2.resize(frame, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
    else:
        frame = np.ascontiguousarray(frame).copy()  # never draw on the caller's pixels
    height, width = frame.shape[:2]
    if result.sent_patches and min(result.patch_grid) > 0:
        outline_patches(frame, result.sent_patches, result.patch_grid)
    colour = COLOURS[ResultSource(result.source)]
    font_scale = max(0.35, min(width, 2 * height) / 640)
    thickness = max(1, round(font_scale * 1.5))
    text = caption(result)
    (text_w, text_h), base = cv2.getTextSize(text, _FONT, font_scale, thickness)
    if text_w > width - 8:  # long class names: shrink the font to fit, down to a limit
        font_scale = max(0.3, font_scale * (width - 8) / text_w)
        thickness = 1 if font_scale < 0.7 else thickness
        (text_w, text_h), base = cv2.getTextSize(text, _FONT, font_scale, thickness)
    pad = max(2, text_h // 4)
    cv2.rectangle(frame, (0, 0), (min(text_w + 2 * pad, width), text_h + base + 2 * pad), 0, -1)
    cv2.putText(
        frame, text, (pad, pad + text_h), _FONT, font_scale, colour, thickness, cv2.LINE_AA
    )
    border = max(2, thickness)
    cv2.rectangle(frame, (0, 0), (width - 1, height - 1), colour, border)
    return frame


def patch_box(
    index: int, grid: tuple[int, int], height: int, width: int
) -> tuple[int, int, int, int]:
    """Pixel box ``(top, left, bottom, right)`` (exclusive ends) of the row-major patch
    ``index`` of a ``grid`` stretched over a ``height`` x ``width`` frame."""
    rows, cols = grid
    row, col = divmod(int(index), cols)
    return (
        row * height // rows,
        col * width // cols,
        (row + 1) * height // rows,
        (col + 1) * width // cols,
    )


def outline_patches(
    frame: np.ndarray,
    indices: Sequence[int],
    grid: tuple[int, int],
    colour: tuple[int, int, int] = PATCH_COLOUR,
) -> None:
    """Draw, in place, an outline just inside each patch ``indices`` of ``grid`` on the
    RGB ``frame``; nothing outside those patches changes. Indices outside the grid are
    skipped (the edge only sends patches of the grid).

    The line is about 1/16 of a patch wide (at least 1 pixel), so neighbouring sent
    patches stay apart.
    """
    height, width = frame.shape[:2]
    rows, cols = grid
    line = max(1, min(height // rows, width // cols) // 16)
    for index in indices:
        if not 0 <= index < rows * cols:
            continue
        top, left, bottom, right = patch_box(index, grid, height, width)
        t = min(line, (bottom - top + 1) // 2, (right - left + 1) // 2)
        frame[top : top + t, left:right] = colour
        frame[bottom - t : bottom, left:right] = colour
        frame[top:bottom, left : left + t] = colour
        frame[top:bottom, right - t : right] = colour
