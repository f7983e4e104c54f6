"""The inference-backend interface the engine runs models through, and the torch backend.

A :class:`Backend` turns a preprocessed ``float32 [N, C, H, W]`` batch into
``float32 [N, num_classes]`` logits. The engine (:mod:`ask_expert_ros.core.engine`)
and the expert library only see this interface; the core implements the torch
backend (torch is a core dependency). ONNX Runtime and TensorRT backends, the
``'auto'`` choice and ONNX/engine export live in :mod:`ask_expert_ros.runtime`,
which imports the core and never the other way round: callers hand the core a
:data:`BackendFactory` (``ask_expert_ros.runtime.backend_factory(...)``).
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any, Literal, get_args

import numpy as np
import torch

from ask_expert_ros.core.errors import AskExpertError
from ask_expert_ros.core.models import LoadedModel, ModelConfig

logger = logging.getLogger(__name__)

BackendKind = Literal['auto', 'torch', 'onnxruntime', 'tensorrt']
Precision = Literal['auto', 'fp32', 'bf16', 'fp16']
BACKEND_KINDS: tuple[str, ...] = get_args(BackendKind)
PRECISIONS: tuple[str, ...] = get_args(Precision)


class BackendError(AskExpertError, ValueError):
    """A backend cannot be built or run as asked (bad option, bad input, wrong device)."""


class BackendUnavailableError(BackendError):
    """The backend needs something this machine lacks (a package, a GPU); says what."""


def check_kind(kind: str) -> BackendKind:
    """``kind`` if it names a backend, else :class:`BackendError` listing the choices."""
    if kind not in BACKEND_KINDS:
        raise BackendError(f'backend must be one of {list(BACKEND_KINDS)}, got {kind!r}')
    return kind  # type: ignore[return-value]


def check_precision(precision: str) -> Precision:
    """``precision`` if it names one, else :class:`BackendError` listing the choices."""
    if precision not in PRECISIONS:
        raise BackendError(f'precision must be one of {list(PRECISIONS)}, got {precision!r}')
    return precision  # type: ignore[return-value]


class Backend(ABC):
    """One model, ready to run on one device at one precision.

    Attributes:
        kind: ``'torch'``, ``'onnxruntime'`` or ``'tensorrt'``.
        precision: ``'fp32'``, ``'bf16'`` or ``'fp16'`` (never ``'auto'`` once built).
        device: ``'cpu'``, ``'cuda'``, ``'cuda:1'`` ...
        config: The model's config (input size, channels, classes).
    """

    kind: str
    precision: str
    device: str
    config: ModelConfig

    @abstractmethod
    def _run(self, inputs: np.ndarray) -> np.ndarray:
        """Checked, C-contiguous float32 input -> float32 logits."""

    def run(self, inputs: np.ndarray) -> np.ndarray:
        """Preprocessed batch ``float32 [N, C, H, W]`` -> logits ``float32 [N, num_classes]``.

        Raises:
            BackendError: ``inputs`` has the wrong shape or dtype for this model.
        """
        inputs = self.check_input(inputs)
        if len(inputs) == 0:
            return np.zeros((0, self.config.num_classes), dtype=np.float32)
        return np.asarray(self._run(inputs), dtype=np.float32)

    def run_tensor(self, inputs: torch.Tensor) -> torch.Tensor:
        """:meth:`run` for a torch tensor (no copy on CPU); float32 logits on CPU."""
        return torch.from_numpy(self.run(inputs.detach().cpu().numpy()))

    @property
    def input_device(self) -> torch.device:
        """Where the engine should prepare this backend's input tensors."""
        return torch.device('cpu')

    def check_input(self, inputs: np.ndarray) -> np.ndarray:
        """``inputs`` as C-contiguous float32, or :class:`BackendError` saying what is wrong."""
        c, s = self.config.in_chans, self.config.img_size
        if not isinstance(inputs, np.ndarray):
            raise BackendError(f'expected a numpy array, got {type(inputs).__name__}')
        if inputs.ndim != 4 or inputs.shape[1:] != (c, s, s):
            raise BackendError(f'expected input [N, {c}, {s}, {s}], got {list(inputs.shape)}')
        if inputs.dtype != np.float32:
            raise BackendError(f'expected float32 input, got {inputs.dtype}')
        return np.ascontiguousarray(inputs)

    def warmup(self, batch_sizes: Sequence[int] = (1,)) -> None:
        """Run once per batch size so lazy initialisation does not hit the first frame."""
        c, s = self.config.in_chans, self.config.img_size
        for n in batch_sizes:
            if n < 1:
                raise BackendError(f'warm-up batch sizes must be >= 1, got {n}')
            self.run(np.zeros((n, c, s, s), dtype=np.float32))

    def describe(self) -> dict[str, Any]:
        """What runs: kind, precision, device and backend details (providers, versions)."""
        return {
            'kind': self.kind,
            'precision': self.precision,
            'device': self.device,
            'model': self.config.variant,
        }


