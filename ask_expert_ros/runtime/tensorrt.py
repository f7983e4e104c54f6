"""Native TensorRT backend (Jetson, CUDA GPUs): engines built from the exported ONNX.

An engine is only valid for the GPU model and TensorRT version that built it, so the
cache file name is a key over the model hash, the GPU name, the TensorRT version,
the precision and the batch range (:func:`engine_cache_key`). Building takes
minutes on a Jetson; later starts load the cached engine in a second.

``tensorrt`` is an optional import: without it (or without a GPU) every entry point
raises :class:`BackendUnavailableError` naming what is missing, after the ONNX file
the engine would be built from has been written.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
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
    default_cache_dir,
)
from ask_expert_ros.core.inference.models import LoadedModel
from ask_expert_ros.runtime.onnx_export import INPUT_NAME, OUTPUT_NAME, export_onnx, model_hash

logger = logging.getLogger(__name__)

try:
    import tensorrt as trt
except ImportError:  # JetPack ships it; pip wheels exist for x86 CUDA machines
    trt = None

DEFAULT_MAX_BATCH = 32


def tensorrt_version() -> str | None:
    """The installed TensorRT version, None without the ``tensorrt`` package."""
    return str(trt.__version__) if trt is not None else None


def tensorrt_missing(device: str = 'cuda') -> str | None:
    """Why TensorRT cannot run on ``device`` here, or None when it can."""
    if torch.device(device).type != 'cuda':
        return f'TensorRT runs on CUDA devices only, not {device!r}'
    if trt is None:
        return (
            'the tensorrt Python package is not installed (on Jetson it comes with '
            'JetPack: sudo apt install python3-libnvinfer; on x86: pip install tensorrt)'
        )
    if not torch.cuda.is_available():
        return 'no CUDA GPU is visible to torch (torch.cuda.is_available() is False)'
    return None


@dataclass(frozen=True)
class EngineKey:
    """What a serialised engine depends on.

    Attributes:
        model_sha256: Hash of the model config and weights (:func:`model_hash`).
        gpu: GPU name, e.g. ``'Orin'`` or ``'NVIDIA H200'``.
        tensorrt: TensorRT version.
        precision: ``'fp16'`` or ``'fp32'``.
        max_batch: Largest batch of the optimisation profile.
    """

    model_sha256: str
    gpu: str
    tensorrt: str
    precision: str
    max_batch: int

    def digest(self) -> str:
        """16 hex chars identifying the engine."""
        text = '|'.join(
            (self.model_sha256, self.gpu, self.tensorrt, self.precision, str(self.max_batch))
        )
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def file_name(self, stem: str) -> str:
        return f'{stem}.{self.digest()}.engine'


def engine_cache_key(
    model: LoadedModel,
    gpu: str,
    tensorrt_version: str,
    precision: Precision = 'fp16',
    max_batch: int = DEFAULT_MAX_BATCH,
) -> EngineKey:
    """The cache key of ``model``'s engine for this GPU and TensorRT version."""
    if precision not in ('fp16', 'fp32'):
        raise BackendError(f'TensorRT engines are built fp16 or fp32, not {precision!r}')
    if max_batch < 1:
        raise BackendError(f'max_batch must be >= 1, got {max_batch}')
    if not gpu or not tensorrt_version:
        raise BackendError('the engine cache key needs the GPU name and the TensorRT version')
    return EngineKey(model_hash(model), gpu, tensorrt_version, precision, max_batch)


def build_engine(
    model: LoadedModel,
    cache_dir: Path,
    *,
    device: str = 'cuda',
    precision: Precision = 'fp16',
    max_batch: int = DEFAULT_MAX_BATCH,
    stem: str | None = None,
) -> Path:
    """The cached engine for ``model`` on this GPU, building it from ONNX if needed.

    The ONNX file is written to ``cache_dir`` first, so it exists even where
    TensorRT is missing (to build the engine on the target with ``trtexec``).

    Raises:
        BackendUnavailableError: No TensorRT or no GPU here; the message says which.
        BackendError: The ONNX parser or the builder failed.
    """
    cache_dir = Path(cache_dir)
    onnx_path = export_onnx(model, cache_dir, stem)
    missing = tensorrt_missing(device)
    if missing:
        raise BackendUnavailableError(
            f'cannot build a TensorRT engine: {missing}. The ONNX model is at {onnx_path}'
        )
    assert trt is not None  # tensorrt_missing checked it
    dev = torch.device(device)
    key = engine_cache_key(
        model, torch.cuda.get_device_name(dev), str(trt.__version__), precision, max_batch
    )
    path = cache_dir / key.file_name(stem or onnx_path.name.split('.')[0])
    if path.is_file():
        logger.info('TensorRT engine cache hit: %s', path)
        return path
    logger.info('building TensorRT %s engine for %s (minutes on a Jetson)', precision, onnx_path)
    trt_logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(trt_logger)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, trt_logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise BackendError(f'TensorRT cannot parse {onnx_path}: {errors}')
    config = builder.create_builder_config()
    if precision == 'fp16':
        config.set_flag(trt.BuilderFlag.FP16)
    cfg = model.config
    chw = (cfg.in_chans, cfg.img_size, cfg.img_size)
    profile = builder.create_optimization_profile()
    profile.set_shape(INPUT_NAME, (1, *chw), (1, *chw), (max_batch, *chw))
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise BackendError(f'TensorRT failed to build an engine from {onnx_path}')
    tmp = path.with_suffix('.engine.tmp')
    tmp.write_bytes(bytes(serialized))
    tmp.replace(path)
    logger.info('wrote TensorRT engine %s', path)
    return path


