"""Ahead-of-time compiled models: AOTInductor packages (``.pt2``) built once, loaded fast.

``torch_compile`` is the fastest CPU backend, but it compiles at every start (30-95 s
per model). The same inductor code, compiled ahead of time by
``ask-expert export --format aoti`` (or by the first start that asks for
``backend: aoti``), loads in well under a second: a shared library with the weights
folded in (``freezing``), one package per graph:

* ``batch``: a dynamic batch axis, 1 to ``max_batch`` (every frame batch; larger batches
  run in chunks); the one graph built by default;
* ``batch1``: batch 1, static shapes, matmuls autotuned on CPU (opt-in: worth it where
  inductor's AMX micro-kernels pay at batch 1; it holds a second copy of the weights);
* ``attention``: dynamic batch, logits and the class token's attention (an edge in patch
  mode);
* ``tokens``: dynamic batch and token count, the ViT on a subset of patches (an expert in
  patch mode).

Every package records what it was built from and for, in its own metadata (read from
the archive without loading the code): the model hash (config and weights), the
precision, the graph, the largest batch, the torch version and the machine (CPU
instruction set features, or GPU name and compute capability). A package whose model
hash differs is *stale*; one built by another torch or for another machine is
*foreign* (its code may not even run here: AMX kernels on a CPU without AMX); a
package that does not open is *corrupt*. None of them is ever loaded: ``backend: aoti``
rebuilds into its cache (stale, foreign) or refuses (:class:`ArtifactError`, corrupt or
not writable), and the node falls back to the next backend; ``auto`` only considers
packages that match.

Files are named ``<stem>.<model hash 12>.<precision>.<graph>.<env 8>.pt2``, the env
digest covering torch, machine and ``max_batch``, so packages for several machines can
share one cache directory (next to the TensorRT engines, under ``cache_dir``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import torch

from ask_expert_ros.core.inference.backends.base import (
    Backend,
    BackendError,
    BackendOptions,
    BackendUnavailableError,
    check_precision,
    default_cache_dir,
)
from ask_expert_ros.core.inference.backends.torch_backend import (
    _AUTOCAST_DTYPES,
    TorchBackend,
    _low_precision_copy,
    compile_missing,
    torch_precisions,
)
from ask_expert_ros.core.inference.models import LoadedModel, load_model, model_weights_hash
from ask_expert_ros.core.inference.patches import (
    AttentionSource,
    AttentionTap,
    forward_tokens,
)

logger = logging.getLogger(__name__)

Graph = Literal['batch1', 'batch', 'attention', 'tokens']
GRAPHS: tuple[str, ...] = get_args(Graph)
FRAME_GRAPHS: tuple[str, ...] = ('batch',)
"""What ``ask-expert export --format aoti`` builds by default: whole frames, any batch.

The static, autotuned ``batch1`` graph is opt-in: on this project's AMD EPYC (avx512_bf16,
no AMX) it ran DeiT-3H at batch 1 no faster than the dynamic graph (bf16 12.4 vs 12.5 ms,
fp32 19.0 vs 19.1 ms), and each graph holds its own copy of the weights."""
DEFAULT_MAX_BATCH = 16
SUFFIX = '.pt2'
_META_PREFIX = 'ask_expert.'
_RELEVANT_CPU_FLAGS = (
    'avx2',
    'avx512f',
    'avx512bw',
    'avx512vl',
    'avx512_vnni',
    'avx512_bf16',
    'avx512_fp16',
    'amx_tile',
    'amx_bf16',
    'amx_int8',
    'asimd',
    'sve',
    'bf16',
)


class ArtifactError(BackendUnavailableError):
    """A compiled package is stale, foreign or corrupt, and was not loaded; says why."""


def machine_fingerprint(device: str = 'cpu') -> str:
    """What compiled code depends on: the CPU's vector ISA features, or the GPU and its
    compute capability. Two machines with equal fingerprints run each other's packages."""
    dev = torch.device(device)
    if dev.type == 'cuda':
        index = dev.index if dev.index is not None else torch.cuda.current_device()
        major, minor = torch.cuda.get_device_capability(index)
        return f'cuda:{torch.cuda.get_device_name(index)}:sm_{major}{minor}'
    try:
        text = Path('/proc/cpuinfo').read_text(encoding='ascii', errors='ignore')
    except OSError:
        text = ''
    flags: set[str] = set()
    for line in text.splitlines():
        if line.startswith(('flags', 'Features')):
            flags.update(line.split(':', 1)[1].split())
            break
    capability = torch.backends.cpu.get_cpu_capability()
    present = [f for f in _RELEVANT_CPU_FLAGS if f in flags]
    return f'cpu:{capability}:{"+".join(present)}'


