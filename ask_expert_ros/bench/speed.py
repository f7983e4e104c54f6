"""``ask-expert bench-speed``: how fast each part runs, as ratios measured side by side.

Every figure this writes is a ratio of two timings taken in the same run on the same
machine, so a loaded or slow machine shifts both sides alike:

* ``matmul_peak`` -- GFLOP/s of one large square matmul, per method: torch's default
  fp32 path, oneDNN fp32 (``torch.utils.mkldnn.to_mkldnn`` on an ``nn.Linear``, the
  documented way to run a layer on oneDNN tensors), ONNX Runtime's ``MatMul`` (MLAS)
  and torch bf16 (oneDNN, AMX/avx512_bf16 when the CPU has them);
* ``models`` -- per variant and backend: p50 latency at batch 1 and 10, GFLOP/s achieved
  (FLOPs counted by ``torch.utils.flop_counter.FlopCounterMode``) and that as a fraction
  of the matmul peak of the same precision;
* ``edge_pipeline`` -- frames/s from received ``sensor_msgs/Image`` objects through
  :class:`EdgeLogic` (decode, preprocess, infer, route) to the ``Classification`` and
  ``ExpertRequest`` objects to publish, over the bare model's frames/s at the same batch;
* ``dds`` -- one DDS hop (serialise + Cyclone loopback UDP + deserialise, half of a
  ping-pong with an echo process) for an ``Image`` and an ``ExpertRequest`` of one
  frame, over the edge model's batch-1 inference time;
* ``expert_batching`` -- 1, 4 and 8 edge threads submitting requests at a steady rate
  with realistic routing keys into :class:`ExpertLogic` served by a worker thread, with
  micro-batching (``max_batch`` 8) over one-at-a-time (``max_batch`` 1): throughput and
  latency percentiles.

Targets (issue 6) are reported next to the ratios, never asserted: a benchmark, not a test.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
import platform
import random
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, get_args

import numpy as np
import torch

from ask_expert_ros.core.inference.backends import Backend
from ask_expert_ros.core.inference.engine import EdgeStage, ExpertStage
from ask_expert_ros.core.inference.image_codec import encode_image
from ask_expert_ros.core.inference.library import ExpertLibrary, write_manifest
from ask_expert_ros.core.inference.models import (
    LoadedModel,
    ModelConfig,
    VariantName,
    create_model,
    save_model,
)
from ask_expert_ros.core.inference.preprocess import Preprocessor
from ask_expert_ros.core.inference.routing import RoutingConfig
from ask_expert_ros.core.inference.taxonomy import ExpertKey, PartitionScheme
from ask_expert_ros.core.nodes.edge_logic import EdgeLogic, EdgeParams
from ask_expert_ros.core.nodes.expert_logic import ExpertLogic, ExpertParams
from ask_expert_ros.core.nodes.messages import (
    ExpertReply,
    FrameFormat,
    Header,
    ImageData,
    OffloadRequest,
    Stamp,
)

logger = logging.getLogger(__name__)

#: Turns of timing per variant and batch size; each backend gets repeats / rounds calls
#: a turn, after one untimed call.
MODEL_ROUNDS = 4

TARGETS = {
    'edge_model_speedup_over_torch_fp32_b1_min': 2.0,
    'edge_pipeline_over_bare_fps_min': 0.95,
    'dds_hop_over_edge_inference_max': 0.05,
    'expert_throughput_gain_8_edges_min': 3.0,
    'expert_p95_batched_over_single_8_edges_max': 1.0,
}


@dataclass(frozen=True)
class SpeedConfig:
    """What to measure and how hard.

    Attributes:
        variants: Model variants for the per-model table; the first is the edge model,
            the second (or the first, if alone) the expert of ``expert_batching``.
        img_size: Model input side and camera frame side in pixels (rgb8 frames).
        patch_size: ViT patch side in pixels.
        depth: Transformer blocks per model (12 in the paper; fewer for smoke runs).
        num_classes: Classes of the benchmark's partition scheme (split in 4 subsets).
        threads: torch / ONNX Runtime intra-op threads.
        batches: Batch sizes for latency figures.
        repeats: Timed runs per latency figure (p50 reported).
        matmul_size: Side of the square matmul for the peak figures.
        dds_messages: Ping-pongs per message type.
        edges: Edge counts for the batching section.
        requests_per_edge: Requests each simulated edge sends.
        edge_load: Each edge's request rate as a fraction of the expert's one-at-a-time
            capacity (1 / batch-1 latency): 0.5 means 8 edges offer 4x that capacity.
        max_batch: Micro-batch size of the batched expert.
        max_wait_ms: Longest a request waits for its batch in the batched expert.
        timeout_s: Bound on each section's measuring loop.
        compiled: Include the ``torch_compile`` backends (each model compiles for
            10-60 s before it is timed; the build time is reported).
        max_autotune: Build ``torch_compile``'s batch-1 graphs with inductor's
            max-autotune; None leaves the backend's default (on for CPU).
    """

    variants: tuple[VariantName, ...] = ('deit_3h', 'deit_4h', 'deit_base')
    img_size: int = 224
    patch_size: int = 16
    depth: int = 12
    num_classes: int = 8
    threads: int = 2
    batches: tuple[int, ...] = (1, 10)
    repeats: int = 10
    matmul_size: int = 2048
    dds_messages: int = 200
    edges: tuple[int, ...] = (1, 4, 8)
    requests_per_edge: int = 40
    edge_load: float = 0.5
    max_batch: int = 8
    max_wait_ms: float = 5.0
    timeout_s: float = 300.0
    compiled: bool = True
    max_autotune: bool | None = None

    def __post_init__(self) -> None:
        unknown = [v for v in self.variants if v not in get_args(VariantName)]
        if not self.variants or unknown:
            raise ValueError(f'variants must be among {get_args(VariantName)}, got {unknown}')
        if self.img_size % self.patch_size:
            raise ValueError(f'img_size {self.img_size} must be a multiple of {self.patch_size}')
        if self.num_classes < 4 or self.num_classes % 4:
            raise ValueError(
                f'num_classes must be a positive multiple of 4, got {self.num_classes}'
            )
        for name in ('depth', 'threads', 'repeats', 'matmul_size', 'dds_messages'):
            if getattr(self, name) < 1:
                raise ValueError(f'{name} must be >= 1, got {getattr(self, name)}')
        if not self.batches or min(self.batches) < 1:
            raise ValueError(f'batches must be positive, got {self.batches}')
        if not self.edges or min(self.edges) < 1 or self.requests_per_edge < 1:
            raise ValueError('edges and requests_per_edge must be positive')
        if not 0 < self.edge_load <= 10:
            raise ValueError(f'edge_load must be in (0, 10], got {self.edge_load}')

    @classmethod
    def quick(cls, variants: tuple[VariantName, ...] | None = None) -> SpeedConfig:
        """A smoke run of well under a minute: 32 px, one block, one thread, few repeats."""
        return cls(
            variants=variants or ('deit_3h', 'deit_4h'),
            img_size=32,
            depth=1,
            threads=1,  # a smoke run on a shared machine: no intra-op thread contention
            repeats=3,
            matmul_size=256,
            dds_messages=20,
            requests_per_edge=6,
            max_wait_ms=2.0,
            timeout_s=30.0,
            compiled=False,  # compiling takes longer than the whole smoke run
        )


# -- timing helpers -------------------------------------------------------------------------


def _times_ms(fn: Callable[[], object], repeats: int, warmup: int = 1) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def _p50(values: Sequence[float]) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), 50))


def machine_info(threads: int) -> dict[str, Any]:
    """CPU model and the flags that decide the fast paths, thread count, versions."""
    model, flags = platform.processor(), set()
    try:
        for line in Path('/proc/cpuinfo').read_text().splitlines():
            if line.startswith('model name') and ':' in line:
                model = line.split(':', 1)[1].strip()
            elif line.startswith('flags') and ':' in line:
                flags = set(line.split(':', 1)[1].split())
    except OSError:
        pass

    def ver(pkg: str) -> str:
        try:
            return version(pkg)
        except PackageNotFoundError:
            return 'absent'

    wanted = ('avx2', 'avx512f', 'avx512_bf16', 'avx512_vnni', 'amx_bf16', 'amx_int8', 'amx_tile')
    return {
        'cpu': model,
        'flags': {f: f in flags for f in wanted},
        'logical_cpus': os.cpu_count(),
        'threads': threads,
        'mkldnn': torch.backends.mkldnn.is_available(),
        'python': platform.python_version(),
        **{pkg: ver(pkg) for pkg in ('torch', 'onnxruntime', 'onnx', 'timm', 'cyclonedds')},
    }


# -- (a) matmul peak ------------------------------------------------------------------------


def _ort_matmul(a: np.ndarray, b: np.ndarray, threads: int) -> Callable[[], object] | None:
    try:
        import onnx
        import onnxruntime as ort
        from onnx import TensorProto, helper, numpy_helper
    except ImportError:
        return None
    n = a.shape[0]
    graph = helper.make_graph(
        [helper.make_node('MatMul', ['A', 'B'], ['C'])],
        'matmul',
        [helper.make_tensor_value_info('A', TensorProto.FLOAT, [n, n])],
        [helper.make_tensor_value_info('C', TensorProto.FLOAT, [n, n])],
        [numpy_helper.from_array(b, 'B')],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', 17)])
    onnx.checker.check_model(model)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(
        model.SerializeToString(), options, providers=['CPUExecutionProvider']
    )
    return lambda: session.run(None, {'A': a})


def matmul_peak(config: SpeedConfig) -> dict[str, Any]:
    """GFLOP/s of an n x n x n matmul (2 n^3 FLOPs), best of ``repeats``, per method."""
    n = config.matmul_size
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(n, n, generator=gen), torch.randn(n, n, generator=gen)
    methods: dict[str, Callable[[], object]] = {'torch_fp32': lambda: a @ b}
    if torch.backends.mkldnn.is_available():
        from torch.utils import mkldnn as mkldnn_utils

        linear = torch.nn.Linear(n, n, bias=False)
        with torch.no_grad():
            linear.weight.copy_(b.t())
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')  # the module wrapper uses deprecated jit bits
            onednn = mkldnn_utils.to_mkldnn(linear)
        a_mkl = a.to_mkldnn()
        methods['onednn_fp32'] = lambda: onednn(a_mkl)
    ort_fn = _ort_matmul(a.numpy(), b.numpy(), config.threads)
    if ort_fn is not None:
        methods['ort_fp32'] = ort_fn
    a16, b16 = a.bfloat16(), b.bfloat16()
    methods['torch_bf16'] = lambda: a16 @ b16
    flops = 2.0 * n**3
    gflops = {}
    with torch.inference_mode():
        for name, fn in methods.items():
            best_ms = min(_times_ms(fn, max(3, config.repeats), warmup=2))
            gflops[name] = flops / (best_ms * 1e-3) / 1e9
    fp32 = {k: v for k, v in gflops.items() if k.endswith('fp32')}
    best_fp32 = max(fp32, key=lambda k: fp32[k])
    return {
        'size': n,
        'flops': flops,
        'gflops': gflops,
        'peak': {'fp32': fp32[best_fp32], 'bf16': gflops['torch_bf16']},
        'peak_method': {'fp32': best_fp32, 'bf16': 'torch_bf16'},
    }


# -- (b) models x backends ------------------------------------------------------------------


def bench_scheme(num_classes: int) -> PartitionScheme:
    """``num_classes`` classes in 4 equal subsets."""
    per = num_classes // 4
    names = tuple(f'c{i}' for i in range(num_classes))
    return PartitionScheme.from_class_subsets(
        'bench_s4', names, {s + 1: list(range(s * per, (s + 1) * per)) for s in range(4)}
    )


def model_config(
    variant: VariantName, scheme: PartitionScheme, config: SpeedConfig
) -> ModelConfig:
    return ModelConfig(
        variant=variant,
        class_names=scheme.class_names,
        img_size=config.img_size,
        patch_size=config.patch_size,
        depth=config.depth,
        partition=scheme.name,
    )


def count_flops(model: torch.nn.Module, x: torch.Tensor) -> float:
    """FLOPs of one forward pass (a multiply-add counts 2), by ``FlopCounterMode``."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(x)
    return float(counter.get_total_flops())


