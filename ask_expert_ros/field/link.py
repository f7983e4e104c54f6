"""A userspace ``netem``: carries IP packets between two TUN devices, shaped.

Each direction is one thread: it reads a packet from one device, drops it with
probability ``loss_pct``, and otherwise schedules it on the other device after the
delay (uniform in ``delay_ms`` +- ``jitter_ms``) -- or at once with probability
``reorder_pct``, which overtakes delayed packets as netem's ``reorder`` does. A
shape change applies to the next packet read; packets already scheduled keep their
time, so a partition (loss 100 %) does not eat the packets just before it.
"""

from __future__ import annotations

import heapq
import itertools
import os
import random
import select
import threading
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Shape:
    """Per-packet treatment, one direction (both use the same)."""

    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    loss_pct: float = 0.0
    reorder_pct: float = 0.0


@dataclass
class DirectionStats:
    """Packets and bytes through one direction of the link."""

    packets: int = 0
    bytes: int = 0
    dropped: int = 0
    reordered: int = 0


class LinkEmulator:
    """Two forwarding threads between TUN file descriptors ``a`` and ``b``.

    Args:
        a, b: TUN file descriptors (raw IP packets).
        shape: Starting shape; assign :attr:`shape` to change it.
        seed: Seed of the random loss, jitter and reordering.
    """

    def __init__(self, a: int, b: int, shape: Shape, seed: int = 0) -> None:
        self.shape = shape
        self.stats = {'a_to_b': DirectionStats(), 'b_to_a': DirectionStats()}
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(
                target=self._forward,
                args=(src, dst, self.stats[name], random.Random(seed + i)),
                name=f'link-{name}',
                daemon=True,
            )
            for i, (name, src, dst) in enumerate((('a_to_b', a, b), ('b_to_a', b, a)))
        ]
        for thread in self._threads:
            thread.start()

    def _forward(self, src: int, dst: int, stats: DirectionStats, rng: random.Random) -> None:
        queue: list[tuple[float, int, bytes]] = []
        order = itertools.count()
        while not self._stop.is_set():
            now = time.monotonic()
            timeout = min(0.05, max(0.0, queue[0][0] - now)) if queue else 0.05
            ready, _, _ = select.select([src], [], [], timeout)
            if ready:
                try:
                    packet = os.read(src, 65536)
                except OSError:  # the device went away (closing)
                    return
                shape = self.shape
                if shape.loss_pct and rng.random() * 100 < shape.loss_pct:
                    stats.dropped += 1
                else:
                    delay = shape.delay_ms + rng.uniform(-shape.jitter_ms, shape.jitter_ms)
                    if shape.reorder_pct and rng.random() * 100 < shape.reorder_pct:
                        delay = 0.0
                        stats.reordered += 1
                    due = time.monotonic() + max(0.0, delay) / 1e3
                    heapq.heappush(queue, (due, next(order), packet))
            now = time.monotonic()
            while queue and queue[0][0] <= now:
                _, _, packet = heapq.heappop(queue)
                try:
                    os.write(dst, packet)
                except OSError:  # receiver's queue full or device down: lost, like a radio
                    stats.dropped += 1
                    continue
                stats.packets += 1
                stats.bytes += len(packet)

    def close(self) -> None:
        """Stop both threads (each within ~50 ms)."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=2.0)
