"""Inference runtimes: torch (eager or compiled), ONNX Runtime and TensorRT behind one
:class:`Backend`.

The interface and the torch backends live in the ROS-free core
(:mod:`ask_expert_ros.core.backend`) so the engine can run any backend; this package
adds the others, the ``'auto'`` choice and ONNX/engine export. It imports the core;
the core never imports it (``test/test_layering.py``).

``'auto'`` follows a fixed preference order rather than a timing run, so a node
picks the same backend every start, and it only picks backends that are ready within
a second or two of loading (or whose build is cached on disk, TensorRT):

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
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ask_expert_ros.core.backend import (
    BACKEND_KINDS,
    PRECISIONS,
    Backend,
    BackendError,
    BackendFactory,
    BackendKind,
    BackendUnavailableError,
    CompiledTorchBackend,
    Precision,
    TorchBackend,
    check_kind,
    check_precision,
    compile_missing,
)
from ask_expert_ros.core.models import LoadedModel
from ask_expert_ros.runtime.onnx_export import (
    export_onnx,
    export_onnx_bytes,
    find_cached,
    model_hash,
)
from ask_expert_ros.runtime.ort import OrtBackend, ort_providers
from ask_expert_ros.runtime.tensorrt import (
    TensorRTBackend,
    engine_cache_key,
    tensorrt_missing,
)

__all__ = [
    'BACKEND_KINDS',
    'PRECISIONS',
    'Backend',
    'BackendChoice',
    'BackendError',
    'BackendFactory',
    'BackendKind',
    'BackendUnavailableError',
    'CompiledTorchBackend',
    'OrtBackend',
    'Precision',
    'TensorRTBackend',
    'TorchBackend',
    'available_backends',
    'backend_factory',
    'check_device',
    'compile_missing',
    'cpu_has_bf16',
    'create_backend',
    'default_cache_dir',
    'engine_cache_key',
    'factory_from_params',
    'pick_default',
]

logger = logging.getLogger(__name__)


def cpu_has_bf16() -> bool:
    """Whether this CPU has native bfloat16 arithmetic (avx512_bf16 or AMX)."""
    probes = ('_is_avx512_bf16_supported', '_is_amx_tile_supported')
    for name in probes:
        probe: Callable[[], bool] | None = getattr(torch.cpu, name, None)
        if probe is not None and probe():
            return True
    try:
        flags = Path('/proc/cpuinfo').read_text(encoding='ascii', errors='ignore')
    except OSError:
        return False
    return 'avx512_bf16' in flags or 'amx_bf16' in flags


def check_device(device: str) -> torch.device:
    """``device`` parsed, or :class:`BackendError` naming the accepted forms."""
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise BackendError(f"device must be 'cpu', 'cuda' or 'cuda:<i>', got {device!r}") from exc
    if parsed.type not in ('cpu', 'cuda'):
        raise BackendError(f"device must be 'cpu', 'cuda' or 'cuda:<i>', got {device!r}")
    return parsed


def _cuda_devices() -> list[str]:
    return [f'cuda:{i}' for i in range(torch.cuda.device_count())]


def available_backends(device: str | None = None) -> list[tuple[str, str]]:
    """(kind, precision) pairs usable on ``device`` (None: on any device of this machine)."""
    devices = [device] if device is not None else ['cpu', *_cuda_devices()[:1]]
    out: list[tuple[str, str]] = []
    providers = ort_providers()
    for dev in devices:
        if torch.device(dev).type == 'cpu':
            bf16 = cpu_has_bf16()
            out.append(('torch', 'fp32'))
            if bf16:
                out.append(('torch', 'bf16'))
            if compile_missing('cpu') is None:
                out += [('torch_compile', 'fp32')] + ([('torch_compile', 'bf16')] if bf16 else [])
            if 'CPUExecutionProvider' in providers:
                out.append(('onnxruntime', 'fp32'))
        elif torch.device(dev).type == 'cuda' and torch.cuda.is_available():
            out += [('torch', 'fp32'), ('torch', 'fp16'), ('torch', 'bf16')]
            if compile_missing(dev) is None:
                out += [('torch_compile', p) for p in ('fp32', 'fp16', 'bf16')]
            if 'CUDAExecutionProvider' in providers:
                out.append(('onnxruntime', 'fp32'))
            if 'TensorrtExecutionProvider' in providers:
                out.append(('onnxruntime', 'fp16'))
            if tensorrt_missing(dev) is None:
                out += [('tensorrt', 'fp16'), ('tensorrt', 'fp32')]
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
    device: str = 'cpu', kind: BackendKind = 'auto', precision: Precision = 'auto'
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


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/ask_expert_ros`` (``~/.cache/ask_expert_ros``): engines, inductor."""
    base = os.environ.get('XDG_CACHE_HOME') or Path.home() / '.cache'
    return Path(base) / 'ask_expert_ros'


