"""``expert_batching``: edges submitting requests with realistic routing keys into
:class:`ExpertLogic`, micro-batched over one-at-a-time: throughput and latency.
"""

from __future__ import annotations

import itertools
import logging
import random
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ask_expert_ros.bench.speed.common import (
    SpeedConfig,
    model_config,
    offload_request,
    p50,
    times_ms,
)
from ask_expert_ros.core.inference.engine import ExpertStage
from ask_expert_ros.core.inference.library import ExpertLibrary, write_manifest
from ask_expert_ros.core.inference.models import (
    VariantName,
    create_model,
    save_model,
)
from ask_expert_ros.core.inference.taxonomy import ExpertKey, PartitionScheme
from ask_expert_ros.core.nodes.expert_logic import ExpertLogic, ExpertParams
from ask_expert_ros.core.nodes.messages import (
    ExpertReply,
    OffloadRequest,
)

logger = logging.getLogger(__name__)


def realistic_keys(num_subsets: int, rng: random.Random, count: int) -> list[ExpertKey]:
    """Keys as Top-2 routing makes them: the true subset, and with probability 1/2 the
    runner-up in the same subset (key {s}), else in another one (key {s, s'})."""
    keys: list[ExpertKey] = []
    for _ in range(count):
        s = rng.randint(1, num_subsets)
        if rng.random() < 0.5:
            keys.append((s,))
        else:
            other = rng.choice([i for i in range(1, num_subsets + 1) if i != s])
            keys.append(tuple(sorted((s, other))))
    return keys


@dataclass
class _Run:
    submitted_ns: dict[tuple[str, int], int] = field(default_factory=dict)
    replied_ns: dict[tuple[str, int], int] = field(default_factory=dict)
    batch_sizes: list[int] = field(default_factory=list)


def _serve_and_load(
    logic: ExpertLogic,
    requests: dict[str, list[OffloadRequest]],
    period_s: float,
    timeout_s: float,
) -> _Run:
    """Edge threads submit at ``1 / period_s`` each; this thread serves, as the DDS
    expert node's main thread does. Serving from another thread than the one that
    warmed the experts up is twice as slow on CPU while that thread's OpenMP pool
    lives (:func:`~ask_expert_ros.core.inference.backends.release_openmp_threads`); after the
    compiles of the models section even releasing it was not enough (1-edge p50 53 ms
    against a 28 ms service time)."""
    run = _Run()
    lock = threading.Lock()
    total = sum(len(r) for r in requests.values())

    def serve(deadline: float) -> None:
        while time.monotonic() < deadline:
            replies: list[ExpertReply] = logic.poll(max_batches=1)  # as the nodes do
            now = time.perf_counter_ns()
            with lock:
                for reply in replies:
                    run.replied_ns[(reply.edge_id, reply.request_id)] = now
                    run.batch_sizes.append(reply.batch_size)
                if len(run.replied_ns) >= total:
                    return
            due = logic.next_due_ns()
            timeout = 0.05 if due is None else (due - time.monotonic_ns()) / 1e9
            logic.wait(min(0.05, timeout))

    def edge(edge_requests: list[OffloadRequest], phase_s: float) -> None:
        start = time.perf_counter() + phase_s
        for i, request in enumerate(edge_requests):
            delay = start + i * period_s - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            with lock:
                run.submitted_ns[(request.edge_id, request.request_id)] = time.perf_counter_ns()
            logic.submit(request)

    edges = [
        threading.Thread(target=edge, args=(reqs, period_s * i / len(requests)), daemon=True)
        for i, reqs in enumerate(requests.values())
    ]
    for t in edges:
        t.start()
    serve(time.monotonic() + timeout_s)
    for t in edges:
        t.join(timeout_s)
    if len(run.replied_ns) < total:
        raise RuntimeError(f'expert answered {len(run.replied_ns)}/{total} within {timeout_s} s')
    return run


