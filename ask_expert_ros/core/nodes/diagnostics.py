"""Node health as transport-free status records (-> ``diagnostic_msgs/DiagnosticArray``).

Each period an adapter hands over the node's counters (``EdgeCounters.as_dict()`` or
``ExpertCounters.as_dict()``, plus any gauges such as ``pending``); :func:`assess`
turns them, the previous period's counters and the elapsed time into one
:class:`StatusRecord`: the totals, per-second rates, the edge's offload ratio and mean
bytes per offloaded frame (``bytes_per_offload``, from an ``offload_bytes`` counter)
over the period, the settings the adapter passes (the edge's offload mode, rho or m:
:func:`offload_settings`), and a level:

* ERROR -- every frame offloaded during the period fell back, or the edge holds its
  expert for down (``expert_state`` in the settings: :meth:`EdgeLogic.link_status`);
* WARN -- some frames fell back, or inputs or requests were rejected, in the period;
* OK -- otherwise. Foreign replies (meant for another edge) are normal and never warn.

:class:`HealthMonitor` keeps the previous counters between calls.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

from ask_expert_ros.core.nodes.edge_logic import EdgeParams


class Level(enum.IntEnum):
    """``diagnostic_msgs/DiagnosticStatus`` levels."""

    OK = 0
    WARN = 1
    ERROR = 2
    STALE = 3


@dataclass(frozen=True)
class StatusRecord:
    """One ``diagnostic_msgs/DiagnosticStatus``, without the message type.

    Attributes:
        name: Status name, e.g. ``'ask_expert: edge robot1-812'``.
        level: OK, WARN, ERROR (STALE is for aggregators).
        message: One line for people: what is wrong in the last period, or ``'ok'``.
        hardware_id: The machine (hostname).
        values: Counters (totals since start), gauges and rates (``*_per_s``,
            ``offload_ratio``), in insertion order.
    """

    name: str
    level: Level
    message: str
    hardware_id: str = ''
    values: dict[str, int | float | str] = field(default_factory=dict)


FALLBACK_COUNTERS = (
    'fallback_deadline',
    'fallback_error',
    'fallback_unavailable',
    'fallback_shed',
    'fallback_down',
)
REJECT_COUNTERS = (
    'bad_input',
    'invalid_logits',
    'bad_request',
    'unknown_key',
    'bad_frame',
    'model_errors',
    'expired',
    'shed',
)
RATE_COUNTERS = ('frames', 'offloaded', 'expert', 'requests', 'answered', 'batches')


def offload_settings(params: EdgeParams) -> dict[str, int | float | str]:
    """What an edge sends its expert, for its status: ``offload_mode``, ``transport`` and,
    in patch mode, ``patch_selection`` with ``keep_ratio`` (rho) or ``attention_mass`` (m)."""
    out: dict[str, int | float | str] = {
        'offload_mode': params.offload_mode if params.offload else 'off',
        'transport': params.transport,
    }
    if params.offload and params.offload_mode == 'patches':
        selection = params.patches
        out['patch_selection'] = selection.method
        if selection.keep_ratio is not None:
            out['keep_ratio'] = selection.keep_ratio
        else:
            out['attention_mass'] = float(selection.attention_mass or 0.0)
    return out


def assess(
    name: str,
    counters: Mapping[str, int],
    previous: Mapping[str, int] | None,
    elapsed_s: float | None,
    hardware_id: str = '',
    settings: Mapping[str, int | float | str] | None = None,
) -> StatusRecord:
    """The health of one node over the last period.

    Args:
        name: Status name.
        counters: Totals now (missing names count as 0).
        previous: Totals at the start of the period; None for the first period
            (then the totals are the period).
        elapsed_s: Length of the period; None or <= 0 leaves the rates out.
        hardware_id: The machine.
        settings: Values shown as they are after the counters (e.g.
            :func:`offload_settings`).
    """
    before = previous or {}
    delta = {k: v - before.get(k, 0) for k, v in counters.items()}
    values: dict[str, int | float | str] = dict(counters)
    if elapsed_s is not None and elapsed_s > 0:
        for k in RATE_COUNTERS:
            if k in delta:
                values[f'{k}_per_s'] = delta[k] / elapsed_s
    if delta.get('frames'):
        values['offload_ratio'] = delta.get('offloaded', 0) / delta['frames']
    if delta.get('offloaded') and 'offload_bytes' in delta:
        values['bytes_per_offload'] = delta['offload_bytes'] / delta['offloaded']
    values.update(settings or {})
    fell_back = sum(delta.get(k, 0) for k in FALLBACK_COUNTERS)
    rejected = sum(delta.get(k, 0) for k in REJECT_COUNTERS)
    offloaded = delta.get('offloaded', 0)
    failed = delta.get('model_errors', 0)
    lifecycle = (settings or {}).get('lifecycle', 'active')
    if failed:
        level = Level.ERROR
        message = f'the model failed on {failed} inputs in the last period (see the node log)'
    elif (settings or {}).get('expert_state') == 'down':
        level = Level.ERROR
        message = (
            f'expert down: {fell_back} frames answered by the edge in the last period, '
            'probing (is an expert node reachable?)'
        )
    elif offloaded and fell_back >= offloaded:
        level = Level.ERROR
        message = f'all {offloaded} offloaded frames fell back (is an expert node reachable?)'
    elif fell_back or rejected:
        level = Level.WARN
        message = f'{fell_back} fallbacks, {rejected} rejected inputs in the last period'
    elif lifecycle != 'active':
        # a managed node not yet (or no longer) active is as it should be, and says so
        level, message = Level.OK, f'{lifecycle}: not taking input'
    else:
        level, message = Level.OK, 'ok'
    return StatusRecord(name, level, message, hardware_id, values)


class HealthMonitor:
    """Counters in, one status record per period out (keeps the previous counters).

    Args:
        name: Status name, e.g. ``'ask_expert: edge robot1'``.
        hardware_id: Which machine (hostname).
    """

    def __init__(self, name: str, hardware_id: str = '') -> None:
        self.name = name
        self.hardware_id = hardware_id
        self._last: dict[str, int] | None = None
        self._last_time: float | None = None

    def update(
        self,
        counters: Mapping[str, int],
        now_s: float,
        settings: Mapping[str, int | float | str] | None = None,
    ) -> StatusRecord:
        """The record for the period since the previous call (monotonic ``now_s``), with
        ``settings`` shown as they are."""
        elapsed = None if self._last_time is None else now_s - self._last_time
        record = assess(self.name, counters, self._last, elapsed, self.hardware_id, settings)
        self._last, self._last_time = dict(counters), now_s
        return record