def create_backend(
    model: LoadedModel,
    kind: BackendKind = 'auto',
    precision: Precision = 'auto',
    *,
    device: str = 'cpu',
    cache_dir: Path | None = None,
    threads: int | None = None,
    search_dirs: Sequence[Path] = (),
) -> Backend:
    """``model`` ready to run on ``kind`` at ``precision``.

    Args:
        model: The loaded model; torch backends run it in place on its device.
        kind: ``'auto'`` (see :func:`pick_default`), ``'torch'``, ``'torch_compile'``
            (compiled on the first call of each graph; :meth:`Backend.warmup` does it),
            ``'onnxruntime'`` or ``'tensorrt'``.
        precision: ``'auto'``, ``'fp32'``, ``'bf16'`` or ``'fp16'``.
        device: ``'cpu'``, ``'cuda'``, ``'cuda:1'`` ...
        cache_dir: Where ONNX files and TensorRT engines are found or written
            (searched by model hash, e.g. the output of ``ask-expert export``), and
            ``torch_compile`` keeps inductor's cache (``inductor/``); None: ONNX
            Runtime exports in memory, TensorRT and ``torch_compile`` use
            :func:`default_cache_dir`.
        threads: ONNX Runtime intra-op threads (None: torch's thread count).
        search_dirs: Further directories searched (read-only) for an exported ONNX
            file of this model before exporting one.

    Raises:
        BackendError: A bad option; BackendUnavailableError: it cannot run here.
    """
    choice = pick_default(device, check_kind(kind), check_precision(precision))
    if kind == 'auto' or precision == 'auto':
        logger.info(
            'backend auto -> %s %s on %s (%s)',
            choice.kind,
            choice.precision,
            device,
            choice.reason,
        )
    kind_, prec = choice.kind, choice.precision
    model_device = next(model.model.parameters()).device
    if kind_ in ('torch', 'torch_compile'):
        if model_device != torch.device(device):
            model.model.to(device)
        if kind_ == 'torch_compile':
            return CompiledTorchBackend(
                model,
                prec,  # type: ignore[arg-type]
                cache_dir=(Path(cache_dir) if cache_dir else default_cache_dir()) / 'inductor',
            )
        return TorchBackend(model, prec)  # type: ignore[arg-type]
    if kind_ == 'onnxruntime':
        sha = model_hash(model)
        dirs = [Path(d) for d in (*search_dirs, *([cache_dir] if cache_dir else []))]
        found = next((p for p in (find_cached(d, sha) for d in dirs) if p is not None), None)
        source: Path | bytes
        if found is not None:
            logger.info('ONNX Runtime loads %s', found)
            source = found
        elif cache_dir is not None:
            source = export_onnx(model, cache_dir)
        else:
            source = export_onnx_bytes(model)
        return OrtBackend(
            source,
            model.config,
            device=device,
            precision=prec,  # type: ignore[arg-type]
            threads=threads,
            cache_dir=Path(cache_dir) if cache_dir is not None else None,
        )
    if kind_ == 'tensorrt':
        return TensorRTBackend(
            model,
            Path(cache_dir) if cache_dir is not None else default_cache_dir(),
            device=device,
            precision=prec,  # type: ignore[arg-type]
        )
    raise BackendError(f'unknown backend {kind_!r}')


def backend_factory(
    kind: BackendKind = 'auto',
    precision: Precision = 'auto',
    *,
    device: str = 'cpu',
    cache_dir: Path | None = None,
    threads: int | None = None,
    warmup: tuple[int, ...] = (1,),
    search_dirs: Sequence[Path] = (),
) -> BackendFactory:
    """A :data:`BackendFactory` for the engine and the expert library.

    Options are checked now, so a bad ``backend`` parameter fails at node start.
    Every backend it builds is warmed up on ``warmup`` batch sizes.
    """
    check_kind(kind)
    check_precision(precision)

    def build(model: LoadedModel) -> Backend:
        backend = create_backend(
            model,
            kind,
            precision,
            device=device,
            cache_dir=cache_dir,
            threads=threads,
            search_dirs=search_dirs,
        )
        backend.warmup(warmup)
        return backend

    return build


def factory_from_params(values: Mapping[str, Any]) -> BackendFactory:
    """The backend factory a node's parameters ask for (``backend``, ``precision``,
    ``device``, ``cache_dir``; the library's directory is searched for exported files).

    Raises:
        BackendError: ``backend`` or ``precision`` is not a known option.
    """
    library = Path(values['library']) if values.get('library') else None
    search = [library if library.is_dir() else library.parent] if library is not None else []
    cache = Path(values['cache_dir']) if values.get('cache_dir') else None
    return backend_factory(
        values.get('backend', 'auto'),
        values.get('precision', 'auto'),
        device=values.get('device', 'cpu'),
        cache_dir=cache,
        search_dirs=search,
    )
