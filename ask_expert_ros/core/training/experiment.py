"""Repeated recipe runs (seeds x partition schemes) and their summary with spreads and plots.

``experiment.yaml``::

    recipe: recipe_fashion_mnist.yaml   # relative to this file
    overrides: {train_subset: 6000}     # recipe settings changed for every run
    seeds: [0, 1, 2]
    partitions: [fashion_mnist_s3, fashion_mnist_s4, fashion_mnist_s3_random, fashion_mnist_s1]
    control: fashion_mnist_s1           # optional: every partition is also compared with it

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

from ask_expert_ros.core.evaluation.recipe_eval import ceiling_outcomes, in_key_argmax
from ask_expert_ros.core.evaluation.significance import bootstrap_interval, paired_difference
from ask_expert_ros.core.training.recipe import RecipeConfig, run_recipe

logger = logging.getLogger(__name__)

SHARED_STAGES = ('teacher', 'edge', 'generalist')
SWEEP_SERIES = {
    'edge_only_accuracy': 'edge only',
    'near_edge_only_accuracy': 'near-edge generalist only',
    'generalist_co_inference_accuracy': 'generalist co-inference',
    'static_co_inference_accuracy': 'static-expert co-inference',
    'co_inference_accuracy': 'specialist co-inference (progressive)',
    'generalist_in_key_co_inference_accuracy': 'generalist co-inference, in key',
    'specialist_in_key_co_inference_accuracy': 'specialist co-inference, in key',
}

CEILING_SERIES = {
    'topk_recall_offloaded': 'offloaded frames with the true class in the edge Top-k',
    'key_recall_offloaded': "offloaded frames with the true class in the routed key's classes",
    'key_ceiling_accuracy': 'co-inference ceiling (expert right whenever the class is in its key)',
}


@dataclass(frozen=True)
class ExperimentConfig:
    recipe: RecipeConfig
    seeds: tuple[int, ...]
    partitions: tuple[str, ...]
    control: str | None = None

    @classmethod
    def from_file(cls, path: str | Path) -> ExperimentConfig:
        path = Path(path)
        data = yaml.safe_load(path.read_text(encoding='utf-8')) or {}
        unknown = set(data) - {'recipe', 'overrides', 'seeds', 'partitions', 'control'}
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
        control = data.get('control')
        if control is not None and str(control) not in partitions:
            raise ValueError(f'{path}: the control {control!r} must be one of the partitions')
        return cls(recipe, seeds, partitions, None if control is None else str(control))


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
            # the control's one subset holds every class: its static expert would be the
            # generalist trained again without the weights, a baseline of nothing
            static = config.recipe.static and partition != config.control
            recipe = replace(config.recipe, seed=seed, partition=partition, static=static)
            run_recipe(recipe, run_dir, progress=progress)
            first = first or run_dir
    return summarise_experiment(out, config.partitions, config.control)


def _stats(values: list[float]) -> dict[str, float]:
    arr = np.asarray(values, dtype=float)
    return {
        'mean': float(arr.mean()),
        'std': float(arr.std(ddof=1)) if len(arr) > 1 else 0.0,
        'n': len(arr),
    }


def summarise_experiment(
    out_dir: str | Path, partitions: tuple[str, ...], control: str | None = None
) -> dict[str, Any]:
    """Mean and spread over the seeds of every figure of the runs' ``eval.json``; with
    ``control`` (a one-subset partition: the generalist given the specialists' extra
    training), every other partition is also compared with it, frame by frame."""
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
        for name, expert in part['experts'].items():
            in_key = [r.get('experts_in_key_mean', {}).get(name) for r in reports]
            if all(v is not None for v in in_key):
                expert['in_key'] = _stats([float(v) for v in in_key])
        taus = [row['tau'] for row in reports[0]['sweep']]
        sweep = []
        for i, tau in enumerate(taus):
            row: dict[str, Any] = {'tau': tau}
            for metric in ('offload_ratio', *SWEEP_SERIES, *CEILING_SERIES):
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
        frames = sorted(out.glob(f'seed_*/{partition}/eval_frames.npz'))
        if len(frames) == len(reports):
            part['intervals'] = interval_summary(frames)
        if control is not None and run_name(control) != partition:
            versus = control_comparison(frames, run_name(control))
            if versus is not None:
                part['vs_control'] = versus
        summary['partitions'][partition] = part
    (out / 'summary.json').write_text(json.dumps(summary, indent=2) + '\n', encoding='utf-8')
    (out / 'results.md').write_text(format_summary(summary), encoding='utf-8')
    plot_summary(summary, out)
    plot_training_curves(out, tuple(summary['partitions']))
    return summary


def _key_means(preds: np.ndarray, labels: np.ndarray, masks: np.ndarray) -> dict[str, Any]:
    """Per-frame values whose mean over frames is the mean over keys of each key's
    target accuracy (``target``) and of its overall accuracy (``overall``)."""
    right = (preds == labels[None, :]).astype(np.float64)  # [K, N]
    sizes = masks.sum(axis=1, keepdims=True)
    n_keys, n = right.shape
    target = (right * masks * (n / (n_keys * np.maximum(sizes, 1)))).sum(axis=0)
    return {'target': target, 'overall': right.mean(axis=0)}


def interval_summary(frame_files: list[Path]) -> dict[str, Any]:
    """95 % intervals (seeds and test frames resampled) on every figure of a partition's
    tables, from the runs' ``eval_frames.npz`` (one per seed, same test frames), and the
    paired tests of specialist vs generalist and progressive vs static."""
    runs = [dict(np.load(path)) for path in frame_files]
    labels = runs[0]['labels']
    if any(not np.array_equal(run['labels'], labels) for run in runs):
        raise ValueError('the runs were evaluated on different test frames')

    def right(name: str, row: int | None = None) -> np.ndarray:
        return np.stack(
            [(run[name] if row is None else run[name][row]) == labels for run in runs]
        ).astype(np.float64)

    result: dict[str, Any] = {
        'generalists': {
            name: bootstrap_interval(right(f'{name}_pred'))
            for name in ('edge', 'generalist', 'teacher')
            if all(f'{name}_pred' in run for run in runs)
        }
    }
    experts: dict[str, dict[str, np.ndarray]] = {}
    for name in ('progressive', 'static', 'teacher', 'generalist'):
        # [K, N] answers per key; the generalist answers the same for every key
        source = 'generalist_pred' if name == 'generalist' else f'{name}_key_pred'
        if all(source in run for run in runs):
            experts[name] = _expert_means(
                [
                    (
                        np.broadcast_to(run[source], run['key_masks'].shape),
                        run.get(f'{name}_key_pred_in_key'),
                        run['key_masks'],
                    )
                    for run in runs
                ],
                labels,
            )
    result['experts'] = {
        name: {part: bootstrap_interval(values) for part, values in parts.items()}
        for name, parts in experts.items()
    }
    for other in ('static', 'generalist'):
        if 'progressive' in experts and other in experts:
            result[f'progressive_minus_{other}'] = {
                part: paired_difference(experts['progressive'][part], experts[other][part])
                for part in ('target', 'overall', 'in_key')
                if part in experts['progressive'] and part in experts[other]
            }
    sweep = []
    for t in range(runs[0]['final'].shape[0]):
        row: dict[str, Any] = {
            'offload_ratio': bootstrap_interval(
                np.stack([run['offload'][t] for run in runs]).astype(np.float64)
            ),
            'co_inference_accuracy': bootstrap_interval(right('final', t)),
        }
        if all('generalist_final' in run for run in runs):
            row['generalist_co_inference_accuracy'] = bootstrap_interval(
                right('generalist_final', t)
            )
            row['specialist_minus_generalist'] = paired_difference(
                right('final', t), right('generalist_final', t)
            )
        if all('static_final' in run for run in runs):
            row['static_co_inference_accuracy'] = bootstrap_interval(right('static_final', t))
            row['progressive_minus_static'] = paired_difference(
                right('final', t), right('static_final', t)
            )
            if 'generalist_final' in runs[0]:
                row['static_minus_generalist'] = paired_difference(
                    right('static_final', t), right('generalist_final', t)
                )
        if all('in_key_final' in run and 'generalist_in_key_final' in run for run in runs):
            spec, gen = right('in_key_final', t), right('generalist_in_key_final', t)
            row['specialist_in_key_co_inference_accuracy'] = bootstrap_interval(spec)
            row['generalist_in_key_co_inference_accuracy'] = bootstrap_interval(gen)
            row['specialist_minus_generalist_in_key'] = paired_difference(spec, gen)
            row['generalist_in_key_minus_generalist'] = paired_difference(
                gen, right('generalist_final', t)
            )
        ceiling = np.stack([ceiling_outcomes(run, run['offload'][t]) for run in runs])
        row['key_ceiling_accuracy'] = bootstrap_interval(ceiling)
        sweep.append(row)
    result['sweep'] = sweep
    result['routed_by_key'] = routed_by_key(runs)
    return result


def control_comparison(frame_files: list[Path], control: str) -> dict[str, Any] | None:
    """A partition's specialists against the control run of the same seeds.

    The control is a one-subset partition: its single "expert" is the near-edge
    generalist trained exactly as long again as the specialists were (specialist teacher
    and expert stages with every class in D_I). Same seed, same edge model and same tau
    mean the same frames are offloaded, so the two are paired frame by frame. Seeds
    without a finished control run are left out.
    """
    pairs = []
    for path in frame_files:
        other = path.parent.parent / control / 'eval_frames.npz'
        if other.is_file():
            pairs.append((dict(np.load(path)), dict(np.load(other))))
    if not pairs:
        return None
    labels = pairs[0][0]['labels']
    for run, ctrl in pairs:
        if not (np.array_equal(run['labels'], labels) and np.array_equal(ctrl['labels'], labels)):
            raise ValueError('the runs were evaluated on different test frames')
        if not np.array_equal(run['offload'], ctrl['offload']):
            raise ValueError(f'{control}: offloads other frames (another edge model or taus)')

    def right(preds: list[np.ndarray]) -> np.ndarray:
        return np.stack([p == labels for p in preds]).astype(np.float64)

    sweep = []
    for t in range(pairs[0][0]['final'].shape[0]):
        spec = right([run['final'][t] for run, _ in pairs])
        base = right([c['final'][t] for _, c in pairs])
        row = {
            'control_co_inference_accuracy': bootstrap_interval(base),
            'specialist_minus_control': paired_difference(spec, base),
        }
        if all('static_final' in run for run, _ in pairs):
            static = right([run['static_final'][t] for run, _ in pairs])
            row['static_minus_control'] = paired_difference(static, base)
        sweep.append(row)
    in_key = all('expert_logits' in c for _, c in pairs)
    controls = _expert_means(
        [
            (
                np.broadcast_to(c['progressive_key_pred'][0], r['key_masks'].shape),
                _control_in_key(c['expert_logits'], r['key_masks'], labels) if in_key else None,
                r['key_masks'],
            )
            for r, c in pairs
        ],
        labels,
    )
    result: dict[str, Any] = {
        'control': control,
        'seeds': len(pairs),
        'sweep': sweep,
        'control_experts': {part: bootstrap_interval(v) for part, v in controls.items()},
    }
    for name in ('progressive', 'static'):
        if not all(f'{name}_key_pred' in r for r, _ in pairs):
            continue
        mine = _expert_means(
            [
                (r[f'{name}_key_pred'], r.get(f'{name}_key_pred_in_key'), r['key_masks'])
                for r, _ in pairs
            ],
            labels,
        )
        result[f'{name}_minus_control'] = {
            part: paired_difference(mine[part], controls[part])
            for part in mine
            if part in controls
        }
    return result


def _expert_means(
    runs: list[tuple[np.ndarray, np.ndarray | None, np.ndarray]], labels: np.ndarray
) -> dict[str, np.ndarray]:
    """Per seed ``(key preds, in-key key preds or None, key masks)`` -> per-frame values of
    the mean over keys on target, overall and (where every seed has it) in key."""
    means = [_key_means(preds, labels, masks) for preds, _, masks in runs]
    out = {part: np.stack([m[part] for m in means]) for part in ('target', 'overall')}
    restricted = [in_key for _, in_key, _ in runs if in_key is not None]
    if len(restricted) == len(runs):
        out['in_key'] = np.stack(
            [
                _key_means(in_key, labels, masks)['target']
                for in_key, (_, _, masks) in zip(restricted, runs, strict=True)
            ]
        )
    return out


def _control_in_key(logits: np.ndarray, key_masks: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``[K, N]``: the control's answer restricted to each key's classes (the classes of
    the key's target frames)."""
    classes = np.zeros((len(key_masks), logits.shape[1]), dtype=bool)
    for i, mask in enumerate(key_masks):
        classes[i, np.unique(labels[mask])] = True
    return np.stack([in_key_argmax(logits.astype(np.float32), c) for c in classes])


