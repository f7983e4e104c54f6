"""Expert library manifest: lazy loading, clear errors, residency limit."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from conftest import tiny_config

from ask_expert_ros.core.errors import ExpertNotFoundError, ModelConfigError
from ask_expert_ros.core.inference.library import ExpertLibrary, write_manifest
from ask_expert_ros.core.inference.models import create_model, save_model
from ask_expert_ros.core.inference.taxonomy import PartitionScheme


def test_manifest_round_trip(zoo: Path, scheme: PartitionScheme) -> None:
    library = ExpertLibrary(zoo.parent)  # the directory works as well as the file
    assert library.scheme == scheme and library.k == 2
    assert library.keys == scheme.expert_keys(2) and library.missing_keys() == []
    data = yaml.safe_load(zoo.read_text())
    assert data['experts']['1,3'] == 'expert_1_3.safetensors'  # relative paths
    assert library.load_edge().config.expert_key is None


def test_experts_load_lazily_and_once(zoo: Path) -> None:
    library = ExpertLibrary(zoo)
    assert library.loaded_keys == []
    first = library.get((1, 3))
    assert library.loaded_keys == [(1, 3)]
    assert library.get((1, 3)) is first
    assert first.config.expert_key == (1, 3) and not first.model.training


def test_missing_key_error_names_the_key(tmp_path: Path, scheme: PartitionScheme) -> None:
    cfg = tiny_config(scheme, (1,))
    only = save_model(create_model(cfg), cfg, tmp_path / 'e1')
    library = ExpertLibrary(write_manifest(tmp_path, scheme, 2, {(1,): only}))
    assert (2, 3) in library.missing_keys() and len(library.missing_keys()) == 5
    with pytest.raises(ExpertNotFoundError, match=r'no expert for key \{2,3\}') as info:
        library.get((2, 3))
    assert info.value.key == (2, 3)


def test_max_resident_evicts_least_recently_used(zoo: Path) -> None:
    library = ExpertLibrary(zoo, max_resident=2)
    library.get((1,))
    library.get((2,))
    library.get((1,))  # (2,) is now the least recently used
    library.get((3,))
    assert library.loaded_keys == [(1,), (3,)]


def test_expert_for_other_classes_rejected(tmp_path: Path, scheme: PartitionScheme) -> None:
    other = PartitionScheme.from_class_subsets('other', ('x', 'y'), {1: [0], 2: [1]})
    cfg = tiny_config(other, (1,))
    path = save_model(create_model(cfg), cfg, tmp_path / 'wrong')
    library = ExpertLibrary(write_manifest(tmp_path, scheme, 1, {(1,): path}))
    with pytest.raises(ModelConfigError, match='other classes'):
        library.get((1,))


def test_mislabelled_expert_rejected(tmp_path: Path, scheme: PartitionScheme) -> None:
    cfg = tiny_config(scheme, (2,))
    path = save_model(create_model(cfg), cfg, tmp_path / 'e2')
    library = ExpertLibrary(write_manifest(tmp_path, scheme, 1, {(1,): path}))
    with pytest.raises(ModelConfigError, match=r'trained for key \{2\}'):
        library.get((1,))


def test_not_a_manifest(tmp_path: Path) -> None:
    with pytest.raises(ModelConfigError, match='no expert library manifest'):
        ExpertLibrary(tmp_path)
    (tmp_path / 'library.yaml').write_text('format: something_else\n')
    with pytest.raises(ModelConfigError, match='is not an ask_expert_library'):
        ExpertLibrary(tmp_path)


def test_generalist_entry_answers_every_key(tmp_path: Path, scheme: PartitionScheme) -> None:
    cfg = tiny_config(scheme, None)
    general = save_model(create_model(cfg), cfg, tmp_path / 'generalist')
    manifest = write_manifest(tmp_path, scheme, 2, {}, generalist=general)
    library = ExpertLibrary(manifest)
    assert library.generalist_path == general
    baseline = library.generalist_library()
    assert baseline.keys == scheme.expert_keys(2) and baseline.missing_keys() == []
    assert baseline.get((1,)) is baseline.get((2, 3))  # one model, loaded once
    assert library.load_generalist().config.expert_key is None
    bare = ExpertLibrary(write_manifest(tmp_path / 'bare', scheme, 2, {}))
    with pytest.raises(ModelConfigError, match='no near-edge generalist'):
        bare.generalist_library()
