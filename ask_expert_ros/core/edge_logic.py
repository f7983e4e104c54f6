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

from ask_expert_ros.core.engine import (
    EdgeOutput,
    EdgeStage,
    FrameBatch,
    ResultSource,
    choose_patches,
    preprocessor,
)
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
    PatchLayout,
    Stamp,
    Status,
)
from ask_expert_ros.core.models import ModelConfig
from ask_expert_ros.core.patches import PatchSelection, encode_patches, model_grid
from ask_expert_ros.core.routing import RoutingConfig
from ask_expert_ros.core.taxonomy import ExpertKey

logger = logging.getLogger(__name__)

Transport = Literal['raw', 'compressed']
OffloadMode = Literal['frame', 'patches']


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
        offload_mode: ``frame`` sends the whole frame, ``patches`` only the patches
            ``patches`` selects (as a mosaic); either way at the expert's input size.
        patches: The patch selection of ``patches`` mode (rho or m, method, source).
    """

    edge_id: str
    routing: RoutingConfig = field(default_factory=RoutingConfig)
    deadline_ms: float = 250.0
    offload: bool = True
    transport: Transport = 'raw'
    jpeg_quality: int = 90
    offload_mode: OffloadMode = 'frame'
    patches: PatchSelection = field(default_factory=PatchSelection)

    def __post_init__(self) -> None:
        if self.offload_mode not in ('frame', 'patches'):
            raise ValueError(
                f"offload_mode must be 'frame' or 'patches', got {self.offload_mode!r}"
            )
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
    sent_patches: tuple[int, ...] = ()
    patch_grid: tuple[int, int] = (0, 0)
    offload_bytes: int = 0


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
        expert_input: The experts' model config (``ExpertLibrary.input_config``): frames
            travel at its input size, patches on its grid. None: the edge model's own.
        monotonic_ns: Clock for deadlines (injectable for tests).
        wall_ns: Clock for the deadline stamp sent to the expert.
    """

    def __init__(
        self,
        stage: EdgeStage,
        params: EdgeParams,
        monotonic_ns: Callable[[], int] = time.monotonic_ns,
        wall_ns: Callable[[], int] = time.time_ns,
        expert_input: ModelConfig | None = None,
    ) -> None:
        self.stage = stage
        self.expert_input = expert_input if expert_input is not None else stage.model.config
        self._resize = preprocessor(self.expert_input)
        self._generator = np.random.default_rng(params.patches.seed)
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
        # patch mode always scores (next to nothing), so switching to attention selection
        # at run time never changes what the backend runs
        patches = params.offload_mode == 'patches'
        self.stage.attention = params.patches.source if patches else None

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
        chosen = self._chosen_patches(output, params)
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
                    image, layout = self._image_for(frame, params, chosen.get(i))
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
                    frame.header,
                    label,
                    score,
                    confidence,
                    key,
                    deadline_ns,
                    edge_ms,
                    layout.indices if layout is not None else (),
                    layout.grid if layout is not None else (0, 0),
                    len(image.data),
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
                        patches=layout,
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
            sent_patches=pending.sent_patches,
            patch_grid=pending.patch_grid,
            offload_bytes=pending.offload_bytes,
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
            sent_patches=pending.sent_patches,
            patch_grid=pending.patch_grid,
            offload_bytes=pending.offload_bytes,
        )

    def _chosen_patches(self, output: EdgeOutput, params: EdgeParams) -> dict[int, np.ndarray]:
        """Batch row -> the patches to send, for every frame that will be offloaded (one
        vectorised selection for the batch; none in frame mode)."""
        if params.offload_mode != 'patches' or not params.offload:
            return {}
        decisions = output.routing
        rows = np.flatnonzero(decisions.offload & decisions.valid).tolist()
        if not rows:
            return {}
        chosen = choose_patches(output, rows, params.patches, self.expert_input, self._generator)
        return dict(zip(rows, chosen, strict=True))

    def _image_for(
        self, frame: Frame, params: EdgeParams, patches: np.ndarray | None
    ) -> tuple[ImageData, PatchLayout | None]:
        """What travels for ``frame``: at the expert's input size, whole or as the mosaic
        of ``patches``, raw or JPEG."""
        compressed = params.transport == 'compressed'
        pixels = self._resize.resize_uint8(frame.pixels)
        if patches is not None:
            config = self.expert_input
            rows, cols = model_grid(config)
            layout = PatchLayout(config.patch_size, rows, cols, tuple(int(i) for i in patches))
            mosaic = encode_patches(pixels, patches, config.patch_size)
            if compressed:
                fmt, data = encode_compressed(mosaic, 'jpeg', params.jpeg_quality)
                return ImageData(FrameFormat.PATCHES_COMPRESSED, data, encoding=fmt), layout
            height, width, encoding, step, raw = encode_image(mosaic)
            image = ImageData(FrameFormat.PATCHES_RAW, raw, height, width, encoding, step)
            return image, layout
        wanted = FrameFormat.COMPRESSED if compressed else FrameFormat.RAW
        if pixels is frame.pixels and frame.source is not None and frame.source.format == wanted:
            return frame.source, None  # already the expert's size: the camera's bytes as they are
        if wanted == FrameFormat.COMPRESSED:
            fmt, data = encode_compressed(pixels, 'jpeg', params.jpeg_quality)
            return ImageData(FrameFormat.COMPRESSED, data, encoding=fmt), None
        height, width, encoding, step, raw = encode_image(pixels)
        return ImageData(FrameFormat.RAW, raw, height, width, encoding, step), None


def _invalid(header: Header, reason: str, edge_ms: float = 0.0) -> FinalResult:
    """A result with no hypothesis: the frame or the model's output was unusable."""
    return FinalResult(header, -1, '', 0.0, ResultSource.INVALID, reason=reason, edge_ms=edge_ms)
