"""The offline end-to-end demo on scikit-learn's digits.

Trains a small generalist edge model and one specialist per expert key, writes them
as a model zoo with an expert-library manifest, loads that zoo back the way a node
would, and sweeps tau through the co-inference engine.
"""

from __future__ import annotations

import json
import logging
import platform
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ask_expert_ros.core.data import channel_stats, digits
from ask_expert_ros.core.evaluation.evaluation import tau_sweep
from ask_expert_ros.core.evaluation.significance import paired_difference
from ask_expert_ros.core.inference.backends import BackendFactory
from ask_expert_ros.core.inference.engine import CoInferenceEngine, EdgeStage, ExpertStage
from ask_expert_ros.core.inference.library import ExpertLibrary, write_manifest
from ask_expert_ros.core.inference.models import ModelConfig, VariantName, create_model, save_model
from ask_expert_ros.core.inference.preprocess import Preprocessor
from ask_expert_ros.core.inference.routing import ConfidenceMethod, RoutingConfig
from ask_expert_ros.core.inference.taxonomy import builtin_scheme, key_slug
from ask_expert_ros.core.training.training import TrainConfig, train_classifier

logger = logging.getLogger(__name__)

DEFAULT_TAUS = (0.99, 0.9, 0.8, 0.7, 0.6, 0.5)


@dataclass(frozen=True)
class DemoConfig:
    """Settings of ``ask-expert demo``; the defaults finish in minutes on 2 CPU cores.

    Attributes:
        out_dir: Where the zoo and ``report.json`` go.
        taus: Thresholds to sweep (the paper's Table 4 values by default).
        k: Top-k of the router.
        confidence: Confidence score compared with tau.
        edge_variant / expert_variant: Model variants (Table 2 names).
        edge_depth / expert_depth: Transformer blocks (the paper's 12 is too slow here).
        img_size / patch_size: 8x8 digits are upsampled to ``img_size``.
        edge_epochs / generalist_epochs / expert_epochs: Training length; experts start
            from the near-edge generalist and are fine-tuned on D_I.
        batch_size: Frames per engine call in the sweep (the paper streams 10).
        seed: Split, initialisation and shuffling seed.
    """

    out_dir: Path = Path('demo_out')
    taus: tuple[float, ...] = DEFAULT_TAUS
    k: int = 2
    confidence: ConfidenceMethod = 'max_softmax'
    edge_variant: VariantName = 'deit_3h'
    expert_variant: VariantName = 'deit_4h'
    edge_depth: int = 2
    expert_depth: int = 4
    img_size: int = 16
    patch_size: int = 4
    edge_epochs: int = 15
    generalist_epochs: int = 15
    expert_epochs: int = 4
    batch_size: int = 10
    seed: int = 0
    threads: int | None = None

    def __post_init__(self) -> None:
        if not self.taus:
            raise ValueError('give at least one tau')
        RoutingConfig(tau=max(self.taus), k=self.k, confidence=self.confidence)


def _train(
    model: torch.nn.Module,
    config: ModelConfig,
    frames: np.ndarray,
    labels: np.ndarray,
    train: TrainConfig,
    desc: str,
    progress: bool,
) -> torch.nn.Module:
    inputs = Preprocessor(config)(frames)
    train_classifier(model, inputs, torch.as_tensor(labels), train, desc=desc, progress=progress)
    return model