def routed_by_key(runs: list[dict[str, np.ndarray]]) -> list[list[dict[str, Any]]]:
    """Per tau, per routed key, pooled over the seeds: where the specialists win or lose.

    For the frames offloaded to a key: their share of all frames, the share whose class
    is in the key, and the specialist's and the generalist's accuracy on them. The
    co-inference difference at that tau is the sum over keys of share x (specialist -
    generalist).
    """
    labels = runs[0]['labels']
    n = len(labels)
    out = []
    for t in range(runs[0]['final'].shape[0]):
        rows = []
        bits_seen = sorted({int(b) for run in runs for b in np.unique(run['key_bits'])})
        for bits in bits_seen:
            sent = [run['offload'][t] & (run['key_bits'] == bits) for run in runs]
            count = sum(int(m.sum()) for m in sent)
            if not count or not all('generalist_final' in run for run in runs):
                continue
            spec = sum(
                int((run['final'][t][m] == labels[m]).sum())
                for run, m in zip(runs, sent, strict=True)
            )
            gen = sum(
                int((run['generalist_final'][t][m] == labels[m]).sum())
                for run, m in zip(runs, sent, strict=True)
            )
            in_key = sum(
                int(run['key_class_masks'][m, labels[m]].sum())
                for run, m in zip(runs, sent, strict=True)
            )
            rows.append(
                {
                    'key_bits': bits,
                    'share': count / (n * len(runs)),
                    'key_recall': in_key / count,
                    'specialist': spec / count,
                    'generalist': gen / count,
                }
            )
        out.append(rows)
    return out


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
        lines += [
            '',
            '| experts (mean over keys) | target | overall | target, in key |',
            '|---|---:|---:|---:|',
        ]
        for name, e in part['experts'].items():
            in_key = _pm(e['in_key']) if 'in_key' in e else '-'
            lines.append(f'| {name} | {_pm(e["target"])} | {_pm(e["overall"])} | {in_key} |')
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
        if 'intervals' in part:
            lines += format_intervals(part)
        if 'vs_control' in part:
            lines += format_control(part)
    return '\n'.join(lines)


