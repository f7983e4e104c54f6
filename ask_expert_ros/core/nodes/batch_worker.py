"""One thread that runs a handler on batches of items that other threads queue.

The rclpy edge node's camera callbacks run on whichever executor thread is free. A
model called from rotating threads is slow on CPU: every thread that runs torch keeps
its own OpenMP pool, and while idle pools exist libgomp counts more threads than cores
and stops spinning between parallel regions. Measured here (DeiT-3H bf16, batch 1,
2 cores): 11.2 ms in the thread that warmed the model up, 20.1 ms rotating over three
threads, 29 ms in a second thread while the first keeps its pool, 11.5 ms in a second
thread after :func:`~ask_expert_ros.core.inference.backends.release_openmp_threads`. So the
callbacks only decode and :meth:`BatchWorker.put` frames here, and one thread runs the
model on everything queued, as one batch.

Contract: every item :meth:`~BatchWorker.put` accepts (returns True) reaches the
handler exactly once, in the order of acceptance, also when :meth:`~BatchWorker.stop`
comes first: it hands over what is queued before the thread ends.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

logger = logging.getLogger(__name__)

T = TypeVar('T')


class BatchWorker(Generic[T]):
    """A bounded queue and the one thread that empties it.

    Args:
        handle: Called on the worker thread with everything queued (oldest first,
            at most ``max_queued`` items). An exception it raises goes to ``on_error``
            and the worker goes on with the next batch.
        max_queued: How many items may wait; :meth:`put` blocks while that many do,
            so a producer faster than the handler is held back where it came from
            (a camera subscription's keep-last history drops the oldest frames, before
            anyone took them) instead of growing a backlog here.
        name: The thread's name.
        on_error: Told of an exception ``handle`` raised; by default it is logged.
    """

    def __init__(
        self,
        handle: Callable[[list[T]], None],
        max_queued: int,
        name: str = 'batch-worker',
        on_error: Callable[[Exception], None] | None = None,
    ) -> None:
        if max_queued < 1:
            raise ValueError(f'max_queued must be >= 1, got {max_queued}')
        self._handle = handle
        self._max_queued = max_queued
        self._on_error = on_error or (lambda exc: logger.exception('%s: handler failed', name))
        self._items: deque[T] = deque()
        self._changed = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    @property
    def queued(self) -> int:
        """Items accepted and not yet handed to the handler."""
        with self._changed:
            return len(self._items)

    def start(self) -> None:
        self._thread.start()

    def put(self, item: T) -> bool:
        """Queue an item; block while ``max_queued`` wait. False once stopping: not taken."""
        with self._changed:
            self._changed.wait_for(lambda: self._stopping or len(self._items) < self._max_queued)
            if self._stopping:
                return False
            self._items.append(item)
            self._changed.notify_all()
            return True

    def stop(self, timeout_s: float | None = None) -> None:
        """Refuse new items, let the thread hand over what is queued, and join it."""
        with self._changed:
            self._stopping = True
            self._changed.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    def _run(self) -> None:
        while True:
            with self._changed:
                self._changed.wait_for(lambda: self._stopping or bool(self._items))
                if not self._items:
                    return  # stopping, and nothing left to hand over
                batch = list(self._items)
                self._items.clear()
                self._changed.notify_all()  # room again for blocked put()s
            try:
                self._handle(batch)
            except Exception as exc:  # the worker outlives one bad batch
                self._on_error(exc)
