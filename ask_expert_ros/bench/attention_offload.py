"""``ask-expert bench-patches``: attention-aware patch offload measured through the nodes'
own logic (issue 16).

Every row runs the test frames of a data set through what the nodes run, in process:
:class:`EdgeLogic` (edge model, gate, patch selection, request) -> the request's
``ExpertRequest`` CDR bytes -> :class:`ExpertLogic` (checks, micro-batches, the expert
on the full frame or on the token subset) -> replies -> :meth:`EdgeLogic.on_reply`.
The rows are the full frame (raw and JPEG) and patch mode for each selection method
(attention, random, centre) at each keep ratio rho, attention selection at each
attention mass m, and attention rollout next to the last block at a few rho.

With the default ``tau = 1.01`` every frame is offloaded, so the accuracy columns
compare the experts on the same frames; each row is run again at ``report_tau`` (the
operating point, e.g. 0.8) for the overall co-inference accuracy. Intervals are
percentile bootstraps over frames (the same resamples for every row, so the
difference to the full frame is a paired bootstrap).

The tiny zoos have 16-49 patches, far fewer than a 224-pixel ViT's 196, so
:func:`real_token_timing` times the token-subset forward of a randomly initialised
DeiT-4H at 224 px (16-pixel patches) at each rho against the full frame, at batch 1
and 8, under the backend ``'auto'`` picks and torch fp32, with pad + mask against
group-by-length for a ragged batch; and the edge's selection cost on a DeiT-3H at
224 px (forward with the attention tap, last block and rollout, plus the selection)
against its plain forward. Medians of interleaved repeats: the ratios are what count.

Nothing here is asserted: it is a benchmark, not a test.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from ask_expert_ros.bench.speed import machine_info
from ask_expert_ros.core.inference.backends import Backend, TorchBackend
from ask_expert_ros.core.inference.engine import (
    EdgeStage,
    ExpertStage,
    FrameBatch,
    ResultSource,
)
from ask_expert_ros.core.inference.library import ExpertLibrary
from ask_expert_ros.core.inference.models import LoadedModel, ModelConfig, create_model
from ask_expert_ros.core.inference.patches import (
    PatchSelection,
    keep_count,
    model_grid,
    resample_scores,
    select_patches,
)
from ask_expert_ros.core.inference.routing import RoutingConfig
from ask_expert_ros.core.nodes.edge_logic import EdgeLogic, EdgeParams, OffloadMode, Transport
from ask_expert_ros.core.nodes.expert_logic import ExpertLogic, ExpertParams
from ask_expert_ros.core.nodes.messages import FinalResult, Frame, Header, OffloadRequest, Stamp

logger = logging.getLogger(__name__)

REPORT_NAME = 'attention_offload.json'
MARKDOWN_NAME = 'attention_offload.md'
PLOT_NAME = 'accuracy_vs_bytes.png'
TABLE_COLUMNS = (
    'offload',
    'rho or m',
    'selection',
    'bytes per offloaded frame / full raw frame',
    'specialist co-inference accuracy',
    'delta vs full frame',
    'expert ms per request / full',
    'edge selection ms / edge inference',
)
RaggedMode = Literal['pad', 'group']


@dataclass(frozen=True)
class RowSpec:
    """One row: how the edge offloads.

    Attributes:
        offload: ``frame`` or ``patches``.
        transport: ``raw`` or ``compressed`` (JPEG: the frame, or the patch mosaic).
        selection: The patch selection (``patches`` only).
    """

    offload: OffloadMode
    transport: Transport
    selection: PatchSelection | None = None

    def __post_init__(self) -> None:
        if (self.offload == 'patches') != (self.selection is not None):
            raise ValueError('a patches row needs a selection, a frame row none')

    @property
    def name(self) -> str:
        """Stable id: ``frame/raw``, ``patches/compressed/attention-last/rho=0.3``."""
        if self.selection is None:
            return f'frame/{self.transport}'
        sel = self.selection
        method = f'attention-{sel.source}' if sel.method == 'attention' else sel.method
        if sel.keep_ratio is not None:
            amount = f'rho={sel.keep_ratio:g}'
        else:
            amount = f'm={sel.attention_mass:g}'
        return f'patches/{self.transport}/{method}/{amount}'


@dataclass(frozen=True)
class PatchBenchConfig:
    """What the data set benchmark runs.

    Attributes:
        tau: Gate of the main runs (> 1 offloads every frame).
        report_tau: Gate of the operating-point runs (None: none).
        keep_ratios: rho of every selection method.
        masses: m of attention selection (per-frame patch counts).
        methods: Selection methods.
        transports: ``raw`` and/or ``compressed``.
        jpeg_quality: JPEG quality of the compressed rows.
        rollout_ratios: rho at which attention rollout is run next to the last block
            (raw transport).
        edge_batch: Frames per :meth:`EdgeLogic.process` call.
        max_batch: The expert's micro-batch.
        ragged: How the expert batches patch requests of different counts.
        max_frames: Use only the first test frames (None: all).
        bootstrap: Bootstrap resamples of the intervals.
        timing_repeats: Interleaved repeats of the edge selection-cost timing.
        seed: Seed of the bootstrap and of the random baseline.
    """

    tau: float = 1.01
    report_tau: float | None = 0.8
    keep_ratios: tuple[float, ...] = (0.1, 0.2, 0.3, 0.5, 0.7, 1.0)
    masses: tuple[float, ...] = (0.5, 0.7, 0.9, 0.97)
    methods: tuple[str, ...] = ('attention', 'random', 'centre')
    transports: tuple[Transport, ...] = ('raw', 'compressed')
    jpeg_quality: int = 90
    rollout_ratios: tuple[float, ...] = (0.2, 0.3)
    edge_batch: int = 64
    max_batch: int = 8
    ragged: RaggedMode = 'pad'
    max_frames: int | None = None
    bootstrap: int = 1000
    timing_repeats: int = 200
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.keep_ratios and not self.masses:
            raise ValueError('give at least one keep ratio or attention mass')
        if self.bootstrap < 10:
            raise ValueError(f'bootstrap must be >= 10 resamples, got {self.bootstrap}')
        if self.edge_batch < 1 or self.max_batch < 1:
            raise ValueError('edge_batch and max_batch must be >= 1')
        if self.max_frames is not None and self.max_frames < 1:
            raise ValueError(f'max_frames must be >= 1, got {self.max_frames}')
        if self.timing_repeats < 1:
            raise ValueError(f'timing_repeats must be >= 1, got {self.timing_repeats}')

    def rows(self) -> list[RowSpec]:
        """The full frame first (raw, then JPEG), then every patch row."""
        rows = [RowSpec('frame', t) for t in self.transports]
        for transport in self.transports:
            for method in self.methods:
                for rho in self.keep_ratios:
                    sel = PatchSelection(method, keep_ratio=rho, seed=self.seed)  # type: ignore[arg-type]
                    rows.append(RowSpec('patches', transport, sel))
                if method == 'attention':
                    for m in self.masses:
                        sel = PatchSelection(keep_ratio=None, attention_mass=m, seed=self.seed)
                        rows.append(RowSpec('patches', transport, sel))
        if 'attention' in self.methods and 'raw' in self.transports:
            for rho in self.rollout_ratios:
                sel = PatchSelection(keep_ratio=rho, source='rollout', seed=self.seed)
                rows.append(RowSpec('patches', 'raw', sel))
        return rows


@dataclass
class RowRun:
    """Per-frame outcome of one row at one tau (arrays over the test frames)."""

    correct: np.ndarray  # bool
    source: np.ndarray  # ResultSource
    request_bytes: np.ndarray  # CDR bytes of the ExpertRequest (0: not offloaded)
    payload_bytes: np.ndarray  # pixel bytes in it
    patches_sent: np.ndarray  # patches sent (0: frame mode or not offloaded)
    expert_ms_per_request: float  # expert call time / requests answered (batches share it)
    edge_inference_ms: float  # edge model per frame, as EdgeStage measured it
    wall_s: float


def frames_of(images: np.ndarray) -> list[Frame]:
    """Test images as frames; the stamp's seconds are the frame's index."""
    return [
        Frame(Header(Stamp(i, 0), 'bench'), np.ascontiguousarray(img))
        for i, img in enumerate(images)
    ]


def run_row(
    library: ExpertLibrary,
    stage: EdgeStage,
    frames: Sequence[Frame],
    labels: np.ndarray,
    spec: RowSpec,
    config: PatchBenchConfig,
    tau: float,
    request_bytes: Callable[[OffloadRequest], int],
) -> RowRun:
    """The frames through edge logic -> requests -> expert logic -> replies -> edge logic.

    Raises:
        RuntimeError: A frame did not get exactly one result (a bug in the node logic).
    """
    routing = RoutingConfig(tau=tau, k=library.k)
    params = EdgeParams(
        edge_id='bench',
        routing=routing,
        deadline_ms=3.6e6,  # never expire: accuracy, not latency
        transport=spec.transport,
        jpeg_quality=config.jpeg_quality,
        offload_mode=spec.offload,
        patches=spec.selection or PatchSelection(),
    )
    stage.routing = routing
    edge = EdgeLogic(stage, params, expert_input=library.input_config())
    expert = ExpertLogic(
        ExpertStage(library),
        ExpertParams(max_batch=config.max_batch, honor_deadline=False, ragged=config.ragged),
    )
    n = len(frames)
    results: list[FinalResult] = []
    sizes = np.zeros(n, np.int64)
    expert_ms = 0.0
    answered = 0
    edge_ms = 0.0
    start = time.perf_counter()
    for lo in range(0, n, config.edge_batch):
        step = edge.process(frames[lo : lo + config.edge_batch])
        results.extend(step.results)
        for request in step.requests:
            sizes[request.header.stamp.sec] = request_bytes(request)
            edge_ms += request.edge_inference_ms
            reply = expert.submit(request)
            if reply is not None:
                final = edge.on_reply(reply)
                if final is not None:
                    results.append(final)
        for reply in expert.poll(flush=True):
            if reply.batch_size:
                expert_ms += reply.inference_ms / reply.batch_size
                answered += 1
            final = edge.on_reply(reply)
            if final is not None:
                results.append(final)
    wall = time.perf_counter() - start
    seen = np.zeros(n, np.int64)
    correct = np.zeros(n, bool)
    source = np.zeros(n, np.int64)
    payload = np.zeros(n, np.int64)
    sent = np.zeros(n, np.int64)
    for r in results:
        i = r.header.stamp.sec
        seen[i] += 1
        correct[i] = r.label == labels[i]
        source[i] = int(r.source)
        payload[i] = r.offload_bytes
        sent[i] = len(r.sent_patches)
    if not (seen == 1).all() or edge.counters.results != n:
        raise RuntimeError(f'{spec.name}: {int((seen != 1).sum())} frames without one result')
    offloaded = max(1, int((sizes > 0).sum()))
    return RowRun(
        correct=correct,
        source=source,
        request_bytes=sizes,
        payload_bytes=payload,
        patches_sent=sent,
        expert_ms_per_request=expert_ms / answered if answered else 0.0,
        edge_inference_ms=edge_ms / offloaded,
        wall_s=wall,
    )


# -- statistics ----------------------------------------------------------------------------


class Bootstrap:
    """Percentile bootstrap over frames; the same resamples serve every row (paired)."""

    def __init__(self, n: int, resamples: int, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.index = rng.integers(0, n, size=(resamples, n), dtype=np.int32)

    def interval(self, values: np.ndarray) -> tuple[float, float]:
        """95 % interval of the mean of ``values`` (per frame)."""
        means = values.astype(np.float64)[self.index].mean(axis=1)
        lo, hi = np.percentile(means, [2.5, 97.5])
        return float(lo), float(hi)


def _summary(run: RowRun, full: RowRun, boot: Bootstrap) -> dict[str, Any]:
    offloaded = run.request_bytes > 0
    acc = float(run.correct.mean())
    delta = run.correct.astype(np.float64) - full.correct.astype(np.float64)
    mass_counts = run.patches_sent[offloaded]
    return {
        'accuracy': acc,
        'accuracy_ci95': boot.interval(run.correct),
        'delta_vs_full': float(delta.mean()),
        'delta_ci95': boot.interval(delta),
        'offloaded_fraction': float(offloaded.mean()),
        'sources': {s.name.lower(): int((run.source == int(s)).sum()) for s in ResultSource},
        'request_bytes_per_offloaded_frame': (
            float(run.request_bytes[offloaded].mean()) if offloaded.any() else 0.0
        ),
        'payload_bytes_per_offloaded_frame': (
            float(run.payload_bytes[offloaded].mean()) if offloaded.any() else 0.0
        ),
        'patches_sent_mean': float(mass_counts.mean()) if mass_counts.size else 0.0,
        'patches_sent_min': int(mass_counts.min()) if mass_counts.size else 0,
        'patches_sent_max': int(mass_counts.max()) if mass_counts.size else 0,
        'expert_ms_per_request': run.expert_ms_per_request,
        'edge_inference_ms_per_frame': run.edge_inference_ms,
        'wall_s': run.wall_s,
    }


# -- timing helpers ------------------------------------------------------------------------


def interleaved_ms(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median ms of each function, run in turn within every repeat (one warm-up round),
    so drift and other load fall on all of them alike."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - t0) * 1e3)
    return {name: float(np.median(t)) for name, t in times.items()}


def selection_cost(
    backend: Backend,
    x: torch.Tensor,
    selections: Sequence[PatchSelection],
    expert_config: ModelConfig,
    repeats: int,
) -> dict[str, Any]:
    """Edge cost of patch selection on input ``x``: the tapped forward (per attention
    source) and the selection itself, against the plain forward, median ms.

    In patch mode the edge always runs the tapped forward (the baselines too: switching
    the method at run time never changes what the backend runs), so a row's cost is
    ``tapped[source] - plain + select[row]``.
    """
    sources = sorted({s.source for s in selections})
    fns: dict[str, Callable[[], object]] = {'plain': lambda: backend.run_tensor(x)}
    for src in sources:
        fns[f'tapped_{src}'] = partial(backend.run_tensor_with_attention, x, src)
    forward = interleaved_ms(fns, repeats)
    grid = model_grid(backend.config)
    target = model_grid(expert_config)
    select_fns: dict[str, Callable[[], object]] = {}
    rng = np.random.default_rng(0)
    batch = int(x.shape[0])
    for sel in selections:
        _, scores = backend.run_tensor_with_attention(x, sel.source)
        scores = scores.cpu()
        select_fns[_selection_key(sel)] = partial(_select, scores, grid, sel, target, rng, batch)
    select = interleaved_ms(select_fns, repeats)
    per_row = {
        key: (forward[f'tapped_{sel.source}'] - forward['plain'] + select[key]) / forward['plain']
        for sel in selections
        for key in [_selection_key(sel)]
    }
    return {
        'batch': int(x.shape[0]),
        'forward_ms': forward,
        'select_ms': select,
        'cost_over_inference': per_row,
    }


def _select(
    scores: torch.Tensor,
    grid: tuple[int, int],
    sel: PatchSelection,
    target: tuple[int, int],
    rng: np.random.Generator,
    batch: int,
) -> list[np.ndarray]:
    """What :func:`ask_expert_ros.core.inference.engine.choose_patches` does: the scores onto the
    expert's grid (attention only), then the rule."""
    mapped = resample_scores(scores, grid, target) if sel.method == 'attention' else None
    return select_patches(mapped, sel, target, rng, batch=batch)


