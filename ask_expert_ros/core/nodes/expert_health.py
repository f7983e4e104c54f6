"""The edge's view of its expert: answer rate, round-trip time, up or down.

:class:`ExpertHealth` is told how each offloaded frame ended -- answered in time
(:meth:`~ExpertHealth.on_answer`), answered after the edge had already published its own
result (:meth:`~ExpertHealth.on_late`), or missed: the deadline passed or the request
could not be sent (:meth:`~ExpertHealth.on_miss`). After ``down_after`` misses in a row
the expert is *down*: the edge answers uncertain frames itself at once instead of
waiting out a deadline per frame, and sends one frame as a probe every
``probe_interval`` (:meth:`~ExpertHealth.probe_due`). The first probe answered in time
brings it back *up*.

Figures it keeps (all on the caller's monotonic clock, nanoseconds in, ms out):

* ``answer_rate``: share of the last :data:`OUTCOME_WINDOW` outcomes answered in time;
* ``rtt_ms``: EWMA of the round trip (request sent -> reply in), and a least-squares line
  ``rtt = rtt_base_ms + rtt_ms_per_kib * KiB`` over the last :data:`RTT_WINDOW` answers,
  so the cost of a request's size shows;
* per outage: ``detect_ms`` (last answer in time -> declared down), ``outage_ms``
  (declared down -> offloading again) and ``recovery_ms`` (the expert's first reply after
  the outage began, in time or late -> offloading again).

Not thread-safe: :class:`~ask_expert_ros.core.nodes.edge_logic.EdgeLogic` calls it under its lock.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Literal

OUTCOME_WINDOW = 64
RTT_WINDOW = 128
RTT_EWMA_WEIGHT = 0.2  # weight of the newest round trip

ExpertState = Literal['up', 'down']


@dataclass
class OutageRecord:
    """Totals over the node's life and the last outage (ms; NaN until there was one)."""

    outages: int = 0
    recoveries: int = 0
    total_outage_ms: float = 0.0
    last_detect_ms: float = float('nan')
    last_outage_ms: float = float('nan')
    last_recovery_ms: float = float('nan')
    max_recovery_ms: float = float('nan')


