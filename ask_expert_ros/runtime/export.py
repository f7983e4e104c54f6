"""Export a model library (or one model) to ONNX files or TensorRT engines.

``export_library`` writes into ``out``:

* ``<stem>.<hash12>.onnx`` per model (edge, near-edge generalist, every expert), opset
  >= 17, dynamic batch, config and weight hash in the file's metadata;
* with ``fmt='engine'``, ``<stem>.<key16>.engine`` per model for this GPU/TensorRT;
* with ``fmt='aoti'``, no ONNX files but AOTInductor packages in ``aoti/``: per model,
  precision and graph, ``<stem>.<hash12>.<precision>.<graph>.<env8>.pt2``
  (:mod:`~ask_expert_ros.core.inference.backends.aoti`), for this machine and torch;
* ``runtime.yaml``: which file holds which model, and the source files;
* for a library, ``library.yaml``: the same library (model files referenced where they
  are), so a node started with ``library: <out>`` finds the exported files by hash
  and never exports at start.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from ask_expert_ros.core.errors import ModelConfigError
from ask_expert_ros.core.inference.backends import BackendUnavailableError, Precision
from ask_expert_ros.core.inference.backends.aoti import (
    FRAME_GRAPHS,
    GRAPHS,
    aoti_precisions,
    export_aoti,
)
from ask_expert_ros.core.inference.library import MANIFEST_NAME, ExpertLibrary, write_manifest
from ask_expert_ros.core.inference.models import load_model
from ask_expert_ros.core.inference.taxonomy import key_slug
from ask_expert_ros.runtime.onnx_export import DEFAULT_OPSET, export_onnx, model_hash
from ask_expert_ros.runtime.tensorrt import DEFAULT_MAX_BATCH, build_engine

logger = logging.getLogger(__name__)

ExportFormat = Literal['onnx', 'engine', 'aoti']
RUNTIME_MANIFEST = 'runtime.yaml'
RUNTIME_FORMAT = 'ask_expert_runtime'


@dataclass(frozen=True)
class ExportOptions:
    """How to export.

    Attributes:
        fmt: ``'onnx'``, ``'engine'`` (TensorRT; ONNX files are written first) or
            ``'aoti'`` (AOTInductor packages for this machine).
        opset: ONNX opset, >= 17.
        device: Device that builds engines (CUDA) or runs the packages (``'cpu'``, CUDA).
        precision: Engine precision, ``'fp16'`` or ``'fp32'``.
        max_batch: Largest batch of the engines' optimisation profile / of the
            packages' dynamic graphs.
        precisions: Package precisions (``'aoti'``); empty: every one this device runs
            (fp32 and bf16 on a CPU with avx512_bf16/AMX; fp32, fp16, bf16 on CUDA).
        graphs: Package graphs (``'aoti'``): ``batch`` (dynamic) by default; add
            ``batch1`` (static, autotuned), ``attention`` (edge in patch mode) and
            ``tokens`` (expert in patch mode).
        max_autotune: Autotune the packages' batch-1 matmuls (None: on for CPU).
    """

    fmt: ExportFormat = 'onnx'
    opset: int = DEFAULT_OPSET
    device: str = 'cuda'
    precision: Precision = 'fp16'
    max_batch: int = DEFAULT_MAX_BATCH
    precisions: tuple[str, ...] = ()
    graphs: tuple[str, ...] = FRAME_GRAPHS
    max_autotune: bool | None = None

    def __post_init__(self) -> None:
        if self.fmt not in ('onnx', 'engine', 'aoti'):
            raise ValueError(f"format must be 'onnx', 'engine' or 'aoti', got {self.fmt!r}")
        bad = [g for g in self.graphs if g not in GRAPHS]
        if bad or not self.graphs:
            raise ValueError(f'graphs must be some of {list(GRAPHS)}, got {list(self.graphs)}')
        if self.opset < 17:
            raise ValueError(f'opset must be >= 17, got {self.opset}')
        if self.max_batch < 1:
            raise ValueError(f'max_batch must be >= 1, got {self.max_batch}')


def _models_of(library: ExpertLibrary) -> dict[str, Path]:
    models: dict[str, Path] = {}
    if library.edge_path is not None:
        models['edge'] = library.edge_path
    if library.generalist_path is not None:
        models['generalist'] = library.generalist_path
    for key in library.keys:
        models[f'expert_{key_slug(key)}'] = library.path_of(key)
    return models


def export_models(models: dict[str, Path], out: Path, options: ExportOptions) -> Path:
    """Export each ``name -> model file``; returns ``out/runtime.yaml``.

    Raises:
        BackendUnavailableError: ``fmt='engine'`` without TensorRT or a GPU; the ONNX
            files and ``runtime.yaml`` are written before.
    """
    out.mkdir(parents=True, exist_ok=True)
    entries: dict[str, dict[str, Any]] = {}
    loaded = {}
    precisions = options.precisions or aoti_precisions(options.device)
    if options.fmt == 'aoti' and not precisions:
        raise BackendUnavailableError(
            f'AOTInductor cannot build for {options.device} here (no C++ compiler, or no '
            'such device)'
        )
    for name, source in models.items():
        model = load_model(source)
        loaded[name] = model
        entries[name] = {'source': str(source.resolve()), 'sha256': model_hash(model)}
        if options.fmt == 'aoti':
            packages = export_aoti(
                model,
                out / 'aoti',
                precisions,
                options.graphs,
                device=options.device,
                max_batch=options.max_batch,
                stem=name,
                max_autotune=options.max_autotune,
            )
            entries[name]['aoti'] = [f'aoti/{p.name}' for p in packages]
            continue
        onnx_path = export_onnx(model, out, stem=name, opset=options.opset)
        entries[name]['onnx'] = onnx_path.name
    manifest = out / RUNTIME_MANIFEST

    def write() -> None:
        data = {
            'format': RUNTIME_FORMAT,
            'version': 1,
            'export': options.fmt,
            'opset': options.opset,
            'models': entries,
        }
        manifest.write_text(yaml.safe_dump(data, sort_keys=False), encoding='utf-8')

    write()
    if options.fmt == 'engine':
        try:
            for name, model in loaded.items():
                engine = build_engine(
                    model,
                    out,
                    device=options.device,
                    precision=options.precision,
                    max_batch=options.max_batch,
                    stem=name,
                )
                entries[name]['engine'] = engine.name
        except BackendUnavailableError as exc:
            raise BackendUnavailableError(
                f'{exc}. ONNX files for every model are in {out} ({RUNTIME_MANIFEST}); '
                'build the engines on the target, e.g. ask-expert export --format engine there'
            ) from exc
        write()
    return manifest


def export_library(manifest: str | Path, out: str | Path, options: ExportOptions) -> Path:
    """Export every model of a library; returns ``out/library.yaml`` (see module doc)."""
    library = ExpertLibrary(manifest)
    out = Path(out)
    models = _models_of(library)
    if not models:
        raise ModelConfigError(f'{library.path} names no models to export')
    if out.resolve() != library.root.resolve():
        write_manifest(
            out,
            library.scheme,
            library.k,
            {key: library.path_of(key) for key in library.keys},
            edge=library.edge_path,
            generalist=library.generalist_path,
        )
    export_models(models, out, options)
    return out / MANIFEST_NAME


def export_model(model_file: str | Path, out: str | Path, options: ExportOptions) -> Path:
    """Export one ``.safetensors`` model; returns ``out/runtime.yaml``."""
    path = Path(model_file)
    if not path.is_file():
        raise ModelConfigError(f'model file {path} does not exist')
    return export_models({path.stem: path}, Path(out), options)
