"""Draw a frame's final result on it, for the rviz image display.

The label, its score and who answered (edge, expert, fallback, invalid) go on a
banner across the top in the source's colour, in black or white, whichever reads
better on it; a border in the same colour makes the source visible at a glance even on
a thumbnail. The text is about a tenth of the frame's short side high (rviz scales the
image into a panel: text of a fixed pixel size was unreadable there), on two lines
(label; score and source) where one line would not fit. In patch offload the patches
that were sent to the expert are outlined (the expert's patch grid stretched over the
camera frame, as the edge resizes it for the expert). Tiny frames (8x8 digits) are
enlarged with nearest neighbour so the text is readable and the pixels stay sharp; big
frames keep their size.
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
MIN_SIDE = 320  # frames whose short side is smaller are enlarged to about this
MAX_SIDE = 1920  # ... but never so much that the long side exceeds this
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def scale_for(height: int, width: int) -> int:
    """Integer enlargement for a ``height`` x ``width`` frame (1: keep its size)."""
    wanted = math.ceil(MIN_SIDE / min(height, width))
    allowed = max(1, MAX_SIDE // max(height, width))
    return max(1, min(wanted, allowed))


def caption_lines(result: FinalResult) -> tuple[str, str]:
    """The caption in two parts, for two lines: ``('cat', '0.91 [expert]')``;
    ``('?', '[invalid]')`` without a label."""
    source = ResultSource(result.source).name.lower()
    if result.source == ResultSource.INVALID or result.label < 0:
        return '?', f'[{source}]'
    return f'{result.label_name or result.label}', f'{result.score:.2f} [{source}]'


def caption(result: FinalResult) -> str:
    """The banner text on one line: ``'cat 0.91 [expert]'``; ``'? [invalid]'`` without a label."""
    return ' '.join(caption_lines(result))


def text_colour(background: tuple[int, int, int]) -> tuple[int, int, int]:
    """Black on light colours, white on dark ones (ITU-R BT.601 luma)."""
    r, g, b = background
    return (0, 0, 0) if 0.299 * r + 0.587 * g + 0.114 * b >= 140 else (255, 255, 255)


def draw_banner(frame: np.ndarray, parts: tuple[str, str], colour: tuple[int, int, int]) -> int:
    """Draw, in place, the caption ``parts`` on a banner in ``colour`` across the top of the
    RGB ``frame``: on one line if it fits at the wanted size, else label above score and
    source, each shrunk to fit the width if need be. Returns the stroke thickness used."""
    height, width = frame.shape[:2]
    # cap height about 7 % of the short side, 12-32 px: 22 px on an enlarged 8x8 digit
    wanted = min(32.0, max(12.0, 0.07 * min(height, width)))
    one = ' '.join(p for p in parts if p)
    scale = wanted / cv2.getTextSize('0', _FONT, 1.0, 1)[0][1]
    # one line unless it would have to shrink below 3/4 of the wanted size
    one_line = _fitted_scale(one, scale, width) >= 0.75 * scale or not parts[1]
    lines = [one] if one_line else [p for p in parts if p]
    sizes = [_fitted_scale(line, scale, width) for line in lines]
    thickness = max(1, round(min(sizes) * 2.5))
    metrics = [
        cv2.getTextSize(line, _FONT, size, thickness)
        for line, size in zip(lines, sizes, strict=True)
    ]
    pad = max(2, round(wanted / 4))
    bottom = pad + sum(h + b + pad for (_, h), b in metrics)
    cv2.rectangle(frame, (0, 0), (width - 1, min(bottom, height - 1)), colour, -1)
    ink = text_colour(colour)
    y = pad
    for line, s, ((_, h), b) in zip(lines, sizes, metrics, strict=True):
        y += h
        cv2.putText(frame, line, (pad, y), _FONT, s, ink, thickness, cv2.LINE_AA)
        y += b + pad
    return thickness


def _fitted_scale(text: str, scale: float, width: int) -> float:
    """``scale``, or smaller (down to 0.3) so that ``text`` fits ``width`` less a margin."""
    thickness = max(1, round(scale * 2.5))
    text_w = cv2.getTextSize(text, _FONT, scale, thickness)[0][0]
    return scale if text_w <= width - 8 else max(0.3, scale * (width - 8) / text_w)


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
    thickness = draw_banner(frame, caption_lines(result), colour)
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
