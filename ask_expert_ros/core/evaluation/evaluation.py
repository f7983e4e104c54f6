"""Accuracy, offload ratio and stage timings of co-inference across thresholds tau.

The rows :func:`tau_sweep` returns are the contract scripts and benchmarks read:
``tau``, ``offload_ratio``, ``edge_only_accuracy``, ``expert_only_accuracy``,
``co_inference_accuracy`` and the ``*_ms_per_frame`` stage timings.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from ask_expert_ros.core.inference.engine import CoInferenceEngine, CoInferenceResult, ResultSource

ALL_OFFLOADED_TAU = 1.01
"""Above every confidence score (all lie in [0, 1]): routes every frame to its expert."""


def topk_accuracy(logits: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Fraction of samples whose label is among the ``k`` largest logits."""
    top = np.argsort(-logits, axis=1, kind='stable')[:, :k]
    return float((top == labels[:, None]).any(axis=1).mean())


def run_batches(
    engine: CoInferenceEngine, frames: np.ndarray, batch_size: int
) -> list[CoInferenceResult]:
    """The engine over ``frames`` in consecutive batches (the paper streams B = 10)."""
    return [engine.infer(frames[i : i + batch_size]) for i in range(0, len(frames), batch_size)]


def summarise(results: Sequence[CoInferenceResult], labels: np.ndarray) -> dict[str, Any]:
    """Accuracy, offload ratio, result sources and per-frame stage times of one run."""
    final = np.concatenate([r.labels for r in results])
    sources = np.concatenate([r.sources for r in results])
    offloaded = int(sum(int(r.edge.routing.offload.sum()) for r in results))
    n = len(final)
    edge_pre = sum(r.edge.preprocess_ms for r in results)
    edge_inf = sum(r.edge.inference_ms for r in results)
    routing = sum(r.edge.routing_ms for r in results)
    expert = sum(r.expert.elapsed_ms for r in results)
    calls = sum(len(r.expert.groups) for r in results)
    return {
        'frames': n,
        'offloaded': offloaded,
        'offload_ratio': offloaded / n if n else 0.0,
        'co_inference_accuracy': float((final == labels).mean()) if n else 0.0,
        'sources': {s.name.lower(): int((sources == s).sum()) for s in ResultSource},
        'expert_calls': calls,
        'edge_preprocess_ms_per_frame': edge_pre / n,
        'edge_ms_per_frame': edge_inf / n,
        'routing_ms_per_frame': routing / n,
        'expert_ms_per_frame': expert / n,
        'expert_ms_per_offloaded_frame': expert / offloaded if offloaded else 0.0,
        'total_ms_per_frame': (edge_pre + edge_inf + routing + expert) / n,
    }


def _at_tau(
    engine: CoInferenceEngine, tau: float, frames: np.ndarray, batch_size: int
) -> list[CoInferenceResult]:
    original = engine.edge.routing
    engine.edge.routing = replace(original, tau=float(tau))
    try:
        return run_batches(engine, frames, batch_size)
    finally:
        engine.edge.routing = original


def tau_sweep(
    engine: CoInferenceEngine,
    frames: np.ndarray,
    labels: np.ndarray,
    taus: Sequence[float],
    batch_size: int = 10,
    generalist: CoInferenceEngine | None = None,
    per_frame: bool = False,
) -> dict[str, Any]:
    """Run the engine over a labelled set once per tau and once with everything offloaded.

    Args:
        engine: Specialist co-inference (the paper's method).
        frames / labels: The evaluation set.
        taus: Thresholds to sweep.
        batch_size: Frames per engine call.
        generalist: Optional baseline engine whose "experts" are one near-edge generalist:
            adds ``generalist_co_inference_accuracy`` and ``near_edge_only_accuracy``.
        per_frame: Also return ``per_frame``, the arrays behind every figure (for paired
            tests and intervals): ``confidence``, ``topk`` ``[N, k]`` and ``key_bits``
            (the key every frame would be routed to), ``expert_pred`` (everything
            offloaded), and per tau ``offload`` and ``final`` ``[T, N]``; with
            ``generalist``, ``near_edge_pred`` and ``generalist_final`` too.

    Returns:
        ``{'edge': {...top-k accuracies...}, 'sweep': [row per tau]}``. Each row has
        the keys of :func:`summarise` plus ``tau``, ``edge_only_accuracy`` and
        ``expert_only_accuracy`` (the latter two do not depend on tau; they are
        repeated so each row stands alone).
    """
    if len(frames) != len(labels) or not len(frames):
        raise ValueError('need one label per frame and at least one frame')
    everything = _at_tau(engine, ALL_OFFLOADED_TAU, frames, batch_size)
    logits = np.concatenate([r.edge.logits for r in everything])
    fixed = {'expert_only_accuracy': summarise(everything, labels)['co_inference_accuracy']}
    edge = {f'top{k}_accuracy': topk_accuracy(logits, labels, k) for k in (1, 2, 3)}
    edge['recall_gap_2_1'] = edge['top2_accuracy'] - edge['top1_accuracy']
    edge['recall_gap_3_1'] = edge['top3_accuracy'] - edge['top1_accuracy']
    fixed['edge_only_accuracy'] = edge['top1_accuracy']
    if generalist is not None:
        near_edge = _at_tau(generalist, ALL_OFFLOADED_TAU, frames, batch_size)
        fixed['near_edge_only_accuracy'] = summarise(near_edge, labels)['co_inference_accuracy']
    arrays: dict[str, list[np.ndarray]] = {'offload': [], 'final': [], 'generalist_final': []}
    rows = []
    for tau in taus:
        row: dict[str, Any] = {'tau': float(tau)}
        results = _at_tau(engine, tau, frames, batch_size)
        row.update(summarise(results, labels))
        row.update(fixed)
        arrays['offload'].append(np.concatenate([r.edge.routing.offload for r in results]))
        arrays['final'].append(np.concatenate([r.labels for r in results]))
        if generalist is not None:
            base_results = _at_tau(generalist, tau, frames, batch_size)
            base = summarise(base_results, labels)
            row['generalist_co_inference_accuracy'] = base['co_inference_accuracy']
            arrays['generalist_final'].append(np.concatenate([r.labels for r in base_results]))
        rows.append(row)
    out: dict[str, Any] = {'edge': edge, 'sweep': rows}
    if per_frame:
        routed = [r.edge.routing for r in everything]
        frame_arrays = {
            'labels': np.asarray(labels),
            'confidence': np.concatenate([r.confidence for r in routed]),
            'topk': np.concatenate([r.topk_classes for r in routed]),
            'key_bits': np.concatenate([r.key_bits for r in routed]),
            'expert_pred': np.concatenate([r.labels for r in everything]),
            **{name: np.stack(values) for name, values in arrays.items() if values},
        }
        if generalist is not None:
            frame_arrays['near_edge_pred'] = np.concatenate([r.labels for r in near_edge])
        out['per_frame'] = frame_arrays
    return out