def bench_expert_batching(
    config: SpeedConfig, expert_variant: VariantName, scheme: PartitionScheme
) -> dict:
    """Throughput and latency of micro-batching vs one-at-a-time under N edges."""
    with tempfile.TemporaryDirectory(prefix='ask_expert_bench_') as tmp:
        cfg = model_config(expert_variant, scheme, config)
        torch.manual_seed(0)
        path = save_model(create_model(cfg), cfg, Path(tmp) / 'expert.safetensors')
        keys = scheme.expert_keys(2)
        # one weight file for every key; each key still loads its own model instance
        manifest = write_manifest(tmp, scheme, 2, dict.fromkeys(keys, path))
        from ask_expert_ros.core.inference.backends import backend_factory

        # every batch size the micro-batcher can form, run once per expert first: a new
        # shape's first call (oneDNN kernel generation) is start-up, not service time
        factory = backend_factory(
            'auto',
            'auto',
            device='cpu',
            threads=config.threads,
            warmup=tuple(range(1, config.max_batch + 1)),
        )
        library = ExpertLibrary(manifest, backend_factory=factory)
        for key in keys:
            library.backend(key)  # load all up front: loading is not what is measured
        first = library.backend(keys[0])
        backend_name = f'{first.kind}/{first.precision}'
        stage = ExpertStage(library)
        rng = np.random.default_rng(3)
        size = config.img_size
        pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        one = ExpertLogic(stage, ExpertParams(max_batch=1, max_wait_ms=0))
        # calibrate: the one-at-a-time service time decides the offered load. Cycle
        # through every key, as the load does: probing one key said 47 ms, but the
        # ten-key load was then served at 10.4/s, 96 ms each (docs/results/speed.md)
        probes = itertools.cycle(
            [offload_request(pixels, 'probe', i + 1, key) for i, key in enumerate(keys)]
        )
        service_ms = p50(
            times_ms(
                lambda: (one.submit(next(probes)), one.poll()),
                max(config.repeats, len(keys)),
                warmup=len(keys),
            )
        )
        period_s = service_ms * 1e-3 / config.edge_load
        rows = []
        for n_edges in config.edges:
            key_rng = random.Random(n_edges)
            requests = {
                f'edge{e}': [
                    offload_request(pixels, f'edge{e}', i + 1, key)
                    for i, key in enumerate(
                        realistic_keys(scheme.num_subsets, key_rng, config.requests_per_edge)
                    )
                ]
                for e in range(n_edges)
            }
            row: dict[str, Any] = {'edges': n_edges}
            for mode, params in (
                ('one_at_a_time', ExpertParams(max_batch=1, max_wait_ms=0)),
                (
                    'batched',
                    ExpertParams(max_batch=config.max_batch, max_wait_ms=config.max_wait_ms),
                ),
            ):
                run = _serve_and_load(
                    ExpertLogic(stage, params), requests, period_s, config.timeout_s
                )
                lat = [(run.replied_ns[k] - run.submitted_ns[k]) / 1e6 for k in run.submitted_ns]
                span_s = (max(run.replied_ns.values()) - min(run.submitted_ns.values())) / 1e9
                row[mode] = {
                    'requests': len(lat),
                    'span_s': span_s,
                    'throughput_rps': len(lat) / span_s,
                    'latency_ms_p50': p50(lat),
                    'latency_ms_p95': float(np.percentile(lat, 95)),
                    'mean_batch': float(np.mean(run.batch_sizes)),
                }
            row['throughput_gain'] = (
                row['batched']['throughput_rps'] / row['one_at_a_time']['throughput_rps']
            )
            row['p95_batched_over_single'] = (
                row['batched']['latency_ms_p95'] / row['one_at_a_time']['latency_ms_p95']
            )
            rows.append(row)
            logger.info('expert batching, %d edges: gain %.2f', n_edges, row['throughput_gain'])
    return {
        'variant': expert_variant,
        'backend': backend_name,
        'keys': len(keys),
        'key_model': 'Top-2: same subset with p=1/2, else a uniform other subset',
        'service_ms_batch1': service_ms,
        'offered_rate_per_edge_hz': 1.0 / period_s,
        'edge_load': config.edge_load,
        'max_batch': config.max_batch,
        'max_wait_ms': config.max_wait_ms,
        'rows': rows,
    }
