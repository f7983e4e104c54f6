"""Class taxonomy, partition schemes S(c) and expert keys I (paper §4.3).

A :class:`PartitionScheme` splits the classes of a dataset into ``S`` disjoint
subsets numbered 1..S, as the paper does. An *expert key* is the sorted tuple of
subset ids an expert is trained for; every key with ``1 <= |I| <= k`` needs an
expert, ``sum_{i<=k} C(S, i)`` of them.

Schemes are read from small YAML files. Three shapes are accepted::

    # 1. class names -> subset id
    name: digits_s4
    class_names: [zero, one, ...]
    class_to_subset: {zero: 1, one: 2, ...}

    # 2. subset id -> class names
    class_names: [zero, one, ...]
    subsets: {1: [zero, six], 2: [one, seven], ...}

    # 3. subset id -> coarse labels (CIFAR-100 superclasses), one file may hold
    #    several named schemes under ``partitions`` (config/cifar100_hierarchy.yaml)
    fine_label_names: [...]      # or class_names
    coarse_label_names: [...]
    coarse_of_fine: [...]        # coarse id of every class
    partitions: {S4: {1: [fruit_and_vegetables, ...], ...}, S8: {...}}
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from ask_expert_ros.core.errors import PartitionError, format_key

ExpertKey = tuple[int, ...]
"""Sorted, 1-based subset ids an expert is specialised on, e.g. ``(1, 3)``."""

_CONFIG_DIR_NAME = 'config'


def config_dir() -> Path:
    """The directory holding the shipped config files.

    A wheel or a colcon install puts ``config/`` inside the Python package; a source
    checkout (or an editable install) has it beside the package.
    """
    package_dir = Path(__file__).resolve().parents[2]  # core/inference/ -> ask_expert_ros/
    for candidate in (package_dir / _CONFIG_DIR_NAME, package_dir.parent / _CONFIG_DIR_NAME):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(
        f'no {_CONFIG_DIR_NAME}/ directory in or beside {package_dir}; reinstall ask_expert_ros'
    )


def num_experts(num_subsets: int, k: int) -> int:
    """``sum_{i=1..k} C(S, i)``: how many experts cover every Top-k outcome."""
    if num_subsets < 1 or k < 1:
        raise ValueError(f'need S >= 1 and k >= 1, got S={num_subsets}, k={k}')
    return sum(math.comb(num_subsets, i) for i in range(1, min(k, num_subsets) + 1))


def expert_keys(num_subsets: int, k: int) -> list[ExpertKey]:
    """Every key ``I`` with ``1 <= |I| <= k``, by size then lexicographically."""
    num_experts(num_subsets, k)  # validates
    ids = range(1, num_subsets + 1)
    return [
        key
        for size in range(1, min(k, num_subsets) + 1)
        for key in itertools.combinations(ids, size)
    ]


def parse_key(text: str | Iterable[int]) -> ExpertKey:
    """``'1,3'``, ``'{1,3}'``, ``'1_3'`` or ``[3, 1]`` -> ``(1, 3)``."""
    if isinstance(text, str):
        parts = text.strip().strip('{}()[]').replace('_', ',').split(',')
        try:
            ids = [int(p) for p in parts if p.strip()]
        except ValueError as exc:
            raise ValueError(f'expert key {text!r} is not a list of subset ids') from exc
    else:
        ids = [int(s) for s in text]
    if not ids or min(ids) < 1:
        raise ValueError(f'expert key {text!r} must hold subset ids >= 1')
    return tuple(sorted(set(ids)))


def key_slug(key: ExpertKey) -> str:
    """File-name form of a key: ``(1, 3)`` -> ``'1_3'``."""
    return '_'.join(str(s) for s in key)


@dataclass(frozen=True)
class PartitionScheme:
    """The map S(c) from class index to subset id (1-based).

    Attributes:
        name: Short identifier, stored in model configs and library manifests.
        class_names: Class names in label-id order.
        subset_of_class: Subset id of every class, ``len == len(class_names)``.
    """

    name: str
    class_names: tuple[str, ...]
    subset_of_class: tuple[int, ...]

    def __post_init__(self) -> None:
        if len(self.class_names) != len(self.subset_of_class):
            raise PartitionError(
                f'scheme {self.name!r}: {len(self.class_names)} class names but '
                f'{len(self.subset_of_class)} subset ids'
            )
        if not self.class_names:
            raise PartitionError(f'scheme {self.name!r} has no classes')
        if len(set(self.class_names)) != len(self.class_names):
            dupes = sorted({n for n in self.class_names if self.class_names.count(n) > 1})
            raise PartitionError(f'scheme {self.name!r}: duplicate class names {dupes}')
        used = set(self.subset_of_class)
        expected = set(range(1, max(used) + 1))
        if min(used) < 1 or used != expected:
            raise PartitionError(
                f'scheme {self.name!r}: subset ids must be 1..S with none empty, '
                f'got {sorted(used)}'
            )

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def num_subsets(self) -> int:
        return max(self.subset_of_class)

    @cached_property
    def subset_lookup(self) -> np.ndarray:
        """``int64[num_classes]`` array of S(c), for vectorised routing."""
        return np.asarray(self.subset_of_class, dtype=np.int64)

    def classes_of_subset(self, subset_id: int) -> tuple[int, ...]:
        """Class indices in subset ``subset_id``."""
        if not 1 <= subset_id <= self.num_subsets:
            raise PartitionError(f'subset {subset_id} not in 1..{self.num_subsets}')
        return tuple(c for c, s in enumerate(self.subset_of_class) if s == subset_id)

    def classes_of_key(self, key: ExpertKey) -> tuple[int, ...]:
        """Class indices of D_I, the union of the key's subsets."""
        self.check_key(key)
        members = set(key)
        return tuple(c for c, s in enumerate(self.subset_of_class) if s in members)

    def class_mask(self, key: ExpertKey) -> np.ndarray:
        """Boolean ``[num_classes]`` mask of the classes in D_I."""
        self.check_key(key)
        return np.isin(self.subset_lookup, key)

    def expert_keys(self, k: int) -> list[ExpertKey]:
        return expert_keys(self.num_subsets, k)

    def check_key(self, key: ExpertKey) -> None:
        if not key or any(not 1 <= s <= self.num_subsets for s in key):
            raise PartitionError(
                f'key {format_key(key)} is not a set of subset ids in 1..{self.num_subsets} '
                f'of scheme {self.name!r}'
            )

    def to_dict(self) -> dict[str, Any]:
        """Shape 1 of the module docstring, loadable by :meth:`from_dict`."""
        return {
            'name': self.name,
            'class_names': list(self.class_names),
            'class_to_subset': dict(zip(self.class_names, self.subset_of_class, strict=True)),
        }

    @classmethod
    def from_class_subsets(
        cls, name: str, class_names: Sequence[str], subsets: Mapping[int, Sequence[int]]
    ) -> PartitionScheme:
        """Build from ``{subset id: [class indices]}``; every class in exactly one subset."""
        owner: dict[int, int] = {}
        for subset_id, members in subsets.items():
            for c in members:
                if not 0 <= c < len(class_names):
                    raise PartitionError(f'scheme {name!r}: class index {c} out of range')
                if c in owner:
                    raise PartitionError(
                        f'scheme {name!r}: class {class_names[c]!r} is in subsets '
                        f'{owner[c]} and {subset_id}'
                    )
                owner[c] = int(subset_id)
        missing = [class_names[c] for c in range(len(class_names)) if c not in owner]
        if missing:
            raise PartitionError(f'scheme {name!r}: classes in no subset: {missing}')
        return cls(name, tuple(class_names), tuple(owner[c] for c in range(len(class_names))))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], scheme: str | None = None) -> PartitionScheme:
        """Parse any of the three YAML shapes of the module docstring."""
        class_names = data.get('class_names', data.get('fine_label_names'))
        if not class_names:
            raise PartitionError('a partition file needs class_names (or fine_label_names)')
        class_names = [str(n) for n in class_names]
        name = str(data.get('name', scheme or 'custom'))

        if 'class_to_subset' in data:
            mapping = data['class_to_subset']
            unknown = sorted(set(mapping) - set(class_names))
            if unknown:
                raise PartitionError(f'scheme {name!r}: unknown classes {unknown}')
            subsets: dict[int, list[int]] = {}
            for c, class_name in enumerate(class_names):
                if class_name not in mapping:
                    raise PartitionError(f'scheme {name!r}: class {class_name!r} has no subset')
                subsets.setdefault(int(mapping[class_name]), []).append(c)
            return cls.from_class_subsets(name, class_names, subsets)

        if 'subsets' in data:
            named = data['subsets']
        elif 'partitions' in data:
            available = sorted(data['partitions'])
            if scheme is None:
                raise PartitionError(f'file holds schemes {available}: pick one')
            if scheme not in data['partitions']:
                raise PartitionError(f'unknown scheme {scheme!r}; available: {available}')
            named = data['partitions'][scheme]
            name = f'{data.get("name", "partition")}_{scheme}' if 'name' in data else scheme
        else:
            raise PartitionError(
                'a partition file needs class_to_subset, subsets or partitions (see docs)'
            )
        groups = _coarse_groups(data, class_names)
        subsets = {}
        for subset_id, members in named.items():
            indices: list[int] = []
            for member in members:
                member = str(member)
                if member in groups:
                    indices.extend(groups[member])
                else:
                    raise PartitionError(
                        f'scheme {name!r}: {member!r} is neither a class nor a coarse label'
                    )
            subsets[int(subset_id)] = indices
        return cls.from_class_subsets(name, class_names, subsets)


