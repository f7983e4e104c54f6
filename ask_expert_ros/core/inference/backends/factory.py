"""Building backends: :func:`create_backend` for one model, factories for the nodes.

One path from a node's parameters to a running backend:
:func:`factory_from_params` -> :func:`backend_factory` -> :func:`create_backend` ->
``'auto'`` resolved by :func:`~.auto.pick_default` -> the registered builder of the kind
(:mod:`~.registry`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ask_expert_ros.core.inference.backends.auto import pick_default
from ask_expert_ros.core.inference.backends.base import (
    Backend,
    BackendFactory,
    BackendOptions,
    check_precision,
)
from ask_expert_ros.core.inference.backends.registry import backend_entry, check_kind
from ask_expert_ros.core.inference.models import LoadedModel

logger = logging.getLogger(__name__)


def create_backend(
    model: LoadedModel,
    kind: str = 'auto',
    precision: str = 'auto',
    *,
    device: str = 'cpu',
    cache_dir: Path | None = None,
    threads: int | None = None,
    search_dirs: Sequence[Path] = (),
) -> Backend:
    """``model`` ready to run on ``kind`` at ``precision``.

    Args:
        model: The loaded model; torch backends run it in place on its device.
        kind: ``'auto'`` (see :func:`~.auto.pick_default`) or a registered kind:
            ``'torch'``, ``'torch_compile'`` (compiled on the first call of each graph;
            :meth:`Backend.warmup` does it), ``'onnxruntime'``, ``'tensorrt'``, or one
            added with :func:`~.registry.register_backend`.
        precision: ``'auto'``, ``'fp32'``, ``'bf16'`` or ``'fp16'``.
        device: ``'cpu'``, ``'cuda'``, ``'cuda:1'`` ...
        cache_dir: Where ONNX files and TensorRT engines are found or written
            (searched by model hash, e.g. the output of ``ask-expert export``), and
            ``torch_compile`` keeps inductor's cache (``inductor/``); None: ONNX
            Runtime exports in memory, TensorRT and ``torch_compile`` use
            :func:`~.base.default_cache_dir`.
        threads: ONNX Runtime intra-op threads (None: torch's thread count).
        search_dirs: Further directories searched (read-only) for an exported ONNX
            file of this model before exporting one.

    Raises:
        BackendError: A bad option; BackendUnavailableError: it cannot run here.
    """
    choice = pick_default(device, kind, precision)  # checks all three
    if kind == 'auto' or precision == 'auto':
        logger.info(
            'backend auto -> %s %s on %s (%s)',
            choice.kind,
            choice.precision,
            device,
            choice.reason,
        )
    options = BackendOptions(
        device=device,
        cache_dir=Path(cache_dir) if cache_dir is not None else None,
        threads=threads,
        search_dirs=tuple(Path(d) for d in search_dirs),
    )
    return backend_entry(choice.kind).builder()(model, choice.precision, options)


def backend_factory(
    kind: str = 'auto',
    precision: str = 'auto',
    *,
    device: str = 'cpu',
    cache_dir: Path | None = None,
    threads: int | None = None,
    warmup: tuple[int, ...] = (1,),
    search_dirs: Sequence[Path] = (),
) -> BackendFactory:
    """A :data:`~.base.BackendFactory` for the engine and the expert library.

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
