"""What the expert node does, written once for every transport.

Requests in -> validated and decoded at once (bad ones answered with an error
status) -> one FIFO queue per (edge, expert key) -> micro-batches of one key, run when
the key has ``max_batch`` requests waiting or its oldest has waited ``max_wait_ms`` ->
one reply per request. Every request gets exactly one reply; order within an edge's
key is kept.

Fair to the edges sharing the node (fair queueing, every request costing the same):
each edge with requests waiting counts the requests it has been served, starting, when
it begins waiting, at the lowest count of those already waiting (no credit saved up
while idle). The next batch is led by the least-served edge with a due request (ties:
the one with fewer waiting, then the older request), whose oldest due request names
the key, and is filled one request at a time from the least-served edge with requests
of that key. So an edge sending within its share is served as it sends, whatever the
others do, and capacity the others leave goes to whoever has work. Queues are bounded:
an edge with ``max_queue_per_edge`` requests waiting has its next one shed; when
``max_queued`` wait in all, the newest request of the edge with the most waiting is
shed to make room (or the arriving one, if its edge has the most). Shed requests are
answered OVERLOADED at once, so their edge falls back without waiting out a deadline:
one edge flooding at 10x its share fills its own queue, not the node. A request of an
edge whose queue is full is shed on arrival, before it is decoded, so a flood costs the
node next to nothing beyond its share. That still lets a flood the node *can* absorb
raise its load, and so everyone's wait (a running batch is not preempted); a rate quota
per edge (``max_rate_per_edge``, a token bucket holding one second of requests) sheds
what an edge sends above it on arrival, whatever the node's load. Nothing here
grows with the number of edges or frames seen: queues are dropped when they empty,
and the per-edge figures (:meth:`ExpertLogic.edge_stats`) keep the
:data:`MAX_TRACKED_EDGES` most recently seen edges.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, fields, replace

import numpy as np

from ask_expert_ros.core.errors import AskExpertError, UnsupportedImageError, format_key
from ask_expert_ros.core.inference.engine import ExpertOutput, ExpertStage, FrameBatch, RaggedMode
from ask_expert_ros.core.inference.image_codec import decode_compressed, decode_image
from ask_expert_ros.core.inference.patches import (
    PatchRequestError,
    check_layout,
    model_grid,
    unpack_mosaic,
)
from ask_expert_ros.core.inference.taxonomy import ExpertKey, PartitionScheme
from ask_expert_ros.core.nodes.messages import (
    ExpertReply,
    FrameFormat,
    Header,
    ImageData,
    OffloadRequest,
    Status,
)

logger = logging.getLogger(__name__)

MAX_TRACKED_EDGES = 64
# an expert output error starting so: the request's deadline passed where it waited to run
EXPIRED_PREFIX = 'deadline passed'


@dataclass(frozen=True)
class ExpertParams:
    """Expert node settings (ROS parameters of the same names).

    Attributes:
        max_batch: Largest micro-batch per expert call.
        max_wait_ms: Longest a request waits for its batch to fill.
        honor_deadline: Skip (answer EXPIRED) requests whose deadline has passed by this
            node's wall clock. Needs the boards' clocks in sync (chrony/PTP).
        restrict_to_key: Argmax only over the classes of the key's subsets.
        ragged: How patch requests with different patch counts share a micro-batch:
            ``pad`` (one call, attention mask) or ``group`` (one call per count).
        max_queue_per_edge: Requests of one edge that may wait; more are shed.
        max_queued: Requests that may wait in all; more shed the newest request of the
            edge with the most waiting.
        max_rate_per_edge: Requests per second one edge may send (a token bucket of one
            second's worth, at least 1); more are shed on arrival. 0: no quota.
    """

    max_batch: int = 8
    max_wait_ms: float = 5.0
    honor_deadline: bool = True
    restrict_to_key: bool = False
    ragged: RaggedMode = 'pad'
    max_queue_per_edge: int = 64
    max_queued: int = 512
    max_rate_per_edge: float = 0.0

    def __post_init__(self) -> None:
        if not self.max_rate_per_edge >= 0:
            raise ValueError(f'max_rate_per_edge must be >= 0, got {self.max_rate_per_edge}')
        if self.max_queue_per_edge < 1:
            raise ValueError(f'max_queue_per_edge must be >= 1, got {self.max_queue_per_edge}')
        if self.max_queued < 1:
            raise ValueError(f'max_queued must be >= 1, got {self.max_queued}')
        if self.max_batch < 1:
            raise ValueError(f'max_batch must be >= 1, got {self.max_batch}')
        if self.max_wait_ms < 0:
            raise ValueError(f'max_wait_ms must be >= 0, got {self.max_wait_ms}')
        if self.ragged not in ('pad', 'group'):
            raise ValueError(f"ragged must be 'pad' or 'group', got {self.ragged!r}")


@dataclass
class ExpertCounters:
    requests: int = 0
    answered: int = 0  # replies with STATUS_OK
    batches: int = 0
    bad_request: int = 0
    unknown_key: int = 0
    bad_frame: int = 0
    expired: int = 0
    model_errors: int = 0
    shed: int = 0  # answered OVERLOADED: the edge's share or the node's queues were full

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class _Queued:
    request: OffloadRequest
    pixels: np.ndarray  # the frame, or for a patch request its patches [n, p, p(, C)]
    arrived_ns: int
    indices: np.ndarray | None = None  # grid indices of a patch request
    seq: int = 0  # arrival order at this node


@dataclass
class EdgeStats:
    """What one edge got from this node (``edge_stats``)."""

    requests: int = 0  # reached the queues (valid)
    served: int = 0  # taken into a batch
    shed: int = 0  # answered OVERLOADED
    tokens: float = float('nan')  # the rate quota's bucket (NaN: full, never drawn)
    refilled_ns: int = 0


def decode_request_image(image: ImageData) -> np.ndarray:
    """The frame (or patch mosaic) of a request as ``uint8`` pixels."""
    if image.format in (FrameFormat.COMPRESSED, FrameFormat.PATCHES_COMPRESSED):
        return decode_compressed(image.encoding, image.data)
    if image.format in (FrameFormat.RAW, FrameFormat.PATCHES_RAW):
        return decode_image(
            image.height, image.width, image.encoding, image.step, image.data, image.is_bigendian
        )
    raise UnsupportedImageError(f'unknown frame_format {image.format}')


class ExpertLogic:
    """Validation, per-key queues and micro-batching in front of an :class:`ExpertStage`.

    Thread-safe: :meth:`submit` may run on the transport's thread while a worker
    calls :meth:`poll`.
    """

    def __init__(
        self,
        stage: ExpertStage,
        params: ExpertParams | None = None,
        monotonic_ns: Callable[[], int] = time.monotonic_ns,
        wall_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self.stage = stage
        self._params = params or ExpertParams()
        self.params = self._params
        self.counters = ExpertCounters()
        self._monotonic_ns = monotonic_ns
        self._wall_ns = wall_ns
        # edge id -> key -> FIFO; an edge's entry goes when it has nothing waiting
        self._queues: dict[str, dict[ExpertKey, deque[_Queued]]] = {}
        self._served: dict[str, int] = {}  # per edge waiting: requests served (virtual time)
        self._per_edge: dict[str, int] = {}
        self._per_key: dict[ExpertKey, int] = {}
        self._total = 0
        self._seq = 0
        self._outbox: list[ExpertReply] = []  # shed to make room; out with the next poll
        self._stats: OrderedDict[str, EdgeStats] = OrderedDict()
        self._lock = threading.Lock()
        self._wakeup = threading.Condition(self._lock)
        self._arrived = False  # a request came since poll() last found nothing due

    @property
    def params(self) -> ExpertParams:
        return self._params

    @params.setter
    def params(self, params: ExpertParams) -> None:
        """Swap all settings at once (e.g. from ``ros2 param set``)."""
        self._params = params
        self.stage.restrict_to_key = params.restrict_to_key

    @property
    def scheme(self) -> PartitionScheme:
        return self.stage.library.scheme

    @property
    def queued(self) -> int:
        with self._lock:
            return self._total

    def queue_status(self) -> dict[str, int | float | str]:
        """Gauges for the diagnostics: requests waiting, edges waiting, the longest
        edge queue and the share of the recent requests shed per tracked edge."""
        with self._lock:
            out: dict[str, int | float | str] = {
                'queued': self._total,
                'edges_waiting': len(self._per_edge),
                'longest_edge_queue': max(self._per_edge.values(), default=0),
                'edges_tracked': len(self._stats),
            }
            for edge, stats in self._stats.items():
                if stats.shed:
                    out[f'shed[{edge}]'] = stats.shed
        return out

    def close(self) -> None:
        """Let go of what serves the experts (nothing to do in-process)."""

    def edge_stats(self) -> dict[str, EdgeStats]:
        """Per edge (the most recently seen :data:`MAX_TRACKED_EDGES`): requests, served, shed."""
        with self._lock:
            return {edge: replace(stats) for edge, stats in self._stats.items()}

    def _stats_of(self, edge: str) -> EdgeStats:
        """Under the lock: the edge's figures, made the most recent; the least recently
        seen edge is forgotten beyond MAX_TRACKED_EDGES."""
        stats = self._stats.pop(edge, None) or EdgeStats()
        self._stats[edge] = stats
        if len(self._stats) > MAX_TRACKED_EDGES:
            self._stats.popitem(last=False)
        return stats

    def reject(self, header: Header, edge_id: str, request_id: int, reason: str) -> ExpertReply:
        """A request the adapter could not even convert: answered BAD_REQUEST, counted."""
        with self._lock:
            self.counters.requests += 1
            self.counters.bad_request += 1
        return ExpertReply(
            header=header,
            edge_id=edge_id,
            request_id=request_id,
            status=Status.BAD_REQUEST,
            error=reason,
        )

    def submit(self, request: OffloadRequest) -> ExpertReply | None:
        """Queue a request; an immediate error reply when it cannot be served."""
        now = self._monotonic_ns()
        with self._lock:
            self.counters.requests += 1
            shed = self._shed_on_arrival(request, now)
        if shed is not None:
            return shed
        problem = self._validate(request)
        if problem is not None:
            return problem
        try:
            pixels = decode_request_image(request.image)
        except UnsupportedImageError as exc:
            with self._lock:
                self.counters.bad_frame += 1
            return _error(request, Status.BAD_FRAME, str(exc))
        indices = None
        if request.image.format in (FrameFormat.PATCHES_RAW, FrameFormat.PATCHES_COMPRESSED):
            try:
                pixels, indices = self._patches_of(request, pixels)
            except PatchRequestError as exc:
                with self._lock:
                    self.counters.bad_request += 1
                return _error(request, Status.BAD_REQUEST, str(exc))
        with self._lock:
            return self._admit(request, pixels, indices)

    def _admit(
        self, request: OffloadRequest, pixels: np.ndarray, indices: np.ndarray | None
    ) -> ExpertReply | None:
        """Under the lock: queue a valid request, or shed it or another (see the module)."""
        params = self._params
        edge = request.edge_id
        stats = self._stats_of(edge)
        stats.requests += 1
        mine = self._per_edge.get(edge, 0)
        if mine >= params.max_queue_per_edge:
            return self._shed(request, stats, f'{mine} requests of this edge already waiting')
        if self._total >= params.max_queued:
            flooder = max(self._per_edge, key=lambda e: self._per_edge[e])
            if self._per_edge[flooder] <= mine + 1:
                return self._shed(request, stats, f'expert queues full ({self._total} waiting)')
            victim = self._pop_newest(flooder)
            self._outbox.append(
                self._shed(victim.request, self._stats_of(flooder), 'shed for a fairer share')
            )
        key = tuple(request.expert_key)
        self._seq += 1
        item = _Queued(request, pixels, self._monotonic_ns(), indices, self._seq)
        if edge not in self._queues:
            self._queues[edge] = {}
            self._served[edge] = min(self._served.values(), default=0)
        self._queues[edge].setdefault(key, deque()).append(item)
        self._per_edge[edge] = mine + 1
        self._per_key[key] = self._per_key.get(key, 0) + 1
        self._total += 1
        self._arrived = True
        self._wakeup.notify_all()
        return None

    def _shed_on_arrival(self, request: OffloadRequest, now_ns: int) -> ExpertReply | None:
        """Under the lock, before the request is decoded: shed it when its edge is over
        its rate quota or already has ``max_queue_per_edge`` requests waiting."""
        params = self._params
        edge = request.edge_id
        rate = params.max_rate_per_edge
        if rate > 0:
            stats = self._stats_of(edge)
            burst = max(1.0, rate)
            tokens = burst if math.isnan(stats.tokens) else stats.tokens
            tokens = min(burst, tokens + (now_ns - stats.refilled_ns) * rate / 1e9)
            stats.refilled_ns = now_ns
            if tokens < 1.0:
                stats.tokens = tokens
                return self._shed(request, stats, f'over the quota of {rate:g} requests/s')
            stats.tokens = tokens - 1.0
        waiting = self._per_edge.get(edge, 0)
        if waiting >= params.max_queue_per_edge:
            return self._shed(
                request, self._stats_of(edge), f'{waiting} requests of this edge already waiting'
            )
        return None

    def _shed(self, request: OffloadRequest, stats: EdgeStats, why: str) -> ExpertReply:
        self.counters.shed += 1
        stats.shed += 1
        return _error(request, Status.OVERLOADED, f'shed: {why}')

    def _pop_newest(self, edge: str) -> _Queued:
        """Under the lock: take the most recent request of ``edge`` out of its queues."""
        queues = self._queues[edge]
        key = max(queues, key=lambda k: queues[k][-1].seq)
        item = queues[key].pop()
        self._taken(edge, key)
        return item

    def _taken(self, edge: str, key: ExpertKey) -> None:
        """Under the lock: one request of (edge, key) left the queues; drop what emptied."""
        self._total -= 1
        self._per_key[key] -= 1
        if not self._per_key[key]:
            del self._per_key[key]
        self._per_edge[edge] -= 1
        queues = self._queues[edge]
        if not queues[key]:
            del queues[key]
        if not queues:
            del self._queues[edge], self._per_edge[edge], self._served[edge]

    def _patches_of(
        self, request: OffloadRequest, mosaic: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """A patch request's patches ``[n, p, p(, C)]`` and indices, checked against the
        expert model of its key (patch size, grid, indices, mosaic size)."""
        layout = request.patches
        if layout is None:
            raise PatchRequestError(f'{request.image.format.name} request without a patch layout')
        try:
            config = self.stage.library.config_of(tuple(request.expert_key))
        except AskExpertError as exc:
            raise PatchRequestError(f'cannot check patches against the expert: {exc}') from exc
        indices = check_layout(
            layout.indices, layout.grid, layout.patch_size, model_grid(config), config.patch_size
        )
        return unpack_mosaic(mosaic, layout.patch_size, len(indices)), indices

    def _validate(self, request: OffloadRequest) -> ExpertReply | None:
        scheme = self.scheme
        key = tuple(request.expert_key)
        status, reason = Status.OK, ''
        if request.partition != scheme.name:
            status, reason = (
                Status.BAD_REQUEST,
                (
                    f'request uses partition {request.partition!r}, this node serves '
                    f'{scheme.name!r}'
                ),
            )
        elif len(request.topk_classes) != len(request.topk_scores):
            status, reason = Status.BAD_REQUEST, 'topk_classes and topk_scores differ in length'
        elif (
            not key
            or list(key) != sorted(set(key))
            or not all(1 <= s <= scheme.num_subsets for s in key)
        ):
            status, reason = Status.BAD_REQUEST, f'malformed expert key {list(key)}'
        elif key not in self.stage.library:
            status, reason = Status.UNKNOWN_KEY, f'no expert for key {format_key(key)}'
        if status == Status.OK:
            return None
        with self._lock:
            if status == Status.UNKNOWN_KEY:
                self.counters.unknown_key += 1
            else:
                self.counters.bad_request += 1
        return _error(request, status, reason)

    def _oldest(self) -> dict[ExpertKey, int]:
        """Under the lock: arrival of the oldest waiting request of each key."""
        oldest: dict[ExpertKey, int] = {}
        for queues in self._queues.values():
            for key, queue in queues.items():
                t = queue[0].arrived_ns
                if key not in oldest or t < oldest[key]:
                    oldest[key] = t
        return oldest

    def next_due_ns(self) -> int | None:
        """When the next batch is due (monotonic ns): now or earlier if a key has
        ``max_batch`` waiting, else when its oldest request reaches ``max_wait_ms``; now
        when shed replies wait to go out; None when nothing is queued."""
        params = self.params
        wait = int(params.max_wait_ms * 1e6)
        with self._lock:
            due = [
                t + (0 if self._per_key[key] >= params.max_batch else wait)
                for key, t in self._oldest().items()
            ]
            if self._outbox:
                due.append(self._monotonic_ns())
        return min(due) if due else None

    def wait(self, timeout_s: float) -> None:
        """Block until a request arrives or ``timeout_s`` passes (for a worker loop).

        Returns at once when a request arrived since :meth:`poll` last found nothing due,
        so a worker looping ``poll(); wait(until next_due_ns())`` never misses a wakeup
        and never spins while a partial batch waits for ``max_wait_ms``.
        """
        with self._wakeup:
            if not self._arrived:
                self._wakeup.wait(max(0.0, timeout_s))
            self._arrived = False

    def poll(self, flush: bool = False, max_batches: int | None = None) -> list[ExpertReply]:
        """Run the batches that are due (full, waited long enough, or ``flush``), the
        longest-waiting key first.

        Args:
            flush: Treat every queued request as due.
            max_batches: Run at most this many (None: all that are due). A node runs
                one at a time and publishes its replies before the next: otherwise the
                first batch's replies would wait for the whole backlog to be computed.
        """
        with self._lock:
            replies, self._outbox = self._outbox, []
        ran = 0
        while max_batches is None or ran < max_batches:
            batch = self._take_due_batch(flush)
            if batch is None:
                break
            replies.extend(self._run(*batch))
            ran += 1
        return replies

    def _take_due_batch(self, flush: bool) -> tuple[ExpertKey, list[_Queued]] | None:
        """The next batch (see the module doc): the least-served edge with a due request
        leads, its oldest due request names the key, and the least-served edge with a
        request of that key gives the next one until the batch is full."""
        params = self.params
        now = self._monotonic_ns()
        wait = int(params.max_wait_ms * 1e6)
        with self._lock:
            due = {
                key
                for key, t in self._oldest().items()
                if flush or self._per_key[key] >= params.max_batch or now - t >= wait
            }
            if not due:
                self._arrived = False
                return None
            _, leader = min(
                (self._priority(edge, [k for k in queues if k in due]), edge)
                for edge, queues in self._queues.items()
                if any(k in due for k in queues)
            )
            queues = self._queues[leader]
            key = min((q[0].seq, k) for k, q in queues.items() if k in due)[1]
            items: list[_Queued] = []
            while len(items) < params.max_batch:
                having = [e for e, queues in self._queues.items() if key in queues]
                if not having:
                    break
                _, edge = min((self._priority(e, [key]), e) for e in having)
                items.append(self._queues[edge][key].popleft())
                self._served[edge] += 1
                self._stats_of(edge).served += 1
                self._taken(edge, key)
            return key, items

    def _priority(self, edge: str, keys: list[ExpertKey]) -> tuple[int, int, int]:
        """Under the lock: who goes first (lowest): requests served, requests waiting,
        arrival of its oldest request among ``keys``."""
        queues = self._queues[edge]
        oldest = min(queues[k][0].seq for k in keys)
        return self._served[edge], self._per_edge[edge], oldest

    def _run(self, key: ExpertKey, items: list[_Queued]) -> list[ExpertReply]:
        """One expert call over ``items``; the replies come back in the items' order."""
        replies, live, slots = self._split_expired(items)
        if not live:
            return _filled(replies)
        start = self._monotonic_ns()
        output = self._call(key, live)
        for slot, reply in zip(slots, self._answer(key, live, output, start), strict=True):
            replies[slot] = reply
        return _filled(replies)

    def _split_expired(
        self, items: list[_Queued]
    ) -> tuple[list[ExpertReply | None], list[_Queued], list[int]]:
        """A reply slot per item, EXPIRED filled in for the items past their deadline;
        the live items and their slots (an expired item's reply keeps its FIFO place)."""
        replies: list[ExpertReply | None] = [None] * len(items)
        live: list[_Queued] = []
        slots: list[int] = []
        wall_now = self._wall_ns()
        for slot, item in enumerate(items):
            if self.params.honor_deadline and item.request.deadline.to_ns() < wall_now:
                with self._lock:
                    self.counters.expired += 1
                replies[slot] = _error(item.request, Status.EXPIRED, 'deadline passed in queue')
            else:
                live.append(item)
                slots.append(slot)
        return replies, live, slots

    def _answer(
        self,
        key: ExpertKey,
        live: list[_Queued],
        output: ExpertOutput,
        start_ns: int,
        load_ms: float = 0.0,
    ) -> list[ExpertReply]:
        """The reply of each of ``live`` from the expert call's ``output`` (by position),
        counted; ``start_ns`` is when the call began (monotonic), ``load_ms`` the part of
        the call spent loading the expert."""
        elapsed = output.elapsed_ms
        names = self.scheme.class_names
        expert_name = self._expert_name(key)
        replies = []
        with self._lock:
            self.counters.batches += 1
        for i, item in enumerate(live):
            request = item.request
            queue_ms = (start_ns - item.arrived_ns) / 1e6
            if i in output.errors:
                error = output.errors[i]
                if error.startswith(EXPIRED_PREFIX):
                    status = Status.EXPIRED
                    with self._lock:
                        self.counters.expired += 1
                else:
                    status = (
                        Status.UNKNOWN_KEY if 'no expert for key' in error else Status.MODEL_ERROR
                    )
                    with self._lock:
                        self.counters.model_errors += 1
                replies.append(
                    _error(request, status, error, queue_ms=queue_ms, batch_size=len(live))
                )
                continue
            label = output.labels[i]
            with self._lock:
                self.counters.answered += 1
            replies.append(
                ExpertReply(
                    header=request.header,
                    edge_id=request.edge_id,
                    request_id=request.request_id,
                    status=Status.OK,
                    label=label,
                    label_name=names[label],
                    score=output.scores[i],
                    expert_key=key,
                    expert_name=expert_name,
                    queue_ms=queue_ms,
                    inference_ms=elapsed,
                    batch_size=len(live),
                    load_ms=load_ms,
                )
            )
        return replies

    def _call(self, key: ExpertKey, live: list[_Queued]) -> ExpertOutput:
        """The expert call over ``live`` (see :func:`run_items`)."""
        return run_items(
            self.stage, key, [(item.pixels, item.indices) for item in live], self.params.ragged
        )

    def _expert_name(self, key: ExpertKey) -> str:
        try:
            return self.stage.library.path_of(key).stem
        except KeyError:
            return ''


def run_items(
    stage: ExpertStage,
    key: ExpertKey,
    items: list[tuple[np.ndarray, np.ndarray | None]],
    ragged: RaggedMode = 'pad',
) -> ExpertOutput:
    """One expert call per kind in ``items`` (whole frames; patch requests, given their
    grid indices), results by position in ``items``; a failing call answers its items
    with the reason. What the node runs for a micro-batch, and a serving engine's
    replica for the calls it merged.

    Args:
        items: ``(pixels, None)`` for a frame, ``(patches [n, p, p(, C)], indices)`` for
            a patch request, both checked and decoded.
    """
    frames = [i for i, (_, indices) in enumerate(items) if indices is None]
    patches = [i for i, (_, indices) in enumerate(items) if indices is not None]
    labels: dict[int, int] = {}
    scores: dict[int, float] = {}
    errors: dict[int, str] = {}
    groups = []
    for members in (frames, patches):
        if not members:
            continue
        try:
            if members is frames:
                batch = FrameBatch([items[i][0] for i in members])
                out = stage.run(batch, {key: np.arange(len(members))})
            else:
                calls = [(items[i][0], items[i][1]) for i in members]
                out = stage.run_patches(key, calls, ragged)  # type: ignore[arg-type]
        except (RuntimeError, ValueError) as exc:  # out of memory, a backend refusing input
            logger.error('expert %s failed on a batch of %d: %s', key, len(members), exc)
            reason = f'expert call failed: {exc}'
            out = ExpertOutput({}, {}, dict.fromkeys(range(len(members)), reason))
        for pos, i in enumerate(members):
            if pos in out.labels:
                labels[i], scores[i] = out.labels[pos], out.scores[pos]
            if pos in out.errors:
                errors[i] = out.errors[pos]
        groups.extend(out.groups)
    return ExpertOutput(labels, scores, errors, groups)


def _filled(replies: list[ExpertReply | None]) -> list[ExpertReply]:
    """The replies of a batch, checked complete: exactly one per request taken."""
    if any(r is None for r in replies):
        raise RuntimeError('internal error: a request of the batch got no reply')
    return [r for r in replies if r is not None]


def _error(
    request: OffloadRequest,
    status: Status,
    reason: str,
    queue_ms: float = 0.0,
    batch_size: int = 0,
) -> ExpertReply:
    logger.debug('request %s/%d: %s %s', request.edge_id, request.request_id, status.name, reason)
    return ExpertReply(
        header=request.header,
        edge_id=request.edge_id,
        request_id=request.request_id,
        status=status,
        expert_key=tuple(request.expert_key),
        error=reason,
        queue_ms=queue_ms,
        batch_size=batch_size,
    )