def format_control(part: dict[str, Any]) -> list[str]:
    """The specialists against the generalist given their extra training (the control)."""
    vs = part['vs_control']
    ctrl = vs['control_experts']
    parts = ('target', 'overall', 'in_key')
    lines = [
        f'### Against the control `{vs["control"]}` ({vs["seeds"]} seeds, paired by frame)',
        '',
        'The control is the near-edge generalist trained as long again as the specialists '
        '(every class in D_I): what the extra epochs alone give.',
        '',
        '| experts (mean over keys) | target | overall | target, in key |',
        '|---|---:|---:|---:|',
        '| control | '
        + ' | '.join(_ci(c) if c else '-' for c in (ctrl.get(p) for p in parts))
        + ' |',
    ]
    for name in ('progressive', 'static'):
        diff = vs.get(f'{name}_minus_control')
        if diff:
            lines.append(
                f'| {name} − control | '
                + ' | '.join(_diff(d) if d else '-' for d in (diff.get(p) for p in parts))
                + ' |'
            )
    lines += [
        '',
        '| τ | control co-inference | specialist − control | static − control |',
        '|---:|---:|---:|---:|',
    ]
    for row, stats in zip(part['sweep'], vs['sweep'], strict=True):
        static = stats.get('static_minus_control')
        lines.append(
            f'| {row["tau"]:.2f} | {_ci(stats["control_co_inference_accuracy"])} '
            f'| {_diff(stats["specialist_minus_control"])} | {_diff(static) if static else "-"} |'
        )
    lines.append('')
    return lines


