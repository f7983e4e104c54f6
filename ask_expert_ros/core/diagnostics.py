"""Node health as transport-free status records (-> ``diagnostic_msgs/DiagnosticArray``).

Each period the adapter hands over the node's counters; :class:`HealthMonitor` turns
them into one :class:`StatusRecord` with the totals, the per-second rates over the
period, and a level: WARN when frames fell back or inputs were rejected during the
period, ERROR when every offloaded frame of the period fell back (expert unreachable).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field


class Level(enum.IntEnum):
    """``diagnostic_msgs/DiagnosticStatus`` levels."""

    OK = 0
    WARN = 1
    ERROR = 2
    STALE = 3


@dataclass(frozen=True)
class StatusRecord:
    name: str
    level: Level
    message: str
    hardware_id: str = ''
    values: dict[str, int | float | str] = field(default_factory=dict)


_FALLBACKS = ('fallback_deadline', 'fallback_error', 'fallback_unavailable')
_REJECTS = (
    'bad_input',
    'invalid_logits',
    'bad_request',
    'unknown_key',
    'bad_frame',
    'model_errors',
    'expired',
)


class HealthMonitor:
    """Counters in, one status record per period out.

    Args:
        name: Status name, e.g. ``'ask_expert: edge robot1'``.
        hardware_id: Which machine (hostname).
    """

    def __init__(self, name: str, hardware_id: str = '') -> None:
        self.name = name
        self.hardware_id = hardware_id
        self._last: dict[str, int] = {}
        self._last_time: float | None = None

    def update(self, counters: Mapping[str, int], now_s: float) -> StatusRecord:
        elapsed = None if self._last_time is None else max(now_s - self._last_time, 1e-9)
        delta = {k: v - self._last.get(k, 0) for k, v in counters.items()}
        self._last, self._last_time = dict(counters), now_s
        values: dict[str, int | float | str] = dict(counters)
        if elapsed is not None:
            for k in ('frames', 'offloaded', 'requests', 'answered'):
                if k in delta:
                    values[f'{k}_per_s'] = delta[k] / elapsed
        fell_back = sum(delta.get(k, 0) for k in _FALLBACKS)
        rejected = sum(delta.get(k, 0) for k in _REJECTS)
        offloaded = delta.get('offloaded', 0)
        if offloaded and fell_back >= offloaded:
            level, message = Level.ERROR, f'all {offloaded} offloaded frames fell back'
        elif fell_back or rejected:
            level = Level.WARN
            message = f'{fell_back} fallbacks, {rejected} rejected inputs in the last period'
        else:
            level, message = Level.OK, 'ok'
        return StatusRecord(self.name, level, message, self.hardware_id, values)
