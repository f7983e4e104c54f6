"""Draw a frame's final result on it, for the rviz image display."""

from __future__ import annotations

import cv2
import numpy as np

from ask_expert_ros.core.engine import ResultSource
from ask_expert_ros.core.messages import FinalResult

# RGB colours per source: green edge, blue expert, orange fallback, red invalid
COLOURS = {
    ResultSource.EDGE: (40, 200, 40),
    ResultSource.EXPERT: (40, 120, 255),
    ResultSource.FALLBACK: (255, 150, 0),
    ResultSource.INVALID: (230, 30, 30),
}
_MIN_SIDE = 160  # small frames (8x8 digits) are enlarged so the text is readable


def annotate(pixels: np.ndarray, result: FinalResult) -> np.ndarray:
    """An RGB ``uint8`` copy of the frame with label, score and who answered."""
    frame = pixels if pixels.ndim == 3 else np.repeat(pixels[..., None], 3, axis=2)
    scale = max(1, int(np.ceil(_MIN_SIDE / min(frame.shape[:2]))))
    if scale > 1:
        frame = cv2.resize(frame, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
    else:
        frame = frame.copy()
    colour = COLOURS[ResultSource(result.source)]
    font_scale = max(0.35, frame.shape[1] / 640)
    thickness = max(1, round(font_scale * 2))
    text = (
        f'{result.label_name or "?"} {result.score:.2f}  '
        f'[{ResultSource(result.source).name.lower()}]'
    )
    (w, h), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, thickness)
    cv2.rectangle(frame, (0, 0), (min(w + 8, frame.shape[1]), h + base + 8), (0, 0, 0), -1)
    cv2.putText(
        frame,
        text,
        (4, h + 4),
        cv2.FONT_HERSHEY_SIMPLEX,
        font_scale,
        colour,
        thickness,
        cv2.LINE_AA,
    )
    cv2.rectangle(
        frame, (0, 0), (frame.shape[1] - 1, frame.shape[0] - 1), colour, max(2, thickness)
    )
    return frame