class TensorRTBackend(Backend):
    """A deserialised TensorRT engine; buffers are torch CUDA tensors.

    Args:
        model: The model (its hash keys the engine cache).
        cache_dir: Where ONNX files and engines are kept.
        device: ``'cuda'`` or ``'cuda:i'``.
        precision: ``'fp16'`` (default) or ``'fp32'``.
        max_batch: Largest batch the engine accepts.
    """

    kind = 'tensorrt'

    def __init__(
        self,
        model: LoadedModel,
        cache_dir: Path,
        *,
        device: str = 'cuda',
        precision: Precision = 'fp16',
        max_batch: int = DEFAULT_MAX_BATCH,
    ) -> None:
        self.config = model.config
        self.device = device
        self.precision = precision
        self.max_batch = max_batch
        self.engine_path = build_engine(
            model, cache_dir, device=device, precision=precision, max_batch=max_batch
        )
        assert trt is not None  # build_engine raised otherwise
        self._device = torch.device(device)
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = runtime.deserialize_cuda_engine(self.engine_path.read_bytes())
        if self.engine is None:
            raise BackendError(f'TensorRT cannot load {self.engine_path}; delete it to rebuild')
        self.context = self.engine.create_execution_context()
        self.stream = torch.cuda.Stream(self._device)

    @property
    def input_device(self) -> torch.device:
        return self._device

    @property
    def owns_weights(self) -> bool:
        return True

    def run_tensor(self, inputs: torch.Tensor) -> torch.Tensor:
        n = len(inputs)
        if n == 0:
            return torch.zeros((0, self.config.num_classes), device=self._device)
        outputs = []
        for chunk in inputs.split(self.max_batch):
            x = chunk.to(self._device, torch.float32).contiguous()
            y = torch.empty((len(x), self.config.num_classes), device=self._device)
            self.context.set_input_shape(INPUT_NAME, tuple(x.shape))
            self.context.set_tensor_address(INPUT_NAME, x.data_ptr())
            self.context.set_tensor_address(OUTPUT_NAME, y.data_ptr())
            self.stream.wait_stream(torch.cuda.current_stream(self._device))
            if not self.context.execute_async_v3(self.stream.cuda_stream):
                raise InferenceError(f'TensorRT execution failed on a batch of {len(x)}')
            torch.cuda.current_stream(self._device).wait_stream(self.stream)
            outputs.append(y)
        return torch.cat(outputs).float()

    def _run(self, inputs: np.ndarray) -> np.ndarray:
        return self.run_tensor(torch.from_numpy(inputs)).cpu().numpy()

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            'tensorrt': tensorrt_version(),
            'engine': str(self.engine_path),
            'max_batch': self.max_batch,
        }


def tensorrt_precisions(device: str) -> tuple[str, ...]:
    """Precisions a TensorRT engine runs at on ``device`` here (the registry's probe)."""
    return ('fp16', 'fp32') if tensorrt_missing(device) is None else ()


def tensorrt_ready(model: LoadedModel, precision: str, options: BackendOptions) -> str | None:
    """None if this model's engine for this GPU and TensorRT is cached (``'auto'`` loads
    it in a second), else why not (building one takes minutes)."""
    missing = tensorrt_missing(options.device)
    if missing:
        return missing
    assert trt is not None  # tensorrt_missing checked it
    cache_dir = options.cache_dir if options.cache_dir is not None else default_cache_dir()
    key = engine_cache_key(
        model,
        torch.cuda.get_device_name(torch.device(options.device)),
        str(trt.__version__),
        precision,  # type: ignore[arg-type]
    )
    if not list(Path(cache_dir).glob(f'*{key.file_name("")}')):
        return f'no cached engine in {cache_dir} (ask-expert export --format engine)'
    return None


def create_tensorrt_backend(
    model: LoadedModel, precision: str, options: BackendOptions
) -> TensorRTBackend:
    """The registered ``'tensorrt'`` builder: the engine cached under ``cache_dir``."""
    return TensorRTBackend(
        model,
        options.cache_dir if options.cache_dir is not None else default_cache_dir(),
        device=options.device,
        precision=precision,  # type: ignore[arg-type]
    )
