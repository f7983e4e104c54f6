"""The backend interface: what the engine and the expert library run models through.

A :class:`Backend` turns a preprocessed ``float32 [N, C, H, W]`` batch into
``float32 [N, num_classes]`` logits. The engine and the expert library only see this
interface and a :data:`BackendFactory`; which backends exist, and how one is chosen,
is :mod:`~ask_expert_ros.core.inference.backends.registry`'s business.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import torch

from ask_expert_ros.core.errors import AskExpertError
from ask_expert_ros.core.inference.models import LoadedModel, ModelConfig
from ask_expert_ros.core.inference.patches import AttentionSource

Precision = Literal['auto', 'fp32', 'bf16', 'fp16']
PRECISIONS: tuple[str, ...] = get_args(Precision)


class BackendError(AskExpertError, ValueError):
    """A backend cannot be built or run as asked (bad option, bad input, wrong device)."""


class BackendUnavailableError(BackendError):
    """The backend needs something this machine lacks (a package, a GPU); says what."""


def check_precision(precision: str) -> Precision:
    """``precision`` if it names one, else :class:`BackendError` listing the choices."""
    if precision not in PRECISIONS:
        raise BackendError(f'precision must be one of {list(PRECISIONS)}, got {precision!r}')
    return precision  # type: ignore[return-value]


class Backend(ABC):
    """One model, ready to run on one device at one precision.

    Attributes:
        kind: ``'torch'``, ``'torch_compile'``, ``'onnxruntime'`` or ``'tensorrt'``.
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
        """:meth:`run` for a torch tensor (no copy on CPU).

        Returns:
            float32 logits ``[N, num_classes]`` on :attr:`input_device`.
        """
        return torch.from_numpy(self.run(inputs.detach().cpu().numpy()))

    @property
    def input_device(self) -> torch.device:
        """Where the engine should prepare this backend's input tensors."""
        return torch.device('cpu')

    @property
    def owns_weights(self) -> bool:
        """Whether this backend runs without the loaded model's torch module (its own
        copy, an exported graph, an engine), so the fp32 weights may be released."""
        return False

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

    def check_tensor(self, inputs: torch.Tensor) -> None:
        """:class:`BackendError` unless ``inputs`` is a float32 ``[N, C, H, W]`` tensor of
        this model's size."""
        c, s = self.config.in_chans, self.config.img_size
        if inputs.ndim != 4 or tuple(inputs.shape[1:]) != (c, s, s):
            raise BackendError(f'expected input [N, {c}, {s}, {s}], got {list(inputs.shape)}')
        if inputs.dtype != torch.float32:
            raise BackendError(f'expected float32 input, got {inputs.dtype}')

    def run_tensor_with_attention(
        self, inputs: torch.Tensor, source: AttentionSource = 'last'
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits and the class token's attention over the patches, from one forward pass
        (what an edge in patch mode runs instead of :meth:`run_tensor`).

        Returns:
            ``(logits [N, classes], scores [N, patches])``, float32 on the CPU or
            :attr:`input_device`; scores sum to 1 per row.

        Raises:
            BackendUnavailableError: This backend cannot return attention (an exported
                graph with one output); the torch backends can.
        """
        raise BackendUnavailableError(
            f'the {self.kind} backend does not return attention; patch offload on the edge '
            f'needs backend torch or torch_compile'
        )

    def run_tokens(
        self, patches: torch.Tensor, indices: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Logits from a subset of the patches of each input.

        The torch backends run the ViT on the received tokens only
        (:func:`~ask_expert_ros.core.inference.patches.forward_tokens`). This default, for backends
        whose graph takes whole images (ONNX Runtime, TensorRT), puts the patches back in
        place on a mean-grey image (0 after normalisation) and runs the whole frame:
        same bytes on the wire, no saving in expert time.

        Args:
            patches: Normalised patches ``[B, n, C, p, p]``.
            indices: Their grid indices ``[B, n]``.
            lengths: Real patches per row when rows are padded (None: all n).
        """
        c, s, p = self.config.in_chans, self.config.img_size, self.config.patch_size
        g = s // p
        b, n = patches.shape[:2]
        valid = torch.ones((b, n), dtype=torch.bool, device=patches.device)
        if lengths is not None:
            valid = torch.arange(n, device=patches.device)[None, :] < lengths[:, None]
        grid = torch.zeros((b, g * g, c, p, p), dtype=torch.float32, device=patches.device)
        rows = torch.arange(b, device=patches.device)[:, None].expand(b, n)
        grid[rows[valid], indices[valid]] = patches[valid].float()
        image = grid.reshape(b, g, g, c, p, p).permute(0, 3, 1, 4, 2, 5).reshape(b, c, s, s)
        return self.run_tensor(image.contiguous())

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


@dataclass(frozen=True)
class BackendOptions:
    """Where and how a backend is built (the options :func:`create_backend` takes).

    Attributes:
        device: ``'cpu'``, ``'cuda'``, ``'cuda:1'`` ...
        cache_dir: Exported ONNX files, TensorRT engines, inductor's cache; None: each
            backend's default (:func:`~.base.default_cache_dir` or in memory).
        threads: ONNX Runtime intra-op threads (None: torch's thread count).
        search_dirs: Directories searched read-only for an exported file of the model.
    """

    device: str = 'cpu'
    cache_dir: Path | None = None
    threads: int | None = None
    search_dirs: tuple[Path, ...] = ()


BackendBuilder = Callable[[LoadedModel, str, BackendOptions], Backend]
"""``(model, concrete precision, options) -> Backend``: what a registered kind provides."""


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/ask_expert_ros`` (``~/.cache/ask_expert_ros``): engines, inductor."""
    base = os.environ.get('XDG_CACHE_HOME') or Path.home() / '.cache'
    return Path(base) / 'ask_expert_ros'
