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

The edge adapts to its link (:mod:`~ask_expert_ros.core.nodes.expert_health`): after
``down_after_misses`` misses in a row (deadline passed, send failed) the expert is
*down*; the frames still waiting for it and every uncertain frame after are answered
by the edge at once (``fallback_down``, no deadline wait), one frame per
``probe_interval_ms`` goes out as a probe (``probes``), and the first probe answered in
time resumes offloading. With ``offload_budget_mbps`` > 0 tau moves online to keep the
offload traffic under the budget (:mod:`~ask_expert_ros.core.nodes.tau_control`).
:meth:`EdgeLogic.link_status` says what tau the edge runs at, why, and the expert's
health, for the diagnostics. A reply that comes after the frame's result went out is
dropped (``late_replies``); one whose header is not its request's is ignored
(``foreign_replies``), and request ids start at the wall clock in microseconds, so
a restarted edge never takes its previous run's answers for its new frames.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Literal

import numpy as np

from ask_expert_ros.core.errors import UnsupportedImageError
from ask_expert_ros.core.inference.engine import (
    EdgeOutput,
    EdgeStage,
    FrameBatch,
    ResultSource,
    choose_patches,
    preprocessor,
)
from ask_expert_ros.core.inference.image_codec import encode_compressed, encode_image
from ask_expert_ros.core.inference.models import ModelConfig
from ask_expert_ros.core.inference.patches import PatchSelection, encode_patches, model_grid
from ask_expert_ros.core.inference.routing import RoutingConfig
from ask_expert_ros.core.inference.taxonomy import ExpertKey
from ask_expert_ros.core.nodes.expert_health import ExpertHealth
from ask_expert_ros.core.nodes.messages import (
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
from ask_expert_ros.core.nodes.tau_control import BudgetController
from ask_expert_ros.core.planning.planner import REQUEST_OVERHEAD_BYTES, Payload

logger = logging.getLogger(__name__)

# requests that fell back, remembered so a late answer still gives a round-trip time
_RECENT_FALLBACKS = 1024

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
        down_after_misses: Misses in a row (deadline passed, send failed) after which
            the expert is down; 0: never (every frame waits out its deadline).
        probe_interval_ms: While the expert is down, one uncertain frame per this long
            goes to it as a probe.
        offload_budget_mbps: Offload traffic budget, Mbit/s of request payload; > 0
            moves tau online to stay under it (``routing.tau`` is where it starts);
            0: tau stays as set.
        max_batch: Most frames per edge model call; more frames handed over at once
            run in chunks of this size. It bounds the batch shapes the backend ever
            sees, and :meth:`EdgeLogic.warm_up` runs each of them at start.
    """

    edge_id: str
    routing: RoutingConfig = field(default_factory=RoutingConfig)
    deadline_ms: float = 250.0
    offload: bool = True
    transport: Transport = 'raw'
    jpeg_quality: int = 90
    offload_mode: OffloadMode = 'frame'
    patches: PatchSelection = field(default_factory=PatchSelection)
    down_after_misses: int = 3
    probe_interval_ms: float = 500.0
    offload_budget_mbps: float = 0.0
    max_batch: int = 16

    def __post_init__(self) -> None:
        if self.max_batch < 1:
            raise ValueError(f'max_batch must be >= 1, got {self.max_batch}')
        if self.down_after_misses < 0:
            raise ValueError(f'down_after_misses must be >= 0, got {self.down_after_misses}')
        if not self.probe_interval_ms > 0:
            raise ValueError(f'probe_interval_ms must be > 0, got {self.probe_interval_ms}')
        if not (math.isfinite(self.offload_budget_mbps) and self.offload_budget_mbps >= 0):
            raise ValueError(
                f'offload_budget_mbps must be >= 0 (0: no budget), got {self.offload_budget_mbps}'
            )
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
    fallback_shed: int = 0  # the expert shed the request (OVERLOADED): edge Top-1
    fallback_down: int = 0  # the expert is down: edge Top-1 at once, no deadline wait
    probes: int = 0  # requests sent while the expert was down, to see if it is back
    late_replies: int = 0  # replies after the fallback was published (dropped)
    foreign_replies: int = 0  # replies for another edge or another run (dropped)
    offload_bytes: int = 0  # requests sent: pixels plus the rest (planner estimate), bytes

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
            + self.fallback_shed
            + self.fallback_down
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
    sent_ns: int = 0  # on the monotonic clock


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
        self._recent: OrderedDict[int, _Pending] = OrderedDict()  # fell back, bounded
        # ids above any a previous run of this edge used (< 1e6 requests/s)
        self._next_id = max(1, wall_ns() // 1000)
        self._lock = threading.Lock()
        now = monotonic_ns()
        self._health = ExpertHealth(
            params.down_after_misses, int(params.probe_interval_ms * 1e6), now
        )
        low, high = params.routing.threshold_range
        self._budget = BudgetController(params.offload_budget_mbps, low, high, now)
        self._flush_pending = False  # the expert went down: answer what waits for it
        self._recovered_ns = now
        self._params = params
        self.params = params

    @property
    def params(self) -> EdgeParams:
        return self._params

    @params.setter
    def params(self, params: EdgeParams) -> None:
        """Swap all settings at once; frames already in flight keep their deadline."""
        with self._lock:
            self._params = params
            self._health.down_after = params.down_after_misses
            self._health.probe_interval_ns = int(params.probe_interval_ms * 1e6)
            self._budget.configure(params.offload_budget_mbps, *params.routing.threshold_range)
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

    @property
    def expert_down(self) -> bool:
        """Whether the edge currently treats its expert as unreachable."""
        with self._lock:
            return self._health.down

    @property
    def active_routing(self) -> RoutingConfig:
        """The routing the edge runs at now (tau moved by the budget controller)."""
        return self.stage.routing

    def next_deadline_ns(self) -> int | None:
        """Monotonic time of the earliest pending deadline, for the adapter's timer (now,
        when frames wait for an expert just found down: :meth:`expire` answers them)."""
        with self._lock:
            if self._flush_pending and self._pending:
                return self._monotonic_ns()
            return min((p.deadline_ns for p in self._pending.values()), default=None)

    def link_status(self) -> dict[str, int | float | str]:
        """For the diagnostics: the tau the edge runs at and why, the offload traffic
        against the budget, and the expert's health (state, answer rate, round trip,
        outages and recovery times)."""
        now = self._monotonic_ns()
        with self._lock:
            decision = self._budget.decision
            if self._health.down:
                reason = 'expert down: probing'
            elif not self._params.offload:
                reason = 'offload off'
            elif decision.threshold is None:
                reason = 'configured' if not self._params.offload_budget_mbps else decision.reason
            else:
                reason = decision.reason
            out: dict[str, int | float | str] = {
                'tau': self.stage.routing.tau,
                'tau_configured': self._params.routing.tau,
                'tau_reason': reason,
            }
            out |= self._budget.status(now)
            out |= self._health.status(now)
        return out

    def _default_request_bytes(self, params: EdgeParams) -> float:
        """The planner's bytes per request, until the edge has sent one."""
        config = self.expert_input
        keep = params.patches.keep_ratio if params.offload_mode == 'patches' else None
        return Payload(
            mode=params.offload_mode,
            keep_ratio=keep if keep is not None else 1.0,
            img_size=config.img_size,
            patch_size=config.patch_size,
            channels=config.in_chans,
        ).bytes_per_offload

    def _steer(self, now: int, params: EdgeParams) -> None:
        """Under the lock, before a batch runs: the budget controller's tau, if it acts."""
        hold = self._health.down or now - self._recovered_ns < self._budget.window_ns
        decision = self._budget.update(now, self._default_request_bytes(params), hold=hold)
        routing = params.routing
        if decision.threshold is not None:
            routing = routing.with_threshold(decision.threshold)
        if routing != self.stage.routing:
            self.stage.routing = routing

    def reject(self, header: Header, reason: str) -> FinalResult:
        """A frame that could not be decoded: one INVALID result, counted."""
        with self._lock:
            self.counters.frames += 1
            self.counters.bad_input += 1
        return _invalid(header, reason)

    def warm_up(self) -> None:
        """Run the model once at every batch size :meth:`process` can give it (1 to
        ``max_batch``), on blank frames, counting nothing.

        Backends build per-shape state on a shape's first call and keep it: on CPU,
        about 2.9 MB per batch size for the digits edge model (DeiT-3H, bf16), half of
        it oneDNN's kernel cache. Unbounded, it made an edge's RSS grow by 60-70 MB over
        a 30-minute soak as new backlog sizes came. Built here, it is all there before
        the first frame.
        """
        config = self.stage.model.config
        shape = (config.img_size, config.img_size) + ((3,) if config.in_chans == 3 else ())
        for size in range(1, self._params.max_batch + 1):
            self.stage.run(FrameBatch(np.zeros((size, *shape), np.uint8), self.stage.device))

    def process(self, frames: Sequence[Frame]) -> EdgeStep:
        """Run the edge model on decoded frames and route them, in batches of at most
        ``max_batch`` frames (a backlog handed over at once runs in several calls)."""
        if not frames:
            return EdgeStep([], [])
        params = self._params
        if len(frames) > params.max_batch:
            size = params.max_batch
            return _merged(
                [self.process(frames[i : i + size]) for i in range(0, len(frames), size)]
            )
        with self._lock:
            self._steer(self._monotonic_ns(), params)
        try:
            output = self.stage.run(FrameBatch([f.pixels for f in frames], self.stage.device))
        except UnsupportedImageError as exc:
            if len(frames) == 1:
                return EdgeStep([self.reject(frames[0].header, str(exc))], [])
            # one frame spoils the batch: run them one by one so only that one is INVALID
            return _merged([self.process([frame]) for frame in frames])
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
            self._budget.observe_frames(now, decisions.confidence[decisions.valid])
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
                probe = self._health.down
                if probe and not self._health.probe_due(now):
                    self.counters.fallback_down += 1
                    results.append(
                        self._fallback_result(
                            _Pending(
                                frame.header, label, score, confidence, key, deadline_ns, edge_ms
                            ),
                            'expert down: answered by the edge at once (probing every '
                            f'{params.probe_interval_ms:g} ms)',
                        )
                    )
                    continue
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
                self.counters.probes += probe
                sent_bytes = _request_bytes(image, layout)
                self.counters.offload_bytes += sent_bytes
                self._budget.observe_offload(now, sent_bytes)
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
                    now,
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
        now = self._monotonic_ns()
        with self._lock:
            if reply.edge_id != self._params.edge_id:
                self.counters.foreign_replies += 1
                return None
            pending = self._pending.get(reply.request_id)
            if pending is not None and pending.header != reply.header:
                self.counters.foreign_replies += 1  # not this run's request of that id
                return None
            if pending is None:
                self.counters.late_replies += 1
                old = self._recent.pop(reply.request_id, None)
                if old is None:
                    self._health.on_late(now)
                elif old.header == reply.header:
                    self._health.on_late(now, now - old.sent_ns, old.offload_bytes)
                return None
            del self._pending[reply.request_id]
            if self._health.on_answer(now, now - pending.sent_ns, pending.offload_bytes):
                self._recovered_ns = now
                self._flush_pending = False
                record = self._health.record
                logger.info(
                    'expert answers again: offloading resumed after an outage of %.0f ms '
                    '(%.0f ms after its first reply)',
                    record.last_outage_ms,
                    record.last_recovery_ms,
                )
            if reply.status == Status.OVERLOADED:
                self.counters.fallback_shed += 1
                reason = f'expert OVERLOADED: {reply.error}'.rstrip(': ')
                return replace(self._fallback_result(pending, reason), queue_ms=reply.queue_ms)
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
        """Fallback results for every request whose deadline has passed, and, once the
        expert is found down, for every request still waiting for it."""
        now = self._monotonic_ns()
        with self._lock:
            due = [rid for rid, p in self._pending.items() if p.deadline_ns <= now]
            out = []
            for rid in due:
                self.counters.fallback_deadline += 1
                out.append(self._fallback_result(self._retire(rid), 'expert deadline passed'))
                self._flush_pending |= self._miss(now)
            if self._flush_pending:
                self._flush_pending = False
                for rid in list(self._pending):
                    self.counters.fallback_down += 1
                    out.append(
                        self._fallback_result(
                            self._retire(rid), 'expert down: answered by the edge at once'
                        )
                    )
        return out

    def abandon(self, reason: str) -> list[FinalResult]:
        """The fallback of every request still waiting, now (a node that stops and cannot
        wait any longer): each frame still gets its one result."""
        with self._lock:
            out = []
            for rid in list(self._pending):
                self.counters.fallback_unavailable += 1
                out.append(self._fallback_result(self._retire(rid), reason))
        return out

    def fail(self, request_id: int, reason: str) -> FinalResult | None:
        """The request could not be sent (no expert node, write error): fall back now."""
        with self._lock:
            if request_id not in self._pending:
                return None
            pending = self._retire(request_id)
            self.counters.fallback_unavailable += 1
            self._flush_pending |= self._miss(self._monotonic_ns())
            return self._fallback_result(pending, reason)

    def _retire(self, request_id: int) -> _Pending:
        """Under the lock: a pending request whose result the edge publishes itself,
        remembered (bounded) so a late answer still tells the round-trip time."""
        pending = self._pending.pop(request_id)
        self._recent[request_id] = pending
        if len(self._recent) > _RECENT_FALLBACKS:
            self._recent.popitem(last=False)
        return pending

    def _miss(self, now: int) -> bool:
        """Under the lock: count a miss; True when it makes the expert down."""
        if not self._health.on_miss(now):
            return False
        logger.warning(
            'expert down after %d misses in a row: uncertain frames answered by the edge '
            'at once, probing every %g ms',
            self._params.down_after_misses,
            self._params.probe_interval_ms,
        )
        return True

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
        wanted = FrameFormat.COMPRESSED if compressed else FrameFormat.RAW
        if (
            patches is None
            and pixels is frame.pixels
            and frame.source is not None
            and frame.source.format == wanted
        ):
            return frame.source, None  # already the expert's size: the camera's bytes as they are
        return offload_image(pixels, patches, self.expert_input, compressed, params.jpeg_quality)


