"""Plots of a bench report (:func:`ask_expert_ros.core.evaluation.benchmark.run_bench`), as PNG.

One figure per paper artefact, each line labelled with the report's series name so
a reader (or a test) can match the picture to ``report.json``:

=========================  ===============================================================
file                       content
=========================  ===============================================================
``accuracy_vs_tau.png``    accuracy (or agreement) vs τ, four scenarios (Fig. 4)
``offload_vs_tau.png``     α(τ) (Table 4) and bytes offloaded per frame
``latency_energy.png``     normalised latency and energy vs τ (Fig. 5)
``pareto.png``             accuracy vs normalised latency / energy, fronts marked (Fig. 6)
``efficiency_ratios.png``  accuracy-to-latency and accuracy-to-energy ratios (Fig. 7)
=========================  ===============================================================
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt
from matplotlib.figure import Figure

PLOT_FILES = (
    'accuracy_vs_tau',
    'offload_vs_tau',
    'latency_energy',
    'pareto',
    'efficiency_ratios',
)


def _tau_axis(ax: Any) -> None:
    ax.set_xlabel('τ')
    ax.invert_xaxis()
    ax.grid(alpha=0.3)


def _y(values: list[float | None]) -> list[float]:
    return [math.nan if v is None else v for v in values]


def figures(report: dict[str, Any]) -> dict[str, Figure]:
    """The report's figures by file stem (see the module docstring); caller closes them."""
    s = report['series']
    taus = s['tau']
    what = 'accuracy' if report['metric'] == 'accuracy' else 'agreement with expert-only'
    figs: dict[str, Figure] = {}

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, values in s['accuracy'].items():
        ax.plot(taus, [100 * v for v in values], marker='o', label=name)
    ax.set_ylabel(f'{what} (%)')
    ax.set_title(f'{what} vs τ')
    _tau_axis(ax)
    ax.legend(fontsize=7)
    figs['accuracy_vs_tau'] = fig

    fig, (ax, ax_bytes) = plt.subplots(1, 2, figsize=(10, 4))
    ax.plot(taus, [100 * a for a in s['offload_ratio']], marker='o', label='offload_ratio')
    ax.set_ylabel('offload ratio α (%)')
    ax.set_title('α(τ)')
    _tau_axis(ax)
    ax_bytes.plot(
        taus, s['bytes_offloaded_per_frame'], marker='o', label='bytes_offloaded_per_frame'
    )
    ax_bytes.set_ylabel('bytes on the link per frame (ExpertRequest, CDR)')
    ax_bytes.set_title('bytes offloaded per frame')
    _tau_axis(ax_bytes)
    figs['offload_vs_tau'] = fig

    fig, (ax_l, ax_e) = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, title in (
        (ax_l, 'normalised_latency', 'latency'),
        (ax_e, 'normalised_energy', 'energy'),
    ):
        for name, values in s[key].items():
            ax.plot(taus, values, marker='o', label=name)
        ax.set_ylabel(f'{title} / edge_only_generalist')
        ax.set_title(f'normalised {title} vs τ')
        _tau_axis(ax)
        ax.legend(fontsize=7)
    figs['latency_energy'] = fig

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    points = report['pareto']
    for ax, cost in zip(axes, ('latency', 'energy'), strict=True):
        for scenario in dict.fromkeys(p['scenario'] for p in points):
            mine = [p for p in points if p['scenario'] == scenario]
            ax.plot(
                [p[cost] for p in mine],
                [100 * p['accuracy'] for p in mine],
                marker='o',
                linestyle='-' if len(mine) > 1 else 'none',
                label=scenario,
            )
        front = sorted((p for p in points if p[f'on_{cost}_front']), key=lambda p: p[cost])
        ax.plot(
            [p[cost] for p in front],
            [100 * p['accuracy'] for p in front],
            color='black',
            linestyle='--',
            linewidth=0.8,
            label='pareto_front',
        )
        ax.set_xlabel(f'{cost} / edge_only')
        ax.set_ylabel(f'{what} (%)')
        ax.set_title(f'{what}–{cost} trade-off')
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    figs['pareto'] = fig

    fig, (ax_l, ax_e) = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, unit in (
        (ax_l, 'accuracy_to_latency', 'per ms'),
        (ax_e, 'accuracy_to_energy', 'per J'),
    ):
        for name, values in s[key].items():
            ax.plot(taus, [100 * v for v in _y(values)], marker='o', label=name)
        ax.set_ylabel(f'{what} gain over edge_only (points) {unit}')
        ax.set_title(key.replace('_', ' '))
        _tau_axis(ax)
        ax.legend(fontsize=7)
    figs['efficiency_ratios'] = fig
    for f in figs.values():
        f.tight_layout()
    return figs


def write_plots(report: dict[str, Any], out_dir: str | Path) -> dict[str, Path]:
    """Write every figure of :func:`figures` as ``out_dir/<name>.png``; name -> path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    for name, fig in figures(report).items():
        path = out_dir / f'{name}.png'
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written[name] = path
    return written