def _coarse_groups(data: Mapping[str, Any], class_names: list[str]) -> dict[str, list[int]]:
    """Name -> class indices, for class names and (when given) coarse label names."""
    groups = {n: [c] for c, n in enumerate(class_names)}
    coarse_names = data.get('coarse_label_names')
    coarse_of = data.get('coarse_of_fine', data.get('coarse_of_class'))
    if coarse_names is None and coarse_of is None:
        return groups
    if coarse_names is None or coarse_of is None or len(coarse_of) != len(class_names):
        raise PartitionError(
            'coarse labels need coarse_label_names and coarse_of_fine with one entry per class'
        )
    for c, coarse_id in enumerate(coarse_of):
        groups.setdefault(str(coarse_names[int(coarse_id)]), []).append(c)
    return groups


def load_partition_scheme(path: str | Path, scheme: str | None = None) -> PartitionScheme:
    """Read a partition scheme from a YAML file (any shape of the module docstring).

    Args:
        path: The YAML file.
        scheme: Which scheme, when the file holds several under ``partitions``.
    """
    path = Path(path)
    with path.open(encoding='utf-8') as f:
        data = yaml.safe_load(f)
    if not isinstance(data, Mapping):
        raise PartitionError(f'{path}: expected a mapping at the top level')
    try:
        return PartitionScheme.from_dict(data, scheme)
    except PartitionError as exc:
        raise PartitionError(f'{path}: {exc}') from exc