def backends_for(loaded: LoadedModel, config: SpeedConfig) -> Iterator[tuple[Backend, float]]:
    """Every CPU backend :mod:`ask_expert_ros.runtime` offers, built and warmed up at the
    benchmark's batch sizes, with the seconds that took (a compile, an ONNX export)."""
    from ask_expert_ros.core.inference.backends import (
        CompiledTorchBackend,
        available_backends,
        create_backend,
    )

    for kind, precision in available_backends('cpu'):
        if kind == 'torch_compile' and not config.compiled:
            continue
        start = time.perf_counter()
        if kind == 'torch_compile':
            backend: Backend = CompiledTorchBackend(
                loaded,
                precision,  # type: ignore[arg-type]
                max_autotune=config.max_autotune,
            )
        else:
            backend = create_backend(
                loaded,
                kind,  # type: ignore[arg-type]
                precision,  # type: ignore[arg-type]
                device='cpu',
                threads=config.threads,
            )
        backend.warmup(sorted(set(config.batches)))
        yield backend, time.perf_counter() - start


def auto_backend(loaded: LoadedModel, threads: int) -> Backend:
    """What the nodes run by default on this CPU (``backend=auto``), warmed up."""
    from ask_expert_ros.core.inference.backends import create_backend

    backend = create_backend(loaded, 'auto', 'auto', device='cpu', threads=threads)
    backend.warmup((1,))
    return backend