@dataclass(frozen=True)
class ArtifactKey:
    """What one package is built from and for.

    Attributes:
        model_sha256: Hash of the model's config and weights.
        precision: ``'fp32'``, ``'bf16'`` or ``'fp16'``.
        graph: One of :data:`GRAPHS`.
        max_batch: Largest batch of the dynamic graphs.
        torch: The torch version that built it.
        machine: :func:`machine_fingerprint` of the machine it is for.
        attention: The attention source of an ``attention`` graph (else ``''``).
    """

    model_sha256: str
    precision: str
    graph: str
    max_batch: int
    torch: str
    machine: str
    attention: str = ''

    @property
    def env_digest(self) -> str:
        text = '|'.join((self.torch, self.machine, str(self.max_batch), self.attention))
        return hashlib.sha256(text.encode()).hexdigest()[:8]

    def file_name(self, stem: str) -> str:
        return (
            f'{stem}.{self.model_sha256[:12]}.{self.precision}.{self.graph}.'
            f'{self.env_digest}{SUFFIX}'
        )

    def metadata(self) -> dict[str, str]:
        return {
            f'{_META_PREFIX}{name}': str(getattr(self, name)) for name in self.__dataclass_fields__
        }

    @classmethod
    def from_metadata(cls, meta: dict[str, str]) -> ArtifactKey:
        try:
            values = {name: meta[f'{_META_PREFIX}{name}'] for name in cls.__dataclass_fields__}
            return cls(**{**values, 'max_batch': int(values['max_batch'])})  # type: ignore[arg-type]
        except (KeyError, ValueError) as exc:
            raise ArtifactError(
                f'not a package of this project (no {exc} in its metadata)'
            ) from exc


def artifact_key(
    model: LoadedModel,
    precision: str,
    graph: str,
    *,
    device: str = 'cpu',
    max_batch: int = DEFAULT_MAX_BATCH,
    attention: AttentionSource = 'last',
    sha256: str | None = None,
) -> ArtifactKey:
    """The key a package of ``model`` built here, now, would have."""
    if graph not in GRAPHS:
        raise BackendError(f'graph must be one of {list(GRAPHS)}, got {graph!r}')
    return ArtifactKey(
        model_sha256=sha256 or model_weights_hash(model),
        precision=precision,
        graph=graph,
        max_batch=max_batch,
        torch=torch.__version__,
        machine=machine_fingerprint(device),
        attention=attention if graph == 'attention' else '',
    )


