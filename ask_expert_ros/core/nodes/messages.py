"""Transport-free forms of what the nodes exchange.

The adapters convert ROS/DDS messages to and from these dataclasses; the node
logic (:mod:`edge_logic`, :mod:`expert_logic`) only ever sees these.
Field meanings are those of ``msg/ExpertRequest.msg`` and ``msg/ExpertResponse.msg``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import numpy as np

from ask_expert_ros.core.inference.engine import ResultSource
from ask_expert_ros.core.inference.taxonomy import ExpertKey


@dataclass(frozen=True)
class Stamp:
    """A ROS time: seconds and nanoseconds (``builtin_interfaces/Time``)."""

    sec: int = 0
    nanosec: int = 0

    @classmethod
    def from_ns(cls, ns: int) -> Stamp:
        return cls(int(ns // 1_000_000_000), int(ns % 1_000_000_000))

    def to_ns(self) -> int:
        return self.sec * 1_000_000_000 + self.nanosec


@dataclass(frozen=True)
class Header:
    """``std_msgs/Header``: the camera's stamp and frame id, carried unchanged end to end."""

    stamp: Stamp = field(default_factory=Stamp)
    frame_id: str = ''


class FrameFormat(enum.IntEnum):
    """``ExpertRequest.frame_format``: what the pixels are and which field holds them."""

    RAW = 0  # the whole frame, ``image``
    COMPRESSED = 1  # the whole frame, ``compressed_image``
    PATCHES_RAW = 2  # a mosaic of the selected patches, ``image``
    PATCHES_COMPRESSED = 3  # that mosaic JPEG/PNG-compressed, ``compressed_image``

    @property
    def is_patches(self) -> bool:
        return self in (FrameFormat.PATCHES_RAW, FrameFormat.PATCHES_COMPRESSED)

    @property
    def is_compressed(self) -> bool:
        return self in (FrameFormat.COMPRESSED, FrameFormat.PATCHES_COMPRESSED)


@dataclass(frozen=True)
class ImageData:
    """A frame (or a patch mosaic) as it travels: ``sensor_msgs/Image`` fields for the raw
    formats, ``CompressedImage`` fields (``encoding`` = its format string) for the others."""

    format: FrameFormat
    data: bytes | memoryview
    height: int = 0
    width: int = 0
    encoding: str = ''  # RAW: sensor_msgs encoding; COMPRESSED: the format string
    step: int = 0
    is_bigendian: bool = False


@dataclass(frozen=True)
class Frame:
    """A decoded camera frame: ``uint8 [H, W]`` or ``[H, W, 3]`` RGB, with its header."""

    header: Header
    pixels: np.ndarray
    source: ImageData | None = None  # the bytes it arrived as, forwarded to the expert


@dataclass(frozen=True)
class PatchLayout:
    """Where the patches of a patch-mode request come from (``ExpertRequest`` fields).

    The frame, at the expert's input resolution, is a grid of ``grid_rows x grid_cols``
    square patches of ``patch_size`` pixels; ``indices`` (row-major, ascending) name
    the ones sent. The pixels travel as a mosaic of ``mosaic_shape(len(indices))``
    tiles in the same order (:func:`ask_expert_ros.core.inference.patches.pack_mosaic`).
    """

    patch_size: int
    grid_rows: int
    grid_cols: int
    indices: tuple[int, ...]

    @property
    def grid(self) -> tuple[int, int]:
        return (self.grid_rows, self.grid_cols)

    @property
    def num_patches(self) -> int:
        return self.grid_rows * self.grid_cols


class Status(enum.IntEnum):
    """``ExpertResponse.status``."""

    OK = 0
    UNKNOWN_KEY = 1
    BAD_FRAME = 2
    MODEL_ERROR = 3
    EXPIRED = 4
    BAD_REQUEST = 5
    OVERLOADED = 6  # shed: the expert's queue for this edge, or all its queues, were full


@dataclass(frozen=True)
class OffloadRequest:
    """``ExpertRequest``: an uncertain frame, its Top-k and its routing key."""

    header: Header
    edge_id: str
    request_id: int
    image: ImageData
    topk_classes: tuple[int, ...]
    topk_scores: tuple[float, ...]
    expert_key: ExpertKey
    partition: str
    confidence: float
    confidence_method: str
    deadline: Stamp
    edge_preprocess_ms: float = 0.0
    edge_inference_ms: float = 0.0
    patches: PatchLayout | None = None  # set for the PATCHES_* frame formats


@dataclass(frozen=True)
class ExpertReply:
    """``ExpertResponse``: the expert's label for one request, or why there is none.

    ``load_ms`` is not on the wire: the part of ``inference_ms`` spent loading the expert
    (a cold start where the expert was not resident); 0 when it was. The message carries
    it inside ``inference_ms``.
    """

    header: Header
    edge_id: str
    request_id: int
    status: Status
    label: int = -1
    label_name: str = ''
    score: float = 0.0
    expert_key: ExpertKey = ()
    expert_name: str = ''
    error: str = ''
    queue_ms: float = 0.0
    inference_ms: float = 0.0
    batch_size: int = 0
    load_ms: float = 0.0


@dataclass(frozen=True)
class FinalResult:
    """The one final answer for a camera frame.

    Attributes:
        header: The camera frame's header (stamp and frame id), unchanged.
        label: Class index, -1 when the edge output was not usable (INVALID).
        label_name: Class name ('' for INVALID).
        score: Probability of ``label`` under the model that answered.
        source: Who answered: EDGE, EXPERT, FALLBACK (edge Top-1 after an expert
            failure or deadline) or INVALID.
        reason: Why a FALLBACK or INVALID happened; '' otherwise.
        edge_confidence: The edge's confidence score.
        expert_key: Key of the expert asked, () when none was.
        edge_ms / expert_ms / queue_ms: Stage times of this frame.
        sent_patches: Grid indices of the patches sent to the expert (patch mode), with
            ``patch_grid`` their grid; () and (0, 0) otherwise.
        offload_bytes: Pixel bytes sent to the expert for this frame (0 when none).
    """

    header: Header
    label: int
    label_name: str
    score: float
    source: ResultSource
    reason: str = ''
    edge_confidence: float = float('nan')
    expert_key: ExpertKey = ()
    edge_ms: float = 0.0
    expert_ms: float = 0.0
    queue_ms: float = 0.0
    sent_patches: tuple[int, ...] = ()
    patch_grid: tuple[int, int] = (0, 0)
    offload_bytes: int = 0
