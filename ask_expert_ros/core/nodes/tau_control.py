"""Keep an edge's offload traffic under a bandwidth budget by moving tau online.

The planner's model (:mod:`ask_expert_ros.core.planning.planner`), run live on what the edge
measured over the last ``window`` (2 s by default):

    offload Mbit/s = alpha(tau) * frame_rate * bytes_per_offload * 8 / 1e6

``frame_rate`` is counted, ``bytes_per_offload`` is the mean of the requests sent (the
planner's :class:`~ask_expert_ros.core.planning.planner.Payload` until the first one), and
alpha(tau) is read off the confidence scores of the window's frames: offloading a share
``a`` of them means a threshold between the ``a``-quantile score and the next. So the
controller solves for the share that fits ``target * budget`` (95 %: under the budget
with a margin for the stream changing within a window) and sets the threshold there.
That is feed-forward: it needs no traffic to have flowed at the old tau, and follows a
change of scene within a window. Feedback on top: a balance of bytes allowed minus bytes
sent since the controller began acting (bounded to one window of budget either way)
scales the share by ``1 + balance / window budget``, so an overspent window is repaid
in the next and the model's bias (bytes that depend on the frame, e.g. with
``attention_mass``; a stream drifting within the window) cancels over time instead of
adding up. The balance is held while the expert is down: no traffic then, and no
credit saved up to burst with when it is back.

The threshold is on the [0, 1] confidence scale (:attr:`RoutingConfig.threshold`:
tau, or ``2 ** -eta`` for ``min_entropy``), bounded by the caller to the method's range.
Bytes are the ``ExpertRequest`` payload, not RTPS headers or retransmissions.
Not thread-safe: the edge logic calls it under its lock.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np

WINDOW_NS = 2_000_000_000
PERIOD_NS = 250_000_000  # threshold recomputed at most this often
TARGET = 0.95
MIN_FRAMES = 10  # frames in the window before the controller acts
MAX_SAMPLES = 8192  # per window, whatever the frame rate: memory stays bounded
_BYTES_WEIGHT = 0.1  # EWMA weight of the newest request's size


@dataclass(frozen=True)
class TauDecision:
    """What the controller chose, and why (for the diagnostics)."""

    threshold: float | None  # None: not acting (no budget, or too few frames yet)
    reason: str
    share: float = float('nan')  # alpha it aims at
    frame_rate: float = 0.0
    bytes_per_offload: float = float('nan')


class BudgetController:
    """Chooses the offload threshold that keeps the measured traffic under a budget.

    Args:
        budget_mbps: The budget, Mbit/s; 0 turns the controller off.
        low / high: The threshold's range (the confidence method's).
        start_ns: The clock now.
        window_ns / period_ns / target: See the module doc.
    """

    def __init__(
        self,
        budget_mbps: float,
        low: float,
        high: float,
        start_ns: int,
        window_ns: int = WINDOW_NS,
        period_ns: int = PERIOD_NS,
        target: float = TARGET,
    ) -> None:
        if not budget_mbps >= 0:
            raise ValueError(f'budget_mbps must be >= 0, got {budget_mbps}')
        self.budget_mbps = budget_mbps
        self.low, self.high = low, high
        self.window_ns, self.period_ns, self.target = window_ns, period_ns, target
        self._frames: deque[tuple[int, float]] = deque(maxlen=MAX_SAMPLES)
        self._sent: deque[tuple[int, int]] = deque(maxlen=MAX_SAMPLES)
        self._bytes = float('nan')
        self._start_ns = start_ns
        self._next_ns = start_ns
        self._balance = 0.0  # bytes allowed minus sent while acting
        self._sent_total = 0
        self._sent_seen = 0  # _sent_total at the last update
        self._updated_ns: int | None = None  # last update that acted
        self.decision = TauDecision(None, 'no budget' if not budget_mbps else 'warming up')

    def configure(self, budget_mbps: float, low: float, high: float) -> None:
        """New budget and range (a parameter change): the next :meth:`update` acts."""
        self.budget_mbps = budget_mbps
        self.low, self.high = low, high
        self._next_ns = 0
        self._balance, self._updated_ns = 0.0, None
        self.decision = TauDecision(None, 'no budget' if not budget_mbps else 'warming up')

    def observe_frames(self, now_ns: int, confidences: np.ndarray) -> None:
        """Confidence scores of frames the edge model classified (valid outputs only)."""
        self._frames.extend((now_ns, float(c)) for c in confidences)

    def observe_offload(self, now_ns: int, nbytes: int) -> None:
        """A request of ``nbytes`` went to the expert."""
        self._sent.append((now_ns, nbytes))
        self._sent_total += nbytes
        w = _BYTES_WEIGHT
        self._bytes = nbytes if math.isnan(self._bytes) else (1 - w) * self._bytes + w * nbytes

    def _trim(self, now_ns: int) -> None:
        start = now_ns - self.window_ns
        for samples in (self._frames, self._sent):
            while samples and samples[0][0] <= start:
                samples.popleft()

    def _span_ns(self, now_ns: int, samples: deque) -> int:
        """How long the window's samples cover: the window, or less at start or when the
        sample cap cut it short."""
        span = min(self.window_ns, now_ns - self._start_ns)
        if len(samples) == samples.maxlen:
            span = min(span, now_ns - samples[0][0])
        return max(span, 1)

    def measured_mbps(self, now_ns: int) -> float:
        """Offload traffic over the window, Mbit/s."""
        self._trim(now_ns)
        total = sum(n for _, n in self._sent)
        return total * 8 / 1e6 / (self._span_ns(now_ns, self._sent) / 1e9)

    def frame_rate(self, now_ns: int) -> float:
        """Frames per second over the window."""
        self._trim(now_ns)
        return len(self._frames) / (self._span_ns(now_ns, self._frames) / 1e9)

    def update(self, now_ns: int, default_bytes: float, hold: bool = False) -> TauDecision:
        """The threshold to use from now (recomputed at most once per period).

        Args:
            now_ns: The clock now.
            default_bytes: Bytes per offload to assume before any request went out.
            hold: Keep the feedback term as it is (the expert is down or just came back).
        """
        if not self.budget_mbps:
            self.decision = TauDecision(None, 'no budget')
            return self.decision
        if now_ns < self._next_ns:
            return self.decision
        self._next_ns = now_ns + self.period_ns
        self._trim(now_ns)
        sent, self._sent_seen = self._sent_total - self._sent_seen, self._sent_total
        if len(self._frames) < MIN_FRAMES:
            self.decision = TauDecision(None, 'warming up')
            self._updated_ns = None
            return self.decision
        budget_bps = self.budget_mbps * 1e6 / 8 * self.target
        cap = budget_bps * self.window_ns / 1e9
        if self._updated_ns is not None and not hold:
            allowed = budget_bps * (now_ns - self._updated_ns) / 1e9
            self._balance = min(cap, max(-cap, self._balance + allowed - sent))
        self._updated_ns = now_ns
        bytes_per = self._bytes if not math.isnan(self._bytes) else default_bytes
        rate = self.frame_rate(now_ns)
        feedback = max(0.0, 1.0 + self._balance / cap)
        share = min(1.0, feedback * budget_bps / max(rate * bytes_per, 1e-9))
        scores = np.sort(np.fromiter((c for _, c in self._frames), np.float64))
        n = len(scores)
        m = int(share * n)
        if m >= n:
            threshold, reason = self.high, 'budget: every uncertain frame fits'
        elif m == 0:
            threshold, reason = self.low, 'budget: no frame fits'
        else:
            threshold = min(self.high, max(self.low, 0.5 * (scores[m - 1] + scores[m])))
            reason = 'budget'
        self.decision = TauDecision(threshold, reason, share, rate, bytes_per)
        return self.decision

    def status(self, now_ns: int) -> dict[str, int | float | str]:
        """Figures for the diagnostics."""
        return {
            'offload_budget_mbps': self.budget_mbps,
            'offload_mbps': self.measured_mbps(now_ns),
            'frame_rate': self.frame_rate(now_ns),
            'budget_share': self.decision.share,
            'budget_balance_bytes': self._balance,
        }
