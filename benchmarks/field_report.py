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

import numpy as np


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
            r['_dir'] = run
            detail.append((run.name, r))
            if args.plots:
                args.plots.mkdir(parents=True, exist_ok=True)
                shutil.copy(run / 'report.json', args.plots / f'{run.name}.json')
                shutil.copy(run / 'latency.png', args.plots / f'{run.name}.png')
                if (run / 'link.png').exists():
                    shutil.copy(run / 'link.png', args.plots / f'{run.name}.link.png')
    print()
    print(
        '| run | process | RSS start → end MB | growth after warm-up | growth, 2nd half '
        '| threads start → end |'
    )
    print('|---|---|---|---|---|---|')
    for name, r in detail:
        for proc, p in r['processes'].items():
            half = p.get('rss_growth_pct_second_half')
            print(
                f'| {name} | {proc} | {p["rss_mb_start"]:.0f} → {p["rss_mb_end"]:.0f} | '
                f'{p["rss_growth_pct_after_warmup"]:+.1f} % | '
                f'{"–" if half is None else format(half, "+.1f") + " %"} | '
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
    _fairness(detail)
    _budget(detail)
    return 0


def _fairness(detail: list[tuple[str, dict[str, Any]]]) -> None:
    """Per edge of the fairness runs (``fair4-x<factor>-*``): requests/s, p95, and the
    other edges' p95 under the flood against the reference (factor 1)."""
    runs = {name: r for name, r in detail if name.startswith('fair')}
    if not runs:
        return
    print()
    print('| run | edge | camera fps | expert % | shed (OVERLOADED) | p50 / p95 ms |')
    print('|---|---|---|---|---|---|')
    for name, r in runs.items():
        shed = {
            node.rsplit(' ', 1)[-1]: c.get('fallback_shed', 0)
            for node, c in r['totals'].get('counters', {}).items()
        }
        for edge, t in sorted(r['per_edge'].items()):
            lat = t['latency_ms']
            print(
                f'| {name} | {edge} | {r["rate_hz_per_edge"][edge]:g} | {t["expert_pct"]:.1f} | '
                f'{shed.get(edge, "–")} | {_f(lat["p50"])} / {_f(lat["p95"])} |'
            )
    for name, r in runs.items():
        # the reference: the same rig (CPUs split or not) with no flood
        split = '-split-' in name
        ref = next((x for n, x in runs.items() if '-x1-' in n and ('-split-' in n) == split), None)
        if ref is None or r is ref:
            continue
        # the victims: every edge but a flooding one (a camera above the others' rate)
        rates = r['rate_hz_per_edge']
        victims = [e for e in sorted(r['per_edge']) if rates[e] <= min(rates.values())]
        ratios = [
            r['per_edge'][e]['latency_ms']['p95'] / ref['per_edge'][e]['latency_ms']['p95']
            for e in victims
        ]
        flood = r.get('flood') or {}
        if flood.get('sent'):
            print(
                f'\n{name}: the flooding robot sent {flood["sent"]} requests; answers by '
                f'status: {flood["statuses"]}'
            )
        print(
            f"\n{name}: the other edges' p95 / reference p95: "
            + ', '.join(f'{x:.2f}' for x in ratios)
            + f' (worst {max(ratios):.2f})'
        )


def _budget(detail: list[tuple[str, dict[str, Any]]]) -> None:
    """Budget runs against fixed-tau runs: offload traffic (the observer's CDR count)
    and accuracy; the best fixed tau that fits each budget."""
    runs = {n: r for n, r in detail if n.startswith(('budget-', 'tau-'))}
    if not runs:
        return
    print()
    print('| run | tau | budget Mbit/s | offload Mbit/s | ÷ budget | expert % | accuracy % |')
    print('|---|---|---|---|---|---|---|')
    fixed = []
    for name, r in sorted(runs.items()):
        c, t = r['config'], r['totals']
        budget = float(c['edge_params'].get('offload_budget_mbps', 0) or 0)
        taus = [row[1] for rows in r['link_series'].values() for row in rows]
        tau = f'{min(taus):.2f}–{max(taus):.2f} (online)' if budget else f'{c["tau"]:g}'
        ratio = f'{t["offload_mbps"] / budget:.3f}' if budget else '–'
        print(
            f'| {name} | {tau} | {budget or "–"} | {t["offload_mbps"]:.4f} | {ratio} | '
            f'{t["expert_pct"]:.1f} | {100 * t["accuracy"]:.2f} |'
        )
        if not budget:
            fixed.append((c['tau'], t['offload_mbps'], t['accuracy']))
    for name, r in sorted(runs.items()):
        budget = float(r['config']['edge_params'].get('offload_budget_mbps', 0) or 0)
        if not budget:
            continue
        fits = [f for f in fixed if f[1] <= budget]
        best = max(fits, key=lambda f: f[2], default=None)
        acc = r['totals']['accuracy']
        if best is None:
            print(f'\n{name}: no fixed tau of the sweep fits')
            continue
        text = (
            f'best fixed tau that fits: {best[0]:g} at {100 * best[2]:.2f} %; online '
            f'{100 * acc:.2f} % ({100 * (acc - best[2]):+.2f} pt'
        )
        fixed_run = next(n for n, x in runs.items() if x['config']['tau'] == best[0] and n != name)
        low, high = _paired_interval(r['_dir'], runs[fixed_run]['_dir'])
        print(f'\n{name}: {text}, 95 % paired bootstrap [{low:+.2f}, {high:+.2f}] pt)')


DIGITS = ('zero', 'one', 'two', 'three', 'four', 'five', 'six', 'seven', 'eight', 'nine')


def _correct(run: Path) -> np.ndarray:
    """Per frame in camera order: its result's label was the truth (no result: wrong)."""
    report = json.loads((run / 'report.json').read_text())
    names = report.get('class_names') or DIGITS  # runs before class_names was kept: digits
    rows = sorted(json.loads((run / 'frames.json').read_text()), key=lambda r: r['stamp_ns'])
    return np.array([r.get('label') == names[r['truth']] for r in rows], dtype=np.float64)


def _paired_interval(a: Path, b: Path, n: int = 4000) -> tuple[float, float]:
    """95 % bootstrap interval (pt) of accuracy(a) - accuracy(b), frames paired by their
    index in the stream: both runs' cameras send the same images in the same order."""
    x, y = _correct(a), _correct(b)
    m = min(len(x), len(y))
    diff = x[:m] - y[:m]
    rng = np.random.default_rng(0)
    means = diff[rng.integers(0, m, size=(n, m))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return 100 * float(low), 100 * float(high)


if __name__ == '__main__':
    sys.exit(main())
