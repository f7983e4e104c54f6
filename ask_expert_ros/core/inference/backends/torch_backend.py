"""The torch backends: the timm model eager under autocast, and compiled by inductor.

Both are registered as ``'torch'`` and ``'torch_compile'`` by
:mod:`~ask_expert_ros.core.inference.backends.registry`; torch is a core dependency,
so they live in the core beside the interface.
"""

from __future__ import annotations

import copy
import ctypes
import importlib.util
import logging
import os
import shutil
import sysconfig
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ask_expert_ros.core.inference.backends.base import (
    Backend,
    BackendError,
    BackendFactory,
    BackendOptions,
    BackendUnavailableError,
    Precision,
    check_precision,
    default_cache_dir,
)
from ask_expert_ros.core.inference.models import LoadedModel
from ask_expert_ros.core.inference.patches import AttentionSource, AttentionTap, forward_tokens

logger = logging.getLogger(__name__)


class TorchBackend(Backend):
    """The timm model itself, under ``torch.inference_mode``.

    ``bf16`` runs under CPU or CUDA autocast (bfloat16 matmuls, float32 softmax and
    norms); ``fp16`` under CUDA autocast only. ``fp32`` holds the model module itself,
    so changes to its weights take effect on the next call. ``bf16`` and ``fp16`` hold
    a copy whose matmul layers keep their weights cast (autocast would cast them at
    every call; the logits are the same bit for bit): build a new backend after
    changing the weights.

    Args:
        model: The loaded model (eval mode, on its device).
        precision: ``'fp32'``, ``'bf16'`` or ``'fp16'``; ``'auto'`` is resolved by
            :func:`~ask_expert_ros.core.inference.backends.auto.pick_default`, not here.
        channels_last: Feed the patch convolution channels-last input.
    """

    kind = 'torch'

    def __init__(
        self, model: LoadedModel, precision: Precision = 'fp32', channels_last: bool = False
    ) -> None:
        check_precision(precision)
        self.config = model.config
        self._device = next(model.model.parameters()).device
        self.device = str(self._device)
        if precision == 'auto':
            raise BackendError("TorchBackend needs a concrete precision; resolve 'auto' first")
        if precision == 'fp16' and self._device.type != 'cuda':
            raise BackendError(
                'fp16 autocast needs a CUDA device; on CPU use bf16 (CPUs with avx512_bf16 '
                'or AMX) or fp32'
            )
        self.model = (
            model.model
            if precision == 'fp32'
            else _low_precision_copy(model.model, _AUTOCAST_DTYPES[precision])
        )
        self.precision = precision
        self.channels_last = channels_last

    @property
    def input_device(self) -> torch.device:
        return self._device

    @property
    def owns_weights(self) -> bool:
        """bf16/fp16 run their own low-precision copy, fp32 the model module itself."""
        return self.precision != 'fp32'

    def _autocast(self) -> AbstractContextManager[Any]:
        if self.precision == 'fp32':
            return nullcontext()
        return torch.autocast(self._device.type, dtype=_AUTOCAST_DTYPES[self.precision])

    def run_tensor(self, inputs: torch.Tensor) -> torch.Tensor:
        self.check_tensor(inputs)
        with torch.inference_mode(), self._autocast():
            x = inputs.to(self._device, non_blocking=True)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            return self._forward(x).float()

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        """The model on a checked input, inside inference mode and autocast."""
        return self.model(x)

    def run_tensor_with_attention(
        self, inputs: torch.Tensor, source: AttentionSource = 'last'
    ) -> tuple[torch.Tensor, torch.Tensor]:
        c, s = self.config.in_chans, self.config.img_size
        if inputs.ndim != 4 or tuple(inputs.shape[1:]) != (c, s, s):
            raise BackendError(f'expected input [N, {c}, {s}, {s}], got {list(inputs.shape)}')
        with torch.inference_mode(), self._autocast():
            logits, scores = self._forward_tapped(inputs.to(self._device), source)
            return logits.float(), scores.float()

    def _forward_tapped(
        self, x: torch.Tensor, source: AttentionSource
    ) -> tuple[torch.Tensor, torch.Tensor]:
        taps = self.__dict__.setdefault('_taps', {})
        if source not in taps:
            taps[source] = AttentionTap(self.model, source)
        return taps[source](x)

    def run_tokens(
        self, patches: torch.Tensor, indices: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> torch.Tensor:
        c, p = self.config.in_chans, self.config.patch_size
        if patches.ndim != 5 or tuple(patches.shape[2:]) != (c, p, p):
            raise BackendError(
                f'expected patches [B, n, {c}, {p}, {p}], got {list(patches.shape)}'
            )
        with torch.inference_mode(), self._autocast():
            out = forward_tokens(
                self.model,
                patches.to(self._device),
                indices.to(self._device),
                None if lengths is None else lengths.to(self._device),
            )
            return out.float()

    def _run(self, inputs: np.ndarray) -> np.ndarray:
        return self.run_tensor(torch.from_numpy(inputs)).cpu().numpy()

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            'torch': torch.__version__,
            'threads': torch.get_num_threads(),
            'channels_last': self.channels_last,
        }