def offload_image(
    pixels: np.ndarray,
    patches: np.ndarray | None,
    expert_input: ModelConfig,
    compressed: bool,
    jpeg_quality: int,
) -> tuple[ImageData, PatchLayout | None]:
    """The pixels of a request, for a frame already at the expert's input size: the whole
    frame, or the mosaic of ``patches`` (ascending grid indices) with its layout; raw, or
    JPEG at ``jpeg_quality``."""
    if patches is None:
        if compressed:
            fmt, data = encode_compressed(pixels, 'jpeg', jpeg_quality)
            return ImageData(FrameFormat.COMPRESSED, data, encoding=fmt), None
        height, width, encoding, step, raw = encode_image(pixels)
        return ImageData(FrameFormat.RAW, raw, height, width, encoding, step), None
    rows, cols = model_grid(expert_input)
    size = expert_input.patch_size
    layout = PatchLayout(size, rows, cols, tuple(int(i) for i in patches))
    mosaic = encode_patches(pixels, patches, size)
    if compressed:
        fmt, data = encode_compressed(mosaic, 'jpeg', jpeg_quality)
        return ImageData(FrameFormat.PATCHES_COMPRESSED, data, encoding=fmt), layout
    height, width, encoding, step, raw = encode_image(mosaic)
    return ImageData(FrameFormat.PATCHES_RAW, raw, height, width, encoding, step), layout


def _merged(steps: Sequence[EdgeStep]) -> EdgeStep:
    """One step of several, results and requests in frame order."""
    return EdgeStep(
        [r for step in steps for r in step.results],
        [r for step in steps for r in step.requests],
    )


def _request_bytes(image: ImageData, layout: PatchLayout | None) -> int:
    """What a request puts on the link: its pixels, patch indices and the rest (the
    planner's estimate of the CDR besides the pixels)."""
    indices = 2 * len(layout.indices) if layout is not None else 0
    return len(image.data) + indices + int(REQUEST_OVERHEAD_BYTES)


def _invalid(header: Header, reason: str, edge_ms: float = 0.0) -> FinalResult:
    """A result with no hypothesis: the frame or the model's output was unusable."""
    return FinalResult(header, -1, '', 0.0, ResultSource.INVALID, reason=reason, edge_ms=edge_ms)
