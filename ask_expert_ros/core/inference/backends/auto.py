"""The ``'auto'`` backend: a fixed preference order over what this machine can run.

``'auto'`` follows a fixed order rather than a timing run, so a node picks the same
backend every start, and it only picks backends that are ready within a second or two
of loading (or whose build is cached on disk, TensorRT):

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

from dataclasses import dataclass

import torch

from ask_expert_ros.core.inference.backends.base import (
    BackendUnavailableError,
    check_precision,
)
from ask_expert_ros.core.inference.backends.registry import (
    check_device,
    check_kind,
    registered_backends,
)


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