def read_artifact_key(path: Path) -> ArtifactKey:
    """The key recorded in a package, read from the archive without loading its code.

    Raises:
        ArtifactError: The file is not a readable AOTInductor package of this project.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            names = [n for n in archive.namelist() if n.endswith('wrapper_metadata.json')]
            if not names:
                raise ArtifactError(f'{path} holds no AOTInductor model')
            meta = json.loads(archive.read(names[0]))
    except (OSError, zipfile.BadZipFile, ValueError, KeyError) as exc:
        raise ArtifactError(f'{path} is not a readable .pt2 package ({exc})') from exc
    if not isinstance(meta, dict):
        raise ArtifactError(f'{path}: metadata is not a table')
    try:
        return ArtifactKey.from_metadata({str(k): str(v) for k, v in meta.items()})
    except ArtifactError as exc:
        raise ArtifactError(f'{path}: {exc}') from exc


def mismatch(found: ArtifactKey, wanted: ArtifactKey) -> str | None:
    """Why a package with key ``found`` must not be used where ``wanted`` is needed."""
    if found.model_sha256 != wanted.model_sha256:
        return 'stale: built from other weights or another config'
    if found.torch != wanted.torch:
        return f'foreign: built by torch {found.torch}, this is torch {wanted.torch}'
    if found.machine != wanted.machine:
        return f'foreign: built for {found.machine}, this machine is {wanted.machine}'
    for name in ('precision', 'graph', 'attention'):
        if getattr(found, name) != getattr(wanted, name):
            return f'{name} {getattr(found, name)!r}, wanted {getattr(wanted, name)!r}'
    return None


@dataclass(frozen=True)
class Lookup:
    """Where a package for a key is, or why none can be used.

    Attributes:
        path: A matching package (None if none).
        rejected: ``(path, reason)`` for every candidate that was refused.
    """

    path: Path | None
    rejected: tuple[tuple[Path, str], ...] = ()


def find_artifact(dirs: Sequence[Path], stem: str | None, wanted: ArtifactKey) -> Lookup:
    """A package for ``wanted`` in ``dirs`` (in order), checking what each one records.

    Candidates are the files of this model hash, precision and graph (any machine), and
    files of the same ``stem`` with another model hash (stale). The first whose recorded
    key matches is returned; every other candidate is listed with the reason.
    """
    rejected: list[tuple[Path, str]] = []
    pattern = f'*.{wanted.model_sha256[:12]}.{wanted.precision}.{wanted.graph}.*{SUFFIX}'
    for directory in dirs:
        if not directory.is_dir():
            continue
        candidates = sorted(directory.glob(pattern))
        if stem is not None:
            same_stem = f'{stem}.*.{wanted.precision}.{wanted.graph}.*{SUFFIX}'
            candidates += [p for p in sorted(directory.glob(same_stem)) if p not in candidates]
        for path in candidates:
            try:
                found = read_artifact_key(path)
            except ArtifactError as exc:
                rejected.append((path, f'corrupt: {exc}'))
                continue
            why = mismatch(found, wanted)
            if why is None:
                return Lookup(path, tuple(rejected))
            rejected.append((path, why))
    return Lookup(None, tuple(rejected))


# ---------------------------------------------------------------------------
# export


class _Frames(torch.nn.Module):
    def __init__(self, model: torch.nn.Module, dtype: torch.dtype | None) -> None:
        super().__init__()
        self.model = model
        self.dtype = dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.dtype is None:
            return self.model(x)
        with torch.autocast(x.device.type, dtype=self.dtype):
            return self.model(x).float()


class _Attention(torch.nn.Module):
    def __init__(
        self, model: torch.nn.Module, dtype: torch.dtype | None, source: AttentionSource
    ) -> None:
        super().__init__()
        self.tap = AttentionTap(model, source)
        self.dtype = dtype

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.dtype is None:
            return self.tap(x)
        with torch.autocast(x.device.type, dtype=self.dtype):
            logits, scores = self.tap(x)
            return logits.float(), scores.float()


class _Tokens(torch.nn.Module):
    def __init__(self, model: torch.nn.Module, dtype: torch.dtype | None) -> None:
        super().__init__()
        self.model = model
        self.dtype = dtype

    def forward(
        self, patches: torch.Tensor, indices: torch.Tensor, lengths: torch.Tensor
    ) -> torch.Tensor:
        if self.dtype is None:
            return forward_tokens(self.model, patches, indices, lengths, masked=True)
        with torch.autocast(patches.device.type, dtype=self.dtype):
            return forward_tokens(self.model, patches, indices, lengths, masked=True).float()


def _graph_program(
    model: LoadedModel,
    graph: str,
    precision: str,
    device: torch.device,
    max_batch: int,
    attention: AttentionSource,
) -> torch.export.ExportedProgram:
    dtype = _AUTOCAST_DTYPES.get(precision)
    module = model.model if dtype is None else _low_precision_copy(model.model, dtype)
    cfg = model.config
    c, s, p = cfg.in_chans, cfg.img_size, cfg.patch_size
    n_patches = (s // p) ** 2
    dims: Any
    if graph == 'tokens':
        wrapper: torch.nn.Module = _Tokens(module, dtype)
        batch = torch.export.Dim('batch', min=1, max=max_batch)
        count = torch.export.Dim('tokens', min=1, max=n_patches)
        args: tuple[torch.Tensor, ...] = (
            torch.zeros((2, 3, c, p, p), device=device),
            torch.zeros((2, 3), dtype=torch.int64, device=device),
            torch.full((2,), 3, dtype=torch.int64, device=device),
        )
        dims = {
            'patches': {0: batch, 1: count},
            'indices': {0: batch, 1: count},
            'lengths': {0: batch},
        }
    else:
        if graph == 'attention':
            wrapper = _Attention(module, dtype, attention)
        else:
            wrapper = _Frames(module, dtype)
        rows = 1 if graph == 'batch1' else 2
        args = (torch.zeros((rows, c, s, s), device=device),)
        dims = {'x': {0: torch.export.Dim('batch', min=1, max=max_batch)}} if rows > 1 else None
    wrapper.eval()
    with torch.no_grad():
        return torch.export.export(wrapper, args, dynamic_shapes=dims)


def build_artifact(
    model: LoadedModel,
    out: Path,
    precision: str,
    graph: str,
    *,
    device: str = 'cpu',
    max_batch: int = DEFAULT_MAX_BATCH,
    stem: str | None = None,
    attention: AttentionSource = 'last',
    max_autotune: bool | None = None,
    sha256: str | None = None,
) -> Path:
    """Compile one graph of ``model`` ahead of time into ``out`` (or find it there).

    Args:
        model: The fp32 model; a low-precision copy is exported for bf16/fp16.
        out: Directory of the package (created).
        precision: ``'fp32'``, ``'bf16'`` (CPU with avx512_bf16/AMX, CUDA) or ``'fp16'``
            (CUDA).
        graph: One of :data:`GRAPHS`.
        device: Where the package runs: ``'cpu'`` or a CUDA device.
        max_batch: Largest batch of the dynamic graphs.
        stem: File name stem (default: the model file's stem, else the variant).
        attention: The source of an ``attention`` graph.
        max_autotune: Inductor's matmul autotuning for the batch-1 graphs; None: on for
            CPU (AMX/AVX-512 micro-kernels), off for CUDA.
        sha256: The model's hash, if known (saves hashing the weights again).

    Returns:
        The package's path (an existing matching one is reused).

    Raises:
        BackendUnavailableError: No compiler / this precision does not run on ``device``.
        BackendError: A bad option.
    """
    check_precision(precision)
    if precision == 'auto' or precision not in torch_precisions(device):
        raise BackendUnavailableError(f'{precision} does not run on {device} here')
    missing = compile_missing(device)
    if missing is not None:
        raise BackendUnavailableError(missing)
    if max_batch < 1:
        raise BackendError(f'max_batch must be >= 1, got {max_batch}')
    key = artifact_key(
        model,
        precision,
        graph,
        device=device,
        max_batch=max_batch,
        attention=attention,
        sha256=sha256,
    )
    stem = stem or _stem(model)
    out = Path(out)
    found = find_artifact([out], stem, key)
    if found.path is not None and read_artifact_key(found.path).max_batch == max_batch:
        return found.path
    out.mkdir(parents=True, exist_ok=True)
    dev = torch.device(device)
    start = time.perf_counter()
    program = _graph_program(model, graph, precision, dev, max_batch, attention)
    if max_autotune is None:
        max_autotune = dev.type == 'cpu'
    options: dict[str, Any] = {
        'freezing': True,
        'aot_inductor.metadata': key.metadata(),
        # weights as one blob beside the code, not in the .so: loading copied them out of
        # the library's data section and kept both resident (DeiT-3H bf16 after load:
        # 29.5 MB in the .so, 18.8 MB as a blob)
        'aot_inductor.package_constants_in_so': False,
        'aot_inductor.package_constants_on_disk_format': 'binary_blob',
    }
    if max_autotune and graph == 'batch1':
        options.update(
            max_autotune=True,
            autotune_num_choices_displayed=0,
            max_autotune_report_choices_stats=False,
        )
        if dev.type == 'cpu':
            options['max_autotune_gemm_backends'] = 'CPP,ATEN'
    path = out / key.file_name(stem)
    # compile next to the target and rename: a killed build leaves no half package
    fd, tmp = tempfile.mkstemp(prefix=f'.{path.name}.', suffix=SUFFIX, dir=out)
    os.close(fd)
    try:
        torch._inductor.aoti_compile_and_package(
            program, package_path=tmp, inductor_configs=options
        )
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp made it private; a cache is shared
        os.replace(tmp, path)
    except Exception as exc:  # inductor raises many types; all mean "cannot build here"
        Path(tmp).unlink(missing_ok=True)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ''
        raise BackendUnavailableError(
            f'AOTInductor could not build the {graph} graph of {model.config.variant} '
            f'({precision}, {device}): {type(exc).__name__}: {first[:300]}'
        ) from exc
    logger.info(
        'AOTInductor built %s in %.1f s (%s)', path.name, time.perf_counter() - start, device
    )
    return path


def export_aoti(
    model: LoadedModel,
    out: Path,
    precisions: Sequence[str],
    graphs: Sequence[str] = FRAME_GRAPHS,
    *,
    device: str = 'cpu',
    max_batch: int = DEFAULT_MAX_BATCH,
    stem: str | None = None,
    max_autotune: bool | None = None,
) -> list[Path]:
    """Every ``graph`` of ``model`` at every precision in ``precisions`` (see
    :func:`build_artifact`); returns the packages."""
    sha = model_weights_hash(model)
    return [
        build_artifact(model, out, p, g, device=device, max_batch=max_batch, stem=stem, sha256=sha)
        for p in precisions
        for g in graphs
    ]


def _stem(model: LoadedModel) -> str:
    return model.path.stem if model.path is not None else model.config.variant


# ---------------------------------------------------------------------------
# the backend


def _load_package(path: Path, device: torch.device) -> Any:
    try:
        runner = torch._inductor.aoti_load_package(
            str(path), device_index=device.index if device.index is not None else -1
        )
    except Exception as exc:  # the loader raises RuntimeError and others
        raise ArtifactError(f'{path} did not load: {type(exc).__name__}: {exc}') from exc
    return runner


class AOTIBackend(Backend):
    """A model run through its AOTInductor packages (see the module docstring).

    The backend loads the packages it is given and, for a call whose graph has no
    package (the attention scores of an edge in patch mode, the token subset of an
    expert), runs the model eagerly at the same precision, if the model's weights are
    still there. It holds the model module only for that: :attr:`owns_weights` says
    whether it can do without.

    Args:
        model: The loaded model (its config; its module for graphs without a package).
        precision: The packages' precision.
        packages: ``graph -> .pt2 path``, each checked to match ``model`` already.
        device: Where the packages run.
    The dynamic graphs take batches up to the ``max_batch`` their packages record;
    larger ones run in chunks.
    """

    kind = 'aoti'

    def __init__(
        self,
        model: LoadedModel,
        precision: str,
        packages: dict[str, Path],
        device: str = 'cpu',
    ) -> None:
        if not packages:
            raise ArtifactError('no package to load')
        self.config = model.config
        self.precision = precision
        self._device = torch.device(device)
        self.device = str(self._device)
        self.paths = dict(packages)
        self._keys = {g: read_artifact_key(p) for g, p in packages.items()}
        start = time.perf_counter()
        self._runners = {g: _load_package(p, self._device) for g, p in packages.items()}
        self.load_s = time.perf_counter() - start
        self._model = model
        self._eager: TorchBackend | None = None

    @property
    def owns_weights(self) -> bool:
        """True with every graph packaged, or when the model can be read again from its
        file for a graph that is not (the first such call pays that read)."""
        return all(g in self._runners for g in GRAPHS) or self._model.path is not None

    @property
    def input_device(self) -> torch.device:
        return self._device

    def _fallback(self, what: str) -> TorchBackend:
        if self._eager is None:
            model = self._model
            params = list(model.model.parameters())
            if not params or params[0].device.type == 'meta':
                if model.path is None:
                    raise BackendUnavailableError(
                        f'the aoti backend of {self.config.variant} has no {what} package and '
                        f'the model weights were released; export it with --graphs all'
                    )
                model = load_model(model.path, self._device)
            logger.info(
                'aoti: no %s package for %s, running that graph eagerly (%s)',
                what,
                self.config.variant,
                self.precision,
            )
            self._eager = TorchBackend(model, self.precision)  # type: ignore[arg-type]
        return self._eager

    def run_tensor(self, inputs: torch.Tensor) -> torch.Tensor:
        self.check_tensor(inputs)
        x = inputs.to(self._device).contiguous()
        n = x.shape[0]
        if n == 0:
            return torch.zeros((0, self.config.num_classes))
        with torch.inference_mode():
            if n == 1 and 'batch1' in self._runners:
                return self._runners['batch1'](x).float()
            if 'batch' not in self._runners:
                if 'batch1' in self._runners:
                    return torch.cat([self._runners['batch1'](x[i : i + 1]) for i in range(n)])
                return self._fallback('frame').run_tensor(inputs)
            runner, step = self._runners['batch'], self._keys['batch'].max_batch
            outs = [runner(x[i : i + step]) for i in range(0, n, step)]
            return (outs[0] if len(outs) == 1 else torch.cat(outs)).float()

    def _run(self, inputs: np.ndarray) -> np.ndarray:
        return self.run_tensor(torch.from_numpy(inputs)).cpu().numpy()

    def run_tensor_with_attention(
        self, inputs: torch.Tensor, source: AttentionSource = 'last'
    ) -> tuple[torch.Tensor, torch.Tensor]:
        runner = self._runners.get('attention')
        if runner is None or self._keys['attention'].attention != source:
            return self._fallback('attention').run_tensor_with_attention(inputs, source)
        self.check_tensor(inputs)
        x = inputs.to(self._device).contiguous()
        step = self._keys['attention'].max_batch
        if x.shape[0] == 0:
            grid = (self.config.img_size // self.config.patch_size) ** 2
            return torch.zeros((0, self.config.num_classes)), torch.zeros((0, grid))
        with torch.inference_mode():
            pairs = [runner(x[i : i + step]) for i in range(0, x.shape[0], step)]
        logits = torch.cat([p[0] for p in pairs]) if len(pairs) > 1 else pairs[0][0]
        scores = torch.cat([p[1] for p in pairs]) if len(pairs) > 1 else pairs[0][1]
        return logits.float(), scores.float()

    def run_tokens(
        self, patches: torch.Tensor, indices: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> torch.Tensor:
        runner = self._runners.get('tokens')
        if runner is None:
            return self._fallback('tokens').run_tokens(patches, indices, lengths)
        c, p = self.config.in_chans, self.config.patch_size
        if patches.ndim != 5 or tuple(patches.shape[2:]) != (c, p, p):
            raise BackendError(
                f'expected patches [B, n, {c}, {p}, {p}], got {list(patches.shape)}'
            )
        b, n = patches.shape[:2]
        if lengths is None:
            lengths = torch.full((b,), n, dtype=torch.int64)
        patches = patches.to(self._device, torch.float32).contiguous()
        indices = indices.to(self._device, torch.int64).contiguous()
        lengths = lengths.to(self._device, torch.int64).contiguous()
        step = self._keys['tokens'].max_batch
        with torch.inference_mode():
            outs = [
                runner(patches[i : i + step], indices[i : i + step], lengths[i : i + step])
                for i in range(0, b, step)
            ]
        return (outs[0] if len(outs) == 1 else torch.cat(outs)).float()

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            'torch': torch.__version__,
            'packages': {g: p.name for g, p in self.paths.items()},
            'load_s': round(self.load_s, 3),
            'max_batch': {g: key.max_batch for g, key in self._keys.items()},
        }


def aoti_precisions(device: str) -> tuple[str, ...]:
    """Precisions AOTInductor builds for ``device`` here (fp16 on CUDA only)."""
    usable = torch_precisions(device)
    if torch.device(device).type == 'cpu':
        usable = tuple(p for p in usable if p != 'fp16')
    return usable if usable and compile_missing(device) is None else ()


def aoti_dirs(options: BackendOptions) -> list[Path]:
    """Where packages are looked for: the cache first, then the search directories."""
    cache = Path(options.cache_dir) if options.cache_dir else default_cache_dir()
    return [cache / 'aoti', *options.search_dirs, *(d / 'aoti' for d in options.search_dirs)]


def ready_packages(
    model: LoadedModel,
    precision: str,
    options: BackendOptions,
    graphs: Sequence[str] = GRAPHS,
    max_batch: int = DEFAULT_MAX_BATCH,
    sha256: str | None = None,
) -> tuple[dict[str, Path], list[tuple[Path, str]]]:
    """The matching packages of ``model`` present now (graph -> path), and every
    package that was refused with the reason; nothing is built."""
    sha = sha256 or model_weights_hash(model)
    dirs = aoti_dirs(options)
    found: dict[str, Path] = {}
    rejected: list[tuple[Path, str]] = []
    for graph in graphs:
        key = artifact_key(
            model, precision, graph, device=options.device, max_batch=max_batch, sha256=sha
        )
        lookup = find_artifact(dirs, _stem(model), key)
        rejected.extend(lookup.rejected)
        if lookup.path is not None:
            found[graph] = lookup.path
    return found, rejected


def create_aoti_backend(model: LoadedModel, precision: str, options: BackendOptions) -> Backend:
    """The registered ``'aoti'`` builder.

    Loads the matching packages from the cache (``cache_dir/aoti``) or the search
    directories; when the frame graphs have none, builds them into the cache first
    (minutes on a small CPU, logged; ``ask-expert export --format aoti`` does it ahead
    of time). Stale, foreign and corrupt packages are never loaded (logged with the
    reason).

    Raises:
        ArtifactError: A frame package was found but cannot be loaded, or none can be
            built here; the caller falls back to another backend.
    """
    sha = model_weights_hash(model)
    found, rejected = ready_packages(model, precision, options, sha256=sha)
    for path, why in rejected:
        logger.warning('aoti: not loading %s (%s)', path, why)
    cache = (Path(options.cache_dir) if options.cache_dir else default_cache_dir()) / 'aoti'
    for graph in FRAME_GRAPHS:  # batch1, attention, tokens are used when present
        if graph in found:
            continue
        logger.warning(
            'aoti: no usable %s package of %s (%s) here; building it into %s now '
            '(ask-expert export --format aoti does this ahead of time)',
            graph,
            _stem(model),
            precision,
            cache,
        )
        try:
            found[graph] = build_artifact(
                model, cache, precision, graph, device=options.device, sha256=sha
            )
        except (BackendUnavailableError, OSError) as exc:
            raise ArtifactError(f'aoti: cannot build the {graph} package: {exc}') from exc
    return AOTIBackend(model, precision, found, device=options.device)


def aoti_ready(model: LoadedModel, precision: str, options: BackendOptions) -> str | None:
    """None if matching frame packages of ``model`` are at hand, else why not (the
    reasons of every refused package included)."""
    found, rejected = ready_packages(model, precision, options, graphs=FRAME_GRAPHS)
    if all(g in found for g in FRAME_GRAPHS):
        return None
    why = '; '.join(f'{p.name}: {r}' for p, r in rejected)
    return 'no package (ask-expert export --format aoti)' + (f'; refused {why}' if why else '')
