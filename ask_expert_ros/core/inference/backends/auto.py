"""The ``'auto'`` backend: the fastest ready backend, by measurement or by a fixed order.

By measurement (:func:`measure_auto`, what the nodes do unless ``auto_probe_s`` is 0):
every registered kind whose build costs nothing at start for this model is built and
timed for a bounded while on the node's real batch size, and the fastest is kept; the
table it chose from is logged. Ready means: eager torch (fp32, bf16 where the CPU has
it), AOTInductor packages present and matching (``ask-expert export --format aoti``), an
exported ONNX file for ONNX Runtime, a cached TensorRT engine. Nothing is compiled,
exported or built by ``'auto'``.

By the fixed order (:func:`pick_default`, ``auto_probe_s: 0``, and what ``auto`` means
where no model is at hand), a node picks the same backend every start:

* CUDA: TensorRT fp16 (if ``tensorrt`` imports) > torch fp16 autocast.
* CPU with avx512_bf16 or AMX: torch bf16 autocast, unless fp32 was asked for.
* other CPUs, or ``precision='fp32'``: ONNX Runtime fp32 (logits within 1e-4 of torch),
  torch fp32 when onnxruntime is missing.

``torch_compile`` is the fastest on CPU (``docs/results/speed.md``: DeiT-3H, 224 px,
batch 1, bf16, 2.6-2.7x torch eager fp32 on 2 threads of an Intel Xeon with AMX, measured
side by side in one run) but it compiles two graphs per model at start: 95 s for
DeiT-3H on 2 cores the first time, 30-55 s with inductor's on-disk cache (kept in
``cache_dir``) warm. An expert node with ten experts would take many minutes to come
up, so it is asked for by name (``backend:=torch_compile``), never picked by ``'auto'``.
A kind registered by someone else is likewise only used when asked for by name.
"""

from __future__ import annotations

import gc
import logging
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from ask_expert_ros.core.inference.backends.base import (
    Backend,
    BackendError,
    BackendOptions,
    BackendUnavailableError,
    check_precision,
)
from ask_expert_ros.core.inference.backends.registry import (
    check_device,
    check_kind,
    registered_backends,
)
from ask_expert_ros.core.inference.models import LoadedModel

logger = logging.getLogger(__name__)


def _cuda_devices() -> list[str]:
    return [f'cuda:{i}' for i in range(torch.cuda.device_count())]


def available_backends(device: str | None = None) -> list[tuple[str, str]]:
    """(kind, precision) pairs usable on ``device`` (None: on any device of this machine)."""
    devices = [device] if device is not None else ['cpu', *_cuda_devices()[:1]]
    out = [
        (entry.kind, precision)
        for dev in devices
        for entry in registered_backends()
        for precision in entry.usable(dev)
    ]
    return list(dict.fromkeys(out))


@dataclass(frozen=True)
class BackendChoice:
    """What ``'auto'`` resolved to and why (logged by the nodes).

    Attributes:
        kind: Backend kind.
        precision: Precision.
        reason: One sentence for the log.
    """

    kind: str
    precision: str
    reason: str


def pick_default(
    device: str = 'cpu', kind: str = 'auto', precision: str = 'auto'
) -> BackendChoice:
    """Resolve ``'auto'`` kind and/or precision by the order in the module docstring."""
    check_kind(kind)
    check_precision(precision)
    check_device(device)
    usable = available_backends(device)
    cuda = torch.device(device).type == 'cuda'
    if kind != 'auto':
        if precision != 'auto':
            return BackendChoice(kind, precision, 'asked for explicitly')
        for p in ('fp16', 'fp32') if cuda else ('bf16', 'fp32'):
            if (kind, p) in usable:
                return BackendChoice(kind, p, f'fastest precision of {kind} on {device}')
        return BackendChoice(kind, 'fp32', f'{kind} is not usable on {device}')
    if cuda:
        order = [('tensorrt', 'fp16'), ('torch', 'fp16'), ('onnxruntime', 'fp32')]
        if precision != 'auto':
            order = [('tensorrt', precision), ('torch', precision), ('onnxruntime', precision)]
        for choice in order:
            if choice in usable:
                why = 'TensorRT present' if choice[0] == 'tensorrt' else 'no TensorRT'
                return BackendChoice(*choice, f'CUDA device, {why}')
        raise BackendUnavailableError(f'no backend runs {precision} on {device} here')
    if precision in ('auto', 'bf16') and ('torch', 'bf16') in usable:
        reason = 'CPU has avx512_bf16/AMX: torch bf16 autocast'
        if ('torch_compile', 'bf16') in usable:
            # the fastest here, but it builds for a minute per model: never picked silently
            reason += (
                ' (torch_compile bf16 runs faster once built, 30-95 s per model: '
                'ask for backend torch_compile)'
            )
        return BackendChoice('torch', 'bf16', reason)
    if precision == 'bf16':
        raise BackendUnavailableError('this CPU has no avx512_bf16/AMX for bf16; use fp32')
    if precision == 'fp16':
        raise BackendUnavailableError('fp16 needs a CUDA device; on CPU use bf16 or fp32')
    if ('onnxruntime', 'fp32') in usable:
        why = 'fp32 asked for' if precision == 'fp32' else 'CPU without bf16'
        return BackendChoice('onnxruntime', 'fp32', f'{why}: ONNX Runtime fp32 (CPU)')
    return BackendChoice('torch', 'fp32', 'onnxruntime not installed: torch fp32')


