"""The expert node as the front of a serving engine (``serving: ray``).

The front keeps everything the node does for its edges -- validation and decoding,
the fair per-edge queues, shedding and quotas, deadlines (:class:`ExpertLogic`) -- and
hands each due micro-batch to an :class:`ExpertService` instead of running it:
asynchronously, at most ``max_in_flight`` calls at once, so the engine's replicas work in
parallel while the node keeps taking requests. The experts live in the engine, not in
this process: the front reads only the library's manifest and model headers.

Every request still gets exactly one reply:

* the engine answered: OK, or its error for the request (MODEL_ERROR, UNKNOWN_KEY, or
  EXPIRED where the deadline passed while the call waited in the engine);
* the engine's call failed (a replica died mid-request, the engine is unreachable):
  sent again ``retries`` times while the deadline allows, then MODEL_ERROR, so the
  edge publishes its fallback at once;
* no answer by the latest deadline of the call plus ``grace_ms`` (or ``call_timeout_ms``
  without deadlines): EXPIRED, the call cancelled, and its late answer dropped.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Protocol

import numpy as np

from ask_expert_ros.core.errors import AskExpertError
from ask_expert_ros.core.inference.engine import ExpertOutput, ExpertStage, RaggedMode
from ask_expert_ros.core.inference.taxonomy import ExpertKey
from ask_expert_ros.core.nodes.expert_logic import (
    EXPIRED_PREFIX,
    MAX_TRACKED_EDGES,
    ExpertCounters,
    ExpertLogic,
    ExpertParams,
    _error,
    _Queued,
)
from ask_expert_ros.core.nodes.messages import ExpertReply, Status

logger = logging.getLogger(__name__)

ENGINE_GRACE_MS = 250.0
CALL_TIMEOUT_MS = 30_000.0


@dataclass(frozen=True)
class ServeItem:
    """One request's work: decoded pixels, with grid ``indices`` for a patch request.

    Attributes:
        deadline_ns: Wall-clock deadline (ns since the epoch); 0: none. The engine
            answers an item whose deadline has passed before it runs with an error
            starting :data:`~ask_expert_ros.core.nodes.expert_logic.EXPIRED_PREFIX`.
    """

    pixels: np.ndarray
    indices: np.ndarray | None = None
    deadline_ns: int = 0


@dataclass(frozen=True)
class ServeCall:
    """A micro-batch of one key, as the front sends it to the engine."""

    key: ExpertKey
    items: tuple[ServeItem, ...]
    ragged: RaggedMode = 'pad'
    restrict_to_key: bool = False


@dataclass(frozen=True)
class ServeAnswer:
    """The engine's answer to a :class:`ServeCall`, by position in its items.

    Attributes:
        elapsed_ms: The model call the items ran in (preprocessing and loading included).
        load_ms: Of it, the time spent loading the expert: > 0 only for a cold start.
        batch_size: Frames in that model call (the engine may merge several calls).
        replica: Which replica answered.
        pid: Its process id (on its node).
        rss_mb: That replica's resident memory after the call.
        resident: Experts resident on that replica after the call.
        busy_ms: That replica's model calls so far, their time in total (its device's
            busy time; loads not counted).
        model_calls: Its model calls so far.
        frames_run: Frames in them.
        clock_ms: Its monotonic clock when this call ended (the model call ran from
            ``clock_ms - elapsed_ms + load_ms`` to ``clock_ms``).
    """

    labels: dict[int, int]
    scores: dict[int, float]
    errors: dict[int, str]
    elapsed_ms: float = 0.0
    load_ms: float = 0.0
    batch_size: int = 0
    replica: str = ''
    pid: int = 0
    rss_mb: float = 0.0
    resident: int = 0
    busy_ms: float = 0.0
    model_calls: int = 0
    frames_run: int = 0
    clock_ms: float = 0.0


class EngineError(AskExpertError):
    """A call to the serving engine failed as a whole (no answer for its items).

    Attributes:
        retryable: Whether sending it again may succeed (a replica died, a transient
            routing failure); False for what another try cannot change.
    """

    def __init__(self, message: str, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


Done = Callable[['ServeAnswer | BaseException'], None]


class ExpertService(Protocol):
    """A serving engine holding the expert library (:mod:`ask_expert_ros.serving`)."""

    def call(self, call: ServeCall, done: Done) -> Callable[[], None]:
        """Start ``call``; ``done`` is called exactly once, on any thread, with the
        answer or the failure (an :class:`EngineError` says whether to retry). Returns
        a function that cancels the call (``done`` may still come)."""
        ...

    def describe(self) -> dict[str, str | int | float]:
        """What serves: engine, address, application, replicas."""
        ...

    def close(self) -> None:
        """Let go of the engine (the engine itself keeps serving other fronts)."""
        ...


@dataclass
class RemoteCounters(ExpertCounters):
    """:class:`ExpertCounters` plus the engine's side."""

    calls: int = 0  # calls answered by the engine
    cold_loads: int = 0  # of them, calls that loaded their expert first
    retried: int = 0  # calls sent again after a failure
    engine_failures: int = 0  # calls that failed (before any retry)