def _selection_key(sel: PatchSelection) -> str:
    return f'{sel.method}-{sel.source}-{sel.label.split()[-1]}'


# -- the data set benchmark ----------------------------------------------------------------


def run_bench_patches(
    library: ExpertLibrary,
    images: np.ndarray,
    labels: np.ndarray,
    config: PatchBenchConfig,
    request_bytes: Callable[[OffloadRequest], int] | None = None,
    dataset: str = '',
) -> dict[str, Any]:
    """Every row of ``config`` over ``images``; the report (JSON-able).

    Args:
        library: The zoo (edge model and experts).
        images: Test frames ``uint8 [N, H, W(, C)]`` at any size (the edge resizes).
        labels: Their classes, indices into the library's class names.
        config: Rows and settings.
        request_bytes: Size of a request on the wire (None: its ``ExpertRequest`` CDR,
            :func:`ask_expert_ros.bags.bench.request_size`; needs cyclonedds).
        dataset: Name recorded in the report.
    """
    if request_bytes is None:
        from ask_expert_ros.bags.bench import request_size

        request_bytes = request_size
    if config.max_frames is not None:
        images, labels = images[: config.max_frames], labels[: config.max_frames]
    labels = np.asarray(labels, np.int64)
    frames = frames_of(images)
    edge_model = library.load_edge()
    stage = EdgeStage(edge_model, library.scheme, RoutingConfig(tau=config.tau, k=library.k))
    boot = Bootstrap(len(frames), config.bootstrap, config.seed)
    specs = config.rows()
    taus = [config.tau] + ([config.report_tau] if config.report_tau is not None else [])
    expert_cfg = library.input_config()
    if expert_cfg is None:
        raise ValueError(f'{library.path} lists no experts: nothing to offload to')
    # warm-up, discarded: every expert loaded and run once, in both modes, before timing
    warm = frames[: min(len(frames), 4 * config.edge_batch)]
    for spec in (RowSpec('frame', 'raw'), RowSpec('patches', 'raw', PatchSelection())):
        run_row(library, stage, warm, labels, spec, config, config.tau, request_bytes)
    # the edge's cost of selecting, per row, at batch 1 (what one frame costs)
    x1 = FrameBatch([frames[0].pixels]).inputs(edge_model.config)
    selections = [s.selection for s in specs if s.selection is not None]
    unique = list({_selection_key(s): s for s in selections}.values())
    cost = selection_cost(stage.backend, x1, unique, expert_cfg, config.timing_repeats)
    rows: list[dict[str, Any]] = []
    full_runs: dict[float, RowRun] = {}
    for spec in specs:
        entry: dict[str, Any] = {
            'name': spec.name,
            'offload': spec.offload,
            'transport': spec.transport,
            'selection': asdict(spec.selection) if spec.selection is not None else None,
        }
        for tau in taus:
            run = run_row(library, stage, frames, labels, spec, config, tau, request_bytes)
            if spec.name == 'frame/raw':
                full_runs[tau] = run
            full = full_runs.get(tau, run)
            entry[f'tau={tau:g}'] = _summary(run, full, boot)
        main = entry[f'tau={config.tau:g}']
        entry['edge_selection_over_inference'] = (
            cost['cost_over_inference'][_selection_key(spec.selection)]
            if spec.selection is not None
            else 0.0
        )
        logger.info(
            '%s: accuracy %.4f, %.0f request bytes, expert %.3f ms/request (%.1f s)',
            spec.name,
            main['accuracy'],
            main['request_bytes_per_offloaded_frame'],
            main['expert_ms_per_request'],
            main['wall_s'],
        )
        rows.append(entry)
    full_main = rows[0][f'tau={config.tau:g}'] if rows[0]['name'] == 'frame/raw' else None
    if full_main is not None:
        for entry in rows:
            main = entry[f'tau={config.tau:g}']
            entry['bytes_over_full_raw'] = _ratio(
                main['request_bytes_per_offloaded_frame'],
                full_main['request_bytes_per_offloaded_frame'],
            )
            entry['payload_over_full_raw'] = _ratio(
                main['payload_bytes_per_offloaded_frame'],
                full_main['payload_bytes_per_offloaded_frame'],
            )
            entry['expert_ms_over_full'] = _ratio(
                main['expert_ms_per_request'], full_main['expert_ms_per_request']
            )
    return {
        'dataset': dataset,
        'library': str(library.root),
        'frames': len(frames),
        'edge': _describe(edge_model.config),
        'expert': _describe(expert_cfg),
        'grid': list(model_grid(expert_cfg)),
        'config': asdict(config),
        'taus': taus,
        'selection_cost_batch1': cost,
        'rows': rows,
    }