def bench_models(
    config: SpeedConfig, scheme: PartitionScheme, peak: dict[str, float]
) -> list[dict[str, Any]]:
    """Latency p50 at each batch size, GFLOP/s and fraction of peak, per variant x backend.

    A variant's backends are all built first, then timed in :data:`MODEL_ROUNDS` turns
    (a block of calls each, after an untimed one), so a slow spell of the machine hits
    every backend alike and the ratios between them hold on a noisy VM.
    """
    rows = []
    rng = np.random.default_rng(0)
    for variant in config.variants:
        cfg = model_config(variant, scheme, config)
        torch.manual_seed(0)
        loaded = LoadedModel(create_model(cfg).eval(), cfg)
        shape = (1, cfg.in_chans, cfg.img_size, cfg.img_size)
        flops_1 = count_flops(loaded.model, torch.zeros(shape))
        inputs = {
            b: rng.standard_normal((b, *shape[1:])).astype(np.float32) for b in config.batches
        }
        largest = inputs[max(inputs)]
        with torch.inference_mode():
            reference = loaded.model(torch.from_numpy(largest)).numpy()
        built = list(backends_for(loaded, config))
        latencies: list[dict[str, float]] = [{} for _ in built]
        rounds = min(config.repeats, MODEL_ROUNDS)
        for b, x in inputs.items():
            per_backend: list[list[float]] = [[] for _ in built]
            for r in range(rounds):
                for i, (backend, _) in enumerate(built):
                    # an untimed call first: the previous backend's threads (OpenMP,
                    # ONNX Runtime's pool) may still be spinning on the 2 cores
                    count = config.repeats // rounds + (r < config.repeats % rounds)
                    per_backend[i].extend(_times_ms(partial(backend.run, x), count, warmup=1))
            for latency, ms in zip(latencies, per_backend, strict=True):
                latency[str(b)] = _p50(ms)
        for (backend, build_s), latency in zip(built, latencies, strict=True):
            peak_used = peak.get(backend.precision, peak['fp32'])
            gflops = {b: flops_1 * int(b) / (ms * 1e-3) / 1e9 for b, ms in latency.items()}
            rows.append(
                {
                    'variant': variant,
                    'backend': backend.kind,
                    'precision': backend.precision,
                    'gflop_per_image': flops_1 / 1e9,
                    'peak_gflops_used': peak_used,
                    'latency_ms_p50': latency,
                    'gflops': gflops,
                    'fraction_of_peak': {b: g / peak_used for b, g in gflops.items()},
                    'build_s': build_s,
                    'max_abs_diff_vs_torch_fp32': float(
                        np.abs(backend.run(largest) - reference).max()
                    ),
                }
            )
            logger.info('%s %s/%s: %s ms', variant, backend.kind, backend.precision, latency)
        del built
    return rows