def _ci(stat: dict[str, Any]) -> str:
    return f'{100 * stat["mean"]:.2f} [{100 * stat["low"]:.2f}, {100 * stat["high"]:.2f}]'


def _diff(stat: dict[str, Any]) -> str:
    return (
        f'{100 * stat["mean"]:+.2f} [{100 * stat["low"]:+.2f}, {100 * stat["high"]:+.2f}]'
        f' p={stat["p_bootstrap"]:.3f}'
    )


def format_intervals(part: dict[str, Any]) -> list[str]:
    """The partition's tables with 95 % intervals (seeds and test frames resampled)."""
    iv = part['intervals']
    lines = [
        '### With 95 % intervals (bootstrap over seeds and test frames)',
        '',
        '| model | Top-1 |',
        '|---|---:|',
    ]
    lines += [f'| {name} | {_ci(stat)} |' for name, stat in iv['generalists'].items()]
    lines += [
        '',
        '| experts (mean over keys) | target | overall | target, in key |',
        '|---|---:|---:|---:|',
    ]
    for name, stat in iv['experts'].items():
        in_key = _ci(stat['in_key']) if 'in_key' in stat else '-'
        lines.append(f'| {name} | {_ci(stat["target"])} | {_ci(stat["overall"])} | {in_key} |')
    for other in ('static', 'generalist'):
        if f'progressive_minus_{other}' in iv:
            d = iv[f'progressive_minus_{other}']
            in_key = _diff(d['in_key']) if 'in_key' in d else '-'
            lines.append(
                f'| progressive − {other} | {_diff(d["target"])} | {_diff(d["overall"])} '
                f'| {in_key} |'
            )
    cols = [
        ('offload_ratio', 'α(τ)'),
        ('co_inference_accuracy', 'specialist co-inference'),
        ('generalist_co_inference_accuracy', 'generalist co-inference'),
        ('static_co_inference_accuracy', 'static co-inference'),
        ('specialist_in_key_co_inference_accuracy', 'specialist co-inference, in key'),
        ('generalist_in_key_co_inference_accuracy', 'generalist co-inference, in key'),
        ('key_ceiling_accuracy', 'key ceiling'),
    ]
    cols = [c for c in cols if c[0] in iv['sweep'][0]]
    diffs = [
        (name, label)
        for name, label in (
            ('specialist_minus_generalist', 'specialist − generalist'),
            ('progressive_minus_static', 'progressive − static'),
            ('static_minus_generalist', 'static − generalist'),
            ('specialist_minus_generalist_in_key', 'specialist − generalist, both in key'),
            ('generalist_in_key_minus_generalist', 'generalist in key − generalist'),
        )
        if name in iv['sweep'][0]
    ]
    lines += [
        '',
        '| τ | ' + ' | '.join(label for _, label in cols + diffs) + ' | key recall of offloaded |',
        '|---:|' + '---:|' * (len(cols) + len(diffs) + 1),
    ]
    for row, stats in zip(part['sweep'], iv['sweep'], strict=True):
        recall = row.get('key_recall_offloaded')
        lines.append(
            f'| {row["tau"]:.2f} | '
            + ' | '.join(
                [_ci(stats[name]) for name, _ in cols] + [_diff(stats[n]) for n, _ in diffs]
            )
            + f' | {_pm(recall) if recall else "-"} |'
        )
    lines.append('')
    if iv.get('routed_by_key') and 'specialist_minus_generalist' in iv['sweep'][0]:
        best = max(
            range(len(iv['sweep'])),
            key=lambda t: iv['sweep'][t]['specialist_minus_generalist']['mean'],
        )
        lines += [
            f'Where the difference comes from at τ = {part["sweep"][best]["tau"]:.2f} '
            '(offloaded frames by routed key, all seeds pooled):',
            '',
            '| key (subsets) | share of frames | class in key | specialist | generalist '
            '| contribution (points) |',
            '|---|---:|---:|---:|---:|---:|',
        ]
        for row in iv['routed_by_key'][best]:
            subsets = ', '.join(str(i + 1) for i in range(32) if row['key_bits'] >> i & 1)
            gain = row['share'] * (row['specialist'] - row['generalist'])
            lines.append(
                f'| {{{subsets}}} | {100 * row["share"]:.2f} | {100 * row["key_recall"]:.1f} '
                f'| {100 * row["specialist"]:.2f} | {100 * row["generalist"]:.2f} '
                f'| {100 * gain:+.2f} |'
            )
        lines.append('')
    return lines


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


