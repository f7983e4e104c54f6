"""Tables for docs/results/reliability.md from field runs (``benchmarks/field_matrix.py``).

    .venv/bin/python benchmarks/field_report.py RUNS_DIR [--plots docs/results/reliability]

Prints the Markdown tables; with ``--plots`` copies each run's report.json and
latency.png there (``<run>.json``, ``<run>.png``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any


def _f(value: Any, fmt: str = '.0f') -> str:
    return '–' if value is None else format(value, fmt)


def _recovery(totals: dict[str, Any]) -> str:
    parts = []
    for kind, entry in totals.get('recovery', {}).items():
        text = _f(entry.get('recovery_s'), '.2f')
        if 'expert_discovered_s' in entry:
            text += f' ({_f(entry["expert_discovered_s"], ".1f")} to discovery)'
        parts.append(text if len(totals['recovery']) == 1 else f'{kind}: {text}')
    return '; '.join(parts) or '–'


def _rss(processes: dict[str, Any]) -> str:
    growth = [p['rss_growth_pct_after_warmup'] for p in processes.values() if p['samples'] > 10]
    return f'{max(growth):+.1f} %' if growth else '–'


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('runs', type=Path, nargs='+', help='folders of field_matrix.py')
    parser.add_argument('--plots', type=Path, default=None)
    args = parser.parse_args()
    print(
        '| run | scenario | link | edges × fps (achieved) | frames in | results out | lost '
        '| dup | crossed | expert % | fallback % | p50 / p95 / p99 ms | recovery s | '
        'RSS growth |'
    )
    print('|' + '---|' * 14)
    detail = []
    for root in args.runs:
        for run in sorted(p for p in root.iterdir() if (p / 'report.json').exists()):
            r = json.loads((run / 'report.json').read_text())
            c, t = r['config'], r['totals']
            lat = t['latency_ms']
            fps = t['achieved_fps'] / max(c['edges'], 1)
            print(
                f'| {run.name} | {c["scenario"]} | {c["profile"]} | {c["edges"]} × '
                f'{c["rate_hz"]:g} ({fps:.1f}) | {t["frames_in"]} | {t["results_out"]} | '
                f'{t["lost"]} | {t["duplicates"]} | {t["crossed"]} | {t["expert_pct"]:.1f} | '
                f'{t["fallback_pct"]:.1f} | {_f(lat["p50"])} / {_f(lat["p95"])} / '
                f'{_f(lat["p99"])} | {_recovery(t)} | {_rss(r["processes"])} |'
            )
            detail.append((run.name, r))
            if args.plots:
                args.plots.mkdir(parents=True, exist_ok=True)
                shutil.copy(run / 'report.json', args.plots / f'{run.name}.json')
                shutil.copy(run / 'latency.png', args.plots / f'{run.name}.png')
    print()
    print('| run | process | RSS start → end MB | threads start → end |')
    print('|---|---|---|---|')
    for name, r in detail:
        for proc, p in r['processes'].items():
            print(
                f'| {name} | {proc} | {p["rss_mb_start"]:.0f} → {p["rss_mb_end"]:.0f} | '
                f'{p["threads_start"]} → {p["threads_end"]} |'
            )
    print()
    print('| run | edge counters over the stream (sum of edges) |')
    print('|---|---|')
    for name, r in detail:
        sums: dict[str, int] = {}
        for node, counters in r['totals'].get('counters', {}).items():
            if ': edge ' in node:
                for k, v in counters.items():
                    sums[k] = sums.get(k, 0) + v
        keep = [
            'frames', 'accepted', 'offloaded', 'expert', 'fallback_deadline', 'fallback_error',
            'fallback_unavailable', 'fallback_down', 'fallback_shed', 'late_replies',
        ]  # fmt: skip
        print(f'| {name} | ' + ', '.join(f'{k} {sums[k]}' for k in keep if k in sums) + ' |')
    return 0


if __name__ == '__main__':
    sys.exit(main())