# -- (c) edge pipeline ----------------------------------------------------------------------


def _camera_images(config: SpeedConfig, count: int) -> list[Any]:
    from ask_expert_ros.dds import conversions as conv

    rng = np.random.default_rng(1)
    size = config.img_size
    return [
        conv.frame_to_image(
            rng.integers(0, 256, (size, size, 3), dtype=np.uint8),
            Header(Stamp(1_700_000_000 + i, 0), 'camera'),
        )
        for i in range(count)
    ]


def bench_edge_pipeline(config: SpeedConfig, edge: LoadedModel, scheme: PartitionScheme) -> dict:
    """Image objects -> EdgeLogic -> objects to publish, vs the bare model, alternating."""
    from ask_expert_ros.dds import conversions as conv

    images = _camera_images(config, max(config.batches))
    frames = [conv.image_to_frame(m) for m in images]
    backend = auto_backend(edge, config.threads)
    stage = EdgeStage(edge, scheme, RoutingConfig(tau=1.01, k=2), backend)
    # tau at the median edge confidence: about half the frames are offloaded, as in
    # the paper's operating points, so both the result and the request path are timed
    confidence = stage.run(_batch(frames)).routing.confidence
    tau = float(np.median(confidence))
    routing = RoutingConfig(tau=tau, k=2)
    logic = EdgeLogic(
        EdgeStage(edge, scheme, routing, backend),
        EdgeParams(edge_id='bench', routing=routing, deadline_ms=3_600_000),
    )
    preprocess = Preprocessor(edge.config)
    rows = []
    for b in config.batches:
        batch_images = images[:b]
        x = preprocess([f.pixels for f in frames[:b]]).numpy()
        offloaded = [0, 0]

        def pipeline(
            batch_images: list[Any] = batch_images, offloaded: list[int] = offloaded
        ) -> None:
            step = logic.process([conv.image_to_frame(m) for m in batch_images])
            for result in step.results:
                conv.result_to_classification(result)
            for request in step.requests:
                conv.request_to_dds(request)
            offloaded[0] += len(step.requests)
            offloaded[1] += len(batch_images)

        def bare(x: np.ndarray = x) -> None:
            backend.run(x)  # the same backend, on the already preprocessed batch

        pipe_ms: list[float] = []
        bare_ms: list[float] = []
        pipeline()  # warm-up
        bare()
        for _ in range(config.repeats):  # alternate: both see the same machine state
            pipe_ms.extend(_times_ms(pipeline, 1, warmup=0))
            bare_ms.extend(_times_ms(bare, 1, warmup=0))
        pipe_fps = b / (_p50(pipe_ms) * 1e-3)
        bare_fps = b / (_p50(bare_ms) * 1e-3)
        rows.append(
            {
                'batch': b,
                'pipeline_ms_p50': _p50(pipe_ms),
                'bare_ms_p50': _p50(bare_ms),
                'pipeline_fps': pipe_fps,
                'bare_fps': bare_fps,
                'ratio': pipe_fps / bare_fps,
                'offload_fraction': offloaded[0] / offloaded[1],
            }
        )
    bare_1 = next((r['bare_ms_p50'] for r in rows if r['batch'] == 1), rows[0]['bare_ms_p50'])
    return {
        'variant': edge.config.variant,
        'backend': f'{backend.kind}/{backend.precision}',
        'tau': tau,
        'rows': rows,
        'edge_inference_ms_batch1': bare_1,
    }


