"""Repeated recipe runs (seeds x partition schemes) and their summary with spreads and plots.

``experiment.yaml``::

    recipe: recipe_fashion_mnist.yaml   # relative to this file
    overrides: {train_subset: 6000}     # recipe settings changed for every run
    seeds: [0, 1, 2]
    partitions: [fashion_mnist_s3, fashion_mnist_s4, fashion_mnist_s3_random]

Runs go to ``OUT/seed_<s>/<partition>/`` (each a model zoo with ``eval.json``). The
generalist stages (teacher, edge, near-edge generalist) do not depend on the partition,
so each seed trains them once and the other partitions of that seed reuse them. The
summary is ``OUT/summary.json``, ``OUT/results.md`` and PNG plots in ``OUT/``: every
number is a mean and a standard deviation over the seeds.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from ask_expert_ros.core.training.recipe import RecipeConfig, run_recipe

logger = logging.getLogger(__name__)

SHARED_STAGES = ('teacher', 'edge', 'generalist')
SWEEP_SERIES = {
    'edge_only_accuracy': 'edge only',
    'near_edge_only_accuracy': 'near-edge generalist only',
    'generalist_co_inference_accuracy': 'generalist co-inference',
    'static_co_inference_accuracy': 'static-expert co-inference',
    'co_inference_accuracy': 'specialist co-inference (progressive)',
}


@dataclass(frozen=True)
class ExperimentConfig:
    recipe: RecipeConfig
    seeds: tuple[int, ...]
    partitions: tuple[str, ...]

    @classmethod
    def from_file(cls, path: str | Path) -> ExperimentConfig:
        path = Path(path)
        data = yaml.safe_load(path.read_text(encoding='utf-8')) or {}
        unknown = set(data) - {'recipe', 'overrides', 'seeds', 'partitions'}
        if unknown:
            raise ValueError(f'{path}: unknown experiment settings {sorted(unknown)}')
        if 'recipe' not in data:
            raise ValueError(f'{path}: name the recipe file under "recipe"')
        recipe_path = (path.parent / data['recipe']).resolve()
        recipe = RecipeConfig.from_file(recipe_path, data.get('overrides') or {})
        seeds = tuple(int(s) for s in data.get('seeds', [0, 1, 2]))
        partitions = tuple(str(p) for p in data.get('partitions', [recipe.partition]))
        if not seeds or not partitions:
            raise ValueError(f'{path}: give at least one seed and one partition')
        return cls(recipe, seeds, partitions)


def run_name(partition: str) -> str:
    """A directory name for a partition spec: the built-in name, or file stem[_SCHEME]."""
    path, _, scheme = (
        partition.partition(':') if partition.count(':') == 1 else (partition, '', '')
    )
    name = Path(path).stem if path.endswith(('.yaml', '.yml')) else path
    return f'{name}_{scheme}' if scheme else name


def _share_generalists(source: Path, target: Path) -> None:
    """Hard-link (or copy) the partition-free models of ``source`` into ``target``."""
    (target / 'done').mkdir(parents=True, exist_ok=True)
    for stage in SHARED_STAGES:
        if not (source / 'done' / stage).is_file() or (target / 'done' / stage).is_file():
            continue
        for suffix in ('.safetensors', '.json'):
            src, dst = source / f'{stage}{suffix}', target / f'{stage}{suffix}'
            try:
                os.link(src, dst)
            except OSError:
                shutil.copy2(src, dst)
        shutil.copy2(source / 'done' / stage, target / 'done' / stage)


def run_experiment(
    config: ExperimentConfig, out_dir: str | Path, progress: bool = True
) -> dict[str, Any]:
    """Train and evaluate every (seed, partition), then write the summary."""
    out = Path(out_dir)
    for seed in config.seeds:
        first: Path | None = None
        for partition in config.partitions:
            run_dir = out / f'seed_{seed}' / run_name(partition)
            if first is not None:
                _share_generalists(first, run_dir)
            logger.info('experiment: seed %d, partition %s -> %s', seed, partition, run_dir)
            run_recipe(
                replace(config.recipe, seed=seed, partition=partition), run_dir, progress=progress
            )
            first = first or run_dir
    return summarise_experiment(out, config.partitions)


def _stats(values: list[float]) -> dict[str, float]:
    arr = np.asarray(values, dtype=float)
    return {
        'mean': float(arr.mean()),
        'std': float(arr.std(ddof=1)) if len(arr) > 1 else 0.0,
        'n': len(arr),
    }


def summarise_experiment(out_dir: str | Path, partitions: tuple[str, ...]) -> dict[str, Any]:
    """Mean and spread over the seeds of every figure of the runs' ``eval.json``."""
    out = Path(out_dir)
    summary: dict[str, Any] = {'partitions': {}}
    for spec in partitions:
        partition = run_name(spec)
        reports = [
            json.loads(p.read_text(encoding='utf-8'))
            for p in sorted(out.glob(f'seed_*/{partition}/eval.json'))
        ]
        if not reports:
            logger.warning('no finished runs for %s', partition)
            continue
        part: dict[str, Any] = {'seeds': len(reports)}
        part['generalists'] = {
            name: {
                metric: _stats([r['generalists'][name][metric] for r in reports])
                for metric in ('top1', 'top2', 'top3', 'recall_gap_2_1', 'recall_gap_3_1')
            }
            for name in reports[0]['generalists']
        }
        part['experts'] = {
            name: {
                'target': _stats([r['experts_mean'][name][0] for r in reports]),
                'overall': _stats([r['experts_mean'][name][1] for r in reports]),
            }
            for name in reports[0]['experts_mean']
        }
        taus = [row['tau'] for row in reports[0]['sweep']]
        sweep = []
        for i, tau in enumerate(taus):
            row: dict[str, Any] = {'tau': tau}
            for metric in ('offload_ratio', *SWEEP_SERIES):
                values = [r['sweep'][i].get(metric) for r in reports]
                if all(v is not None for v in values):
                    row[metric] = _stats([float(v) for v in values])
            gains = [
                r['sweep'][i]['co_inference_accuracy']
                - r['sweep'][i]['generalist_co_inference_accuracy']
                for r in reports
                if 'generalist_co_inference_accuracy' in r['sweep'][i]
            ]
            if gains:
                row['specialist_minus_generalist'] = _stats(gains)
            sweep.append(row)
        part['sweep'] = sweep
        summary['partitions'][partition] = part
    (out / 'summary.json').write_text(json.dumps(summary, indent=2) + '\n', encoding='utf-8')
    (out / 'results.md').write_text(format_summary(summary), encoding='utf-8')
    plot_summary(summary, out)
    return summary