BackendFactory = Callable[[LoadedModel], Backend]
"""Builds the backend for a loaded model (the edge model, each expert on first use)."""


class TorchBackend(Backend):
    """The timm model itself, under ``torch.inference_mode``.

    ``bf16`` runs under CPU or CUDA autocast (bfloat16 matmuls, float32 softmax and
    norms); ``fp16`` under CUDA autocast only. The backend holds the model module, so
    changes to its weights take effect on the next call.

    Args:
        model: The loaded model (eval mode, on its device).
        precision: ``'fp32'``, ``'bf16'`` or ``'fp16'``; ``'auto'`` is resolved by
            :func:`ask_expert_ros.runtime.pick_default`, not here.
        channels_last: Feed the patch convolution channels-last input.
    """

    kind = 'torch'

    def __init__(
        self, model: LoadedModel, precision: Precision = 'fp32', channels_last: bool = False
    ) -> None:
        check_precision(precision)
        self.model = model.model
        self.config = model.config
        self._device = next(self.model.parameters()).device
        self.device = str(self._device)
        if precision == 'auto':
            raise BackendError("TorchBackend needs a concrete precision; resolve 'auto' first")
        if precision == 'fp16' and self._device.type != 'cuda':
            raise BackendError(
                'fp16 autocast needs a CUDA device; on CPU use bf16 (CPUs with avx512_bf16 '
                'or AMX) or fp32'
            )
        self.precision = precision
        self.channels_last = channels_last

    @property
    def input_device(self) -> torch.device:
        return self._device

    def _autocast(self) -> AbstractContextManager[Any]:
        if self.precision == 'fp32':
            return nullcontext()
        dtype = torch.bfloat16 if self.precision == 'bf16' else torch.float16
        return torch.autocast(self._device.type, dtype=dtype)

    def run_tensor(self, inputs: torch.Tensor) -> torch.Tensor:
        c, s = self.config.in_chans, self.config.img_size
        if inputs.ndim != 4 or tuple(inputs.shape[1:]) != (c, s, s):
            raise BackendError(f'expected input [N, {c}, {s}, {s}], got {list(inputs.shape)}')
        if inputs.dtype != torch.float32:
            raise BackendError(f'expected float32 input, got {inputs.dtype}')
        with torch.inference_mode(), self._autocast():
            x = inputs.to(self._device, non_blocking=True)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            return self.model(x).float()

    def _run(self, inputs: np.ndarray) -> np.ndarray:
        return self.run_tensor(torch.from_numpy(inputs)).cpu().numpy()

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            'torch': torch.__version__,
            'threads': torch.get_num_threads(),
            'channels_last': self.channels_last,
        }


def torch_backend_factory(precision: Precision = 'fp32') -> BackendFactory:
    """A factory of :class:`TorchBackend` at ``precision`` (the core's default: fp32)."""
    check_precision(precision)

    def build(model: LoadedModel) -> Backend:
        return TorchBackend(model, precision)

    return build