def _batch(frames: list[Any]) -> Any:
    from ask_expert_ros.core.inference.engine import FrameBatch

    return FrameBatch([f.pixels for f in frames])


# -- (d) DDS hop ----------------------------------------------------------------------------


def _offload_request(
    pixels: np.ndarray, edge_id: str, request_id: int, key: ExpertKey
) -> OffloadRequest:
    height, width, encoding, step, raw = encode_image(pixels)
    return OffloadRequest(
        header=Header(Stamp(1_700_000_000, request_id), 'camera'),
        edge_id=edge_id,
        request_id=request_id,
        image=ImageData(FrameFormat.RAW, raw, height, width, encoding, step),
        topk_classes=(0, 2),
        topk_scores=(0.41, 0.33),
        expert_key=key,
        partition='bench_s4',
        confidence=0.41,
        confidence_method='max_softmax',
        deadline=Stamp.from_ns(time.time_ns() + 3_600 * 10**9),
    )


def bench_dds(config: SpeedConfig, edge_inference_ms: float) -> dict[str, Any]:
    """Half a ping-pong with an echo process per message type, and ser/de alone."""
    from cyclonedds.core import InstanceState, ReadCondition, SampleState, ViewState, WaitSet
    from cyclonedds.domain import Domain, DomainParticipant
    from cyclonedds.pub import DataWriter
    from cyclonedds.sub import DataReader
    from cyclonedds.topic import Topic
    from cyclonedds.util import duration

    from ask_expert_ros.bench.dds_echo import ECHO_TOPICS, QOS_DEPTH
    from ask_expert_ros.dds import conversions as conv
    from ask_expert_ros.dds import msgs
    from ask_expert_ros.dds.config import loopback_config
    from ask_expert_ros.dds.nodes import reliable_qos

    size = config.img_size
    pixels = np.random.default_rng(2).integers(0, 256, (size, size, 3), dtype=np.uint8)
    samples = {
        'Image': conv.frame_to_image(pixels, Header(Stamp(1_700_000_000, 1), 'camera')),
        'ExpertRequest': conv.request_to_dds(_offload_request(pixels, 'bench', 1, (1, 2))),
    }
    domain_id = random.randint(100, 230)
    domain = Domain(domain_id, loopback_config())
    dp = DomainParticipant(domain_id)
    echo = subprocess.Popen(
        [sys.executable, '-m', 'ask_expert_ros.bench.dds_echo', '--domain', str(domain_id)],
        env={**os.environ, 'OMP_NUM_THREADS': '1'},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    rows = []
    try:
        for (name_in, name_out, cls), (type_name, msg) in zip(
            ECHO_TOPICS, samples.items(), strict=True
        ):
            writer = DataWriter(
                dp, Topic(dp, msgs.ros_topic(name_in), cls), qos=reliable_qos(QOS_DEPTH)
            )
            reader = DataReader(
                dp, Topic(dp, msgs.ros_topic(name_out), cls), qos=reliable_qos(QOS_DEPTH)
            )
            waitset = WaitSet(dp)
            waitset.attach(
                ReadCondition(reader, SampleState.NotRead | ViewState.Any | InstanceState.Any)
            )
            deadline = time.monotonic() + config.timeout_s
            while not (writer.get_matched_subscriptions() and reader.get_matched_publications()):
                if echo.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f'DDS echo process did not match: {echo.stderr}')
                time.sleep(0.01)

            def ping(
                msg: Any = msg, writer: Any = writer, reader: Any = reader, waitset: Any = waitset
            ) -> None:
                writer.write(msg)
                end = time.monotonic() + 10.0
                while True:
                    got = [s for s in reader.take(N=4) if s.sample_info.valid_data]
                    if got:
                        return
                    if time.monotonic() > end:
                        raise RuntimeError('DDS echo did not answer within 10 s')
                    waitset.wait(duration(milliseconds=100))

            rtt = _times_ms(ping, config.dds_messages, warmup=3)
            payload = msg.serialize()
            ser = _times_ms(msg.serialize, config.dds_messages)
            de = _times_ms(partial(cls.deserialize, payload), config.dds_messages)
            hop_ms = _p50(rtt) / 2
            rows.append(
                {
                    'type': type_name,
                    'bytes': len(payload),
                    'round_trip_ms_p50': _p50(rtt),
                    'hop_ms': hop_ms,
                    'serialize_ms_p50': _p50(ser),
                    'deserialize_ms_p50': _p50(de),
                    'edge_inference_ms': edge_inference_ms,
                    'ratio': hop_ms / edge_inference_ms,
                }
            )
    finally:
        echo.terminate()
        try:
            echo.wait(timeout=10)
        except subprocess.TimeoutExpired:
            echo.kill()
        del domain
    return {
        'frame': f'{size}x{size} rgb8',
        'hop': 'half the round trip to an echo process over Cyclone DDS loopback (reliable)',
        'rows': rows,
    }


