"""Inference backends, in one home: the interface, the registry of kinds, ``'auto'``, the factory.

Owns :class:`Backend` (what the engine and the expert library run a model through),
its errors and precisions, the torch backends, AOTInductor packages (``aoti``), the
table of kinds
(:func:`register_backend`; ONNX Runtime and TensorRT are entered by lazy import strings
naming :mod:`ask_expert_ros.runtime`, which is imported only when one of them is used),
the ``'auto'`` choice (by measurement, or a fixed order) and :func:`create_backend`.
May import torch and ``core.inference`` (models, patches) and ``core.errors``; nothing
above the core.
"""

from ask_expert_ros.core.inference.backends.aoti import (
    AOTIBackend,
    ArtifactError,
    export_aoti,
    machine_fingerprint,
)
from ask_expert_ros.core.inference.backends.auto import (
    AutoResult,
    BackendChoice,
    ProbeRow,
    available_backends,
    measure_auto,
    pick_default,
)
from ask_expert_ros.core.inference.backends.base import (
    PRECISIONS,
    Backend,
    BackendBuilder,
    BackendError,
    BackendFactory,
    BackendOptions,
    BackendUnavailableError,
    Precision,
    check_precision,
    default_cache_dir,
)
from ask_expert_ros.core.inference.backends.factory import (
    backend_factory,
    create_backend,
    factory_from_params,
    release_weights,
)
from ask_expert_ros.core.inference.backends.registry import (
    BACKEND_KINDS,
    BackendEntry,
    BackendKind,
    PrecisionProbe,
    ReadyProbe,
    backend_entry,
    backend_kinds,
    check_device,
    check_kind,
    register_backend,
    registered_backends,
)
from ask_expert_ros.core.inference.backends.torch_backend import (
    CompiledTorchBackend,
    TorchBackend,
    compile_missing,
    cpu_has_bf16,
    release_openmp_threads,
    torch_backend_factory,
    trim_heap,
)

__all__ = [
    'BACKEND_KINDS',
    'PRECISIONS',
    'AOTIBackend',
    'ArtifactError',
    'AutoResult',
    'Backend',
    'BackendBuilder',
    'BackendChoice',
    'BackendEntry',
    'BackendError',
    'BackendFactory',
    'BackendKind',
    'BackendOptions',
    'BackendUnavailableError',
    'CompiledTorchBackend',
    'Precision',
    'PrecisionProbe',
    'ProbeRow',
    'ReadyProbe',
    'TorchBackend',
    'available_backends',
    'backend_entry',
    'backend_factory',
    'backend_kinds',
    'check_device',
    'check_kind',
    'check_precision',
    'compile_missing',
    'cpu_has_bf16',
    'create_backend',
    'default_cache_dir',
    'export_aoti',
    'factory_from_params',
    'machine_fingerprint',
    'measure_auto',
    'pick_default',
    'register_backend',
    'registered_backends',
    'release_openmp_threads',
    'release_weights',
    'torch_backend_factory',
    'trim_heap',
]
