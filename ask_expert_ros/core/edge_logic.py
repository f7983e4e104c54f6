"""What the edge node does, written once for every transport.

Frames in -> confident results out now, uncertain frames out as requests; replies
in -> refined results; deadlines -> fallbacks. The adapter only converts messages,
publishes what comes back, and calls :meth:`EdgeLogic.expire` from a timer.

Contract: every frame handed to :meth:`process` or :meth:`reject` yields exactly one
:class:`FinalResult`, either at once or later from :meth:`on_reply`,
:meth:`expire` or :meth:`fail`. The counters add up: ``results == frames``
once nothing is pending. :meth:`process` raises for no frame and no model failure:
a frame the model cannot take is answered INVALID (``bad_input``), and so is every
frame of a batch the model failed on (``model_errors``: out of memory, device lost).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Literal

import numpy as np

from ask_expert_ros.core.engine import EdgeStage, FrameBatch, ResultSource
from ask_expert_ros.core.errors import UnsupportedImageError
from ask_expert_ros.core.image_codec import encode_compressed, encode_image
from ask_expert_ros.core.messages import (
    ExpertReply,
    FinalResult,
    Frame,
    FrameFormat,
    Header,
    ImageData,
    OffloadRequest,
    Stamp,
    Status,
)
from ask_expert_ros.core.routing import RoutingConfig
from ask_expert_ros.core.taxonomy import ExpertKey

logger = logging.getLogger(__name__)

Transport = Literal['raw', 'compressed']


@dataclass(frozen=True)
class EdgeParams:
    """Edge node settings (ROS parameters of the same names).

    Attributes:
        edge_id: Unique among the edges sharing an expert node.
        routing: tau, k and the confidence method.
        deadline_ms: How long to wait for the expert before the edge Top-1 stands.
        offload: False keeps every frame on the edge (expert maintenance, no link).
        transport: How frames travel to the expert: raw Image or JPEG CompressedImage.
        jpeg_quality: JPEG quality when ``transport == 'compressed'``.
    """

    edge_id: str
    routing: RoutingConfig = field(default_factory=RoutingConfig)
    deadline_ms: float = 250.0
    offload: bool = True
    transport: Transport = 'raw'
    jpeg_quality: int = 90

    def __post_init__(self) -> None:
        if not self.edge_id:
            raise ValueError('edge_id must be a non-empty string')
        if not self.deadline_ms > 0:
            raise ValueError(f'deadline_ms must be > 0, got {self.deadline_ms}')
        if self.transport not in ('raw', 'compressed'):
            raise ValueError(f"transport must be 'raw' or 'compressed', got {self.transport!r}")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f'jpeg_quality must be in 1..100, got {self.jpeg_quality}')


@dataclass
class EdgeCounters:
    """How every frame was resolved. ``results == frames`` when nothing is pending."""

    frames: int = 0  # frames received (decoded or not)
    bad_input: int = 0  # undecodable frames, answered INVALID
    invalid_logits: int = 0  # non-finite edge output, answered INVALID
    model_errors: int = 0  # the edge model raised (out of memory, device lost), answered INVALID
    accepted: int = 0  # confident: answered by the edge
    offloaded: int = 0  # sent to the expert
    expert: int = 0  # answered by the expert
    fallback_deadline: int = 0  # expert too slow: edge Top-1
    fallback_error: int = 0  # expert answered with an error status: edge Top-1
    fallback_unavailable: int = 0  # no expert node / send failed: edge Top-1
    late_replies: int = 0  # replies after the fallback was published (dropped)
    foreign_replies: int = 0  # replies for another edge (dropped)

    @property
    def results(self) -> int:
        return (
            self.bad_input
            + self.invalid_logits
            + self.model_errors
            + self.accepted
            + self.expert
            + self.fallback_deadline
            + self.fallback_error
            + self.fallback_unavailable
        )

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)} | {'results': self.results}


@dataclass(frozen=True)
class _Pending:
    header: Header
    prediction: int
    score: float
    confidence: float
    key: ExpertKey
    deadline_ns: int  # on the monotonic clock
    edge_ms: float


@dataclass(frozen=True)
class EdgeStep:
    """Output of :meth:`EdgeLogic.process`: results to publish now, requests to send."""

    results: list[FinalResult]
    requests: list[OffloadRequest]


class EdgeLogic:
    """Gate, routing, pending requests and deadline fallback of one edge.

    Thread-safe: frames, replies and the deadline timer may arrive on different threads.

    Args:
        stage: The edge model and router.
        params: Node settings; replace them at run time with :attr:`params`.
        monotonic_ns: Clock for deadlines (injectable for tests).
        wall_ns: Clock for the deadline stamp sent to the expert.
    """

    def __init__(
        self,
        stage: EdgeStage,
        params: EdgeParams,
        monotonic_ns: Callable[[], int] = time.monotonic_ns,
        wall_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self.stage = stage
        self.counters = EdgeCounters()
        self._monotonic_ns = monotonic_ns
        self._wall_ns = wall_ns
        self._pending: dict[int, _Pending] = {}
        self._next_id = 1
        self._lock = threading.Lock()
        self._params = params
        self.params = params

    @property
    def params(self) -> EdgeParams:
        return self._params

    @params.setter
    def params(self, params: EdgeParams) -> None:
        """Swap all settings at once; frames already in flight keep their deadline."""
        self._params = params
        self.stage.routing = params.routing

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.stage.scheme.class_names

    @property
    def pending_count(self) -> int:
        with self._lock:
            return len(self._pending)

    def next_deadline_ns(self) -> int | None:
        """Monotonic time of the earliest pending deadline, for the adapter's timer."""
        with self._lock:
            return min((p.deadline_ns for p in self._pending.values()), default=None)

    def reject(self, header: Header, reason: str) -> FinalResult:
        """A frame that could not be decoded: one INVALID result, counted."""
        with self._lock:
            self.counters.frames += 1
            self.counters.bad_input += 1
        return _invalid(header, reason)

    def process(self, frames: Sequence[Frame]) -> EdgeStep:
        """Run the edge model on decoded frames (one batch) and route them."""
        if not frames:
            return EdgeStep([], [])
        params = self._params
        try:
            output = self.stage.run(FrameBatch([f.pixels for f in frames], self.stage.device))
        except UnsupportedImageError as exc:
            if len(frames) == 1:
                return EdgeStep([self.reject(frames[0].header, str(exc))], [])
            # one frame spoils the batch: run them one by one so only that one is INVALID
            steps = [self.process([frame]) for frame in frames]
            return EdgeStep(
                [r for step in steps for r in step.results],
                [r for step in steps for r in step.requests],
            )
        except RuntimeError as exc:  # torch's failures, InferenceError: answer, keep serving
            return self._model_failed(frames, exc)
        decisions = output.routing
        edge_ms = (output.preprocess_ms + output.inference_ms + output.routing_ms) / len(frames)
        names = self.class_names
        now = self._monotonic_ns()
        deadline_ns = now + int(params.deadline_ms * 1e6)
        wall_deadline = Stamp.from_ns(self._wall_ns() + int(params.deadline_ms * 1e6))
        results: list[FinalResult] = []
        requests: list[OffloadRequest] = []
        with self._lock:
            self.counters.frames += len(frames)
            for i, frame in enumerate(frames):
                label = int(decisions.prediction[i])
                score = float(decisions.topk_scores[i, 0])
                confidence = float(decisions.confidence[i])
                if not decisions.valid[i]:
                    self.counters.invalid_logits += 1
                    results.append(
                        _invalid(frame.header, 'edge model output is not finite', edge_ms)
                    )
                    continue
                if not (params.offload and decisions.offload[i]):
                    self.counters.accepted += 1
                    results.append(
                        FinalResult(
                            frame.header,
                            label,
                            names[label],
                            score,
                            ResultSource.EDGE,
                            edge_confidence=confidence,
                            edge_ms=edge_ms,
                        )
                    )
                    continue
                key = decisions.key(i) or ()
                request_id = self._next_id
                self._next_id += 1
                try:
                    image = self._image_for(frame, params)
                except UnsupportedImageError as exc:
                    self.counters.fallback_error += 1
                    results.append(
                        self._fallback_result(
                            _Pending(
                                frame.header, label, score, confidence, key, deadline_ns, edge_ms
                            ),
                            f'cannot encode frame for the expert: {exc}',
                        )
                    )
                    continue
                self.counters.offloaded += 1
                self._pending[request_id] = _Pending(
                    frame.header, label, score, confidence, key, deadline_ns, edge_ms
                )
                requests.append(
                    OffloadRequest(
                        header=frame.header,
                        edge_id=params.edge_id,
                        request_id=request_id,
                        image=image,
                        topk_classes=tuple(int(c) for c in decisions.topk_classes[i]),
                        topk_scores=tuple(float(s) for s in decisions.topk_scores[i]),
                        expert_key=key,
                        partition=self.stage.scheme.name,
                        confidence=confidence,
                        confidence_method=params.routing.confidence,
                        deadline=wall_deadline,
                        edge_preprocess_ms=output.preprocess_ms / len(frames),
                        edge_inference_ms=output.inference_ms / len(frames),
                    )
                )
        return EdgeStep(results, requests)

    def _model_failed(self, frames: Sequence[Frame], exc: RuntimeError) -> EdgeStep:
        """The model raised on this batch: every frame answered INVALID, counted."""
        logger.error('edge model failed on a batch of %d frames: %s', len(frames), exc)
        with self._lock:
            self.counters.frames += len(frames)
            self.counters.model_errors += len(frames)
        return EdgeStep([_invalid(f.header, f'edge model failed: {exc}') for f in frames], [])

    def on_reply(self, reply: ExpertReply) -> FinalResult | None:
        """An expert reply: the refined result, a fallback on error, or None if not ours."""
        with self._lock:
            if reply.edge_id != self._params.edge_id:
                self.counters.foreign_replies += 1
                return None
            pending = self._pending.pop(reply.request_id, None)
            if pending is None:
                self.counters.late_replies += 1
                return None
            if reply.status != Status.OK or not 0 <= reply.label < len(self.class_names):
                self.counters.fallback_error += 1
                reason = f'expert {Status(reply.status).name}: {reply.error}'.rstrip(': ')
                if reply.status == Status.OK:
                    reason = f'expert answered unknown label {reply.label}'
                return replace(
                    self._fallback_result(pending, reason),
                    queue_ms=reply.queue_ms,
                    expert_ms=reply.inference_ms,
                )
            self.counters.expert += 1
        return FinalResult(
            pending.header,
            reply.label,
            self.class_names[reply.label],
            reply.score,
            ResultSource.EXPERT,
            edge_confidence=pending.confidence,
            expert_key=pending.key,
            edge_ms=pending.edge_ms,
            expert_ms=reply.inference_ms,
            queue_ms=reply.queue_ms,
        )

    def expire(self) -> list[FinalResult]:
        """Fallback results for every request whose deadline has passed."""
        now = self._monotonic_ns()
        with self._lock:
            due = [rid for rid, p in self._pending.items() if p.deadline_ns <= now]
            out = []
            for rid in due:
                self.counters.fallback_deadline += 1
                out.append(self._fallback_result(self._pending.pop(rid), 'expert deadline passed'))
        return out

    def fail(self, request_id: int, reason: str) -> FinalResult | None:
        """The request could not be sent (no expert node, write error): fall back now."""
        with self._lock:
            pending = self._pending.pop(request_id, None)
            if pending is None:
                return None
            self.counters.fallback_unavailable += 1
            return self._fallback_result(pending, reason)

    def _fallback_result(self, pending: _Pending, reason: str) -> FinalResult:
        return FinalResult(
            pending.header,
            pending.prediction,
            self.class_names[pending.prediction],
            pending.score,
            ResultSource.FALLBACK,
            reason=reason,
            edge_confidence=pending.confidence,
            expert_key=pending.key,
            edge_ms=pending.edge_ms,
        )

    @staticmethod
    def _image_for(frame: Frame, params: EdgeParams) -> ImageData:
        wanted = FrameFormat.COMPRESSED if params.transport == 'compressed' else FrameFormat.RAW
        if frame.source is not None and frame.source.format == wanted:
            return frame.source  # forward the camera's bytes untouched
        if wanted == FrameFormat.COMPRESSED:
            fmt, data = encode_compressed(frame.pixels, 'jpeg', params.jpeg_quality)
            return ImageData(FrameFormat.COMPRESSED, data, encoding=fmt)
        height, width, encoding, step, raw = encode_image(np.ascontiguousarray(frame.pixels))
        return ImageData(FrameFormat.RAW, raw, height, width, encoding, step)


def _invalid(header: Header, reason: str, edge_ms: float = 0.0) -> FinalResult:
    """A result with no hypothesis: the frame or the model's output was unusable."""
    return FinalResult(header, -1, '', 0.0, ResultSource.INVALID, reason=reason, edge_ms=edge_ms)
