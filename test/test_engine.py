"""Co-inference engine: edge gate, one expert call per key group, one result per frame."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from ask_expert_ros.core.evaluation.evaluation import tau_sweep
from ask_expert_ros.core.inference.engine import (
    CoInferenceEngine,
    EdgeStage,
    ExpertStage,
    FrameBatch,
    ResultSource,
)
from ask_expert_ros.core.inference.library import ExpertLibrary, write_manifest
from ask_expert_ros.core.inference.preprocess import Preprocessor
from ask_expert_ros.core.inference.routing import RoutingConfig


def make_engine(manifest: Path, tau: float = 0.5) -> tuple[CoInferenceEngine, ExpertLibrary]:
    library = ExpertLibrary(manifest)
    edge = EdgeStage(library.load_edge(), library.scheme, RoutingConfig(tau=tau, k=2))
    return CoInferenceEngine(edge, ExpertStage(library)), library


class CallCounter:
    """Wraps a real expert model and records the batch size of every forward call."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        self.calls: list[int] = []
        model.register_forward_pre_hook(lambda _m, args: self.calls.append(len(args[0])))


def test_each_expert_runs_once_per_group(zoo: Path, frames: np.ndarray) -> None:
    engine, library = make_engine(zoo, tau=1.01)  # everything offloaded
    counters = {key: CallCounter(library.get(key).model) for key in library.keys}
    result = engine.infer(frames)
    groups = result.edge.routing.groups()
    assert sum(len(v) for v in groups.values()) == len(frames)
    for key, counter in counters.items():
        expected = [len(groups[key])] if key in groups else []
        assert counter.calls == expected, key
    assert [g.key for g in result.expert.groups] == list(groups)
    assert (result.sources == ResultSource.EXPERT).all()


def test_expert_labels_match_running_the_expert_alone(zoo: Path, frames: np.ndarray) -> None:
    engine, library = make_engine(zoo, tau=1.01)
    result = engine.infer(frames)
    for key, idx in result.edge.routing.groups().items():
        expert = library.get(key)
        with torch.no_grad():
            x = Preprocessor(expert.config)(frames[idx])
            expected = expert.model(x).argmax(dim=1).numpy()
        np.testing.assert_array_equal(result.labels[idx], expected)


def test_tau_zero_keeps_everything_on_edge(zoo: Path, frames: np.ndarray) -> None:
    engine, library = make_engine(zoo, tau=0.0)
    result = engine.infer(frames)
    assert (result.sources == ResultSource.EDGE).all()
    np.testing.assert_array_equal(result.labels, result.edge.logits.argmax(axis=1))
    assert result.expert.groups == [] and library.loaded_keys == []


def test_missing_expert_falls_back_to_edge(tmp_path: Path, zoo: Path, frames, scheme) -> None:
    """Only expert {1} exists: frames routed elsewhere keep the edge Top-1, marked FALLBACK."""
    full = ExpertLibrary(zoo)
    partial = write_manifest(
        tmp_path / 'partial', scheme, 2, {(1,): full.path_of((1,))}, edge=full.edge_path
    )
    engine, _ = make_engine(partial, tau=1.01)
    result = engine.infer(frames)
    routing = result.edge.routing
    for i in range(len(frames)):
        if routing.key(i) == (1,):
            assert result.sources[i] == ResultSource.EXPERT
        else:
            assert result.sources[i] == ResultSource.FALLBACK
            assert result.labels[i] == routing.prediction[i]
            assert 'no expert for key' in result.expert.errors[i]


def test_nan_edge_output_is_invalid_not_lost(zoo: Path, frames: np.ndarray) -> None:
    engine, _ = make_engine(zoo, tau=1.01)
    engine.edge.model.model.head.bias.data[0] = float('nan')
    result = engine.infer(frames)
    assert len(result.labels) == len(frames)
    assert (result.sources == ResultSource.INVALID).all() and (result.labels == -1).all()


def test_shared_preprocessing_is_computed_once(zoo: Path, frames: np.ndarray) -> None:
    library = ExpertLibrary(zoo)
    batch = FrameBatch(frames)
    edge_input = batch.inputs(library.load_edge().config)
    assert batch.inputs(library.get((1,)).config) is edge_input  # same size + normalisation


def test_routing_swaps_atomically_between_batches(zoo: Path, frames: np.ndarray) -> None:
    engine, _ = make_engine(zoo, tau=0.0)
    assert engine.infer(frames).edge.routing.offload_ratio == 0.0
    engine.edge.routing = RoutingConfig(tau=1.01, k=2)
    assert engine.infer(frames).edge.routing.offload_ratio == 1.0


def test_tau_sweep_rows(zoo: Path, frames: np.ndarray) -> None:
    engine, _ = make_engine(zoo)
    labels = np.arange(len(frames)) % 6
    report = tau_sweep(engine, frames, labels, [0.0, 0.5, 1.01], batch_size=7)
    rows = report['sweep']
    assert [r['tau'] for r in rows] == [0.0, 0.5, 1.01]
    assert rows[0]['offload_ratio'] == 0.0 and rows[-1]['offload_ratio'] == 1.0
    assert rows[0]['co_inference_accuracy'] == pytest.approx(rows[0]['edge_only_accuracy'])
    assert rows[-1]['co_inference_accuracy'] == pytest.approx(rows[-1]['expert_only_accuracy'])
    for row in rows:
        assert row['frames'] == len(frames) and sum(row['sources'].values()) == len(frames)
        assert row['expert_calls'] >= (1 if row['offload_ratio'] else 0)
        for key in (
            'edge_ms_per_frame',
            'routing_ms_per_frame',
            'expert_ms_per_frame',
            'total_ms_per_frame',
        ):
            assert row[key] >= 0
    assert engine.edge.routing.tau == 0.5  # restored
    edge = report['edge']
    assert edge['top1_accuracy'] <= edge['top2_accuracy'] <= edge['top3_accuracy']


def test_tau_sweep_per_frame_arrays_are_the_engine_answers(zoo: Path, frames: np.ndarray) -> None:
    """Every figure of the sweep is recoverable frame by frame (the experiment's paired
    tests rest on it): the final labels per tau are the edge's Top-1 where kept and the
    all-offloaded expert answer where offloaded."""
    engine, _ = make_engine(zoo)
    labels = np.arange(len(frames)) % 6
    taus = [0.0, 0.4, 0.6, 1.01]
    report = tau_sweep(engine, frames, labels, taus, batch_size=5, per_frame=True)
    arrays = report['per_frame']
    n = len(frames)
    assert arrays['final'].shape == arrays['offload'].shape == (len(taus), n)
    assert arrays['topk'].shape == (n, 2) and arrays['key_bits'].shape == (n,)
    assert (arrays['key_bits'] > 0).all()  # every frame has the key it would be routed to
    for t, row in enumerate(report['sweep']):
        offload = arrays['offload'][t]
        assert offload.mean() == pytest.approx(row['offload_ratio'])
        assert (arrays['final'][t] == labels).mean() == pytest.approx(row['co_inference_accuracy'])
        expected = np.where(offload, arrays['expert_pred'], arrays['topk'][:, 0])
        np.testing.assert_array_equal(arrays['final'][t], expected)
        np.testing.assert_array_equal(offload, arrays['confidence'] < taus[t])
    assert 'per_frame' not in tau_sweep(engine, frames, labels, taus[:1], batch_size=5)
