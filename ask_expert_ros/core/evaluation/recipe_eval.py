"""Evaluation of a trained zoo: the paper's Table 2/3/5 columns and the tau sweep of Fig. 4.

Reads only what is on disk (the zoo directory) and the test split, and writes
``eval.json`` plus ``eval.md`` (Markdown tables) beside the models, and
``eval_frames.npz``: every model's answer for every test frame, which the experiment
summary pairs across models and seeds for its intervals and tests
(:mod:`~ask_expert_ros.core.evaluation.significance`).

Each tau row also carries the ceiling a specialist works under: of the frames offloaded
at that tau, the share whose true class is in the edge's Top-k (``topk_recall_offloaded``)
and in the routed key's classes (``key_recall_offloaded``), and the co-inference accuracy
an expert that is always right within its key's classes would reach
(``key_ceiling_accuracy``).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ask_expert_ros.core.data import LabelledImages
from ask_expert_ros.core.evaluation.evaluation import tau_sweep, topk_accuracy
from ask_expert_ros.core.inference.engine import CoInferenceEngine, EdgeStage, ExpertStage
from ask_expert_ros.core.inference.library import ExpertLibrary
from ask_expert_ros.core.inference.models import LoadedModel, load_model
from ask_expert_ros.core.inference.preprocess import Preprocessor
from ask_expert_ros.core.inference.routing import RoutingConfig, bits_to_key, key_to_bits
from ask_expert_ros.core.inference.taxonomy import format_key, key_slug


@torch.inference_mode()
def predict_logits(model: LoadedModel, frames: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Logits ``[N, C]`` of a stored model on ``uint8`` frames, with its own preprocessing."""
    device = next(model.model.parameters()).device
    prep = Preprocessor(model.config, device)
    out = [
        model.model(prep(frames[i : i + batch_size])).float().cpu().numpy()
        for i in range(0, len(frames), batch_size)
    ]
    return np.concatenate(out) if out else np.zeros((0, model.config.num_classes))