BUILTIN_SCHEMES = {
    'cifar100_s4': ('cifar100_hierarchy.yaml', 'S4'),
    'cifar100_s6': ('cifar100_hierarchy.yaml', 'S6'),
    'cifar100_s8': ('cifar100_hierarchy.yaml', 'S8'),
    'digits_s4': ('digits_partitions.yaml', None),
    'fashion_mnist_s3': ('fashion_mnist_partitions.yaml', 'S3'),
    'fashion_mnist_s4': ('fashion_mnist_partitions.yaml', 'S4'),
    'fashion_mnist_s3_random': ('fashion_mnist_partitions.yaml', 'S3_random'),
    'fashion_mnist_s4_random': ('fashion_mnist_partitions.yaml', 'S4_random'),
    'fashion_mnist_s1': ('fashion_mnist_partitions.yaml', 'S1'),
}


def builtin_scheme(name: str) -> PartitionScheme:
    """A scheme shipped in ``config/``: one of :data:`BUILTIN_SCHEMES`."""
    if name not in BUILTIN_SCHEMES:
        raise PartitionError(f'unknown built-in scheme {name!r}; known: {sorted(BUILTIN_SCHEMES)}')
    file_name, scheme = BUILTIN_SCHEMES[name]
    loaded = load_partition_scheme(config_dir() / file_name, scheme)
    return PartitionScheme(name, loaded.class_names, loaded.subset_of_class)


def resolve_scheme(spec: str | Path) -> PartitionScheme:
    """A built-in scheme name, ``file.yaml`` or ``file.yaml:SCHEME``."""
    text = str(spec)
    if text in BUILTIN_SCHEMES:
        return builtin_scheme(text)
    path, _, scheme = text.partition(':') if text.count(':') == 1 else (text, '', '')
    return load_partition_scheme(path, scheme or None)