def run_demo(
    config: DemoConfig, progress: bool = True, backend_factory: BackendFactory | None = None
) -> dict[str, Any]:
    """Train, save, reload, sweep; writes ``out_dir/report.json`` and returns the report.

    Args:
        config: Demo settings.
        progress: Show progress bars.
        backend_factory: Runs the edge and the experts in the sweep
            (``ask_expert_ros.runtime.backend_factory``); None: torch fp32.
    """
    started = time.perf_counter()
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    data = digits(seed=config.seed)
    scheme = builtin_scheme('digits_s4')
    if scheme.class_names != data.class_names:
        raise RuntimeError('config/digits_partitions.yaml does not list the digit classes')
    mean, std = channel_stats(data.train_images)
    edge_cfg = ModelConfig(
        variant=config.edge_variant,
        depth=config.edge_depth,
        class_names=scheme.class_names,
        img_size=config.img_size,
        patch_size=config.patch_size,
        in_chans=1,
        mean=mean,
        std=std,
        interpolation='bilinear',
        partition=scheme.name,
    )
    zoo = Path(config.out_dir) / 'zoo'
    keys = scheme.expert_keys(config.k)
    bar = tqdm(total=2 + len(keys), desc='training', unit='model', disable=not progress)

    edge_train = TrainConfig(epochs=config.edge_epochs, lr=1e-3, max_shift=1, seed=config.seed)
    t0 = time.perf_counter()
    edge_model = _train(
        create_model(edge_cfg),
        edge_cfg,
        data.train_images,
        data.train_labels,
        edge_train,
        'edge',
        progress,
    )
    edge_path = save_model(edge_model, edge_cfg, zoo / 'edge.safetensors')
    train_seconds = {'edge': time.perf_counter() - t0}
    bar.update()

    # near-edge generalist: the "generalist co-inference" baseline and the experts' start
    t0 = time.perf_counter()
    general_cfg = replace(edge_cfg, variant=config.expert_variant, depth=config.expert_depth)
    general_train = TrainConfig(
        epochs=config.generalist_epochs, lr=1e-3, max_shift=1, seed=config.seed
    )
    general = _train(
        create_model(general_cfg),
        general_cfg,
        data.train_images,
        data.train_labels,
        general_train,
        'near-edge generalist',
        progress,
    )
    general_path = save_model(general, general_cfg, zoo / 'generalist.safetensors')
    train_seconds['generalist'] = time.perf_counter() - t0
    bar.update()

    # static specialists: the generalist fine-tuned on D_I (issue-3 recipe: progressive)
    expert_paths = {}
    expert_train = TrainConfig(
        epochs=config.expert_epochs, lr=3e-4, warmup_epochs=0, max_shift=1, seed=config.seed
    )
    for key in keys:
        t0 = time.perf_counter()
        in_domain = scheme.class_mask(key)[data.train_labels]
        cfg = replace(general_cfg, expert_key=key)
        model = create_model(cfg)
        model.load_state_dict(general.state_dict())
        _train(
            model,
            cfg,
            data.train_images[in_domain],
            data.train_labels[in_domain],
            expert_train,
            f'expert {key_slug(key)}',
            progress,
        )
        expert_paths[key] = save_model(model, cfg, zoo / 'experts' / f'expert_{key_slug(key)}')
        train_seconds[f'expert_{key_slug(key)}'] = time.perf_counter() - t0
        bar.update()
    bar.close()
    manifest = write_manifest(
        zoo, scheme, config.k, expert_paths, edge=edge_path, generalist=general_path
    )

    # from here on, only what is on disk: the same path a node takes
    library = ExpertLibrary(manifest, backend_factory=backend_factory)
    routing = RoutingConfig(tau=config.taus[0], k=config.k, confidence=config.confidence)
    loaded_edge = library.load_edge()
    edge_stage = EdgeStage(
        loaded_edge, library.scheme, routing, backend=library.backend_factory(loaded_edge)
    )
    engine = CoInferenceEngine(edge_stage, ExpertStage(library))
    baseline = CoInferenceEngine(
        EdgeStage(edge_stage.model, library.scheme, routing, backend=edge_stage.backend),
        ExpertStage(library.generalist_library()),
    )
    sweep = tau_sweep(
        engine,
        data.test_images,
        data.test_labels,
        config.taus,
        config.batch_size,
        generalist=baseline,
        per_frame=True,
    )
    _pair_with_generalist(sweep, data.test_labels)
    report = {
        'dataset': {
            'name': 'sklearn_digits',
            'train': len(data.train_labels),
            'test': len(data.test_labels),
            'classes': list(scheme.class_names),
        },
        'partition': {
            'name': scheme.name,
            'num_subsets': scheme.num_subsets,
            'k': config.k,
            'num_experts': len(keys),
        },
        'models': {
            'edge': edge_cfg.variant,
            'edge_depth': config.edge_depth,
            'expert': config.expert_variant,
            'expert_depth': config.expert_depth,
            'zoo': str(manifest),
        },
        'config': {
            k: (list(v) if isinstance(v, tuple) else str(v) if isinstance(v, Path) else v)
            for k, v in asdict(config).items()
        },
        'machine': {
            'python': platform.python_version(),
            'torch': torch.__version__,
            'threads': torch.get_num_threads(),
            'cpu': platform.processor() or platform.machine(),
        },
        'runtime': edge_stage.backend.describe(),
        'train_seconds': train_seconds,
        'edge': sweep['edge'],
        'sweep': sweep['sweep'],
        'wall_seconds': time.perf_counter() - started,
    }
    out = Path(config.out_dir) / 'report.json'
    out.write_text(json.dumps(report, indent=2) + '\n', encoding='utf-8')
    logger.info('wrote %s', out)
    return report