def _ratio(a: float, b: float) -> float:
    return a / b if b else float('nan')


def _describe(config: ModelConfig) -> dict[str, Any]:
    return {
        'variant': config.variant,
        'img_size': config.img_size,
        'patch_size': config.patch_size,
        'depth': config.depth,
        'in_chans': config.in_chans,
    }


# -- the real token count: DeiT-4H / DeiT-3H at 224 px -------------------------------------


@dataclass(frozen=True)
class RealTokenConfig:
    """The 224-pixel timing.

    Attributes:
        img_size / patch_size: 224 / 16: 196 tokens.
        keep_ratios: rho timed against the full frame.
        batches: Batch sizes.
        repeats: Interleaved repeats per figure (medians reported).
        ragged_fractions: Kept fraction of each frame of the ragged batch (mass mode);
            their count is the ragged batch size.
        edge_selections: What the edge selection cost is timed for.
        threads: torch intra-op threads (None: leave as is).
    """

    img_size: int = 224
    patch_size: int = 16
    keep_ratios: tuple[float, ...] = (0.1, 0.2, 0.3, 0.5, 0.7, 1.0)
    batches: tuple[int, ...] = (1, 8)
    repeats: int = 15
    ragged_fractions: tuple[float, ...] = (0.2, 0.25, 0.3, 0.35, 0.4, 0.5, 0.6, 0.75)
    edge_selections: tuple[PatchSelection, ...] = field(
        default_factory=lambda: (
            PatchSelection(keep_ratio=0.3),
            PatchSelection(keep_ratio=0.3, source='rollout'),
            PatchSelection(keep_ratio=None, attention_mass=0.9),
        )
    )
    threads: int | None = None

    def __post_init__(self) -> None:
        if self.img_size % self.patch_size:
            raise ValueError('img_size must be a whole number of patches')
        if self.repeats < 1:
            raise ValueError(f'repeats must be >= 1, got {self.repeats}')
        if not all(0 < f <= 1 for f in self.ragged_fractions):
            raise ValueError('ragged_fractions must be in (0, 1]')


