"""ONNX Runtime backend: CPU, CUDA and TensorRT execution providers.

Session options: all graph optimisations, sequential execution, ``intra_op`` threads
= torch's thread count unless given (so ``OMP_NUM_THREADS`` bounds the whole
process), one inter-op thread. The batch axis is dynamic.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ask_expert_ros.core.errors import InferenceError
from ask_expert_ros.core.inference.backends import (
    Backend,
    BackendError,
    BackendOptions,
    BackendUnavailableError,
    Precision,
)
from ask_expert_ros.core.inference.models import LoadedModel, ModelConfig
from ask_expert_ros.runtime.onnx_export import (
    INPUT_NAME,
    export_onnx,
    export_onnx_bytes,
    find_cached,
    model_hash,
)

logger = logging.getLogger(__name__)

try:
    import onnxruntime as ort
except ImportError:  # optional dependency: pip install ask_expert_ros[onnx]
    ort = None


def ort_providers() -> list[str]:
    """Execution providers this onnxruntime build offers ([] without onnxruntime)."""
    return list(ort.get_available_providers()) if ort is not None else []


def _providers(
    device: str, precision: str, cache_dir: Path | None
) -> list[str | tuple[str, dict[str, Any]]]:
    available = ort_providers()
    dev = torch.device(device)
    if dev.type == 'cpu':
        if precision != 'fp32':
            raise BackendUnavailableError(
                f'onnxruntime on CPU runs fp32 only, not {precision}; use the torch backend '
                'for bf16'
            )
        return ['CPUExecutionProvider']
    if dev.type != 'cuda':
        raise BackendError(f'onnxruntime backend runs on cpu or cuda, not {device!r}')
    index = dev.index or 0
    if precision == 'fp32':
        if 'CUDAExecutionProvider' not in available:
            raise BackendUnavailableError(
                f'onnxruntime has no CUDAExecutionProvider (available: {available}); '
                'install onnxruntime-gpu'
            )
        return [('CUDAExecutionProvider', {'device_id': index}), 'CPUExecutionProvider']
    if precision == 'fp16':
        if 'TensorrtExecutionProvider' not in available:
            raise BackendUnavailableError(
                'onnxruntime fp16 needs the TensorrtExecutionProvider '
                f'(available: {available}); install onnxruntime-gpu with TensorRT'
            )
        trt_options: dict[str, Any] = {'device_id': index, 'trt_fp16_enable': True}
        if cache_dir is not None:
            trt_options |= {
                'trt_engine_cache_enable': True,
                'trt_engine_cache_path': str(cache_dir),
            }
        return [
            ('TensorrtExecutionProvider', trt_options),
            ('CUDAExecutionProvider', {'device_id': index}),
            'CPUExecutionProvider',
        ]
    raise BackendUnavailableError(f'onnxruntime backend has no {precision} mode on {device}')


class OrtBackend(Backend):
    """An ONNX Runtime session over an exported model.

    Args:
        onnx_model: Path of the ``.onnx`` file, or its bytes.
        config: The model's config (from the file's metadata or the model file).
        device: ``'cpu'`` or ``'cuda[:i]'``.
        precision: ``'fp32'`` (CPU/CUDA EP) or ``'fp16'`` (TensorRT EP).
        threads: intra-op threads; None: ``torch.get_num_threads()``.
        cache_dir: Engine cache of the TensorRT execution provider.
    """

    kind = 'onnxruntime'

    def __init__(
        self,
        onnx_model: str | Path | bytes,
        config: ModelConfig,
        *,
        device: str = 'cpu',
        precision: Precision = 'fp32',
        threads: int | None = None,
        cache_dir: Path | None = None,
    ) -> None:
        if ort is None:
            raise BackendUnavailableError(
                'onnxruntime is not installed: pip install onnxruntime (CPU) or '
                'onnxruntime-gpu, or pip install ask_expert_ros[onnx]'
            )
        if threads is not None and threads < 1:
            raise BackendError(f'threads must be >= 1, got {threads}')
        self.config = config
        self.device = device
        self.precision = precision
        self.source = str(onnx_model) if isinstance(onnx_model, (str, Path)) else '<memory>'
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        providers = _providers(device, precision, cache_dir)
        model_arg = str(onnx_model) if isinstance(onnx_model, Path) else onnx_model
        try:
            self.session = ort.InferenceSession(model_arg, options, providers=providers)
        except Exception as exc:  # ORT raises its own untyped errors (bad file, bad EP)
            raise BackendError(f'onnxruntime cannot load {self.source}: {exc}') from exc
        inputs = self.session.get_inputs()
        if len(inputs) != 1 or inputs[0].name != INPUT_NAME:
            raise BackendError(
                f'{self.source}: expected one input named {INPUT_NAME!r}, got '
                f'{[i.name for i in inputs]}'
            )
        shape = inputs[0].shape
        expected = [config.in_chans, config.img_size, config.img_size]
        if list(shape[1:]) != expected:
            raise BackendError(
                f'{self.source} takes input {shape}, the model config says [N, {expected}]'
            )
        self.threads = options.intra_op_num_threads

    def _run(self, inputs: np.ndarray) -> np.ndarray:
        try:
            (logits,) = self.session.run(None, {INPUT_NAME: inputs})
        except Exception as exc:  # ORT's errors (Fail, EPFail, ...) derive from Exception only
            raise InferenceError(f'onnxruntime failed on a batch of {len(inputs)}: {exc}') from exc
        return logits

    @property
    def owns_weights(self) -> bool:
        return True

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            'providers': self.session.get_providers(),
            'onnxruntime': ort.__version__ if ort is not None else None,
            'intra_op_threads': self.threads,
            'onnx': self.source,
        }


def ort_precisions(device: str) -> tuple[str, ...]:
    """Precisions ONNX Runtime runs on ``device`` here (the registry's probe):
    fp32 on the CPU or CUDA provider, fp16 through the TensorRT provider."""
    providers = ort_providers()
    dev = torch.device(device)
    if dev.type == 'cpu':
        return ('fp32',) if 'CPUExecutionProvider' in providers else ()
    if dev.type != 'cuda' or not torch.cuda.is_available():
        return ()
    out = ['fp32'] if 'CUDAExecutionProvider' in providers else []
    return (*out, 'fp16') if 'TensorrtExecutionProvider' in providers else tuple(out)


def ort_ready(model: LoadedModel, precision: str, options: BackendOptions) -> str | None:
    """None if an exported ONNX file of this model is at hand (``'auto'`` loads it in a
    second), else why not (exporting takes seconds to minutes)."""
    sha = model_hash(model)
    dirs = [*options.search_dirs, *([options.cache_dir] if options.cache_dir else [])]
    if any(find_cached(d, sha) is not None for d in dirs):
        return None
    return 'no exported ONNX file of this model (ask-expert export)'


def create_ort_backend(model: LoadedModel, precision: str, options: BackendOptions) -> OrtBackend:
    """The registered ``'onnxruntime'`` builder: an exported ONNX file of this model found
    in ``search_dirs`` or ``cache_dir`` (by model hash), else exported there, else in memory."""
    sha = model_hash(model)
    cache_dir = options.cache_dir
    dirs = [*options.search_dirs, *([cache_dir] if cache_dir else [])]
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
        device=options.device,
        precision=precision,  # type: ignore[arg-type]
        threads=options.threads,
        cache_dir=cache_dir,
    )