@dataclass
class ProbeRow:
    """One candidate of :func:`measure_auto`.

    Attributes:
        kind: Backend kind.
        precision: Precision.
        status: ``'chosen'``, ``'timed'``, ``'not ready'`` or ``'failed'``.
        reason: Why not ready / what failed ('' otherwise).
        start_s: Build + first inference, seconds.
        ms: Median latency at the probe batch (None if not timed).
        calls: Timed calls.
    """

    kind: str
    precision: str
    status: str
    reason: str = ''
    start_s: float | None = None
    ms: float | None = None
    calls: int = 0

    def line(self) -> str:
        timing = f'{self.ms:8.2f} ms ({self.calls} calls)' if self.ms is not None else ' ' * 8
        start = f'start {self.start_s:5.2f} s' if self.start_s is not None else ''
        return (
            f'{self.kind:>14} {self.precision:>5} {self.status:>9} {timing} {start} {self.reason}'
        )


@dataclass
class AutoResult:
    """What :func:`measure_auto` built and why."""

    backend: Backend
    choice: BackendChoice
    table: list[ProbeRow] = field(default_factory=list)
    batch: int = 1

    def report(self) -> str:
        return '\n'.join(row.line() for row in self.table)


PROBE_CALLS = 25
"""Most timed calls per candidate and round: a small model is ranked in milliseconds,
a large one within its share of ``probe_s``."""


def _median_ms(backend: Backend, x: np.ndarray, seconds: float) -> tuple[float, int]:
    """Median of at least one call, more while ``seconds`` last (at most PROBE_CALLS)."""
    times: list[float] = []
    stop = time.perf_counter() + seconds
    while not times or (time.perf_counter() < stop and len(times) < PROBE_CALLS):
        t = time.perf_counter()
        backend.run(x)
        times.append(time.perf_counter() - t)
    return float(np.median(times)) * 1e3, len(times)


def measure_auto(
    model: LoadedModel,
    options: BackendOptions,
    precision: str = 'auto',
    batch: int = 1,
    probe_s: float = 2.0,
) -> AutoResult:
    """Build every ready backend for ``model``, time each on ``batch`` frames for a share
    of ``probe_s`` seconds, keep the fastest (the others are dropped).

    Candidates are timed in two rounds, interleaved, so a slow spell of the machine does
    not decide alone (the second round only while the budget lasts; every candidate gets
    at least one timed call). ``precision`` restricts the candidates (``'auto'``: any).

    Raises:
        BackendUnavailableError: Nothing here runs ``model`` at ``precision``.
    """
    check_precision(precision)
    device = options.device
    check_device(device)
    if batch < 1:
        raise BackendError(f'the probe batch must be >= 1, got {batch}')
    table: list[ProbeRow] = []
    built: list[tuple[ProbeRow, Backend]] = []
    for entry in registered_backends():
        for prec in entry.usable(device):
            if precision not in ('auto', prec):
                continue
            row = ProbeRow(entry.kind, prec, 'not ready')
            table.append(row)
            why = entry.not_ready(model, prec, options)
            if why is not None:
                row.reason = why
                continue
            start = time.perf_counter()
            try:
                backend = entry.builder()(model, prec, options)
                backend.warmup((batch,))
            except Exception as exc:  # a candidate that cannot run here is only skipped
                row.status, row.reason = 'failed', f'{type(exc).__name__}: {exc}'[:300]
                continue
            row.start_s = time.perf_counter() - start
            row.status = 'timed'
            built.append((row, backend))
    if not built:
        raise BackendUnavailableError(
            f'no backend runs {model.config.variant} at {precision} on {device} here:\n'
            + '\n'.join(row.line() for row in table)
        )
    c, s = model.config.in_chans, model.config.img_size
    x = np.random.default_rng(0).standard_normal((batch, c, s, s)).astype(np.float32)
    share = max(probe_s, 0.0) / (2 * len(built))
    samples: dict[int, list[float]] = {id(b): [] for _, b in built}
    stop = time.perf_counter() + max(probe_s, 0.0)
    for rnd in range(2):
        if rnd and time.perf_counter() > stop:
            break  # a slow model: one call each was the budget
        for row, backend in built:
            backend.run(x)  # untimed: the previous candidate's threads may still spin
            ms, calls = _median_ms(backend, x, share)
            samples[id(backend)].append(ms)
            row.calls += calls
    for row, backend in built:
        row.ms = min(samples[id(backend)])
    best_row, best = min(built, key=lambda pair: pair[0].ms or float('inf'))
    best_row.status = 'chosen'
    del built
    gc.collect()
    others = [r for r in table if r.ms is not None and r is not best_row]
    runner_up = min(others, key=lambda r: r.ms or float('inf')) if others else None
    reason = f'fastest of {1 + len(others)} ready at batch {batch}: {best_row.ms:.2f} ms'
    if runner_up is not None and runner_up.ms:
        ratio = runner_up.ms / (best_row.ms or 1)
        reason += f', {ratio:.2f}x faster than {runner_up.kind} {runner_up.precision}'
    choice = BackendChoice(best.kind, best.precision, reason)
    return AutoResult(best, choice, table, batch)