class ExpertHealth:
    """Up/down state of the expert as one edge sees it.

    Args:
        down_after: Misses in a row that make the expert down; 0 never does (every
            frame waits out its deadline, as without this).
        probe_interval_ns: While down, at most one probe per this long.
        start_ns: The clock now.
    """

    def __init__(self, down_after: int, probe_interval_ns: int, start_ns: int) -> None:
        if down_after < 0:
            raise ValueError(f'down_after must be >= 0, got {down_after}')
        if probe_interval_ns <= 0:
            raise ValueError(f'probe_interval_ns must be > 0, got {probe_interval_ns}')
        self.down_after = down_after
        self.probe_interval_ns = probe_interval_ns
        self.state: ExpertState = 'up'
        self.record = OutageRecord()
        self._misses = 0
        self._outcomes: deque[bool] = deque(maxlen=OUTCOME_WINDOW)
        self._rtts: deque[tuple[float, float]] = deque(maxlen=RTT_WINDOW)  # (KiB, ms)
        self._rtt_ewma = float('nan')
        self._last_answer_ns = start_ns
        self._down_since_ns = 0
        self._first_reply_ns: int | None = None
        self._next_probe_ns = 0

    @property
    def down(self) -> bool:
        return self.state == 'down'

    def on_answer(self, now_ns: int, rtt_ns: int, nbytes: int) -> bool:
        """A reply in time (any status: the expert is there). True if this ends an outage."""
        self._note_rtt(rtt_ns, nbytes)
        self._outcomes.append(True)
        self._misses = 0
        self._last_answer_ns = now_ns
        if self.state == 'up':
            return False
        record = self.record
        first = self._first_reply_ns if self._first_reply_ns is not None else now_ns
        record.recoveries += 1
        record.last_outage_ms = (now_ns - self._down_since_ns) / 1e6
        record.total_outage_ms += record.last_outage_ms
        record.last_recovery_ms = (now_ns - first) / 1e6
        if not record.max_recovery_ms >= record.last_recovery_ms:  # NaN at first
            record.max_recovery_ms = record.last_recovery_ms
        self.state = 'up'
        self._first_reply_ns = None
        return True

    def on_late(self, now_ns: int, rtt_ns: int | None = None, nbytes: int = 0) -> None:
        """A reply after the edge's own result went out (its miss was counted then);
        ``rtt_ns`` None when the request is no longer remembered."""
        if rtt_ns is not None:
            self._note_rtt(rtt_ns, nbytes)
        if self.state == 'down' and self._first_reply_ns is None:
            self._first_reply_ns = now_ns

    def on_miss(self, now_ns: int) -> bool:
        """A deadline passed or a send failed. True if this makes the expert down now."""
        self._outcomes.append(False)
        self._misses += 1
        if self.state == 'down' or not self.down_after or self._misses < self.down_after:
            return False
        self.state = 'down'
        self._down_since_ns = now_ns
        self._first_reply_ns = None
        self._next_probe_ns = now_ns + self.probe_interval_ns
        self.record.outages += 1
        self.record.last_detect_ms = (now_ns - self._last_answer_ns) / 1e6
        return True

    def probe_due(self, now_ns: int) -> bool:
        """While down: True (and the next probe scheduled) when a probe may go now."""
        if self.state != 'down' or now_ns < self._next_probe_ns:
            return False
        self._next_probe_ns = now_ns + self.probe_interval_ns
        return True

    def _note_rtt(self, rtt_ns: int, nbytes: int) -> None:
        ms = max(0, rtt_ns) / 1e6
        self._rtts.append((nbytes / 1024, ms))
        w = RTT_EWMA_WEIGHT
        old = self._rtt_ewma
        self._rtt_ewma = ms if math.isnan(old) else (1 - w) * old + w * ms

    @property
    def answer_rate(self) -> float:
        """Share of the recent outcomes answered in time (1.0 before any)."""
        if not self._outcomes:
            return 1.0
        return sum(self._outcomes) / len(self._outcomes)

    def rtt_line(self) -> tuple[float, float]:
        """(base ms, ms per KiB) fitted over the recent answers; NaN before any. With
        requests all of one size the slope is 0 and the base their mean."""
        if not self._rtts:
            return float('nan'), float('nan')
        n = len(self._rtts)
        mean_x = sum(x for x, _ in self._rtts) / n
        mean_y = sum(y for _, y in self._rtts) / n
        var = sum((x - mean_x) ** 2 for x, _ in self._rtts)
        if var <= 1e-12 * max(1.0, mean_x**2) * n:
            return mean_y, 0.0
        slope = sum((x - mean_x) * (y - mean_y) for x, y in self._rtts) / var
        return mean_y - slope * mean_x, slope

    def status(self, now_ns: int) -> dict[str, int | float | str]:
        """Figures for the diagnostics (``expert_*`` gauges and the outage record)."""
        base, per_kib = self.rtt_line()
        record = self.record
        out: dict[str, int | float | str] = {
            'expert_state': self.state,
            'expert_answer_rate': self.answer_rate,
            'expert_rtt_ms': self._rtt_ewma,
            'expert_rtt_base_ms': base,
            'expert_rtt_ms_per_kib': per_kib,
            'outages': record.outages,
            'recoveries': record.recoveries,
            'total_outage_ms': record.total_outage_ms,
            'last_detect_ms': record.last_detect_ms,
            'last_outage_ms': record.last_outage_ms,
            'last_recovery_ms': record.last_recovery_ms,
            'max_recovery_ms': record.max_recovery_ms,
        }
        if self.state == 'down':
            out['down_for_ms'] = (now_ns - self._down_since_ns) / 1e6
        return out
