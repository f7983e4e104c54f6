"""Which backends exist: one table of kinds, filled by :func:`register_backend`.

Each entry names how to build a :class:`~.base.Backend` for a loaded model and which
precisions it runs on a device of this machine. The torch backends are registered by
object (torch is a core dependency); ONNX Runtime and TensorRT by lazy import strings
(``'package.module:function'``), imported only when that kind is built or probed, so
the core imports nothing above it (``test/test_layering.py``) and a machine without
``onnxruntime`` or ``tensorrt`` still imports it. Another runtime joins the same way::

    register_backend('openvino', 'my_pkg.ov:create_backend', 'my_pkg.ov:precisions')

and every node then takes ``backend: openvino``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, TypeVar, get_args

import torch

from ask_expert_ros.core.inference.backends import torch_backend
from ask_expert_ros.core.inference.backends.base import (
    BackendBuilder,
    BackendError,
    BackendOptions,
)
from ask_expert_ros.core.inference.models import LoadedModel

BackendKind = Literal['auto', 'torch', 'torch_compile', 'aoti', 'onnxruntime', 'tensorrt']
"""The kinds this package registers, and ``'auto'``; :func:`backend_kinds` has the rest."""
BACKEND_KINDS: tuple[str, ...] = get_args(BackendKind)

_T = TypeVar('_T')


PrecisionProbe = Callable[[str], Sequence[str]]
"""``device -> precisions`` this kind runs there on this machine."""

ReadyProbe = Callable[[LoadedModel, str, BackendOptions], 'str | None']
"""``(model, precision, options) -> None`` if the kind builds this model at start in
seconds (nothing to compile or export), else why not: what ``'auto'`` times."""


def _resolve(target: _T | str) -> _T:
    """``target`` itself, or the object a ``'module:name'`` string names (imported now)."""
    if not isinstance(target, str):
        return target
    module, _, name = target.partition(':')
    obj = getattr(importlib.import_module(module), name)
    if not callable(obj):
        raise BackendError(f'{target} is not callable')
    return obj


@dataclass(frozen=True)
class BackendEntry:
    """One registered backend kind.

    Attributes:
        kind: The name nodes ask for (``backend:=kind``).
        build: A :data:`BackendBuilder`, or ``'module:function'`` naming one.
        precisions: A :data:`PrecisionProbe`, or ``'module:function'`` naming one.
        description: One line for listings.
        ready: A :data:`ReadyProbe` (or ``'module:function'``): whether ``'auto'`` may
            build and time this kind for a model; None: never (asked for by name only).
    """

    kind: str
    build: BackendBuilder | str
    precisions: PrecisionProbe | str
    description: str = ''
    ready: ReadyProbe | str | None = None

    def builder(self) -> BackendBuilder:
        """The build function (imported now if named by a string)."""
        return _resolve(self.build)

    def usable(self, device: str) -> tuple[str, ...]:
        """Precisions this kind runs on ``device`` here; () if its module does not import."""
        try:
            probe = _resolve(self.precisions)
        except ImportError:
            return ()
        return tuple(probe(device))

    def not_ready(self, model: LoadedModel, precision: str, options: BackendOptions) -> str | None:
        """None if ``'auto'`` may build this kind for ``model`` now, else why not."""
        if self.ready is None:
            return 'only used when asked for by name'
        try:
            probe = _resolve(self.ready)
        except ImportError as exc:
            return f'does not import ({exc})'
        return probe(model, precision, options)


_REGISTRY: dict[str, BackendEntry] = {}


def register_backend(
    kind: str,
    build: BackendBuilder | str,
    precisions: PrecisionProbe | str,
    *,
    description: str = '',
    ready: ReadyProbe | str | None = None,
    replace: bool = False,
) -> BackendEntry:
    """Add a backend kind every node and :func:`create_backend` can then use.

    Raises:
        BackendError: ``kind`` is ``'auto'``, not an identifier, or taken (unless
            ``replace``).
    """
    if kind == 'auto' or not kind.isidentifier():
        raise BackendError(f"a backend kind must be an identifier other than 'auto', got {kind!r}")
    if kind in _REGISTRY and not replace:
        raise BackendError(f'backend {kind!r} is registered already (replace=True to swap it)')
    entry = BackendEntry(kind, build, precisions, description, ready)
    _REGISTRY[kind] = entry
    return entry


def backend_kinds() -> tuple[str, ...]:
    """``'auto'`` and every registered kind, in registration order."""
    return ('auto', *_REGISTRY)


def registered_backends() -> tuple[BackendEntry, ...]:
    """Every registered entry, in registration order."""
    return tuple(_REGISTRY.values())


def check_kind(kind: str) -> str:
    """``kind`` if it is ``'auto'`` or registered, else :class:`BackendError` listing them."""
    if kind not in backend_kinds():
        raise BackendError(f'backend must be one of {list(backend_kinds())}, got {kind!r}')
    return kind


def backend_entry(kind: str) -> BackendEntry:
    """The entry of a registered ``kind`` (not ``'auto'``)."""
    check_kind(kind)
    if kind == 'auto':
        raise BackendError("'auto' is resolved by pick_default, not registered")
    return _REGISTRY[kind]


def check_device(device: str) -> torch.device:
    """``device`` parsed, or :class:`BackendError` naming the accepted forms."""
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise BackendError(f"device must be 'cpu', 'cuda' or 'cuda:<i>', got {device!r}") from exc
    if parsed.type not in ('cpu', 'cuda'):
        raise BackendError(f"device must be 'cpu', 'cuda' or 'cuda:<i>', got {device!r}")
    return parsed


register_backend(
    'torch',
    torch_backend.create_torch_backend,
    torch_backend.torch_precisions,
    description='the timm model under torch.inference_mode and autocast',
    ready=torch_backend.torch_ready,
)
register_backend(
    'torch_compile',
    torch_backend.create_compiled_backend,
    torch_backend.compiled_precisions,
    description='torch.compile (inductor) with frozen weights; builds 30-95 s per model',
)
register_backend(
    'onnxruntime',
    'ask_expert_ros.runtime.ort:create_ort_backend',
    'ask_expert_ros.runtime.ort:ort_precisions',
    description='ONNX Runtime: CPU, CUDA and TensorRT execution providers',
    ready='ask_expert_ros.runtime.ort:ort_ready',
)
register_backend(
    'tensorrt',
    'ask_expert_ros.runtime.tensorrt:create_tensorrt_backend',
    'ask_expert_ros.runtime.tensorrt:tensorrt_precisions',
    description='a TensorRT engine built from the ONNX export and cached on disk',
    ready='ask_expert_ros.runtime.tensorrt:tensorrt_ready',
)
register_backend(
    'aoti',
    'ask_expert_ros.core.inference.backends.aoti:create_aoti_backend',
    'ask_expert_ros.core.inference.backends.aoti:aoti_precisions',
    description='AOTInductor packages (.pt2) compiled ahead of time; load in under a second',
    ready='ask_expert_ros.core.inference.backends.aoti:aoti_ready',
)