@dataclass(frozen=True)
class ReplicaSeen:
    """A replica of the engine as its last answer to this front described it."""

    pid: int
    rss_mb: float
    resident: int
    calls: int  # calls of this front it answered
    busy_ms: float = 0.0  # its model calls' time so far (ServeAnswer.busy_ms)
    model_calls: int = 0
    frames_run: int = 0
    clock_ms: float = 0.0  # its clock at that answer


@dataclass
class _Flight:
    key: ExpertKey
    items: list[_Queued]
    attempt: int
    expires_ns: int  # monotonic
    cancel: Callable[[], None] = field(default=lambda: None)


class RemoteExpertLogic(ExpertLogic):
    """:class:`ExpertLogic` whose micro-batches run in a serving engine.

    The adapters drive it as they drive :class:`ExpertLogic` (``submit``, ``poll``,
    ``next_due_ns``, ``wait``); :meth:`on_ready` tells them when answers arrive
    between polls.

    Args:
        stage: The library (manifest and model headers: what requests are checked
            against); no expert is loaded here.
        service: The engine.
        params: The node's settings.
        max_in_flight: Calls outstanding at once (room for every replica to hold a
            few); due micro-batches wait in the fair queues beyond it.
        retries: Times a failed call is sent again while its deadline allows.
        grace_ms: How long past a call's latest deadline the front waits for it.
        call_timeout_ms: The same, for calls without deadlines (``honor_deadline``
            off).
    """

    def __init__(
        self,
        stage: ExpertStage,
        service: ExpertService,
        params: ExpertParams | None = None,
        max_in_flight: int = 8,
        retries: int = 1,
        grace_ms: float = ENGINE_GRACE_MS,
        call_timeout_ms: float = CALL_TIMEOUT_MS,
        monotonic_ns: Callable[[], int] = time.monotonic_ns,
        wall_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        if max_in_flight < 1:
            raise ValueError(f'max_in_flight must be >= 1, got {max_in_flight}')
        if retries < 0:
            raise ValueError(f'retries must be >= 0, got {retries}')
        super().__init__(stage, params, monotonic_ns, wall_ns)
        self.service = service
        self.counters: RemoteCounters = RemoteCounters()
        self.max_in_flight = max_in_flight
        self.retries = retries
        self._grace_ns = int(grace_ms * 1e6)
        self._timeout_ns = int(call_timeout_ms * 1e6)
        self._flights: dict[int, _Flight] = {}
        self._ids = itertools.count()
        self._finished: list[ExpertReply] = []
        self._notify: Callable[[], None] | None = None
        self._replicas: dict[str, ReplicaSeen] = {}

    def on_ready(self, notify: Callable[[], None] | None) -> None:
        """Call ``notify`` (from the engine's thread) whenever replies wait for
        :meth:`poll`: the adapter's wake-up (a DDS guard condition, an event)."""
        self._notify = notify

    @property
    def queued(self) -> int:
        """Requests waiting here or in flight in the engine: not yet answered."""
        with self._lock:
            return self._total + sum(len(f.items) for f in self._flights.values())

    def replicas(self) -> dict[str, ReplicaSeen]:
        """The engine's replicas that answered this front (the most recent 64)."""
        with self._lock:
            return dict(self._replicas)

    @property
    def in_flight(self) -> int:
        with self._lock:
            return len(self._flights)

    def queue_status(self) -> dict[str, int | float | str]:
        status = super().queue_status()
        with self._lock:
            status['in_flight_calls'] = len(self._flights)
            calls = self.counters.calls
            if calls:
                status['expert_hit_rate'] = round(1 - self.counters.cold_loads / calls, 4)
            for replica, seen in sorted(self._replicas.items()):
                status[f'replica[{replica}]'] = f'{seen.resident} experts, {seen.rss_mb:.0f} MB'
        engine = self.service.describe().items()
        return status | {k if k.startswith('engine') else f'engine_{k}': v for k, v in engine}

    def close(self) -> None:
        self.service.close()

    def next_due_ns(self) -> int | None:
        with self._lock:
            full = len(self._flights) >= self.max_in_flight
            due = [self._monotonic_ns()] if self._finished else []
            due += [f.expires_ns for f in self._flights.values()]
        if not full:
            queued = super().next_due_ns()
            if queued is not None:
                due.append(queued)
        return min(due) if due else None

    def poll(self, flush: bool = False, max_batches: int | None = None) -> list[ExpertReply]:
        """The replies that arrived, the expired calls answered, and every due
        micro-batch sent while fewer than ``max_in_flight`` calls are out
        (``max_batches`` is ignored: sending does not wait for the answer)."""
        with self._lock:
            replies, self._outbox = self._outbox, []
            replies += self._finished
            self._finished = []
        replies += self._expire()
        while self.in_flight < self.max_in_flight:
            batch = self._take_due_batch(flush)
            if batch is None:
                break
            key, items = batch
            slots, live, _ = self._split_expired(items)
            replies.extend(r for r in slots if r is not None)
            if live:
                self._send(key, live, attempt=0)
        return replies

    def _send(self, key: ExpertKey, items: list[_Queued], attempt: int) -> None:
        honor = self.params.honor_deadline
        call = ServeCall(
            key=key,
            items=tuple(
                ServeItem(q.pixels, q.indices, q.request.deadline.to_ns() if honor else 0)
                for q in items
            ),
            ragged=self.params.ragged,
            restrict_to_key=self.params.restrict_to_key,
        )
        now = self._monotonic_ns()
        if honor:
            latest = max(q.request.deadline.to_ns() for q in items) - self._wall_ns()
            expires = now + max(0, latest) + self._grace_ns
        else:
            expires = now + self._timeout_ns
        flight_id = next(self._ids)
        flight = _Flight(key, items, attempt, expires)
        with self._lock:
            self._flights[flight_id] = flight
        try:
            flight.cancel = self.service.call(call, lambda out: self._done(flight_id, out))
        except Exception as exc:  # the engine refused the call outright
            self._done(flight_id, EngineError(f'{type(exc).__name__}: {exc}', retryable=False))

    def _done(self, flight_id: int, out: ServeAnswer | BaseException) -> None:
        """The engine's answer (or failure) for a call: its replies, on any thread."""
        with self._lock:
            flight = self._flights.pop(flight_id, None)
        if flight is None:
            return  # answered EXPIRED already: the late answer is dropped
        now = self._monotonic_ns()
        if isinstance(out, BaseException):
            with self._lock:
                self.counters.engine_failures += 1
            retryable = getattr(out, 'retryable', True)
            deadline_left = (
                not self.params.honor_deadline
                or max(q.request.deadline.to_ns() for q in flight.items) > self._wall_ns()
            )
            if retryable and flight.attempt < self.retries and deadline_left:
                logger.warning('engine call for %s failed (%s); sending it again', flight.key, out)
                with self._lock:
                    self.counters.retried += 1
                self._send(flight.key, flight.items, flight.attempt + 1)
                return
            logger.error('engine call for %s failed: %s', flight.key, out)
            reason = f'serving engine: {type(out).__name__}: {out}'
            output = ExpertOutput({}, {}, dict.fromkeys(range(len(flight.items)), reason))
            replies = self._answer(flight.key, flight.items, output, now)
        else:
            with self._lock:
                self.counters.calls += 1
                self.counters.cold_loads += out.load_ms > 0
                if out.replica:
                    seen = self._replicas.pop(out.replica, None)
                    calls = 1 + (seen.calls if seen is not None else 0)
                    self._replicas[out.replica] = ReplicaSeen(
                        out.pid,
                        out.rss_mb,
                        out.resident,
                        calls,
                        out.busy_ms,
                        out.model_calls,
                        out.frames_run,
                        out.clock_ms,
                    )
                    if len(self._replicas) > MAX_TRACKED_EDGES:  # replaced replicas go
                        del self._replicas[next(iter(self._replicas))]
            output = ExpertOutput(out.labels, out.scores, out.errors)
            # queue_ms: from arrival here until the engine's model call began
            began = now - int(out.elapsed_ms * 1e6)
            replies = [
                _with_call(r, out)
                for r in self._answer(flight.key, flight.items, output, began, out.load_ms)
            ]
        self._deliver(replies)

    def _expire(self) -> list[ExpertReply]:
        """Calls past their latest deadline plus the grace: EXPIRED, cancelled."""
        now = self._monotonic_ns()
        with self._lock:
            late = [fid for fid, f in self._flights.items() if f.expires_ns <= now]
            flights = [self._flights.pop(fid) for fid in late]
            self.counters.expired += sum(len(f.items) for f in flights)
        replies = []
        for flight in flights:
            flight.cancel()
            logger.warning(
                'engine did not answer %d requests of %s in time', len(flight.items), flight.key
            )
            replies += [
                _error(q.request, Status.EXPIRED, f'{EXPIRED_PREFIX}: no answer from the engine')
                for q in flight.items
            ]
        return replies

    def _deliver(self, replies: list[ExpertReply]) -> None:
        with self._lock:
            self._finished.extend(replies)
            self._arrived = True
            self._wakeup.notify_all()
        notify = self._notify
        if notify is not None:
            notify()


def _with_call(reply: ExpertReply, answer: ServeAnswer) -> ExpertReply:
    """A reply carrying the engine call's timing: the model call's time and batch."""
    if reply.status != Status.OK:
        return reply
    return replace(
        reply,
        inference_ms=answer.elapsed_ms,
        batch_size=answer.batch_size or reply.batch_size,
    )
