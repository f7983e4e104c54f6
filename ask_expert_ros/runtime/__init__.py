"""Optional inference runtimes: ONNX Runtime and TensorRT backends, ONNX/engine export.

The backend concept lives in one home in the core,
:mod:`ask_expert_ros.core.inference.backends`: the interface, the torch backends, the
registry of kinds, ``'auto'`` and :func:`create_backend`. This package holds what needs
packages the core does not (``onnx``, ``onnxruntime``, ``tensorrt``); the registry names
its builders by import string (``runtime.ort:create_ort_backend``,
``runtime.tensorrt:create_tensorrt_backend``), so the core never imports it
(``test/test_layering.py``).

The backend names re-exported here (``create_backend``, ``pick_default``,
``factory_from_params`` ...) are the core's, kept for callers of
``ask_expert_ros.runtime`` from before the move; new code imports them from
:mod:`ask_expert_ros.core.inference.backends`.
"""

from __future__ import annotations

from ask_expert_ros.core.inference.backends import (
    BACKEND_KINDS,
    PRECISIONS,
    Backend,
    BackendChoice,
    BackendError,
    BackendFactory,
    BackendKind,
    BackendUnavailableError,
    CompiledTorchBackend,
    Precision,
    TorchBackend,
    available_backends,
    backend_factory,
    check_device,
    compile_missing,
    cpu_has_bf16,
    create_backend,
    default_cache_dir,
    factory_from_params,
    pick_default,
)
from ask_expert_ros.runtime.ort import OrtBackend
from ask_expert_ros.runtime.tensorrt import TensorRTBackend, engine_cache_key

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
