"""What every section of ``ask-expert bench-speed`` shares: its config, the targets, the
timing helpers, the machine description and the models it times.
"""

from __future__ import annotations

import logging
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, get_args

import numpy as np
import torch

from ask_expert_ros.core.inference.image_codec import encode_image
from ask_expert_ros.core.inference.models import (
    ModelConfig,
    VariantName,
)
from ask_expert_ros.core.inference.taxonomy import ExpertKey, PartitionScheme
from ask_expert_ros.core.nodes.messages import (
    FrameFormat,
    Header,
    ImageData,
    OffloadRequest,
    Stamp,
)

logger = logging.getLogger(__name__)


TARGETS = {
    'edge_model_speedup_over_torch_fp32_b1_min': 2.0,
    'edge_pipeline_over_bare_fps_min': 0.95,
    'dds_hop_over_edge_inference_max': 0.05,
    'expert_throughput_gain_8_edges_min': 3.0,
    'expert_p95_batched_over_single_8_edges_max': 1.0,
    # issue 19: compiled speed from the first frame
    'edge_auto_speedup_b1_min': 2.5,
    'edge_auto_first_result_s_max': 5.0,
    'expert_compiled_speedup_batched_min': 2.5,
    'bf16_model_memory_over_fp32_max': 0.6,
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
        aoti_dir: Where the ``aoti`` backends' packages are built and found (``aoti/``
            inside); None: a temporary directory of the run. Built with ``compiled``.
        startup: Run the ``startup`` section (each backend in a fresh process).
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
    aoti_dir: Path | None = None
    startup: bool = True

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
            startup=False,
        )


def times_ms(fn: Callable[[], object], repeats: int, warmup: int = 1) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def p50(values: Sequence[float]) -> float:
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


def offload_request(
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
