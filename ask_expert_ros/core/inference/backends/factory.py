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

from ask_expert_ros.core.inference.backends.aoti import ArtifactError
from ask_expert_ros.core.inference.backends.auto import measure_auto, pick_default
from ask_expert_ros.core.inference.backends.base import (
    Backend,
    BackendFactory,
    BackendOptions,
    check_precision,
)
from ask_expert_ros.core.inference.backends.registry import backend_entry, check_kind
from ask_expert_ros.core.inference.backends.torch_backend import trim_heap
from ask_expert_ros.core.inference.models import LoadedModel, ModelConfig

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
    probe_s: float = 0.0,
    probe_batch: int = 1,
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
            file or AOTInductor package of this model before exporting one.
        probe_s: With ``kind='auto'``: seconds to time the ready backends before
            keeping the fastest (:func:`~.auto.measure_auto`; the table is logged);
            0: the fixed order of :func:`~.auto.pick_default`.
        probe_batch: The batch size the probe times (the node's real one).

    A compiled artifact that is stale, foreign or corrupt and cannot be rebuilt
    (:class:`~.aoti.ArtifactError`) is logged and the next backend of the fixed order
    is built instead.

    Raises:
        BackendError: A bad option; BackendUnavailableError: it cannot run here.
    """
    choice = pick_default(device, kind, precision)  # checks all three
    options = BackendOptions(
        device=device,
        cache_dir=Path(cache_dir) if cache_dir is not None else None,
        threads=threads,
        search_dirs=tuple(Path(d) for d in search_dirs),
    )
    if kind == 'auto' and probe_s > 0:
        result = measure_auto(model, options, precision, batch=probe_batch, probe_s=probe_s)
        logger.info(
            'backend auto -> %s %s on %s (%s); timed:\n%s',
            result.choice.kind,
            result.choice.precision,
            device,
            result.choice.reason,
            result.report(),
        )
        return result.backend
    if kind == 'auto' or precision == 'auto':
        logger.info(
            'backend auto -> %s %s on %s (%s)',
            choice.kind,
            choice.precision,
            device,
            choice.reason,
        )
    try:
        return backend_entry(choice.kind).builder()(model, choice.precision, options)
    except ArtifactError as exc:
        fallback = pick_default(device, 'auto', precision)
        if fallback.kind == choice.kind:
            fallback = pick_default(device, 'torch', precision)
        logger.error(
            '%s refused (%s); falling back to %s %s',
            choice.kind,
            exc,
            fallback.kind,
            fallback.precision,
        )
        return backend_entry(fallback.kind).builder()(model, fallback.precision, options)


def release_weights(model: LoadedModel) -> None:
    """Drop the torch module's weights of ``model`` (moved to the meta device): for a
    backend that runs its own copy (bf16 eager) or compiled code, so the fp32 weights
    are not held twice. The module's structure and the config stay; running the
    module afterwards raises. The freed memory is handed back to the system."""
    model.model.to('meta')
    trim_heap()


def _signature(config: ModelConfig) -> tuple[object, ...]:
    """What decides a backend's speed: the model's shape, not its weights."""
    return (
        config.variant,
        config.img_size,
        config.patch_size,
        config.depth,
        config.in_chans,
        config.num_classes,
    )


def backend_factory(
    kind: str = 'auto',
    precision: str = 'auto',
    *,
    device: str = 'cpu',
    cache_dir: Path | None = None,
    threads: int | None = None,
    warmup: tuple[int, ...] = (1,),
    search_dirs: Sequence[Path] = (),
    probe_s: float = 0.0,
    probe_batch: int | None = None,
    release: bool = False,
) -> BackendFactory:
    """A :data:`~.base.BackendFactory` for the engine and the expert library.

    Options are checked now, so a bad ``backend`` parameter fails at node start.
    Every backend it builds is warmed up on ``warmup`` batch sizes. With ``kind='auto'``
    and ``probe_s > 0``, the first model of each shape is timed on every ready backend
    (``probe_batch``, default the largest warm-up size) and the others of that shape
    get the same choice without a probe. With ``release``, the model's fp32 weights
    are dropped once a backend that does not need them is built
    (:func:`release_weights`): only for callers that keep no other use of the module.
    """
    check_kind(kind)
    check_precision(precision)
    chosen: dict[tuple[object, ...], tuple[str, str]] = {}

    options = BackendOptions(
        device=device,
        cache_dir=Path(cache_dir) if cache_dir is not None else None,
        threads=threads,
        search_dirs=tuple(Path(d) for d in search_dirs),
    )

    def build(model: LoadedModel) -> Backend:
        use_kind, use_precision, probe = kind, precision, probe_s
        earlier = chosen.get(_signature(model.config)) if kind == 'auto' and probe_s > 0 else None
        # the shape's choice, unless it is not ready for this model (an expert without
        # its package): auto never builds, so that one is probed on its own
        if (
            earlier is not None
            and backend_entry(earlier[0]).not_ready(model, earlier[1], options) is None
        ):
            use_kind, use_precision = earlier
            probe = 0.0
        backend = create_backend(
            model,
            use_kind,
            use_precision,
            device=device,
            cache_dir=cache_dir,
            threads=threads,
            search_dirs=search_dirs,
            probe_s=probe,
            probe_batch=probe_batch or max(warmup),
        )
        if kind == 'auto' and probe_s > 0:
            chosen.setdefault(_signature(model.config), (backend.kind, backend.precision))
        backend.warmup(warmup)
        if release and backend.owns_weights:
            release_weights(model)
        return backend

    return build


def factory_from_params(values: Mapping[str, Any], probe_batch: int = 1) -> BackendFactory:
    """The backend factory a node's parameters ask for (``backend``, ``precision``,
    ``device``, ``cache_dir``, ``auto_probe_s``; the library's directory is searched for
    exported files). ``probe_batch``: the batch size ``auto`` times (the edge: 1; the
    expert: its ``max_batch``).

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
        probe_s=float(values.get('auto_probe_s', 0.0)),
        probe_batch=probe_batch,
        release=True,
    )