_AUTOCAST_DTYPES = {'bf16': torch.bfloat16, 'fp16': torch.float16}


def _low_precision_copy(module: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """A copy of ``module`` whose Linear and Conv2d layers hold ``dtype`` weights.

    Autocast runs these layers in ``dtype`` and casts their fp32 weights at every call
    (DeiT-4H: 38 MB read and 19 MB written per call); holding them cast gives the same
    logits bit for bit (norms and softmax still run in fp32) and measured 13-15 % faster
    at batch 1 and 5 % at batch 10 (DeiT-3H and DeiT-4H, bf16, this project's CPU).
    """
    # the matmul weights are cast straight into the copy (deepcopy's memo hands them
    # over), so no second fp32 copy is made: it would be freed, but not all of it handed
    # back to the system (DeiT-3H: 17.8 MB held after the node's release, measured)
    memo: dict[int, Any] = {}
    for layer in module.modules():
        if isinstance(layer, (torch.nn.Linear, torch.nn.Conv2d)):
            for param in layer.parameters(recurse=False):
                memo[id(param)] = torch.nn.Parameter(
                    param.detach().to(dtype), requires_grad=param.requires_grad
                )
    return copy.deepcopy(module, memo)


def compile_missing(device: str | torch.device = 'cpu') -> str | None:
    """Why ``torch.compile`` cannot build code for ``device`` here, or None if it can.

    On CPU inductor writes C++ and builds it as a Python extension: it needs a C++
    compiler (``$CXX``, ``g++`` or ``clang++``) and the Python headers. On CUDA it
    writes Triton kernels.
    """
    dev = torch.device(device)
    if dev.type == 'cuda':
        if importlib.util.find_spec('triton') is None:
            return 'torch.compile on CUDA needs triton (pip install triton)'
        return None
    compilers = [c for c in (os.environ.get('CXX'), 'g++', 'clang++') if c]
    if not any(shutil.which(c) for c in compilers):
        return (
            'torch.compile on CPU needs a C++ compiler (g++ or clang++; set CXX to another); '
            'apt-get install g++, or use backend torch'
        )
    header = Path(sysconfig.get_paths()['include']) / 'Python.h'
    if not header.is_file():
        return f'torch.compile on CPU needs the Python headers ({header}): install python3-dev'
    return None


_compiled_graphs = 0


def _allow_graphs(count: int) -> None:
    """Raise dynamo's per-function graph limit to fit ``count`` more graphs.

    Every model of a timm class shares one ``forward``, and dynamo keeps at most
    ``recompile_limit`` (8) graphs per function: past that it silently runs the model
    eagerly. Measured: the fifth compiled DeiT ran at eager speed. An expert node
    compiles two graphs for each of its experts, so the limit grows with them.
    """
    import torch._dynamo.config as dynamo_config

    global _compiled_graphs
    _compiled_graphs += count
    need = _compiled_graphs + 8
    for name in ('recompile_limit', 'accumulated_recompile_limit'):
        if getattr(dynamo_config, name, need) < need:
            setattr(dynamo_config, name, need)


class CompiledTorchBackend(TorchBackend):
    """:class:`TorchBackend` through ``torch.compile`` (inductor) with frozen weights.

    Inductor folds the weights into the generated code (``freezing``), pre-packs them
    for oneDNN and fuses the element-wise work around the matmuls; with ``bf16`` the
    casts to bfloat16 are folded too. Two graphs are built: one specialised for batch
    1 (the edge's frame-by-frame case, the fastest), one with a dynamic batch axis for
    every other size, so micro-batches of any size never recompile. Each is compiled
    on its first call; :meth:`warmup` builds both at start. For DeiT-3H bf16 on 2 cores
    that took 95 s into an empty inductor cache and 30-55 s with the cache of an
    earlier build (``cache_dir``).

    Because the weights are frozen into the compiled code, later changes to the
    module's weights are not seen: build a new backend after loading new weights.

    Args:
        model: The loaded model (eval mode, on its device).
        precision: ``'fp32'``, ``'bf16'`` or ``'fp16'`` (CUDA), run under autocast.
        max_autotune: Let inductor time its own C++ (CPU) or Triton (CUDA) matmul
            kernels against the library ones for the batch-1 graph. None (default):
            on for CPU, where it costs about 3 s more build and made DeiT-3H bf16 at
            batch 1 2.83x eager fp32 instead of 1.95x (AMX micro-kernels for the small
            matmuls; no gain for fp32); off for CUDA, where its Triton search takes
            minutes and was not measured here.
        cache_dir: Inductor's on-disk cache while building (generated code, compiled
            kernels, autotuning results), so a restarted node builds faster. None:
            ``TORCHINDUCTOR_CACHE_DIR`` if set, else inductor's default under ``/tmp``
            (lost at reboot). A ``TORCHINDUCTOR_CACHE_DIR`` set at start wins.

    Raises:
        BackendUnavailableError: No C++ compiler / Python headers (CPU) or no
            triton (CUDA); at the first call, a compile that fails on this machine.
    """

    kind = 'torch_compile'

    def __init__(
        self,
        model: LoadedModel,
        precision: Precision = 'bf16',
        max_autotune: bool | None = None,
        cache_dir: Path | None = None,
    ) -> None:
        super().__init__(model, precision)
        missing = compile_missing(self._device)
        if missing is not None:
            raise BackendUnavailableError(missing)
        if max_autotune is None:
            max_autotune = self._device.type == 'cpu'
        self.max_autotune = max_autotune
        chosen = _user_inductor_cache() or cache_dir
        self.cache_dir = Path(chosen) if chosen else None
        # inductor settings for each graph's build; applied with config.patch around the
        # first call (torch.compile's options= does not reach freezing, measured: 1.4x
        # instead of 2x over eager)
        freeze: dict[str, Any] = {'freezing': True}
        single = dict(freeze)
        if max_autotune:
            single['max_autotune'] = True
            # inductor prints every matmul's timing table to stderr: not in a node's log
            single['autotune_num_choices_displayed'] = 0
            single['max_autotune_report_choices_stats'] = False
            if self._device.type == 'cpu':
                single['max_autotune_gemm_backends'] = 'CPP,ATEN'
        self._settings = {'batch-1': single, 'dynamic-batch': freeze}
        self._graphs = {
            'batch-1': torch.compile(self.model, dynamic=False),
            'dynamic-batch': torch.compile(self.model, dynamic=True),
        }
        self._built: set[str] = set()
        _allow_graphs(2)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        name = 'batch-1' if x.shape[0] == 1 else 'dynamic-batch'
        if name in self._built:
            return self._graphs[name](x)
        import torch._inductor.config as inductor_config

        start = time.perf_counter()
        try:
            with inductor_config.patch(self._settings[name]), _inductor_cache(self.cache_dir):
                out = self._graphs[name](x)
        except Exception as exc:  # inductor raises many types; all mean "cannot build here"
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ''
            raise BackendUnavailableError(
                f'torch.compile could not build the {name} graph of {self.config.variant} '
                f'on {self.device} ({type(exc).__name__}: {first[:300]}); use backend torch'
            ) from exc
        self._built.add(name)
        logger.info(
            'torch.compile built the %s graph of %s (%s, %s) in %.1f s',
            name,
            self.config.variant,
            self.device,
            self.precision,
            time.perf_counter() - start,
        )
        return out

    def _forward_tapped(
        self, x: torch.Tensor, source: AttentionSource
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The attention-returning model, compiled on first use per source and batch shape
        kind like the plain one (an edge in patch mode runs only this one)."""
        name = f'{source}-{"batch-1" if x.shape[0] == 1 else "dynamic-batch"}'
        graphs = self.__dict__.setdefault('_tapped_graphs', {})
        if name not in graphs:
            graphs[name] = torch.compile(AttentionTap(self.model, source), dynamic=x.shape[0] != 1)
            _allow_graphs(1)
        if name in self._built:
            return graphs[name](x)
        import torch._inductor.config as inductor_config

        settings = self._settings['batch-1' if x.shape[0] == 1 else 'dynamic-batch']
        start = time.perf_counter()
        try:
            with inductor_config.patch(settings), _inductor_cache(self.cache_dir):
                out = graphs[name](x)
        except Exception as exc:  # inductor raises many types; all mean "cannot build here"
            raise BackendUnavailableError(
                f'torch.compile could not build the {name} attention graph of '
                f'{self.config.variant} ({type(exc).__name__}); use backend torch'
            ) from exc
        self._built.add(name)
        logger.info(
            'torch.compile built the %s graph in %.1f s', name, time.perf_counter() - start
        )
        return out

    def warmup(self, batch_sizes: Sequence[int] = (1,)) -> None:
        """Build both graphs now, whatever sizes are asked for: a node that batches the
        frames it has (the DDS edge node does) must not compile for a minute mid-stream."""
        super().warmup(sorted({1, 2, *batch_sizes}))

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            'max_autotune': self.max_autotune,
            'inductor_cache': str(self.cache_dir) if self.cache_dir else None,
            'graphs_built': sorted(self._built),
        }


def torch_backend_factory(precision: Precision = 'fp32') -> BackendFactory:
    """A factory of :class:`TorchBackend` at ``precision`` (the core's default: fp32)."""
    check_precision(precision)

    def build(model: LoadedModel) -> Backend:
        return TorchBackend(model, precision)

    return build


@contextmanager
def _inductor_cache(directory: Path | None) -> Iterator[None]:
    """Inductor's cache in ``directory`` for the duration (it reads the environment)."""
    if directory is None:
        yield
        return
    before = os.environ.get('TORCHINDUCTOR_CACHE_DIR')
    os.environ['TORCHINDUCTOR_CACHE_DIR'] = str(directory)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop('TORCHINDUCTOR_CACHE_DIR', None)
        else:
            os.environ['TORCHINDUCTOR_CACHE_DIR'] = before


def _user_inductor_cache() -> str | None:
    """``TORCHINDUCTOR_CACHE_DIR`` if the user chose it; inductor writes its own default
    there at first use (importing timm is enough), and that one does not count."""
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    value = os.environ.get('TORCHINDUCTOR_CACHE_DIR')
    if not value or os.path.abspath(value) == os.path.abspath(default_cache_dir()):
        return None
    return value


def release_openmp_threads() -> bool:
    """Let go of the calling thread's idle OpenMP worker threads (GNU libgomp).

    Call it in a thread that built and warmed up models before another thread runs
    them (the rclpy expert node's batch worker). While the idle pool exists, libgomp
    counts more threads than cores and stops spinning between parallel regions, so
    every small op of the other thread waits for a futex wake-up. Measured here:
    DeiT-4H bf16 at batch 1 took 41-47 ms in a worker thread after the main thread
    had run it, 22 ms after this call (19-21 ms in a single thread). The pool comes
    back if the calling thread runs torch again.

    Returns:
        True if libgomp is loaded (torch's pip and Jetson wheels) and released the
        pool; False otherwise (another OpenMP runtime, or none), where nothing is done.
    """
    try:
        with open('/proc/self/maps', encoding='utf-8') as maps:
            paths = {line.split()[-1] for line in maps if 'libgomp' in line}
    except OSError:
        return False
    if not paths:
        return False
    gomp = ctypes.CDLL(sorted(paths)[0])
    gomp.omp_pause_resource_all.argtypes = [ctypes.c_int]
    return bool(gomp.omp_pause_resource_all(_OMP_PAUSE_SOFT) == 0)


_OMP_PAUSE_SOFT = 1  # omp_pause_resource_t: keep the runtime, drop the idle threads


def trim_heap() -> bool:
    """Hand freed heap memory back to the system (glibc ``malloc_trim``); False where
    the C library is not glibc (nothing is done)."""
    try:
        libc = ctypes.CDLL('libc.so.6')
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return False
    trim.argtypes = [ctypes.c_size_t]
    return bool(trim(0))


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


def torch_precisions(device: str) -> tuple[str, ...]:
    """Precisions :class:`TorchBackend` runs on ``device`` here."""
    dev = torch.device(device)
    if dev.type == 'cpu':
        return ('fp32', 'bf16') if cpu_has_bf16() else ('fp32',)
    if dev.type == 'cuda' and torch.cuda.is_available():
        return ('fp32', 'fp16', 'bf16')
    return ()


def torch_ready(model: LoadedModel, precision: str, options: BackendOptions) -> str | None:
    """The eager backend is always ready: nothing to build before the first frame."""
    return None


def compiled_precisions(device: str) -> tuple[str, ...]:
    """Precisions :class:`CompiledTorchBackend` builds for ``device`` here."""
    usable = torch_precisions(device)
    return usable if usable and compile_missing(device) is None else ()


def _on_device(model: LoadedModel, device: str) -> LoadedModel:
    if next(model.model.parameters()).device != torch.device(device):
        model.model.to(device)
    return model


def create_torch_backend(
    model: LoadedModel, precision: str, options: BackendOptions
) -> TorchBackend:
    """The registered ``'torch'`` builder: the model moved to the device, run in place."""
    return TorchBackend(_on_device(model, options.device), precision)  # type: ignore[arg-type]


def create_compiled_backend(
    model: LoadedModel, precision: str, options: BackendOptions
) -> CompiledTorchBackend:
    """The registered ``'torch_compile'`` builder; inductor caches under ``cache_dir``."""
    cache = Path(options.cache_dir) if options.cache_dir else default_cache_dir()
    return CompiledTorchBackend(
        _on_device(model, options.device),
        precision,  # type: ignore[arg-type]
        cache_dir=cache / 'inductor',
    )
