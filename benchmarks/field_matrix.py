"""Run the reliability matrix of issue 17 on the field rig (needs root), one
``ask-expert soak`` per row, each in its own output folder.

    sudo .venv/bin/python benchmarks/field_matrix.py --zoo ZOO --out /tmp/field_runs/run1 \
        [--only NAME ...] [--soak-minutes 10]

Then ``benchmarks/field_report.py`` renders docs/results/reliability.md from the folders.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

# name -> soak arguments (besides --zoo/--out); 1 edge at 30 fps, tau 0.9, 250 ms deadline
ROWS: dict[str, list[str]] = {
    'steady-good': ['--scenario', 'steady', '--profile', 'good', '--duration-s', '30'],
    'steady-poor': ['--scenario', 'steady', '--profile', 'poor', '--duration-s', '30'],
    'steady-congested': ['--scenario', 'steady', '--profile', 'congested', '--duration-s', '30'],
    'partition-good': [
        '--scenario', 'partition', '--profile', 'good', '--duration-s', '30',
        '--fault-at-s', '10', '--fault-s', '5',
    ],
    'partition-poor': [
        '--scenario', 'partition', '--profile', 'poor', '--duration-s', '30',
        '--fault-at-s', '10', '--fault-s', '5',
    ],
    'expert_kill-good': [
        '--scenario', 'expert_kill', '--profile', 'good', '--duration-s', '35',
        '--fault-at-s', '10', '--fault-s', '2',
    ],
    'expert_stop-good': [
        '--scenario', 'expert_stop', '--profile', 'good', '--duration-s', '30',
        '--fault-at-s', '10', '--fault-s', '5',
    ],
    'edge_restart-poor': [
        '--scenario', 'edge_restart', '--profile', 'poor', '--duration-s', '35',
        '--fault-at-s', '10', '--fault-s', '12',
    ],
    'late_answers-slow': [
        '--scenario', 'late_answers', '--profile', 'slow', '--duration-s', '20',
        '--deadline-ms', '400',
    ],
}  # fmt: skip

# fairness: 4 edges at 30 fps, every uncertain frame offloaded (tau 1.01), edge0's camera
# at 1x (the reference) or 10x its share (a flooding robot); the other edges' p95 compared
FAIRNESS_ROWS: dict[str, list[str]] = {
    f'fair4-x{factor}-good': [
        '--scenario', 'steady', '--profile', 'good', '--duration-s', '30', '--edges', '4',
        '--tau', '1.01', '--rate-factors', str(factor),
    ]
    for factor in (1, 10)
} | {
    # a robot sending requests only (no model of its own eating these 2 cores) at 10x the
    # 30 requests/s each edge sends
    'fair4-rogue10-good': [
        '--scenario', 'steady', '--profile', 'good', '--duration-s', '30', '--edges', '4',
        '--tau', '1.01', '--flood-rps', '300',
    ],
} | {
    # the same with the expert on a CPU of its own, the robot side on the other: a flood's
    # cost on the robots' side cannot slow the expert (nor the reverse), as on two machines
    f'fair4-{kind}-split-good': [
        '--scenario', 'steady', '--profile', 'good', '--duration-s', '30', '--edges', '4',
        '--tau', '1.01', '--cpu-split', *extra,
    ]
    for kind, extra in (
        ('x1', []), ('x10', ['--rate-factors', '10']), ('rogue10', ['--flood-rps', '300']),
        # the expert's rate quota at twice an edge's share
        ('rogue10-quota60', ['--flood-rps', '300', '--expert-set', 'max_rate_per_edge=60']),
    )
}  # fmt: skip

# bandwidth budget: 1 edge at 30 fps on the poor link; fixed tau against tau moved online
BUDGETS_MBPS = (0.05, 0.1)
FIXED_TAUS = (0.5, 0.6, 0.65, 0.7, 0.75, 0.8, 0.9, 0.95)
BUDGET_ROWS: dict[str, list[str]] = {
    **{
        f'budget-{b:g}-poor': [
            '--scenario', 'steady', '--profile', 'poor', '--duration-s', '40',
            '--edge-set', f'offload_budget_mbps={b:g}',
        ]
        for b in BUDGETS_MBPS
    },
    **{
        f'tau-{tau:g}-poor': [
            '--scenario', 'steady', '--profile', 'poor', '--duration-s', '40', '--tau', f'{tau:g}',
        ]
        for tau in FIXED_TAUS
    },
}  # fmt: skip


def soak_row(minutes: float) -> list[str]:
    """8 edges at 30 frames/s each on the good link, no fault."""
    return [
        '--scenario', 'steady', '--profile', 'good', '--edges', '8', '--rate', '30',
        '--duration-s', str(minutes * 60),
    ]  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--zoo', type=Path, required=True)
    parser.add_argument('--out', type=Path, required=True)
    parser.add_argument('--only', nargs='*', default=None, help='row names (default: all)')
    parser.add_argument('--soak-minutes', type=float, default=0.0, help='0: no soak row')
    args = parser.parse_args()
    rows = ROWS | FAIRNESS_ROWS | BUDGET_ROWS
    if args.soak_minutes:
        rows[f'soak-8x30-{args.soak_minutes:g}min'] = soak_row(args.soak_minutes)
    names = args.only if args.only is not None else list(rows)
    for name in names:
        out = args.out / name
        cmd = [
            sys.executable, '-m', 'ask_expert_ros.cli', 'soak',
            '--zoo', str(args.zoo), '--out', str(out), *rows[name],
        ]  # fmt: skip
        shown = ['ask-expert', 'soak', '--zoo', 'ZOO', '--out', 'OUT', *rows[name]]
        start = time.monotonic()
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        out.mkdir(parents=True, exist_ok=True)
        (out / 'command.txt').write_text(shlex.join(shown) + '\n')
        (out / 'soak.log').write_text(done.stdout + done.stderr)
        status = 'ok' if done.returncode == 0 else f'FAILED ({done.returncode})'
        print(f'{name}: {status} in {time.monotonic() - start:.0f} s', flush=True)
        if done.returncode == 0:
            totals = json.loads((out / 'report.json').read_text())['totals']
            print('  ', {k: totals[k] for k in ('frames_in', 'lost', 'duplicates', 'crossed')})
    return 0


if __name__ == '__main__':
    sys.exit(main())