def training_curves(run_dir: Path) -> dict[str, dict[str, list[float]]]:
    """Per finished stage of one run: training loss and accuracy per epoch (``done/``)."""
    curves = {}
    for marker in sorted((run_dir / 'done').glob('*')):
        try:
            record = json.loads(marker.read_text(encoding='utf-8'))
        except (OSError, ValueError):
            continue
        if record.get('loss'):
            curves[marker.name] = {
                'loss': record['loss'],
                'train_accuracy': record.get('train_accuracy', []),
            }
    return curves


def plot_training_curves(out_dir: Path, partitions: tuple[str, ...]) -> list[Path]:
    """``curves_<partition>.png``: training loss per epoch of every stage, every seed
    (the generalists, then the experts, progressive and static, one line per key)."""
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    written = []
    for partition in partitions:
        runs = sorted(out_dir.glob(f'seed_*/{partition}'))
        if not runs:
            continue
        groups = {  # panel title -> which stages it draws
            'teacher (DeiT-6H)': lambda s: s == 'teacher',
            'edge': lambda s: s == 'edge',
            'near-edge generalist': lambda s: s == 'generalist',
            'specialist teachers (progressive and static)': lambda s: s.startswith(
                ('teacher_', 'static_teacher_')
            ),
            'progressive experts': lambda s: s.startswith('expert_'),
            'static experts': lambda s: (
                s.startswith('static_') and not s.startswith('static_teacher_')
            ),
        }
        fig, axes = plt.subplots(2, 3, figsize=(13, 7))
        for ax, (title, member) in zip(axes.flat, groups.items(), strict=True):
            for run in runs:
                for stage, curve in training_curves(run).items():
                    if member(stage):
                        epochs = range(1, len(curve['loss']) + 1)
                        ax.plot(
                            epochs,
                            curve['loss'],
                            marker='.',
                            alpha=0.7,
                            label=f'{run.parent.name} {stage}',
                        )
            ax.set_title(title)
            ax.set_xlabel('epoch')
            ax.set_ylabel('training loss')
            if ax.lines and len(ax.lines) <= 8:
                ax.legend(fontsize=6)
        fig.suptitle(f'{partition}: training loss per epoch')
        fig.tight_layout()
        path = out_dir / f'curves_{partition}.png'
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written
