"""The offline bag benchmark: accuracy, α(τ), bytes, latency and energy across τ.

Given the frames of a recording (and their ground truth, when there is one), this runs
the co-inference engine once per τ (through
:func:`~ask_expert_ros.core.evaluation.evaluation.tau_sweep`) and turns what it measured
into the series of the paper's evaluation:

* accuracy vs τ for edge-only, near-edge-only (the generalist on the accelerator for
  every frame), generalist co-inference and specialist co-inference (Fig. 4);
* the offload ratio α(τ) (Table 4) and the bytes each frame costs on the link: the
  size of the serialised ``ExpertRequest`` (CDR) of the frames actually offloaded,
  averaged over all frames -- the requests the edge node itself would send
  (:class:`~ask_expert_ros.core.nodes.edge_logic.EdgeLogic` builds them): the frame at the
  expert's input resolution, or in patch mode the mosaic of the patches it selected;
* latency and energy per frame from device profiles and a link model through
  :func:`ask_expert_ros.core.planning.planner.plan`, normalised as in Fig. 5 (against the
  expert-sized generalist running on the edge device) and Fig. 6 (against the edge
  model on the edge device), with the Pareto fronts of accuracy against latency and
  energy (Fig. 6), and the accuracy-to-latency / accuracy-to-energy ratios of Fig. 7;
* the stage times measured on this machine, beside the modelled ones.

Without ground truth the accuracy series are *agreement with the expert-only answer*
(the specialist expert for every frame, whole), and the report says so in ``metric``.

Offload configurations (:attr:`BenchConfig.offloads`): frame mode (the paper) and any
number of patch selections (Im et al.: ρ or m, attention or the random / centre
baselines). Each runs the whole τ sweep; every row of ``sweep`` names its
configuration (``offload``, ``selection``, ``keep_ratio``, ``attention_mass``,
``attention_source``, ``offload_label``) and its bytes against the full frame
(``bytes_vs_full_frame``). The series, plots and cost baselines are those of the first
configuration; the others add their co-inference points to ``pareto`` and a summary to
``offloads``.

Transport-free: the adapter that read the frames supplies how large a request for
each frame is on the wire (``request_bytes``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal, cast

import numpy as np

from ask_expert_ros.core.evaluation.evaluation import ALL_OFFLOADED_TAU, run_batches, tau_sweep
from ask_expert_ros.core.inference.engine import CoInferenceEngine, EdgeStage
from ask_expert_ros.core.inference.models import ModelConfig
from ask_expert_ros.core.inference.patches import AttentionSource, PatchSelection, SelectionMethod
from ask_expert_ros.core.inference.routing import RoutingConfig, route
from ask_expert_ros.core.nodes.edge_logic import EdgeLogic, EdgeParams, Transport
from ask_expert_ros.core.nodes.messages import (
    Frame,
    FrameFormat,
    Header,
    ImageData,
    OffloadRequest,
    Stamp,
)
from ask_expert_ros.core.planning.devices import DeviceProfile, load_profile
from ask_expert_ros.core.planning.planner import Link, plan

Metric = Literal['accuracy', 'agreement_with_expert_only']
SCENARIOS = (
    'edge_only',
    'near_edge_only',
    'generalist_co_inference',
    'specialist_co_inference',
)
"""Series names of the accuracy plot (paper Fig. 4)."""
COST_SCENARIOS = ('edge_only', 'edge_only_generalist', 'near_edge_only', 'co_inference')
"""Series names of the latency/energy plot (paper Fig. 5). ``co_inference`` holds for
both generalist and specialist co-inference (same architecture, same cost)."""


@dataclass(frozen=True)
class BenchConfig:
    """What the benchmark sweeps and which hardware it models.

    Attributes:
        taus: Thresholds τ in [0, 1] to sweep.
        batch_size: Frames per engine call and per planner batch B (the paper: 10).
        edge_device / expert_device: Device profile names or YAML paths.
        rtt_ms: Link round-trip time, milliseconds.
        bandwidth_mbps: Link throughput, Mbit/s.
        frame_rate_hz: Camera rate, frames per second (for the offload bandwidth).
        edge_variant / expert_variant / generalist_variant: Variant names to look up in
            the profiles; None: the ones in the models' config files.
        offloads: Offload configurations to sweep, in order: None is frame mode, a
            :class:`PatchSelection` patch mode with it. The first one's series are the
            report's series.
        transport: How requests carry pixels: ``raw``, ``compressed`` (JPEG), or None:
            as the frames were recorded (compressed bags stay compressed).
        jpeg_quality: JPEG quality of ``compressed``.
    """

    taus: tuple[float, ...] = (0.99, 0.9, 0.8, 0.7, 0.6, 0.5)
    batch_size: int = 10
    edge_device: str = 'orin_nano'
    expert_device: str = 'agx_orin'
    rtt_ms: float = 5.0
    bandwidth_mbps: float = 100.0
    frame_rate_hz: float = 30.0
    edge_variant: str | None = None
    expert_variant: str | None = None
    generalist_variant: str | None = None
    offloads: tuple[PatchSelection | None, ...] = (None,)
    transport: Transport | None = None
    jpeg_quality: int = 90

    def __post_init__(self) -> None:
        if not self.taus:
            raise ValueError('give at least one tau')
        if not self.offloads:
            raise ValueError('give at least one offload configuration (None: frame mode)')
        for offload in self.offloads:
            if offload is not None and not isinstance(offload, PatchSelection):
                raise ValueError(f'an offload is None or a PatchSelection, got {offload!r}')
        if self.transport not in (None, 'raw', 'compressed'):
            raise ValueError(
                f"transport must be 'raw', 'compressed' or None, got {self.transport!r}"
            )
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f'jpeg_quality must be in 1..100, got {self.jpeg_quality}')
        for tau in self.taus:
            if not 0.0 <= tau <= 1.0:
                raise ValueError(f'every tau must be in [0, 1], got {tau}')
        if self.batch_size < 1:
            raise ValueError(f'batch_size must be >= 1, got {self.batch_size}')
        if not self.frame_rate_hz > 0:
            raise ValueError(f'frame_rate_hz must be > 0, got {self.frame_rate_hz}')

    @property
    def link(self) -> Link:
        return Link(rtt_ms=self.rtt_ms, bandwidth_mbps=self.bandwidth_mbps)


def offload_fields(offload: PatchSelection | None) -> dict[str, Any]:
    """The offload configuration as a report row names it."""
    if offload is None:
        return {
            'offload': 'frame',
            'selection': None,
            'keep_ratio': None,
            'attention_mass': None,
            'attention_source': None,
            'offload_label': 'frame',
        }
    return {
        'offload': 'patches',
        'selection': offload.method,
        'keep_ratio': offload.keep_ratio,
        'attention_mass': offload.attention_mass,
        'attention_source': offload.source,
        'offload_label': f'patches {offload.label}',
    }


def offload_configs(
    modes: Sequence[str] = ('frame',),
    keep_ratios: Sequence[float] | None = None,
    attention_masses: Sequence[float] | None = None,
    selections: Sequence[str] = ('attention',),
    source: str = 'last',
) -> tuple[PatchSelection | None, ...]:
    """The offload configurations a sweep asks for, in order (``ask-expert bench``).

    Args:
        modes: ``frame`` and/or ``patches``, in the order to run them.
        keep_ratios: rho values per selection method; None: 0.5 (the edge node's
            default) unless ``attention_masses`` is given.
        attention_masses: m values (``attention`` selection only).
        selections: ``attention``, ``random``, ``centre``.
        source: The edge attention that scores the patches: ``last`` or ``rollout``.

    Raises:
        ValueError: An unknown mode, patch settings without ``patches``, or a baseline
            asked to select by attention mass alone.
    """
    unknown = sorted(set(modes) - {'frame', 'patches'})
    if unknown or not modes:
        raise ValueError(f"offload modes are 'frame' and 'patches', got {list(modes)}")
    patch_settings = keep_ratios is not None or attention_masses is not None
    if 'patches' not in modes and (patch_settings or tuple(selections) != ('attention',)):
        raise ValueError('keep ratio, attention mass and selection are for patch offload')
    rhos = tuple(keep_ratios) if keep_ratios is not None else ()
    masses = tuple(attention_masses or ())
    if not rhos and not masses:
        rhos = (0.5,)
    out: list[PatchSelection | None] = []
    for mode in dict.fromkeys(modes):
        if mode == 'frame':
            out.append(None)
            continue
        for method in dict.fromkeys(selections):
            if method != 'attention' and not rhos:
                raise ValueError(f'the {method} baseline selects by keep ratio: give rho too')
            # PatchSelection checks the names
            chosen, scores = cast(SelectionMethod, method), cast(AttentionSource, source)
            out += [PatchSelection(chosen, rho, None, scores) for rho in rhos]
            if method == 'attention':
                out += [PatchSelection(chosen, None, m, scores) for m in masses]
    return tuple(out)


def recorded_transport(sources: Sequence[ImageData | None] | None) -> Transport:
    """``compressed`` when the frames were recorded compressed, else ``raw``."""
    if sources and all(s is not None and s.format == FrameFormat.COMPRESSED for s in sources):
        return 'compressed'
    return 'raw'


def offload_requests(
    edge: EdgeStage,
    frames: Sequence[np.ndarray] | np.ndarray,
    sources: Sequence[ImageData | None] | None,
    stamps_ns: Sequence[int] | None,
    expert_input: ModelConfig | None,
    offload: PatchSelection | None = None,
    transport: Transport = 'raw',
    jpeg_quality: int = 90,
    batch_size: int = 10,
    edge_id: str = 'bench_edge',
) -> list[OffloadRequest | None]:
    """The ``ExpertRequest`` the edge node would send for each frame if it offloaded it.

    Built by :class:`EdgeLogic` itself, on the edge model of ``edge`` (its routing with
    every frame offloaded, its confidence method kept): the frame at ``expert_input``'s
    resolution (the recorded bytes when they already are, as the node forwards them),
    or in patch mode the mosaic of the patches ``offload`` selects, raw or JPEG. None
    where the edge output was not finite (never offloaded). ``edge`` is not changed.
    """
    everything = ALL_OFFLOADED_TAU if edge.routing.confidence != 'min_entropy' else 0.0
    routing: RoutingConfig = replace(edge.routing, tau=everything)
    stage = EdgeStage(edge.model, edge.scheme, routing, backend=edge.backend)
    params = EdgeParams(
        edge_id=edge_id,
        routing=routing,
        transport=transport,
        jpeg_quality=jpeg_quality,
        offload_mode='frame' if offload is None else 'patches',
        patches=offload if offload is not None else PatchSelection(),
    )
    logic = EdgeLogic(stage, params, expert_input=expert_input)
    out: list[OffloadRequest | None] = [None] * len(frames)
    for start in range(0, len(frames), batch_size):
        batch = []
        where: dict[Header, list[int]] = {}
        for i in range(start, min(start + batch_size, len(frames))):
            stamp = Stamp.from_ns(int(stamps_ns[i]) if stamps_ns is not None else i)
            header = Header(stamp, 'camera')
            where.setdefault(header, []).append(i)
            source = sources[i] if sources is not None else None
            batch.append(Frame(header, np.asarray(frames[i]), source))
        for request in logic.process(batch).requests:
            out[where[request.header].pop(0)] = request
    return out


def _size_summary(sizes: np.ndarray) -> dict[str, Any]:
    sent = sizes[sizes > 0]
    return {
        'mean': float(sent.mean()) if len(sent) else 0.0,
        'min': int(sent.min()) if len(sent) else 0,
        'max': int(sizes.max()) if len(sizes) else 0,
    }


def _input_text(config: ModelConfig | None) -> str | None:
    if config is None:
        return None
    chans = 'rgb' if config.in_chans == 3 else 'mono'
    return f'{config.img_size}x{config.img_size} {chans}, {config.patch_size}-pixel patches'


def pareto_front(points: Sequence[Mapping[str, Any]], cost: str) -> list[bool]:
    """For each point, whether no other point has lower-or-equal ``cost`` and higher-or-
    equal ``accuracy`` with one of them strictly better (NaN costs are never on it)."""
    flags = []
    for p in points:
        c, a = p[cost], p['accuracy']
        if not math.isfinite(c):
            flags.append(False)
            continue
        dominated = any(
            math.isfinite(q[cost])
            and q[cost] <= c
            and q['accuracy'] >= a
            and (q[cost] < c or q['accuracy'] > a)
            for q in points
        )
        flags.append(not dominated)
    return flags


def _ratio(gain: float, cost: float) -> float | None:
    """Accuracy gain per unit of extra cost; None when the cost does not grow."""
    return gain / cost if math.isfinite(cost) and cost > 1e-12 else None


def _normalise(values: Sequence[float], reference: float) -> list[float]:
    return [v / reference if reference > 0 else math.nan for v in values]


def _variant(engine: CoInferenceEngine, which: Literal['edge', 'expert']) -> str:
    if which == 'edge':
        return engine.edge.model.config.variant
    library = engine.experts.library
    keys = library.keys
    if not keys:
        raise ValueError(f'{library.name} lists no experts')
    return library.get(keys[0]).config.variant


def run_bench(
    engine: CoInferenceEngine,
    frames: Sequence[np.ndarray] | np.ndarray,
    labels: np.ndarray | None,
    config: BenchConfig,
    request_bytes: Callable[[OffloadRequest], int],
    generalist: CoInferenceEngine | None = None,
    sources: Sequence[ImageData | None] | None = None,
    stamps_ns: Sequence[int] | None = None,
) -> dict[str, Any]:
    """Sweep τ over ``frames`` and model latency and energy; the report as a dict.

    Args:
        engine: Specialist co-inference (edge model + expert library).
        frames: ``uint8`` frames in camera order.
        labels: Class index per frame, or None: report agreement with expert-only.
        config: Thresholds, devices, link.
        request_bytes: Size in bytes of the serialised ``ExpertRequest`` on the wire.
        generalist: Generalist co-inference baseline (edge model + near-edge
            generalist for every key); None: those series are left out.
        sources: Images as recorded (forwarded to the expert as they are).
        stamps_ns: Camera stamps, nanoseconds (only for the request headers).

    Raises:
        ValueError: No frames, labels of the wrong length, a profile lacking a variant.
    """
    n = len(frames)
    if n == 0:
        raise ValueError('no frames to benchmark')
    if labels is not None and len(labels) != n:
        raise ValueError(f'{len(labels)} labels for {n} frames')
    original = engine.edge.routing
    saved = (engine.patches, generalist.patches if generalist is not None else None)
    frame_array = np.asarray(frames)
    transport = config.transport or recorded_transport(sources)
    expert_input = engine.experts.library.input_config()

    def sizes_of(offload: PatchSelection | None) -> np.ndarray:
        """Bytes of the request the edge would send for each frame (0: never offloaded)."""
        requests = offload_requests(
            engine.edge,
            frames,
            sources,
            stamps_ns,
            expert_input,
            offload,
            transport,
            config.jpeg_quality,
            config.batch_size,
        )
        return np.array([request_bytes(r) if r is not None else 0 for r in requests], np.float64)

    blocks: list[tuple[PatchSelection | None, list[dict[str, Any]], np.ndarray]] = []
    try:
        engine.patches = None  # the reference and the full frame: frame mode
        engine.edge.routing = replace(original, tau=ALL_OFFLOADED_TAU)
        try:
            everything = run_batches(engine, frame_array, config.batch_size)
        finally:
            engine.edge.routing = original
        metric: Metric = 'accuracy' if labels is not None else 'agreement_with_expert_only'
        reference = (
            np.asarray(labels, dtype=np.int64)
            if labels is not None
            else np.concatenate([r.labels for r in everything])
        )
        logits = np.concatenate([r.edge.logits for r in everything])
        frame_sizes = sizes_of(None)
        full_bytes = float(frame_sizes[frame_sizes > 0].mean()) if (frame_sizes > 0).any() else 0.0
        edge_summary: dict[str, Any] = {}
        for offload in config.offloads:
            engine.patches = offload
            if generalist is not None:
                generalist.patches = offload
            sweep = tau_sweep(
                engine, frame_array, reference, config.taus, config.batch_size, generalist
            )
            edge_summary = edge_summary or sweep['edge']
            # bytes on the link: the real request of every frame the edge offloads at tau
            sizes = frame_sizes if offload is None else sizes_of(offload)
            for row in sweep['sweep']:
                mask = route(logits, engine.edge.scheme, replace(original, tau=row['tau'])).offload
                per_offload = float(sizes[mask].mean()) if mask.any() else 0.0
                row['request_bytes_per_offloaded_frame'] = per_offload
                row['bytes_offloaded_per_frame'] = float(sizes[mask].sum() / n)
                row.update(offload_fields(offload))
                row['bytes_vs_full_frame'] = (
                    per_offload / full_bytes if per_offload > 0 and full_bytes > 0 else None
                )
            blocks.append((offload, sweep['sweep'], sizes))
    finally:
        engine.patches = saved[0]
        if generalist is not None:
            generalist.patches = saved[1]

    # latency and energy from the device profiles and the link
    edge_dev: DeviceProfile = load_profile(config.edge_device)
    expert_dev: DeviceProfile = load_profile(config.expert_device)
    edge_variant = config.edge_variant or _variant(engine, 'edge')
    expert_variant = config.expert_variant or _variant(engine, 'expert')
    generalist_variant = config.generalist_variant or (
        generalist.experts.library.load_generalist().config.variant
        if generalist is not None
        else expert_variant
    )
    common: dict[str, Any] = {
        'batch': config.batch_size,
        'frame_rate_hz': config.frame_rate_hz,
    }
    link = config.link

    def one(alpha: float, variant_e: str, variant_x: str, nbytes: float) -> Any:
        return plan(
            edge_dev,
            expert_dev,
            {1.0: alpha},
            link,
            edge_variant=variant_e,
            expert_variant=variant_x,
            bytes_per_frame=nbytes,
            **common,
        )[0]

    edge_only = one(0.0, edge_variant, expert_variant, full_bytes)
    edge_only_gen = one(0.0, generalist_variant, expert_variant, full_bytes)
    # near-edge-only = everything offloaded without running the edge model: the planner's
    # cost is linear in its parts, so subtract the edge stage (alpha = 0) from alpha = 1
    all_gen = one(1.0, edge_variant, generalist_variant, full_bytes)
    near_latency = all_gen.latency_ms - edge_only.latency_ms
    near_energy = all_gen.energy_j - edge_only.energy_j
    costs = []
    for _, block_rows, _ in blocks:
        block_costs = [
            one(
                row['offload_ratio'],
                edge_variant,
                expert_variant,
                row['request_bytes_per_offloaded_frame'] or full_bytes,
            )
            for row in block_rows
        ]
        for row, cost in zip(block_rows, block_costs, strict=True):
            row['latency_ms'] = cost.latency_ms
            row['comm_ms'] = cost.comm_ms
            row['energy_j'] = cost.energy_j
            row['offload_mbps'] = cost.offload_mbps
        costs.append(block_costs)
    primary, rows, sizes = blocks[0]
    co = costs[0]

    taus = [row['tau'] for row in rows]
    m = len(rows)
    acc: dict[str, list[float]] = {
        'edge_only': [row['edge_only_accuracy'] for row in rows],
        'specialist_co_inference': [row['co_inference_accuracy'] for row in rows],
    }
    if generalist is not None:
        acc['near_edge_only'] = [row['near_edge_only_accuracy'] for row in rows]
        acc['generalist_co_inference'] = [row['generalist_co_inference_accuracy'] for row in rows]
    latency = {
        'edge_only': [edge_only.latency_ms] * m,
        'edge_only_generalist': [edge_only_gen.latency_ms] * m,
        'near_edge_only': [near_latency] * m,
        'co_inference': [c.latency_ms for c in co],
    }
    energy = {
        'edge_only': [edge_only.energy_j] * m,
        'edge_only_generalist': [edge_only_gen.energy_j] * m,
        'near_edge_only': [near_energy] * m,
        'co_inference': [c.energy_j for c in co],
    }
    # Fig. 5: against the expert-sized generalist on the edge; Fig. 6/7: against the
    # edge model on the edge
    fig5_latency = {k: _normalise(v, edge_only_gen.latency_ms) for k, v in latency.items()}
    fig5_energy = {k: _normalise(v, edge_only_gen.energy_j) for k, v in energy.items()}
    base_lat, base_en = edge_only.latency_ms, edge_only.energy_j
    base_acc = rows[0]['edge_only_accuracy']
    points: list[dict[str, Any]] = [
        {
            'scenario': 'edge_only',
            'tau': None,
            'accuracy': base_acc,
            'latency': 1.0,
            'energy': 1.0,
        },
    ]
    if generalist is not None:
        near_acc = rows[0]['near_edge_only_accuracy']
        points += [
            {
                'scenario': 'edge_only_generalist',
                'tau': None,
                'accuracy': near_acc,
                'latency': edge_only_gen.latency_ms / base_lat,
                'energy': edge_only_gen.energy_j / base_en,
            },
            {
                'scenario': 'near_edge_only',
                'tau': None,
                'accuracy': near_acc,
                'latency': near_latency / base_lat,
                'energy': near_energy / base_en,
            },
        ]
    for b, (_, block_rows, _) in enumerate(blocks):
        for row, cost in zip(block_rows, costs[b], strict=True):
            for scenario, key in (
                ('specialist_co_inference', 'co_inference_accuracy'),
                ('generalist_co_inference', 'generalist_co_inference_accuracy'),
            ):
                if key not in row:
                    continue
                point = {
                    # the first configuration's points keep the plain scenario names
                    'scenario': scenario if b == 0 else f'{scenario} [{row["offload_label"]}]',
                    'tau': row['tau'],
                    'accuracy': row[key],
                    'latency': cost.latency_ms / base_lat,
                    'energy': cost.energy_j / base_en,
                }
                if len(blocks) > 1:
                    point['offload_label'] = row['offload_label']
                points.append(point)
    for cost_name in ('latency', 'energy'):
        for point, flag in zip(points, pareto_front(points, cost_name), strict=True):
            point[f'on_{cost_name}_front'] = flag

    ratios: dict[str, dict[str, list[float | None]]] = {'latency': {}, 'energy': {}}
    for scenario, accs, lat, en in (
        (
            'specialist_co_inference',
            acc['specialist_co_inference'],
            latency['co_inference'],
            energy['co_inference'],
        ),
        (
            'generalist_co_inference',
            acc.get('generalist_co_inference'),
            latency['co_inference'],
            energy['co_inference'],
        ),
        (
            'near_edge_only',
            acc.get('near_edge_only'),
            latency['near_edge_only'],
            energy['near_edge_only'],
        ),
    ):
        if accs is None:
            continue
        ratios['latency'][scenario] = [
            _ratio(a - base_acc, lt - base_lat) for a, lt in zip(accs, lat, strict=True)
        ]
        ratios['energy'][scenario] = [
            _ratio(a - base_acc, e - base_en) for a, e in zip(accs, en, strict=True)
        ]

    return {
        'metric': metric,
        'metric_note': (
            'accuracy against the ground truth recorded in the bag'
            if labels is not None
            else 'no ground truth in the bag: every "accuracy" is the agreement with the '
            'expert-only answer (the specialist expert for every frame)'
        ),
        'frames': n,
        'batch_size': config.batch_size,
        'models': {
            'edge_variant': edge_variant,
            'expert_variant': expert_variant,
            'generalist_variant': generalist_variant if generalist is not None else None,
        },
        'devices': {
            'edge': {'name': edge_dev.name, 'source': edge_dev.source},
            'expert': {'name': expert_dev.name, 'source': expert_dev.source},
            'link': {'rtt_ms': link.rtt_ms, 'bandwidth_mbps': link.bandwidth_mbps},
            'frame_rate_hz': config.frame_rate_hz,
            'model': 'ask_expert_ros.core.planning.planner.plan: latency per batch of B frames '
            '(T_E + T_comm + T_N), energy per frame in J',
        },
        'request_bytes': {
            **_size_summary(sizes),
            'serialisation': 'ExpertRequest, CDR (XCDR1) as ROS 2 sends it',
        },
        'offload': {
            **offload_fields(primary),
            'transport': transport,
            'expert_input': _input_text(expert_input),
            'note': 'requests as the edge node builds them: at the expert input size, '
            'whole (frame) or the mosaic of the selected patches',
        },
        'offloads': [
            {
                **offload_fields(offload),
                'request_bytes': _size_summary(block_sizes),
                'bytes_vs_full_frame': (
                    _size_summary(block_sizes)['mean'] / full_bytes if full_bytes > 0 else None
                ),
            }
            for offload, _, block_sizes in blocks
        ],
        'edge': edge_summary,
        'sweep': [row for _, block_rows, _ in blocks for row in block_rows],
        'series': {
            'tau': taus,
            'accuracy': acc,
            'offload_ratio': [row['offload_ratio'] for row in rows],
            'bytes_offloaded_per_frame': [row['bytes_offloaded_per_frame'] for row in rows],
            'latency_ms': latency,
            'energy_j': energy,
            'normalised_latency': fig5_latency,
            'normalised_energy': fig5_energy,
            'accuracy_to_latency': ratios['latency'],
            'accuracy_to_energy': ratios['energy'],
            'measured_ms_per_frame': {
                'edge': [
                    row['edge_preprocess_ms_per_frame']
                    + row['edge_ms_per_frame']
                    + row['routing_ms_per_frame']
                    for row in rows
                ],
                'expert': [row['expert_ms_per_frame'] for row in rows],
                'total': [row['total_ms_per_frame'] for row in rows],
            },
        },
        'pareto': points,
        'normalisation': {
            'normalised_latency': 'against edge_only_generalist (the expert-sized generalist '
            'on the edge device), as the paper Fig. 5',
            'pareto': 'latency and energy against edge_only (the edge model on the edge '
            'device), as the paper Fig. 6',
            'accuracy_to_latency': 'accuracy gain over edge_only per extra ms per batch '
            '(paper Fig. 7); null where the cost does not grow',
            'accuracy_to_energy': 'accuracy gain over edge_only per extra J per frame',
        },
    }
