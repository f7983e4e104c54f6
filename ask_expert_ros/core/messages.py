"""Transport-free forms of what the nodes exchange.

The adapters convert ROS/DDS messages to and from these dataclasses; the node
logic (:mod:`edge_logic`, :mod:`expert_logic`) only ever sees these.
Field meanings are those of ``msg/ExpertRequest.msg`` and ``msg/ExpertResponse.msg``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import numpy as np

from ask_expert_ros.core.engine import ResultSource
from ask_expert_ros.core.taxonomy import ExpertKey


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
    RAW = 0
    COMPRESSED = 1


@dataclass(frozen=True)
class ImageData:
    """A frame as it travels: ``sensor_msgs/Image`` (RAW) or ``CompressedImage`` fields."""

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


class Status(enum.IntEnum):
    """``ExpertResponse.status``."""

    OK = 0
    UNKNOWN_KEY = 1
    BAD_FRAME = 2
    MODEL_ERROR = 3
    EXPIRED = 4
    BAD_REQUEST = 5


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


@dataclass(frozen=True)
class ExpertReply:
    """``ExpertResponse``: the expert's label for one request, or why there is none."""

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