# -- (e) expert batching --------------------------------------------------------------------


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
            [_offload_request(pixels, 'probe', i + 1, key) for i, key in enumerate(keys)]
        )
        service_ms = _p50(
            _times_ms(
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
                    _offload_request(pixels, f'edge{e}', i + 1, key)
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
                    'latency_ms_p50': _p50(lat),
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


# -- the whole run --------------------------------------------------------------------------


def run_speed(config: SpeedConfig) -> dict[str, Any]:
    """Every section, in one process, one after the other."""
    torch.set_num_threads(config.threads)
    scheme = bench_scheme(config.num_classes)
    report: dict[str, Any] = {'machine': machine_info(config.threads), 'config': asdict(config)}
    t0 = time.perf_counter()
    peak = matmul_peak(config)
    report['matmul_peak'] = peak
    report['models'] = bench_models(config, scheme, peak['peak'])
    edge_cfg = model_config(config.variants[0], scheme, config)
    torch.manual_seed(0)
    edge = LoadedModel(create_model(edge_cfg).eval(), edge_cfg)
    report['edge_pipeline'] = bench_edge_pipeline(config, edge, scheme)
    report['dds'] = bench_dds(config, report['edge_pipeline']['edge_inference_ms_batch1'])
    expert_variant = config.variants[1] if len(config.variants) > 1 else config.variants[0]
    report['expert_batching'] = bench_expert_batching(config, expert_variant, scheme)
    report['summary'] = summary(report)
    report['elapsed_s'] = time.perf_counter() - t0
    return report


def edge_speedup(report: dict[str, Any]) -> dict[str, Any]:
    """The edge variant's fastest backend at batch 1 against torch eager fp32."""
    edge = report['config']['variants'][0]
    rows = [r for r in report['models'] if r['variant'] == edge]
    base = next(r for r in rows if (r['backend'], r['precision']) == ('torch', 'fp32'))
    best = min(rows, key=lambda r: r['latency_ms_p50']['1'])
    return {
        'variant': edge,
        'backend': f'{best["backend"]}/{best["precision"]}',
        'torch_fp32_ms': base['latency_ms_p50']['1'],
        'best_ms': best['latency_ms_p50']['1'],
        'speedup': base['latency_ms_p50']['1'] / best['latency_ms_p50']['1'],
    }


def summary(report: dict[str, Any]) -> dict[str, Any]:
    """The headline ratios next to the issue's targets."""
    speedup = edge_speedup(report) if '1' in report['models'][0]['latency_ms_p50'] else None
    pipe = min(r['ratio'] for r in report['edge_pipeline']['rows'])
    dds = max(r['ratio'] for r in report['dds']['rows'])
    rows = report['expert_batching']['rows']
    most = max(rows, key=lambda r: r['edges'])
    out: dict[str, Any] = {
        'edge_model_speedup_b1': speedup,
        'edge_pipeline_over_bare_fps_min': pipe,
        'dds_hop_over_edge_inference_max': dds,
        f'expert_throughput_gain_{most["edges"]}_edges': most['throughput_gain'],
        f'expert_p95_batched_over_single_{most["edges"]}_edges': most['p95_batched_over_single'],
        'targets': TARGETS,
    }
    out['meets'] = {
        'edge_model': speedup is not None
        and speedup['speedup'] >= TARGETS['edge_model_speedup_over_torch_fp32_b1_min'],
        'edge_pipeline': pipe >= TARGETS['edge_pipeline_over_bare_fps_min'],
        'dds': dds <= TARGETS['dds_hop_over_edge_inference_max'],
        'expert_batching': (
            most['edges'] >= 8
            and most['throughput_gain'] >= TARGETS['expert_throughput_gain_8_edges_min']
            and most['p95_batched_over_single']
            <= TARGETS['expert_p95_batched_over_single_8_edges_max']
        ),
    }
    return out


def format_table(report: dict[str, Any]) -> str:
    """The report as a few plain-text tables."""
    lines = [f'machine: {report["machine"]["cpu"]}, {report["machine"]["threads"]} threads']
    peak = report['matmul_peak']
    lines.append(f'matmul {peak["size"]}^3 GFLOP/s: ' + ', '.join(
        f'{k} {v:.0f}' for k, v in peak['gflops'].items()
    ))  # fmt: skip
    lines.append('')
    lines.append(f'{"variant":<10} {"backend":<19} {"GFLOP/img":>9} '
                 f'{"b1 ms":>8} {"b10 ms":>8} {"GFLOP/s b10":>11} {"of peak":>8} '
                 f'{"build s":>8} {"max|diff|":>9}')  # fmt: skip
    for r in report['models']:
        b = sorted(r['latency_ms_p50'], key=int)
        lo, hi = b[0], b[-1]
        lines.append(
            f'{r["variant"]:<10} {r["backend"] + "/" + r["precision"]:<19} '
            f'{r["gflop_per_image"]:9.3f} {r["latency_ms_p50"][lo]:8.2f} '
            f'{r["latency_ms_p50"][hi]:8.2f} {r["gflops"][hi]:11.1f} '
            f'{r["fraction_of_peak"][hi]:8.1%} {r["build_s"]:8.1f} '
            f'{r["max_abs_diff_vs_torch_fp32"]:9.1e}'
        )
    speedup = report['summary']['edge_model_speedup_b1']
    if speedup is not None:
        lines.append(
            f'edge model {speedup["variant"]} at batch 1: {speedup["backend"]} '
            f'{speedup["best_ms"]:.2f} ms vs torch eager fp32 {speedup["torch_fp32_ms"]:.2f} ms '
            f'-> {speedup["speedup"]:.2f}x'
        )
    lines.append('')
    for r in report['edge_pipeline']['rows']:
        lines.append(
            f'edge pipeline batch {r["batch"]:>2}: {r["pipeline_fps"]:8.1f} fps vs bare '
            f'{r["bare_fps"]:8.1f} fps -> {r["ratio"]:.3f} (offloaded {r["offload_fraction"]:.0%})'
        )
    for r in report['dds']['rows']:
        lines.append(
            f'DDS hop {r["type"]:<14} {r["bytes"]:>7} B: {r["hop_ms"]:.3f} ms = '
            f'{r["ratio"]:.3f} x edge inference ({r["edge_inference_ms"]:.2f} ms)'
        )
    lines.append('')
    lines.append(f'{"edges":>5} {"rps 1-at-a-time":>15} {"rps batched":>11} {"gain":>6} '
                 f'{"p95 single":>10} {"p95 batched":>11} {"mean batch":>10}')  # fmt: skip
    for r in report['expert_batching']['rows']:
        s, b = r['one_at_a_time'], r['batched']
        lines.append(
            f'{r["edges"]:>5} {s["throughput_rps"]:15.1f} {b["throughput_rps"]:11.1f} '
            f'{r["throughput_gain"]:6.2f} {s["latency_ms_p95"]:10.1f} '
            f'{b["latency_ms_p95"]:11.1f} {b["mean_batch"]:10.2f}'
        )
    lines.append('')
    lines.append('targets met: ' + ', '.join(
        f'{k} {"yes" if v else "no"}' for k, v in report['summary']['meets'].items()
    ))  # fmt: skip
    return '\n'.join(lines)


def write_report(report: dict[str, Any], out: Path) -> None:
    """JSON, after checking that every number in it is finite."""

    def check(value: Any, where: str) -> None:
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f'bench-speed produced a non-finite number at {where}')
        if isinstance(value, dict):
            for k, v in value.items():
                check(v, f'{where}.{k}')
        elif isinstance(value, list):
            for i, v in enumerate(value):
                check(v, f'{where}[{i}]')

    check(report, 'report')
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + '\n', encoding='utf-8')
