"""The expert library: a manifest naming one model file per expert key, loaded lazily.

``library.yaml``::

    format: ask_expert_library
    version: 1
    k: 2
    partition:                 # the scheme S(c), inline (PartitionScheme.to_dict)
      name: digits_s4
      class_names: [zero, ...]
      class_to_subset: {zero: 1, ...}
    edge: edge.safetensors     # optional: the generalist edge model
    generalist: generalist.safetensors  # optional: a near-edge generalist of the experts'
                               # size, the "generalist co-inference" baseline
    experts:                   # key -> model file, relative to the manifest
      '1': experts/expert_1.safetensors
      '1,3': experts/expert_1_3.safetensors

An expert is loaded on first use and kept; with ``max_resident`` set, the least
recently used expert is dropped when more would be held. :meth:`ExpertLibrary.backend`
wraps each loaded expert in the library's inference backend (torch fp32 unless a
``backend_factory`` from :mod:`ask_expert_ros.runtime` is given), built once per model
and dropped with it.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import yaml

from ask_expert_ros.core.errors import ExpertNotFoundError, ModelConfigError, format_key
from ask_expert_ros.core.inference.backends import Backend, BackendFactory, torch_backend_factory
from ask_expert_ros.core.inference.models import (
    LoadedModel,
    ModelConfig,
    load_model,
    read_model_config,
)
from ask_expert_ros.core.inference.taxonomy import ExpertKey, PartitionScheme, parse_key

logger = logging.getLogger(__name__)

MANIFEST_FORMAT = 'ask_expert_library'
MANIFEST_VERSION = 1
MANIFEST_NAME = 'library.yaml'


def write_manifest(
    directory: str | Path,
    scheme: PartitionScheme,
    k: int,
    experts: Mapping[ExpertKey, str | Path],
    edge: str | Path | None = None,
    generalist: str | Path | None = None,
) -> Path:
    """Write ``directory/library.yaml``; model paths are stored relative to it."""
    directory = Path(directory).resolve()
    directory.mkdir(parents=True, exist_ok=True)

    def rel(path: str | Path) -> str:
        path = Path(path).resolve()
        try:
            return path.relative_to(directory).as_posix()
        except ValueError:
            return str(path)

    for key in experts:
        scheme.check_key(key)
    data: dict[str, Any] = {
        'format': MANIFEST_FORMAT,
        'version': MANIFEST_VERSION,
        'k': int(k),
        'partition': scheme.to_dict(),
        'experts': {','.join(map(str, key)): rel(p) for key, p in sorted(experts.items())},
    }
    if edge is not None:
        data['edge'] = rel(edge)
    if generalist is not None:
        data['generalist'] = rel(generalist)
    path = directory / MANIFEST_NAME
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding='utf-8')
    return path


def read_manifest(manifest: str | Path) -> tuple[Path, dict[str, Any]]:
    """The path and contents of a ``library.yaml``, checked: its format and a version
    this code reads. Every reader of a manifest goes through here.

    Args:
        manifest: ``library.yaml`` or the directory holding it.

    Raises:
        ModelConfigError: No manifest there, not a manifest, or a newer version.
    """
    path = Path(manifest)
    if path.is_dir():
        path = path / MANIFEST_NAME
    if not path.is_file():
        raise ModelConfigError(f'no expert library manifest at {path}')
    data = yaml.safe_load(path.read_text(encoding='utf-8'))
    if not isinstance(data, dict) or data.get('format') != MANIFEST_FORMAT:
        raise ModelConfigError(f'{path} is not an {MANIFEST_FORMAT} manifest')
    if int(data.get('version', 0)) > MANIFEST_VERSION:
        raise ModelConfigError(f'{path}: manifest version {data["version"]} is too new')
    return path, data


class ExpertLibrary:
    """Expert models by key, loaded on demand from a manifest.

    Args:
        manifest: ``library.yaml`` or the directory holding it.
        device: Where experts run.
        max_resident: Keep at most this many experts loaded (None: no limit).
        backend_factory: Builds the backend each expert runs through (None: torch fp32).
    """

    def __init__(
        self,
        manifest: str | Path,
        device: str | torch.device = 'cpu',
        max_resident: int | None = None,
        backend_factory: BackendFactory | None = None,
    ) -> None:
        path, data = read_manifest(manifest)
        if max_resident is not None and max_resident < 1:
            raise ValueError(f'max_resident must be >= 1 or None, got {max_resident}')
        self.path = path
        self.root = path.parent
        self.k = int(data['k'])
        self.scheme = PartitionScheme.from_dict(data['partition'])
        self.device = torch.device(device)
        self.max_resident = max_resident
        self._files: dict[ExpertKey, Path] = {}
        for key_text, file_name in (data.get('experts') or {}).items():
            key = parse_key(str(key_text))
            self.scheme.check_key(key)
            self._files[key] = self.root / file_name
        self.edge_path = self.root / data['edge'] if data.get('edge') else None
        self.generalist_path = self.root / data['generalist'] if data.get('generalist') else None
        self._loaded: OrderedDict[ExpertKey, LoadedModel] = OrderedDict()
        self._lock = threading.Lock()
        self.backend_factory: BackendFactory = backend_factory or torch_backend_factory()
        self._backends: dict[int, tuple[LoadedModel, Backend]] = {}

    @property
    def name(self) -> str:
        return str(self.path)

    @property
    def keys(self) -> list[ExpertKey]:
        """Keys that have a model file in the manifest."""
        return sorted(self._files, key=lambda key: (len(key), key))

    @property
    def loaded_keys(self) -> list[ExpertKey]:
        with self._lock:
            return list(self._loaded)

    def missing_keys(self) -> list[ExpertKey]:
        """Keys the router can produce with this ``k`` that have no expert."""
        return [key for key in self.scheme.expert_keys(self.k) if key not in self._files]

    def __contains__(self, key: object) -> bool:
        return key in self._files

    def path_of(self, key: ExpertKey) -> Path:
        if key not in self._files:
            raise ExpertNotFoundError(key, self.name)
        return self._files[key]

    def config_of(self, key: ExpertKey) -> ModelConfig:
        """The config of the expert for ``key`` (read from its file header once, without
        loading weights): what a patch request is checked against.

        Raises:
            ExpertNotFoundError: The manifest names no model for ``key``.
            ModelConfigError: The file is unreadable.
        """
        with self._lock:
            loaded = self._loaded.get(key)
            if loaded is not None:
                return loaded.config
            configs = self.__dict__.setdefault('_configs', {})
            if key not in configs:
                configs[key] = read_model_config(self.path_of(key))
            return configs[key]

    def input_config(self) -> ModelConfig | None:
        """The config of this library's experts, for the edge to send frames at their
        input resolution; None for a library without experts.

        Raises:
            ModelConfigError: The experts differ in input size, patch size, channels or
                resize filter, so no one resolution serves them all.
        """
        keys = self.keys
        if not keys:
            return None
        first = self.config_of(keys[0])
        for key in keys[1:]:
            other = self.config_of(key)
            fields = ('img_size', 'patch_size', 'in_chans', 'interpolation')
            if any(getattr(other, f) != getattr(first, f) for f in fields):
                raise ModelConfigError(
                    f'experts {format_key(keys[0])} and {format_key(key)} of {self.path} take '
                    f'different inputs ({first.img_size} px / patch {first.patch_size} vs '
                    f'{other.img_size} px / patch {other.patch_size}); one library serves one '
                    f'input size'
                )
        return first

    def get(self, key: ExpertKey) -> LoadedModel:
        """The expert for ``key``, loading it on first use.

        Raises:
            ExpertNotFoundError: The manifest names no model for ``key``.
            ModelConfigError: The file is unreadable or was trained for other classes.
        """
        with self._lock:
            if key in self._loaded:
                self._loaded.move_to_end(key)
                return self._loaded[key]
            loaded = self._load(key)
            self._loaded[key] = loaded
            if self.max_resident is not None:
                while len(self._loaded) > self.max_resident:
                    evicted, _ = self._loaded.popitem(last=False)
                    logger.info(
                        'expert %s evicted (max_resident=%d)',
                        format_key(evicted),
                        self.max_resident,
                    )
            return loaded

    def release(self, key: ExpertKey, model: LoadedModel | None = None) -> bool:
        """Drop the expert for ``key`` and its backend, if loaded: for a cache outside the
        library that decides residency (Ray Serve's multiplexing evicts this way).

        Args:
            model: Drop it only if this is the model loaded for ``key`` (not one loaded
                again since).

        Returns:
            Whether it was dropped.
        """
        with self._lock:
            loaded = self._loaded.get(key)
            if loaded is None or (model is not None and loaded is not model):
                return False
            del self._loaded[key]
            self._backends.pop(id(loaded), None)
        logger.info('expert %s released', format_key(key))
        return True

    def backend(self, key: ExpertKey) -> Backend:
        """The expert for ``key`` wrapped in the library's backend, built on first use.

        Raises:
            ExpertNotFoundError: The manifest names no model for ``key``.
            ModelConfigError: The file is unreadable or was trained for other classes.
            BackendError: The backend cannot be built for this expert.
        """
        model = self.get(key)
        with self._lock:
            entry = self._backends.get(id(model))
            if entry is None or entry[0] is not model:
                backend = self.backend_factory(model)
                logger.info(
                    'expert %s runs on %s %s (%s)',
                    format_key(key),
                    backend.kind,
                    backend.precision,
                    backend.device,
                )
                entry = (model, backend)
                self._backends[id(model)] = entry
            # backends of evicted experts go with them
            live = {id(m) for m in self._loaded.values()} | {id(model)}
            for stale in [k for k in self._backends if k not in live]:
                del self._backends[stale]
            return entry[1]

    def _load(self, key: ExpertKey) -> LoadedModel:
        path = self.path_of(key)
        config = read_model_config(path)
        if config.class_names != self.scheme.class_names:
            raise ModelConfigError(
                f'expert {format_key(key)} ({path}) predicts other classes than scheme '
                f'{self.scheme.name!r}'
            )
        if config.expert_key is not None and tuple(config.expert_key) != key:
            raise ModelConfigError(
                f'{path} was trained for key {format_key(config.expert_key)}, '
                f'manifest lists it as {format_key(key)}'
            )
        logger.info('loading expert %s from %s', format_key(key), path)
        return load_model(path, self.device)

    def load_edge(self, device: str | torch.device | None = None) -> LoadedModel:
        """The generalist edge model the manifest names."""
        if self.edge_path is None:
            raise ModelConfigError(f'{self.path} names no edge model')
        return load_model(self.edge_path, device or self.device)

    def load_generalist(self, device: str | torch.device | None = None) -> LoadedModel:
        """The near-edge generalist (the baseline every key could be sent to instead)."""
        if self.generalist_path is None:
            raise ModelConfigError(f'{self.path} names no near-edge generalist')
        return load_model(self.generalist_path, device or self.device)

    def generalist_library(self) -> ExpertLibrary:
        """This library with every key answered by the near-edge generalist."""
        if self.generalist_path is None:
            raise ModelConfigError(f'{self.path} names no near-edge generalist')
        return _GeneralistLibrary(self)


class _GeneralistLibrary(ExpertLibrary):
    """Every expert key maps to the one near-edge generalist, loaded once."""

    def __init__(self, base: ExpertLibrary) -> None:
        assert base.generalist_path is not None
        self.path = base.path
        self.root = base.root
        self.k = base.k
        self.scheme = base.scheme
        self.device = base.device
        self.max_resident = None
        self._files = dict.fromkeys(base.scheme.expert_keys(base.k), base.generalist_path)
        self.edge_path = base.edge_path
        self.generalist_path = base.generalist_path
        self._loaded = OrderedDict()
        self._lock = threading.Lock()
        self.backend_factory = base.backend_factory
        self._backends = {}
        self._model: LoadedModel | None = None

    @property
    def name(self) -> str:
        return f'{self.path} (generalist for every key)'

    def _load(self, key: ExpertKey) -> LoadedModel:
        if self._model is None:
            assert self.generalist_path is not None
            self._model = load_model(self.generalist_path, self.device)
        return self._model
