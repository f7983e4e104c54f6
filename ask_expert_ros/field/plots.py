"""Plots of a field run (matplotlib, headless)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

COLOURS = {
    'edge': 'tab:green',
    'expert': 'tab:blue',
    'fallback': 'tab:red',
    'crossed': 'magenta',
}
MARKS = {
    '_fault_ns': ('{} starts', 'black'),
    '_cleared_ns': ('{} ends', 'tab:purple'),
    'replay_ns': ('old answers replayed', 'tab:orange'),
    'edge_killed_ns': ('edge killed, restarted', 'grey'),
    'expert_discovered_ns': ('new expert discovered', 'tab:cyan'),
}


def latency_plot(
    rows: Sequence[Mapping[str, Any]], timeline: Mapping[str, int], path: Path, title: str
) -> Path:
    """Camera -> result latency of every frame against its send time, by source."""
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    start = timeline['stream_start_ns']
    fig, ax = plt.subplots(figsize=(9, 4))
    for source, colour in COLOURS.items():
        points = [r for r in rows if r.get('source') == source]
        if points:
            ax.scatter(
                [(r['stamp_ns'] - start) / 1e9 for r in points],
                [r['latency_ms'] for r in points],
                s=4,
                c=colour,
                label=f'{source} ({len(points)})',
            )
    for died, (mark, colour, label) in {
        False: ('x', 'black', 'lost'),
        True: ('|', 'grey', 'sent to the killed edge'),
    }.items():
        points = [r for r in rows if not r['results'] and bool(r.get('died_with_edge')) == died]
        if points:
            ax.scatter(
                [(r['stamp_ns'] - start) / 1e9 for r in points],
                [1.0] * len(points),
                marker=mark,
                c=colour,
                label=f'{label} ({len(points)}, at 1 ms)',
            )
    for key, value in timeline.items():
        for suffix, (label, colour) in MARKS.items():
            if key.endswith(suffix) and key != 'stream_start_ns':
                kind = key[: -len(suffix)]
                ax.axvline((value - start) / 1e9, ls='--', c=colour, label=label.format(kind))
                break
    ax.set_yscale('log')
    ax.set_xlabel('camera time since the stream started (s)')
    ax.set_ylabel('camera -> result (ms)')
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc='upper right')
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def link_plot(
    series: Mapping[str, Sequence[Sequence[Any]]],
    timeline: Mapping[str, int],
    path: Path,
    title: str,
) -> Path | None:
    """Each edge's tau and offload Mbit/s (against its budget) over time, from its
    diagnostics, with the expert's down periods shaded; None when no edge reported."""
    if not series:
        return None
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    start = timeline['stream_start_ns']
    fig, (ax_tau, ax_mbps) = plt.subplots(2, 1, figsize=(9, 5), sharex=True)
    for i, (name, rows) in enumerate(sorted(series.items())):
        t = [(r[0] - start) / 1e9 for r in rows]
        colour = f'C{i % 10}'
        ax_tau.step(t, [r[1] for r in rows], where='post', c=colour, label=name)
        ax_mbps.step(t, [r[2] for r in rows], where='post', c=colour, label=f'{name} sent')
        budgets = {r[3] for r in rows if r[3] > 0}
        for budget in budgets:
            ax_mbps.axhline(budget, ls='--', c=colour, lw=0.8, label=f'{name} budget')
        down = [tt for tt, r in zip(t, rows, strict=True) if r[4] == 'down']
        if down and i == 0:
            ax_tau.scatter(down, [0.0] * len(down), marker='|', c='tab:red', label='expert down')
    for key, value in timeline.items():
        for suffix, (_label, colour) in MARKS.items():
            if key.endswith(suffix) and key != 'stream_start_ns':
                for ax in (ax_tau, ax_mbps):
                    ax.axvline((value - start) / 1e9, ls=':', c=colour)
                break
    ax_tau.set_ylabel('tau (confidence threshold)')
    ax_mbps.set_ylabel('offload Mbit/s (2 s window)')
    ax_mbps.set_xlabel('time since the stream started (s)')
    ax_tau.set_title(title, fontsize=9)
    ax_tau.legend(fontsize=7, loc='lower right', ncol=2)
    ax_mbps.legend(fontsize=7, loc='upper right', ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