def _pair_with_generalist(sweep: dict[str, Any], labels: np.ndarray) -> None:
    """Add to every tau row the specialist - generalist co-inference difference with its
    95 % interval (paired bootstrap over the test frames; the demo trains one seed)."""
    arrays = sweep.pop('per_frame')
    for row, final, general in zip(
        sweep['sweep'], arrays['final'], arrays['generalist_final'], strict=True
    ):
        diff = paired_difference(
            (final == labels).astype(float), (general == labels).astype(float), seeds=False
        )
        row['specialist_minus_generalist'] = {
            name: diff[name] for name in ('mean', 'low', 'high', 'p_bootstrap')
        }


def verdict(report: dict[str, Any]) -> str:
    """What the demo's own numbers say about specialists against the generalist."""
    rows = [r for r in report['sweep'] if 'specialist_minus_generalist' in r]
    if not rows:
        return ''
    best = max(rows, key=lambda r: r['specialist_minus_generalist']['mean'])
    d = best['specialist_minus_generalist']
    n = report['dataset']['test']
    figure = (
        f'{100 * d["mean"]:+.2f} points at tau = {best["tau"]:.2f} '
        f'(95 % interval {100 * d["low"]:+.2f} to {100 * d["high"]:+.2f}, paired bootstrap '
        f'over the {n} test frames, one seed)'
    )
    if d['low'] > 0:
        return f'Specialists beat the same-size generalist here: best {figure}.'
    return (
        f'At this scale the specialists do not beat the same-size generalist: best {figure}. '
        f'The demo shows the system end to end ({report["dataset"]["train"]} training '
        'digits of 8 px, small models, short schedules), not the benefit of specialists; '
        'for that question see docs/results/fashion_mnist.md.'
    )


def format_table(report: dict[str, Any]) -> str:
    """The sweep as a fixed-width text table."""
    head = (
        f'{"tau":>5} {"alpha":>6} {"edge-only":>9} {"expert-only":>11} {"co-inf":>7} '
        f'{"gen co-inf":>10} '
        f'{"edge ms/f":>9} {"route ms/f":>10} {"expert ms/off":>13} {"total ms/f":>10}'
    )
    lines = [head, '-' * len(head)]
    for r in report['sweep']:
        lines.append(
            f'{r["tau"]:>5.2f} {r["offload_ratio"]:>6.1%} {r["edge_only_accuracy"]:>9.2%} '
            f'{r["expert_only_accuracy"]:>11.2%} {r["co_inference_accuracy"]:>7.2%} '
            f'{r.get("generalist_co_inference_accuracy", float("nan")):>10.2%} '
            f'{r["edge_ms_per_frame"]:>9.3f} {r["routing_ms_per_frame"]:>10.4f} '
            f'{r["expert_ms_per_offloaded_frame"]:>13.3f} {r["total_ms_per_frame"]:>10.3f}'
        )
    e = report['edge']
    lines.append(
        f'edge Top-1/2/3: {e["top1_accuracy"]:.2%} / {e["top2_accuracy"]:.2%} / '
        f'{e["top3_accuracy"]:.2%}  (recall gap 3-1: {e["recall_gap_3_1"]:.2%})'
    )
    if 'near_edge_only_accuracy' in report['sweep'][0]:
        lines.append(
            f'near-edge generalist only: {report["sweep"][0]["near_edge_only_accuracy"]:.2%}'
        )
    said = verdict(report)
    if said:
        lines.append(said)
    return '\n'.join(lines)
