"""``matmul_peak`` and ``models``: the GFLOP/s a matmul reaches per method, and each model
variant per backend (p50 latency at batch 1 and 10, GFLOP/s, fraction of that peak).
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import numpy as np
import torch

from ask_expert_ros.bench.speed.common import (
    SpeedConfig,
    model_config,
    p50,
    times_ms,
)
from ask_expert_ros.core.inference.backends import Backend
from ask_expert_ros.core.inference.models import (
    LoadedModel,
    create_model,
)
from ask_expert_ros.core.inference.taxonomy import PartitionScheme

logger = logging.getLogger(__name__)


#: Turns of timing per variant and batch size; each backend gets repeats / rounds calls
#: a turn, after one untimed call.
MODEL_ROUNDS = 4


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
            best_ms = min(times_ms(fn, max(3, config.repeats), warmup=2))
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


def count_flops(model: torch.nn.Module, x: torch.Tensor) -> float:
    """FLOPs of one forward pass (a multiply-add counts 2), by ``FlopCounterMode``."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(x)
    return float(counter.get_total_flops())


def backends_for(
    loaded: LoadedModel, config: SpeedConfig
) -> Iterator[tuple[Backend, float, float]]:
    """Every CPU backend :mod:`ask_expert_ros.runtime` offers, built and warmed up at the
    benchmark's batch sizes, with the seconds that took (a compile, an ONNX export) and
    the start-up a node sees (build or load + the first result at batch 1; for
    ``aoti``, loading the packages built before)."""
    from ask_expert_ros.core.inference.backends import (
        CompiledTorchBackend,
        available_backends,
        create_backend,
    )

    for kind, precision in available_backends('cpu'):
        if kind in ('torch_compile', 'aoti') and not config.compiled:
            continue
        start = time.perf_counter()
        if kind == 'aoti':
            # builds the packages into aoti_dir (the build time), then loads them fresh:
            # the start-up a node has with the packages exported ahead of time
            create_backend(loaded, 'aoti', precision, cache_dir=config.aoti_dir)  # type: ignore[arg-type]
            built_s = time.perf_counter() - start
            start = time.perf_counter()
            backend = create_backend(loaded, 'aoti', precision, cache_dir=config.aoti_dir)  # type: ignore[arg-type]
            backend.run(np.zeros((1, *_shape(loaded)), dtype=np.float32))
            startup_s = time.perf_counter() - start
            backend.warmup(sorted(set(config.batches)))
            yield backend, built_s, startup_s
            continue
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
        backend.run(np.zeros((1, *_shape(loaded)), dtype=np.float32))
        startup_s = time.perf_counter() - start
        backend.warmup(sorted(set(config.batches)))
        yield backend, time.perf_counter() - start, startup_s


def _shape(loaded: LoadedModel) -> tuple[int, int, int]:
    cfg = loaded.config
    return (cfg.in_chans, cfg.img_size, cfg.img_size)


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
                for i, (backend, _, _) in enumerate(built):
                    # an untimed call first: the previous backend's threads (OpenMP,
                    # ONNX Runtime's pool) may still be spinning on the 2 cores
                    count = config.repeats // rounds + (r < config.repeats % rounds)
                    per_backend[i].extend(times_ms(partial(backend.run, x), count, warmup=1))
            for latency, ms in zip(latencies, per_backend, strict=True):
                latency[str(b)] = p50(ms)
        for (backend, build_s, startup_s), latency in zip(built, latencies, strict=True):
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
                    'startup_s': startup_s,
                    'max_abs_diff_vs_torch_fp32': float(
                        np.abs(backend.run(largest) - reference).max()
                    ),
                }
            )
            logger.info('%s %s/%s: %s ms', variant, backend.kind, backend.precision, latency)
        del built
    return rows