def _pm(stat: dict[str, float]) -> str:
    return f'{100 * stat["mean"]:.2f} ± {100 * stat["std"]:.2f}'


def format_summary(summary: dict[str, Any]) -> str:
    lines = ['# Experiment summary', '', 'Mean ± standard deviation over seeds, in %.', '']
    for partition, part in summary['partitions'].items():
        lines += [f'## `{partition}` ({part["seeds"]} seeds)', '']
        lines += [
            '| model | Top-1 | Top-2 | Top-3 | gap 2-1 | gap 3-1 |',
            '|---|---:|---:|---:|---:|---:|',
        ]
        for name, g in part['generalists'].items():
            cells = ' | '.join(
                _pm(g[m]) for m in ('top1', 'top2', 'top3', 'recall_gap_2_1', 'recall_gap_3_1')
            )
            lines.append(f'| {name} | {cells} |')
        lines += ['', '| experts (mean over keys) | target | overall |', '|---|---:|---:|']
        for name, e in part['experts'].items():
            lines.append(f'| {name} | {_pm(e["target"])} | {_pm(e["overall"])} |')
        series = [m for m in SWEEP_SERIES if m in part['sweep'][0]]
        lines += [
            '',
            '| τ | α(τ) | '
            + ' | '.join(SWEEP_SERIES[m] for m in series)
            + ' | specialist − generalist |',
            '|---:|---:|' + '---:|' * (len(series) + 1),
        ]
        for row in part['sweep']:
            gain = row.get('specialist_minus_generalist')
            lines.append(
                f'| {row["tau"]:.2f} | {_pm(row["offload_ratio"])} | '
                + ' | '.join(_pm(row[m]) for m in series)
                + f' | {_pm(gain) if gain else "-"} |'
            )
        lines.append('')
    return '\n'.join(lines)


def plot_summary(summary: dict[str, Any], out_dir: Path) -> list[Path]:
    """Fig. 4 (accuracy vs tau) and alpha(tau) per partition; specialist gain per partition."""
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    written = []
    gain_fig, gain_ax = plt.subplots(figsize=(6, 4))
    for partition, part in summary['partitions'].items():
        taus = [row['tau'] for row in part['sweep']]
        fig, (ax, ax_alpha) = plt.subplots(1, 2, figsize=(11, 4))
        for metric, label in SWEEP_SERIES.items():
            if metric not in part['sweep'][0]:
                continue
            mean = [100 * row[metric]['mean'] for row in part['sweep']]
            std = [100 * row[metric]['std'] for row in part['sweep']]
            ax.errorbar(taus, mean, yerr=std, marker='o', capsize=3, label=label)
        ax.set_xlabel('τ')
        ax.set_ylabel('accuracy (%)')
        ax.invert_xaxis()
        ax.set_title(f'{partition}: accuracy vs τ')
        ax.legend(fontsize=7)
        alpha = [100 * row['offload_ratio']['mean'] for row in part['sweep']]
        ax_alpha.plot(taus, alpha, marker='o')
        ax_alpha.set_xlabel('τ')
        ax_alpha.set_ylabel('offload ratio α (%)')
        ax_alpha.invert_xaxis()
        ax_alpha.set_title('α(τ)')
        fig.tight_layout()
        path = out_dir / f'fig4_{partition}.png'
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
        if 'specialist_minus_generalist' in part['sweep'][0]:
            gain_ax.errorbar(
                taus,
                [100 * row['specialist_minus_generalist']['mean'] for row in part['sweep']],
                yerr=[100 * row['specialist_minus_generalist']['std'] for row in part['sweep']],
                marker='o',
                capsize=3,
                label=partition,
            )
    gain_ax.axhline(0.0, color='grey', linewidth=0.8)
    gain_ax.set_xlabel('τ')
    gain_ax.set_ylabel('specialist − generalist co-inference (points)')
    gain_ax.invert_xaxis()
    gain_ax.legend(fontsize=7)
    gain_fig.tight_layout()
    path = out_dir / 'specialist_gain.png'
    gain_fig.savefig(path, dpi=110)
    plt.close(gain_fig)
    written.append(path)
    return written
