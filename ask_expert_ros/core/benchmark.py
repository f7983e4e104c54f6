"""The offline bag benchmark: accuracy, α(τ), bytes, latency and energy across τ.

Given the frames of a recording (and their ground truth, when there is one), this runs
the co-inference engine once per τ (through :func:`~ask_expert_ros.core.evaluation.tau_sweep`)
and turns what it measured into the series of the paper's evaluation:

* accuracy vs τ for edge-only, near-edge-only (the generalist on the accelerator for
  every frame), generalist co-inference and specialist co-inference (Fig. 4);
* the offload ratio α(τ) (Table 4) and the bytes each frame costs on the link: the
  size of the serialised ``ExpertRequest`` (CDR) of the frames actually offloaded,
  averaged over all frames;
* latency and energy per frame from device profiles and a link model through
  :func:`ask_expert_ros.core.planner.plan`, normalised as in Fig. 5 (against the
  expert-sized generalist running on the edge device) and Fig. 6 (against the edge
  model on the edge device), with the Pareto fronts of accuracy against latency and
  energy (Fig. 6), and the accuracy-to-latency / accuracy-to-energy ratios of Fig. 7;
* the stage times measured on this machine, beside the modelled ones.

Without ground truth the accuracy series are *agreement with the expert-only answer*
(the specialist expert for every frame), and the report says so in ``metric``.

Transport-free: the adapter that read the frames supplies how large a request for
each frame is on the wire (``request_bytes``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np

from ask_expert_ros.core.devices import DeviceProfile, load_profile
from ask_expert_ros.core.engine import CoInferenceEngine, CoInferenceResult
from ask_expert_ros.core.evaluation import ALL_OFFLOADED_TAU, run_batches, tau_sweep
from ask_expert_ros.core.image_codec import encode_image
from ask_expert_ros.core.messages import FrameFormat, Header, ImageData, OffloadRequest, Stamp
from ask_expert_ros.core.planner import Link, plan
from ask_expert_ros.core.routing import bits_to_key, route

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

    def __post_init__(self) -> None:
        if not self.taus:
            raise ValueError('give at least one tau')
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


def _concat_routing(results: Sequence[CoInferenceResult]) -> dict[str, np.ndarray]:
    names = ('prediction', 'confidence', 'valid', 'topk_classes', 'topk_scores', 'key_bits')
    return {n: np.concatenate([getattr(r.edge.routing, n) for r in results]) for n in names}


def offload_requests(
    results: Sequence[CoInferenceResult],
    frames: Sequence[np.ndarray] | np.ndarray,
    sources: Sequence[ImageData | None] | None,
    stamps_ns: Sequence[int] | None,
    partition: str,
    confidence_method: str,
    edge_id: str = 'bench_edge',
) -> list[OffloadRequest | None]:
    """The ``ExpertRequest`` an edge would send for each frame if it offloaded it.

    ``results`` is a run with every frame offloaded (Top-k and key come from it);
    the image is the one recorded (``sources``), else the decoded pixels as
    mono8/rgb8. None where the edge output was not finite (never offloaded).
    """
    routing = _concat_routing(results)
    out: list[OffloadRequest | None] = []
    for i in range(len(frames)):
        if not routing['valid'][i]:
            out.append(None)
            continue
        source = sources[i] if sources is not None else None
        if source is None:
            height, width, encoding, step, data = encode_image(np.asarray(frames[i]))
            source = ImageData(FrameFormat.RAW, data, height, width, encoding, step)
        stamp = Stamp.from_ns(int(stamps_ns[i])) if stamps_ns is not None else Stamp()
        out.append(
            OffloadRequest(
                header=Header(stamp, 'camera'),
                edge_id=edge_id,
                request_id=i,
                image=source,
                topk_classes=tuple(int(c) for c in routing['topk_classes'][i]),
                topk_scores=tuple(float(s) for s in routing['topk_scores'][i]),
                expert_key=bits_to_key(int(routing['key_bits'][i])),
                partition=partition,
                confidence=float(routing['confidence'][i]),
                confidence_method=confidence_method,
                deadline=stamp,
            )
        )
    return out


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
    engine.edge.routing = replace(original, tau=ALL_OFFLOADED_TAU)
    try:
        everything = run_batches(engine, np.asarray(frames), config.batch_size)
    finally:
        engine.edge.routing = original
    metric: Metric = 'accuracy' if labels is not None else 'agreement_with_expert_only'
    reference = (
        np.asarray(labels, dtype=np.int64)
        if labels is not None
        else np.concatenate([r.labels for r in everything])
    )
    sweep = tau_sweep(
        engine, np.asarray(frames), reference, config.taus, config.batch_size, generalist
    )

    # bytes on the link: the real request of every frame the edge offloads at tau
    requests = offload_requests(
        everything,
        frames,
        sources,
        stamps_ns,
        engine.edge.scheme.name,
        original.confidence,
    )
    sizes = np.array([request_bytes(r) if r is not None else 0 for r in requests], np.float64)
    logits = np.concatenate([r.edge.logits for r in everything])
    for row in sweep['sweep']:
        mask = route(logits, engine.edge.scheme, replace(original, tau=row['tau'])).offload
        row['request_bytes_per_offloaded_frame'] = float(sizes[mask].mean()) if mask.any() else 0.0
        row['bytes_offloaded_per_frame'] = float(sizes[mask].sum() / n)

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
    full_bytes = float(sizes[sizes > 0].mean()) if (sizes > 0).any() else 0.0

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
    rows = sweep['sweep']
    co = [
        one(
            row['offload_ratio'],
            edge_variant,
            expert_variant,
            row['request_bytes_per_offloaded_frame'] or full_bytes,
        )
        for row in rows
    ]
    for row, cost in zip(rows, co, strict=True):
        row['latency_ms'] = cost.latency_ms
        row['comm_ms'] = cost.comm_ms
        row['energy_j'] = cost.energy_j
        row['offload_mbps'] = cost.offload_mbps

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
    for row, cost in zip(rows, co, strict=True):
        for scenario, key in (
            ('specialist_co_inference', 'co_inference_accuracy'),
            ('generalist_co_inference', 'generalist_co_inference_accuracy'),
        ):
            if key in row:
                points.append(
                    {
                        'scenario': scenario,
                        'tau': row['tau'],
                        'accuracy': row[key],
                        'latency': cost.latency_ms / base_lat,
                        'energy': cost.energy_j / base_en,
                    }
                )
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
            'model': 'ask_expert_ros.core.planner.plan: latency per batch of B frames '
            '(T_E + T_comm + T_N), energy per frame in J',
        },
        'request_bytes': {
            'mean': float(sizes[sizes > 0].mean()) if (sizes > 0).any() else 0.0,
            'min': int(sizes[sizes > 0].min()) if (sizes > 0).any() else 0,
            'max': int(sizes.max()),
            'serialisation': 'ExpertRequest, CDR (XCDR1) as ROS 2 sends it',
        },
        'edge': sweep['edge'],
        'sweep': rows,
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