def _topk(logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    acc = {f'top{k}': topk_accuracy(logits, labels, k) for k in (1, 2, 3)}
    acc['recall_gap_2_1'] = acc['top2'] - acc['top1']
    acc['recall_gap_3_1'] = acc['top3'] - acc['top1']
    return acc


def _target_overall(
    logits: np.ndarray, labels: np.ndarray, mask: np.ndarray
) -> tuple[float, float]:
    pred = logits.argmax(axis=1)
    return float((pred[mask] == labels[mask]).mean()), float((pred == labels).mean())


def evaluate_zoo(
    zoo: str | Path,
    data: LabelledImages,
    taus: tuple[float, ...] = (0.99, 0.9, 0.8, 0.7, 0.6, 0.5),
    batch_size: int = 10,
) -> dict[str, Any]:
    """Generalists' Top-k, experts' target/overall accuracy, co-inference across tau."""
    zoo = Path(zoo)
    library = ExpertLibrary(zoo)
    scheme = library.scheme
    frames, labels = data.test_images, data.test_labels
    report: dict[str, Any] = {
        'zoo': str(zoo),
        'test_frames': len(labels),
        'partition': scheme.name,
        'k': library.k,
        'generalists': {},
    }
    named = {'edge': library.edge_path, 'generalist': library.generalist_path}
    if (zoo / 'teacher.safetensors').is_file():
        named['teacher'] = zoo / 'teacher.safetensors'
    general_logits = None
    per_frame: dict[str, np.ndarray] = {}
    for name, path in named.items():
        if path is None:
            continue
        model = load_model(path)
        logits = predict_logits(model, frames)
        report['generalists'][name] = {'variant': model.config.variant, **_topk(logits, labels)}
        per_frame[f'{name}_pred'] = logits.argmax(axis=1)
        if name == 'generalist':
            general_logits = logits
    static_dir = zoo / 'static'
    static = ExpertLibrary(static_dir) if (static_dir / 'library.yaml').is_file() else None
    rows = []
    key_preds: dict[str, list[np.ndarray]] = {'progressive': [], 'static': [], 'teacher': []}
    in_key_preds: dict[str, list[np.ndarray]] = {name: [] for name in (*key_preds, 'generalist')}
    for key in library.keys:
        classes = scheme.class_mask(key)
        mask = classes[labels]
        row: dict[str, Any] = {'key': format_key(key), 'target_frames': int(mask.sum())}
        progressive = library.get(key)
        row['variant'] = progressive.config.variant
        models = {'progressive': progressive}
        if static is not None and key in static:
            models['static'] = static.get(key)
        teacher = zoo / 'teachers' / f'teacher_{key_slug(key)}.safetensors'
        if teacher.is_file():
            models['teacher'] = load_model(teacher)
        outputs = {name: predict_logits(model, frames) for name, model in models.items()}
        if general_logits is not None:
            outputs['generalist'] = general_logits
        if len(library.keys) == 1:  # a control: its in-key figures under other partitions
            per_frame['expert_logits'] = outputs['progressive'].astype(np.float16)
        for name, logits in outputs.items():
            row[name] = _target_overall(logits, labels, mask)
            in_key = in_key_argmax(logits, classes)
            row[f'{name}_in_key'] = float((in_key[mask] == labels[mask]).mean())
            in_key_preds[name].append(in_key)
            if name in key_preds:
                key_preds[name].append(logits.argmax(axis=1))
        rows.append(row)
    per_frame['key_masks'] = np.stack([scheme.class_mask(k)[labels] for k in library.keys])
    for name, preds in key_preds.items():
        if preds and len(preds) == len(rows):
            per_frame[f'{name}_key_pred'] = np.stack(preds)
    for name, preds in in_key_preds.items():
        if preds and len(preds) == len(rows):
            per_frame[f'{name}_key_pred_in_key'] = np.stack(preds)
    report['experts'] = rows
    names = [
        name
        for name in ('progressive', 'static', 'generalist', 'teacher')
        if rows and all(name in r for r in rows)
    ]
    report['experts_mean'] = {
        name: [float(np.mean([r[name][i] for r in rows])) for i in (0, 1)] for name in names
    }
    report['experts_in_key_mean'] = {
        name: float(np.mean([r[f'{name}_in_key'] for r in rows])) for name in names
    }
    routing = RoutingConfig(tau=max(taus), k=library.k)
    edge = EdgeStage(library.load_edge(), scheme, routing)
    engine = CoInferenceEngine(edge, ExpertStage(library))
    baseline = None
    if library.generalist_path is not None:
        baseline = CoInferenceEngine(
            EdgeStage(edge.model, scheme, routing), ExpertStage(library.generalist_library())
        )
    sweep = tau_sweep(
        engine, frames, labels, taus, batch_size, generalist=baseline, per_frame=True
    )
    per_frame.update(sweep['per_frame'])
    if static is not None and not static.missing_keys():
        static_engine = CoInferenceEngine(
            EdgeStage(edge.model, scheme, replace(routing)), ExpertStage(static)
        )
        static_sweep = tau_sweep(static_engine, frames, labels, taus, batch_size, per_frame=True)
        for row, other in zip(sweep['sweep'], static_sweep['sweep'], strict=True):
            row['static_co_inference_accuracy'] = other['co_inference_accuracy']
            row['static_expert_only_accuracy'] = other['expert_only_accuracy']
        per_frame['static_final'] = static_sweep['per_frame']['final']
    per_frame['key_class_masks'] = key_class_masks(per_frame['key_bits'], scheme)
    for row, ceiling in zip(sweep['sweep'], routing_ceilings(per_frame), strict=True):
        row.update(ceiling)
    _add_in_key_sweep(sweep['sweep'], per_frame, library.keys)
    report['sweep'] = sweep['sweep']
    report['per_frame'] = per_frame
    return report


def in_key_argmax(logits: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Per frame, the argmax over ``classes`` (a ``[C]`` bool mask) only: the answer
    of a model served with ``restrict_to_key: true`` for that key."""
    return np.where(classes[None, :], logits, -np.inf).argmax(axis=1)


def _add_in_key_sweep(
    rows: list[dict[str, Any]], per_frame: dict[str, np.ndarray], keys: list[Any]
) -> None:
    """Co-inference with the near-edge answer restricted to the routed key's classes
    (``restrict_to_key: true``), for the specialists and for the generalist.

    The edge part of every frame and the routing are those of the sweep; an offloaded
    frame takes the restricted argmax of the model its key routes it to. Frames routed to
    a key with no model keep the sweep's answer.
    """
    labels = per_frame['labels']
    index = {key_to_bits(key): i for i, key in enumerate(keys)}
    routed = np.array([index.get(int(b), -1) for b in per_frame['key_bits']])
    known = routed >= 0
    frames = np.arange(len(labels))
    for name, final_name, out_name in (
        ('progressive', 'final', 'in_key_final'),
        ('generalist', 'generalist_final', 'generalist_in_key_final'),
    ):
        preds = per_frame.get(f'{name}_key_pred_in_key')
        if preds is None or final_name not in per_frame:
            continue
        answer = preds[np.where(known, routed, 0), frames]
        finals = np.where(per_frame['offload'] & known, answer, per_frame[final_name])
        per_frame[out_name] = finals
        metric = 'specialist' if name == 'progressive' else 'generalist'
        for row, final in zip(rows, finals, strict=True):
            row[f'{metric}_in_key_co_inference_accuracy'] = float((final == labels).mean())


def key_class_masks(key_bits: np.ndarray, scheme: Any) -> np.ndarray:
    """``[N, C]``: the classes of the key each frame is routed to (none for bits 0)."""
    masks = np.zeros((len(key_bits), len(scheme.class_names)), dtype=bool)
    for bits in np.unique(key_bits):
        if bits:
            masks[key_bits == bits] = scheme.class_mask(bits_to_key(int(bits)))
    return masks


def ceiling_outcomes(per_frame: dict[str, np.ndarray], offload: np.ndarray) -> np.ndarray:
    """Per frame, 1 where co-inference could be right at best: the edge's Top-1 is right
    for a kept frame, the true class is in the routed key's classes for an offloaded one."""
    labels = per_frame['labels']
    in_key = per_frame['key_class_masks'][np.arange(len(labels)), labels]
    return np.where(offload, in_key, per_frame['topk'][:, 0] == labels).astype(np.float64)


def routing_ceilings(per_frame: dict[str, np.ndarray]) -> list[dict[str, float]]:
    """Per tau: how many offloaded frames a specialist can still get right.

    A frame's expert is chosen from the edge's Top-k, so when the true class is outside
    the routed key's classes, an expert trained for that key works against its own
    specialisation (and a static expert cannot name the class at all).
    """
    labels = per_frame['labels']
    in_topk = (per_frame['topk'] == labels[:, None]).any(axis=1)
    in_key = per_frame['key_class_masks'][np.arange(len(labels)), labels]
    out = []
    for offload in per_frame['offload']:
        sent = int(offload.sum())
        out.append(
            {
                'topk_recall_offloaded': float(in_topk[offload].mean()) if sent else 1.0,
                'key_recall_offloaded': float(in_key[offload].mean()) if sent else 1.0,
                'key_ceiling_accuracy': float(ceiling_outcomes(per_frame, offload).mean()),
            }
        )
    return out


def _pct(value: float) -> str:
    return f'{100 * value:.2f}'


def format_markdown(report: dict[str, Any]) -> str:
    """The report as Markdown tables (Table 2/5, Table 3, Table 4 + Fig. 4 as numbers)."""
    lines = [
        f'# Evaluation of `{report["zoo"]}`',
        '',
        f'{report["test_frames"]} test frames, partition `{report["partition"]}`, '
        f'k = {report["k"]}. Accuracies in %.',
        '',
        '## Generalists (Table 2 / Table 5)',
        '',
        '| model | variant | Top-1 | Top-2 | Top-3 | gap 2-1 | gap 3-1 |',
        '|---|---|---:|---:|---:|---:|---:|',
    ]
    for name, g in report['generalists'].items():
        lines.append(
            f'| {name} | {g["variant"]} | {_pct(g["top1"])} | {_pct(g["top2"])} | '
            f'{_pct(g["top3"])} | {_pct(g["recall_gap_2_1"])} | {_pct(g["recall_gap_3_1"])} |'
        )
    cols = [
        c
        for c in ('static', 'progressive', 'generalist', 'teacher')
        if c in report['experts_mean']
    ]
    lines += [
        '',
        '## Experts on their target subset and overall (Table 3)',
        '',
        '| key | target frames | ' + ' | '.join(f'{c} target | {c} overall' for c in cols) + ' |',
        '|---|---:|' + '---:|' * (2 * len(cols)),
    ]
    for row in report['experts']:
        cells = ' | '.join(f'{_pct(row[c][0])} | {_pct(row[c][1])}' for c in cols if c in row)
        lines.append(f'| {row["key"]} | {row["target_frames"]} | {cells} |')
    mean = report['experts_mean']
    lines.append(
        '| **mean** | | '
        + ' | '.join(f'**{_pct(mean[c][0])}** | **{_pct(mean[c][1])}**' for c in cols)
        + ' |'
    )
    in_key_mean = report.get('experts_in_key_mean', {})
    if in_key_mean:
        lines += [
            '',
            'Within the key: accuracy on the target subset with the answer restricted to the '
            "key's classes (`restrict_to_key: true`), i.e. telling the key's classes apart:",
            '',
            '| key | ' + ' | '.join(f'{c} in key' for c in cols if c in in_key_mean) + ' |',
            '|---|' + '---:|' * len([c for c in cols if c in in_key_mean]),
        ]
        for row in report['experts']:
            cells = ' | '.join(_pct(row[f'{c}_in_key']) for c in cols if c in in_key_mean)
            lines.append(f'| {row["key"]} | {cells} |')
        lines.append(
            '| **mean** | '
            + ' | '.join(f'**{_pct(in_key_mean[c])}**' for c in cols if c in in_key_mean)
            + ' |'
        )
    has_static = any('static_co_inference_accuracy' in r for r in report['sweep'])
    in_key = [
        (name, label)
        for name, label in (
            ('specialist_in_key_co_inference_accuracy', 'specialist co-inf. in key'),
            ('generalist_in_key_co_inference_accuracy', 'generalist co-inf. in key'),
        )
        if any(name in r for r in report['sweep'])
    ]
    has_general = any('generalist_co_inference_accuracy' in r for r in report['sweep'])
    head = '| tau | offload ratio | specialist co-inf.'
    rule = '|---:|---:|---:'
    if has_general:
        head += ' | generalist co-inf.'
        rule += '|---:'
    if has_static:
        head += ' | static co-inf.'
        rule += '|---:'
    for _, label in in_key:
        head += f' | {label}'
        rule += '|---:'
    head += ' | edge only | near-edge only | expert only |'
    rule += '|---:|---:|---:|'
    lines += ['', '## Co-inference across tau (Table 4, Fig. 4)', '', head, rule]
    for r in report['sweep']:
        row_cells = [f'{r["tau"]:.2f}', _pct(r['offload_ratio']), _pct(r['co_inference_accuracy'])]
        if has_general:
            row_cells.append(_pct(r['generalist_co_inference_accuracy']))
        if has_static:
            row_cells.append(_pct(r['static_co_inference_accuracy']))
        row_cells += [_pct(r[name]) if name in r else '-' for name, _ in in_key]
        near = r.get('near_edge_only_accuracy')
        row_cells += [
            _pct(r['edge_only_accuracy']),
            _pct(near) if near is not None else '-',
            _pct(r['expert_only_accuracy']),
        ]
        lines.append('| ' + ' | '.join(row_cells) + ' |')
    return '\n'.join(lines) + '\n'


def write_report(report: dict[str, Any], out_dir: str | Path) -> tuple[Path, Path]:
    """``eval.json`` and ``eval.md``; the per-frame arrays, if any, to ``eval_frames.npz``."""
    out = Path(out_dir)
    report = dict(report)
    per_frame = report.pop('per_frame', None)
    if per_frame:
        np.savez_compressed(out / 'eval_frames.npz', **per_frame)
    json_path = out / 'eval.json'
    json_path.write_text(json.dumps(report, indent=2) + '\n', encoding='utf-8')
    md_path = out / 'eval.md'
    md_path.write_text(format_markdown(report), encoding='utf-8')
    return json_path, md_path
