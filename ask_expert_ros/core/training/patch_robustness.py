"""How well experts answer from a subset of their patches, zoo against zoo.

For every keep ratio rho and selection rule (the edge's class-token attention, or a
uniformly random subset), each test frame is routed by the edge model (Top-k,
Algorithm 1) and its expert runs on the ``ceil(rho N)`` patches the rule keeps
(:func:`~ask_expert_ros.core.inference.patches.forward_tokens`, as the expert node does in
patch mode). Reported per zoo:

* ``routed``: accuracy over every test frame, each answered by the expert of the key
  the edge routes it to (every frame offloaded, alpha = 100 %);
* ``offloaded``: the same over the frames the edge offloads at ``tau``;
* ``co_inference``: edge answers for the confident frames, the expert's for the
  offloaded ones, at ``tau``;
* ``target``: each expert on its own target subset (test frames of its classes D_I),
  mean over keys (the Table 3 column), and per key.

The zoos compared must share their edge model (the same routing and attention), as
a zoo and its fine-tuned copy (:mod:`ask_expert_ros.core.training.patch_finetune`) do. The
random subsets are drawn once per rho from ``seed`` and are the same for every zoo
and key, so zoos are compared on the same patches.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ask_expert_ros.core.data import LabelledImages
from ask_expert_ros.core.inference.library import ExpertLibrary
from ask_expert_ros.core.inference.patches import (
    ATTENTION_SOURCES,
    AttentionSource,
    PatchSelection,
    forward_tokens,
    forward_with_cls_attention,
    keep_count,
    model_grid,
    resample_scores,
    select_patches,
)
from ask_expert_ros.core.inference.preprocess import Preprocessor
from ask_expert_ros.core.inference.routing import RoutingConfig, bits_to_key, route
from ask_expert_ros.core.inference.taxonomy import format_key
from ask_expert_ros.core.training.patch_training import image_patches, patch_grid

DEFAULT_RHOS = (0.1, 0.2, 0.3, 0.5, 0.7, 1.0)
ROBUSTNESS_METHODS = ('attention', 'random')


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _stratified(labels: np.ndarray, size: int, seed: int) -> np.ndarray:
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(labels))
    take, _ = train_test_split(idx, train_size=size, random_state=seed, stratify=labels)
    return np.sort(take)


@torch.inference_mode()
def _edge_pass(
    model: torch.nn.Module, x: torch.Tensor, source: AttentionSource, batch_size: int
) -> tuple[np.ndarray, torch.Tensor]:
    logits, scores = [], []
    for i in range(0, len(x), batch_size):
        out, att = forward_with_cls_attention(model, x[i : i + batch_size], source)
        logits.append(out.float())
        scores.append(att.float())
    return torch.cat(logits).numpy(), torch.cat(scores)


@torch.inference_mode()
def _expert_predictions(
    model: torch.nn.Module, patches: torch.Tensor, indices: torch.Tensor, batch_size: int
) -> np.ndarray:
    rows = torch.arange(len(patches))[:, None]
    preds = []
    for i in range(0, len(patches), batch_size):
        sl = slice(i, i + batch_size)
        chosen = patches[sl][rows[: len(patches[sl])], indices[sl]]
        preds.append(forward_tokens(model, chosen, indices[sl]).argmax(dim=1))
    return torch.cat(preds).numpy()


def measure_patch_robustness(
    zoos: Mapping[str, str | Path],
    data: LabelledImages,
    rhos: Sequence[float] = DEFAULT_RHOS,
    methods: Sequence[str] = ROBUSTNESS_METHODS,
    tau: float = 0.8,
    source: AttentionSource = 'last',
    seed: int = 0,
    test_subset: int | None = None,
    batch_size: int = 500,
    progress: bool = True,
) -> dict[str, Any]:
    """Expert accuracy at each keep ratio and selection, for each zoo (see module doc).

    Args:
        zoos: Label -> zoo directory; they must share the edge model.
        data: The data set (its test split is used).
        rhos: Keep ratios in (0, 1]; 1 is the full frame (every patch).
        methods: Selection rules: ``attention`` and/or ``random``.
        tau: Threshold (max softmax) of the ``offloaded`` and ``co_inference`` columns.
        source: Which attention picks the patches (``last`` block or ``rollout``).
        seed: Seed of the random subsets and of ``test_subset``.
        test_subset: Use a stratified sample of this many test frames (None: all).
        batch_size: Frames per forward pass.
        progress: A progress bar over zoos and keys.

    Returns:
        ``{'meta': ..., 'rows': [...]}``: one row per (zoo, method, rho).

    Raises:
        ValueError: No zoo, unknown method, rho outside (0, 1], or zoos with different
            edge models or expert inputs.
    """
    if not zoos:
        raise ValueError('give at least one zoo')
    for method in methods:
        if method not in ROBUSTNESS_METHODS:
            raise ValueError(f'methods must be among {ROBUSTNESS_METHODS}, got {method!r}')
    if source not in ATTENTION_SOURCES:
        raise ValueError(f'source must be one of {ATTENTION_SOURCES}, got {source!r}')
    for rho in rhos:
        PatchSelection(method='random', keep_ratio=rho)  # validates rho
    started = time.perf_counter()
    libraries = {label: ExpertLibrary(path) for label, path in zoos.items()}
    first = next(iter(libraries.values()))
    if first.edge_path is None:
        raise ValueError(f'{first.path} names no edge model')
    edge_hash = _sha256(first.edge_path)
    input_config = first.input_config()
    if input_config is None:
        raise ValueError(f'{first.path} has no experts')
    for label, library in libraries.items():
        if library.edge_path is None or _sha256(library.edge_path) != edge_hash:
            raise ValueError(
                f'zoo {label!r} ({library.root}) routes with another edge model than '
                f'{first.root}; compare zoos that share their edge (a fine-tuned copy does)'
            )
        other = library.input_config()
        if other is None or model_grid(other) != model_grid(input_config):
            raise ValueError(f'zoo {label!r} has experts on another patch grid')
    scheme = first.scheme
    frames, labels = data.test_images, data.test_labels
    if test_subset is not None and test_subset < len(labels):
        take = _stratified(labels, test_subset, seed)
        frames, labels = frames[take], labels[take]
    edge = first.load_edge('cpu')
    edge_logits, edge_scores = _edge_pass(
        edge.model, Preprocessor(edge.config)(frames), source, batch_size
    )
    every = route(edge_logits, scheme, RoutingConfig(tau=2.0, k=first.k))  # all offloaded
    at_tau = route(edge_logits, scheme, RoutingConfig(tau=tau, k=first.k))
    routed_key = every.key_bits
    offload = at_tau.offload
    grid = model_grid(input_config)
    n = grid[0] * grid[1]
    x = Preprocessor(input_config)(frames)
    patches = image_patches(x, input_config.patch_size)
    scores = resample_scores(edge_scores, patch_grid(edge.model), grid)

    configs: list[tuple[str, float]] = []
    selections: dict[tuple[str, float], torch.Tensor] = {}
    for rho in rhos:
        for method in methods:
            configs.append((method, rho))
            selection = PatchSelection(method=method, keep_ratio=rho)  # type: ignore[arg-type]
            rng = np.random.default_rng([seed, round(rho * 1e6)])
            chosen = select_patches(
                scores if method == 'attention' else None, selection, grid, rng, len(labels)
            )
            selections[(method, rho)] = torch.from_numpy(np.stack(chosen))

    keys = sorted({bits_to_key(int(b)) for b in np.unique(routed_key)} | set(first.keys))
    rows: list[dict[str, Any]] = []
    bar = tqdm(total=len(libraries) * len(keys), desc='experts', disable=not progress)
    for label, library in libraries.items():
        # predictions of the routed expert for every frame, per configuration
        routed_pred = {c: np.full(len(labels), -1, dtype=np.int64) for c in configs}
        target: dict[tuple[str, float], dict[str, float]] = {c: {} for c in configs}
        for key in keys:
            bar.update()
            bits = sum(1 << (s - 1) for s in key)
            routed_rows = np.flatnonzero(routed_key == bits)
            target_rows = np.flatnonzero(scheme.class_mask(key)[labels])
            rows_needed = np.union1d(routed_rows, target_rows)
            if key not in library:
                raise ValueError(f'zoo {label!r} has no expert for key {format_key(key)}')
            model = library.get(key).model.float().cpu().eval()
            sub = torch.as_tensor(rows_needed)
            position = {int(r): i for i, r in enumerate(rows_needed)}
            at_routed = np.array([position[int(r)] for r in routed_rows], dtype=np.int64)
            at_target = np.array([position[int(r)] for r in target_rows], dtype=np.int64)
            key_patches = patches[sub]
            full: np.ndarray | None = None  # rho = 1 keeps every patch, whatever the rule
            for c in configs:
                if c[1] >= 1.0 and full is not None:
                    pred = full
                else:
                    pred = _expert_predictions(model, key_patches, selections[c][sub], batch_size)
                if c[1] >= 1.0:
                    full = pred
                routed_pred[c][routed_rows] = pred[at_routed]
                if len(target_rows):
                    hits = pred[at_target] == labels[target_rows]
                    target[c][format_key(key)] = float(hits.mean())
        for method, rho in configs:
            pred = routed_pred[(method, rho)]
            correct = pred == labels
            final = np.where(offload, pred, at_tau.prediction)
            per_key = target[(method, rho)]
            rows.append(
                {
                    'zoo': label,
                    'method': method,
                    'rho': rho,
                    'patches': keep_count(n, rho),
                    'routed_accuracy': float(correct.mean()),
                    'offloaded_accuracy': float(correct[offload].mean())
                    if offload.any()
                    else None,
                    'co_inference_accuracy': float((final == labels).mean()),
                    'target_accuracy': float(np.mean(list(per_key.values()))),
                    'target_per_key': per_key,
                }
            )
    bar.close()
    meta = {
        'zoos': {label: str(lib.root) for label, lib in libraries.items()},
        'edge': str(first.edge_path),
        'edge_sha256': edge_hash,
        'partition': scheme.name,
        'k': first.k,
        'test_frames': len(labels),
        'img_size': input_config.img_size,
        'patch_size': input_config.patch_size,
        'grid': list(grid),
        'num_patches': n,
        'attention_source': source,
        'tau': tau,
        'offload_ratio': float(offload.mean()),
        'edge_accuracy': float((every.prediction == labels).mean()),
        'seed': seed,
        'seconds': round(time.perf_counter() - started, 1),
    }
    return {'meta': meta, 'rows': rows}


def _pct(value: float | None) -> str:
    return '-' if value is None else f'{100 * value:.2f}'


def format_robustness(report: dict[str, Any]) -> str:
    """The report as Markdown: one table per metric, one column per zoo, with the
    change against the zoo's own full-frame (rho = 1) number."""
    meta, rows = report['meta'], report['rows']
    zoos = list(meta['zoos'])
    lines = [
        f'{meta["test_frames"]} test frames, {meta["img_size"]} px in {meta["patch_size"]} px '
        f'patches ({meta["num_patches"]} patches), partition `{meta["partition"]}`, '
        f'k = {meta["k"]}; edge Top-1 {_pct(meta["edge_accuracy"])} %, offload ratio at '
        f'tau = {meta["tau"]:g}: {_pct(meta["offload_ratio"])} %. Accuracies in %, '
        f'(change vs the same zoo at rho = 1).',
    ]
    by = {(r['zoo'], r['method'], r['rho']): r for r in rows}
    methods = list(dict.fromkeys(r['method'] for r in rows))
    rhos = list(dict.fromkeys(r['rho'] for r in rows))
    titles = {
        'routed_accuracy': 'every frame to the expert the edge routes it to (alpha = 100 %)',
        'offloaded_accuracy': f'the frames offloaded at tau = {meta["tau"]:g}',
        'co_inference_accuracy': f'specialist co-inference at tau = {meta["tau"]:g}',
        'target_accuracy': 'each expert on its target subset, mean over keys',
    }
    for metric, title in titles.items():
        lines += [
            '',
            f'**{title}**',
            '',
            '| selection | rho | patches | ' + ' | '.join(zoos) + ' |',
            '|---|---:|---:|' + '---:|' * len(zoos),
        ]
        for method in methods:
            for rho in rhos:
                cells = []
                for zoo in zoos:
                    value = by[(zoo, method, rho)][metric]
                    full = by[(zoo, method, max(rhos))][metric]
                    delta = (
                        ''
                        if rho == max(rhos) or value is None or full is None
                        else f' ({100 * (value - full):+.2f})'
                    )
                    cells.append(f'{_pct(value)}{delta}')
                patches = by[(zoos[0], method, rho)]['patches']
                lines.append(f'| {method} | {rho:g} | {patches} | ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines) + '\n'