def _backends(loaded: LoadedModel) -> list[Backend]:
    """The backend ``'auto'`` picks on this CPU when it is a torch one, and torch fp32."""
    from ask_expert_ros.core.inference.backends import pick_default

    choice = pick_default('cpu')
    out: list[Backend] = []
    if choice.kind == 'torch' and choice.precision != 'fp32':
        out.append(TorchBackend(loaded, choice.precision))  # type: ignore[arg-type]
    else:
        logger.warning(
            "backend 'auto' picks %s %s here, which runs whole images only: timing torch fp32",
            choice.kind,
            choice.precision,
        )
    out.append(TorchBackend(loaded, 'fp32'))
    return out


def _patch_tensor(x: torch.Tensor, p: int) -> torch.Tensor:
    b, c, h, w = x.shape
    g = x.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5)
    return g.reshape(b, (h // p) * (w // p), c, p, p).contiguous()


def real_token_timing(config: RealTokenConfig) -> dict[str, Any]:
    """Expert token-subset time (DeiT-4H) and edge selection cost (DeiT-3H) at 224 px."""
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    torch.manual_seed(0)
    names = tuple(f'c{i}' for i in range(10))
    p = config.patch_size
    n = (config.img_size // p) ** 2
    rng = np.random.default_rng(0)
    expert_cfg = ModelConfig('deit_4h', names, img_size=config.img_size, patch_size=p)
    expert = LoadedModel(create_model(expert_cfg).eval(), expert_cfg)
    frames = torch.randn(
        max(max(config.batches), len(config.ragged_fractions)), 3, config.img_size, config.img_size
    )
    patches = _patch_tensor(frames, p)
    out: dict[str, Any] = {
        'tokens': n,
        'config': {
            **asdict(config),
            'edge_selections': [asdict(s) for s in config.edge_selections],
        },
        'machine': machine_info(torch.get_num_threads()),
        'expert': {},
        'ragged': {},
        'edge': {},
    }
    for backend in _backends(expert):
        prec = backend.precision
        out['expert'][prec] = {}
        for b in config.batches:
            out['expert'][prec][f'batch={b}'] = _subset_timing(
                backend, frames[:b], patches[:b], config, rng
            )
            logger.info('expert %s batch %d: %s', prec, b, out['expert'][prec][f'batch={b}'])
        out['ragged'][prec] = _ragged_timing(backend, patches, n, config, rng)
    edge_cfg = ModelConfig('deit_3h', names, img_size=config.img_size, patch_size=p)
    edge = LoadedModel(create_model(edge_cfg).eval(), edge_cfg)
    for backend in _backends(edge):
        out['edge'][backend.precision] = {
            f'batch={b}': selection_cost(
                backend, frames[:b], config.edge_selections, edge_cfg, config.repeats
            )
            for b in config.batches
        }
        logger.info('edge %s: %s', backend.precision, out['edge'][backend.precision])
    return out


def _subset_timing(
    backend: Backend,
    frames: torch.Tensor,
    patches: torch.Tensor,
    config: RealTokenConfig,
    rng: np.random.Generator,
) -> dict[str, Any]:
    """The full frames against a random subset of ``ceil(rho N)`` patches per frame, at
    each rho (the selection does not change the cost, only the count does)."""
    b, n = patches.shape[:2]
    fns: dict[str, Callable[[], object]] = {'full': lambda: backend.run_tensor(frames)}
    for rho in config.keep_ratios:
        count = keep_count(n, rho)
        idx = torch.from_numpy(np.sort(np.argsort(rng.random((b, n)), axis=1)[:, :count], axis=1))
        shape = (-1, -1, *patches.shape[2:])
        sub = torch.gather(patches, 1, idx[:, :, None, None, None].expand(shape)).contiguous()
        fns[f'rho={rho:g}'] = partial(backend.run_tokens, sub, idx)
    ms = interleaved_ms(fns, config.repeats)
    return {
        'ms': ms,
        'speedup_vs_full': {k: ms['full'] / v for k, v in ms.items() if k != 'full'},
        'tokens': {f'rho={r:g}': keep_count(n, r) for r in config.keep_ratios},
    }


def _ragged_timing(
    backend: Backend,
    patches: torch.Tensor,
    n: int,
    config: RealTokenConfig,
    rng: np.random.Generator,
) -> dict[str, Any]:
    """One ragged batch (per-frame counts from ``ragged_fractions``): pad to the longest
    with an attention mask (one call) vs one call per distinct count, as
    :meth:`ExpertStage.run_patches` does, vs the full frames."""
    counts = [keep_count(n, f) for f in config.ragged_fractions]
    b = len(counts)
    chosen = [np.sort(rng.permutation(n)[:c]) for c in counts]
    n_max = max(counts)
    padded = torch.zeros(b, n_max, *patches.shape[2:])
    idx = torch.zeros(b, n_max, dtype=torch.long)
    for row, sel in enumerate(chosen):
        padded[row, : len(sel)] = patches[row, torch.from_numpy(sel)]
        idx[row, : len(sel)] = torch.from_numpy(sel)
    lengths = torch.tensor(counts)
    groups = []
    for c in sorted(set(counts)):
        members = [i for i, k in enumerate(counts) if k == c]
        groups.append((padded[members, :c].contiguous(), idx[members, :c].contiguous()))
    images = _unpatch(patches[:b], math.isqrt(n))

    def group_call() -> None:
        for pix, ind in groups:
            backend.run_tokens(pix, ind)

    ms = interleaved_ms(
        {
            'full': lambda: backend.run_tensor(images),
            'pad': lambda: backend.run_tokens(padded, idx, lengths),
            'group': group_call,
        },
        config.repeats,
    )
    return {'counts': counts, 'distinct_counts': len(set(counts)), 'ms': ms}


def _unpatch(patches: torch.Tensor, g: int) -> torch.Tensor:
    b, _, c, p, _ = patches.shape
    return patches.reshape(b, g, g, c, p, p).permute(0, 3, 1, 4, 2, 5).reshape(b, c, g * p, g * p)


# -- output --------------------------------------------------------------------------------


def _pct(x: float) -> str:
    return f'{100 * x:.2f}'


def _offload_text(entry: dict[str, Any], quality: int) -> str:
    transport = 'raw' if entry['transport'] == 'raw' else f'JPEG q{quality}'
    return f'{entry["offload"]} ({transport})'


def _amount_text(entry: dict[str, Any]) -> str:
    sel = entry['selection']
    if sel is None:
        return '-'
    if sel['keep_ratio'] is not None:
        return f'ρ={sel["keep_ratio"]:g}'
    return f'm={sel["attention_mass"]:g}'


def _selection_text(entry: dict[str, Any]) -> str:
    sel = entry['selection']
    if sel is None:
        return '-'
    return f'attention ({sel["source"]})' if sel['method'] == 'attention' else sel['method']


def table_rows(report: dict[str, Any]) -> list[list[str]]:
    """The issue's table, one list of cells per row (:data:`TABLE_COLUMNS`)."""
    tau = f'tau={report["config"]["tau"]:g}'
    quality = report['config']['jpeg_quality']
    out = []
    for entry in report['rows']:
        main = entry[tau]
        lo, hi = main['accuracy_ci95']
        dlo, dhi = main['delta_ci95']
        delta = (
            '(reference)'
            if entry['name'] == 'frame/raw'
            else f'{100 * main["delta_vs_full"]:+.2f} [{100 * dlo:+.2f}, {100 * dhi:+.2f}]'
        )
        out.append(
            [
                _offload_text(entry, quality),
                _amount_text(entry),
                _selection_text(entry),
                f'{entry.get("bytes_over_full_raw", float("nan")):.3f}',
                f'{_pct(main["accuracy"])} [{_pct(lo)}, {_pct(hi)}]',
                delta,
                f'{entry.get("expert_ms_over_full", float("nan")):.2f}',
                f'{entry["edge_selection_over_inference"]:.3f}',
            ]
        )
    return out


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    lines += ['| ' + ' | '.join(r) + ' |' for r in rows]
    return lines


def format_markdown(report: dict[str, Any]) -> str:
    """The data set tables (and the 224-pixel tables when present) as markdown."""
    lines: list[str] = []
    if report.get('rows'):
        lines += _dataset_markdown(report)
    if report.get('real_tokens'):
        lines += real_token_markdown(report['real_tokens'])
    return '\n'.join(lines) + '\n'


def _dataset_markdown(report: dict[str, Any]) -> list[str]:
    cfg = report['config']
    tau = f'tau={cfg["tau"]:g}'
    full = report['rows'][0][tau]
    exp, edge = report['expert'], report['edge']
    lines = [
        f'### {report["dataset"] or report["library"]}: {report["frames"]} test frames',
        '',
        f'Edge {edge["variant"]} (depth {edge["depth"]}), experts {exp["variant"]} '
        f'(depth {exp["depth"]}), {exp["img_size"]} px input, {exp["patch_size"]} px '
        f'patches: a {report["grid"][0]}x{report["grid"][1]} grid. τ = {cfg["tau"]:g} '
        f'(every frame offloaded), k = 2; full raw frame: '
        f'{full["request_bytes_per_offloaded_frame"]:.0f} request bytes '
        f'({full["payload_bytes_per_offloaded_frame"]:.0f} pixel bytes), expert '
        f'{full["expert_ms_per_request"]:.3f} ms per request. Intervals: 95 % bootstrap '
        f'over frames ({cfg["bootstrap"]} resamples; Δ paired against the full raw frame).',
        '',
    ]
    lines += _md_table(TABLE_COLUMNS, table_rows(report))
    lines += ['', 'Details (pixel payload alone, patches sent, the operating point):', '']
    rt = report['taus'][1] if len(report['taus']) > 1 else None
    header = [
        'row',
        'request bytes',
        'pixel bytes',
        'pixel bytes / full raw',
        'patches sent (mean, min-max)',
    ]
    if rt is not None:
        header += [f'accuracy at τ={rt:g}', f'Δ at τ={rt:g}', f'offloaded at τ={rt:g}']
    rows = []
    for entry in report['rows']:
        main = entry[tau]
        sent = (
            f'{main["patches_sent_mean"]:.1f} ({main["patches_sent_min"]}-'
            f'{main["patches_sent_max"]})'
            if entry['offload'] == 'patches'
            else '-'
        )
        cells = [
            entry['name'],
            f'{main["request_bytes_per_offloaded_frame"]:.0f}',
            f'{main["payload_bytes_per_offloaded_frame"]:.0f}',
            f'{entry.get("payload_over_full_raw", float("nan")):.3f}',
            sent,
        ]
        if rt is not None:
            op = entry[f'tau={rt:g}']
            lo, hi = op['accuracy_ci95']
            cells += [
                f'{_pct(op["accuracy"])} [{_pct(lo)}, {_pct(hi)}]',
                f'{100 * op["delta_vs_full"]:+.2f}',
                f'{_pct(op["offloaded_fraction"])} %',
            ]
        rows.append(cells)
    lines += _md_table(header, rows)
    cost = report['selection_cost_batch1']
    fwd = cost['forward_ms']
    lines += [
        '',
        f'Edge selection cost at batch 1 (medians of {cfg["timing_repeats"]} interleaved '
        f'repeats): plain forward {fwd["plain"]:.3f} ms, '
        + ', '.join(f'{k} {v:.3f} ms' for k, v in fwd.items() if k != 'plain')
        + '; selection '
        + ', '.join(f'{k} {v:.3f} ms' for k, v in cost['select_ms'].items())
        + '.',
        '',
    ]
    return lines


def real_token_markdown(rt: dict[str, Any]) -> list[str]:
    """Tables of :func:`real_token_timing`."""
    n = rt['tokens']
    reps = rt['config']['repeats']
    lines = [
        f'### Expert DeiT-4H at {rt["config"]["img_size"]} px ({n} tokens), random weights',
        '',
        f'Median ms of {reps} interleaved repeats; speed-up = full frame ms / token-subset ms. '
        f'{rt["machine"]["cpu"]}, {rt["machine"]["threads"]} threads, torch '
        f'{rt["machine"]["torch"]}.',
        '',
    ]
    header = ['precision', 'batch', 'full ms']
    keys = [k for k in next(iter(next(iter(rt['expert'].values())).values()))['ms'] if k != 'full']
    header += [
        f'{k} ({rt["expert"][next(iter(rt["expert"]))]["batch=1"]["tokens"][k]} tok)' for k in keys
    ]
    rows = []
    for prec, per_batch in rt['expert'].items():
        for batch, d in per_batch.items():
            cells = [prec, batch.split('=')[1], f'{d["ms"]["full"]:.2f}']
            cells += [f'{d["ms"][k]:.2f} ({d["speedup_vs_full"][k]:.2f}x)' for k in keys]
            rows.append(cells)
    lines += _md_table(header, rows)
    lines += ['', 'Ragged batch (mass mode: a count per frame):', '']
    rows = []
    for prec, d in rt['ragged'].items():
        ms = d['ms']
        rows.append(
            [
                prec,
                ', '.join(str(c) for c in d['counts']),
                f'{ms["full"]:.2f}',
                f'{ms["pad"]:.2f} ({ms["full"] / ms["pad"]:.2f}x)',
                f'{ms["group"]:.2f} ({ms["full"] / ms["group"]:.2f}x)',
                f'{ms["group"] / ms["pad"]:.2f}',
            ]
        )
    lines += _md_table(
        [
            'precision',
            'tokens per frame',
            'full frames ms',
            'pad + mask ms (speed-up)',
            'group by length ms (speed-up)',
            'group / pad',
        ],
        rows,
    )
    lines += [
        '',
        f'### Edge DeiT-3H at {rt["config"]["img_size"]} px: selection cost',
        '',
        'cost / inference = (tapped forward - plain forward + selection) / plain forward.',
        '',
    ]
    rows = []
    for prec, per_batch in rt['edge'].items():
        for batch, d in per_batch.items():
            fwd = d['forward_ms']
            for key, ratio in d['cost_over_inference'].items():
                src = 'rollout' if '-rollout-' in key else 'last'
                rows.append(
                    [
                        prec,
                        batch.split('=')[1],
                        key,
                        f'{fwd["plain"]:.2f}',
                        f'{fwd[f"tapped_{src}"]:.2f}',
                        f'{d["select_ms"][key]:.3f}',
                        f'{ratio:+.3f}',
                    ]
                )
    lines += _md_table(
        [
            'precision',
            'batch',
            'selection',
            'plain forward ms',
            'tapped forward ms',
            'select ms',
            'cost / inference',
        ],
        rows,
    )
    return [*lines, '']


def write_plot(report: dict[str, Any], path: Path) -> Path:
    """Accuracy vs request bytes per offloaded frame, one curve per selection method and
    transport (keep-ratio rows), attention-mass rows as points, full frame marked."""
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    tau = f'tau={report["config"]["tau"]:g}'
    fig, ax = plt.subplots(figsize=(7.5, 5))
    curves: dict[tuple[str, str], list[tuple[float, float, tuple[float, float]]]] = {}
    colours = {
        'attention (last)': 'C0',
        'attention (rollout)': 'C3',
        'random': 'C1',
        'centre': 'C2',
    }
    for entry in report['rows']:
        main = entry[tau]
        point = (
            main['request_bytes_per_offloaded_frame'],
            100 * main['accuracy'],
            (100 * main['accuracy_ci95'][0], 100 * main['accuracy_ci95'][1]),
        )
        sel = entry['selection']
        if sel is None:
            marker = '*' if entry['transport'] == 'raw' else 'P'
            label = 'full frame (raw)' if entry['transport'] == 'raw' else 'full frame (JPEG)'
            ax.plot(point[0], point[1], marker, color='k', markersize=13, label=label)
            continue
        if sel['keep_ratio'] is None:
            ax.plot(
                point[0],
                point[1],
                'D' if entry['transport'] == 'raw' else 'd',
                color='C4',
                markersize=6,
            )
            ax.annotate(
                f'm={sel["attention_mass"]:g}',
                point[:2],
                fontsize=7,
                xytext=(3, -9),
                textcoords='offset points',
            )
            continue
        curves.setdefault((_selection_text(entry), entry['transport']), []).append(point)
    for (name, transport), pts in curves.items():
        if len(pts) < 2 and name == 'attention (rollout)':
            style = 'x'
        else:
            style = 'o-' if transport == 'raw' else 's--'
        pts.sort()
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        err = np.array(
            [
                [y - p[2][0] for y, p in zip(ys, pts, strict=True)],
                [p[2][1] - y for y, p in zip(ys, pts, strict=True)],
            ]
        )
        label = f'{name}, {"raw" if transport == "raw" else "JPEG"}'
        ax.errorbar(
            xs,
            ys,
            yerr=err,
            fmt=style,
            color=colours.get(name, 'C5'),
            label=label,
            capsize=2,
            markersize=4,
            alpha=0.9 if transport == 'raw' else 0.6,
        )
    ax.plot([], [], 'D', color='C4', label='attention mass m (raw D, JPEG d)')
    ax.set_xscale('log')
    ax.set_xlabel('ExpertRequest bytes per offloaded frame (CDR)')
    ax.set_ylabel('specialist co-inference accuracy (%)')
    ax.set_title(
        f'{report["dataset"] or "zoo"}: accuracy vs bytes (tau = {report["config"]["tau"]:g},'
        f' every frame offloaded)',
        fontsize=10,
    )
    ax.grid(True, which='both', alpha=0.3)
    ax.legend(fontsize=7, loc='lower right')
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(report: dict[str, Any], out: Path) -> dict[str, Path]:
    """``out/attention_offload.json``, ``.md`` and (with data set rows) the plot."""
    out.mkdir(parents=True, exist_ok=True)
    written = {'json': out / REPORT_NAME, 'markdown': out / MARKDOWN_NAME}
    written['json'].write_text(json.dumps(report, indent=1) + '\n', encoding='utf-8')
    written['markdown'].write_text(format_markdown(report), encoding='utf-8')
    if report.get('rows'):
        written['plot'] = write_plot(report, out / PLOT_NAME)
    return written


def with_overrides(config: PatchBenchConfig, **overrides: Any) -> PatchBenchConfig:
    """``config`` with the given fields replaced (None values left as they are)."""
    return replace(config, **{k: v for k, v in overrides.items() if v is not None})
