"""Partition schemes S(c), expert keys I and the shipped CIFAR-100 facts."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import yaml

from ask_expert_ros.core.errors import PartitionError
from ask_expert_ros.core.inference.taxonomy import (
    PartitionScheme,
    builtin_scheme,
    config_dir,
    expert_keys,
    load_partition_scheme,
    num_experts,
    parse_key,
    resolve_scheme,
)

SHARED_HIERARCHY = Path(__file__).resolve().parents[2] / 'shared/data/cifar100_hierarchy.yaml'
# sha256 of the facts file as handed to us; config/ must keep it byte for byte
HIERARCHY_SHA256 = 'eeeebb0faea072614b9af936fe527d3b85d38602fd30ae5a7a8b50024dd949f2'


@pytest.mark.parametrize(
    ('s', 'k', 'expected'), [(4, 2, 10), (6, 2, 21), (8, 2, 36), (8, 1, 8), (4, 4, 15), (3, 5, 7)]
)
def test_expert_count(s: int, k: int, expected: int) -> None:
    """sum_{i<=k} C(S, i): 4+6, 6+15, 8+28; k >= S counts all 2^S - 1 non-empty sets."""
    assert num_experts(s, k) == expected
    keys = expert_keys(s, k)
    assert len(keys) == expected == len(set(keys))
    assert all(1 <= len(key) <= k and list(key) == sorted(key) for key in keys)


@pytest.mark.parametrize('name', ['cifar100_s4', 'cifar100_s6', 'cifar100_s8'])
def test_cifar_schemes_cover_every_class_once(name: str) -> None:
    scheme = builtin_scheme(name)
    s = int(name[-1])
    assert scheme.num_classes == 100 and scheme.num_subsets == s
    members = [c for sid in range(1, s + 1) for c in scheme.classes_of_subset(sid)]
    assert sorted(members) == list(range(100))  # each class in exactly one subset
    assert len(scheme.expert_keys(2)) == {4: 10, 6: 21, 8: 36}[s]


def test_cifar_scheme_matches_table7() -> None:
    """Spot checks against the paper's Table 7 and CIFAR-100's own coarse labels."""
    s8 = builtin_scheme('cifar100_s8')
    names = s8.class_names
    # S=8, subset 5 = fish + large omnivores/herbivores: 10 fine classes
    sub5 = {names[c] for c in s8.classes_of_subset(5)}
    assert {'aquarium_fish', 'shark', 'trout', 'camel', 'elephant'} <= sub5
    assert len(sub5) == 10
    s4 = builtin_scheme('cifar100_s4')
    assert all(len(s4.classes_of_subset(i)) == 25 for i in range(1, 5))
    assert s4.subset_of_class[names.index('apple')] == 1  # fruit_and_vegetables -> 1


def test_shipped_hierarchy_is_the_facts_file() -> None:
    shipped = config_dir() / 'cifar100_hierarchy.yaml'
    assert hashlib.sha256(shipped.read_bytes()).hexdigest() == HIERARCHY_SHA256
    if SHARED_HIERARCHY.is_file():  # beside the project in the development workspace
        assert yaml.safe_load(shipped.read_text()) == yaml.safe_load(SHARED_HIERARCHY.read_text())


def test_user_scheme_class_to_subset(tmp_path: Path) -> None:
    path = tmp_path / 'mine.yaml'
    path.write_text(
        'name: fruit\nclass_names: [apple, pear, car, bus]\n'
        'class_to_subset: {apple: 1, pear: 1, car: 2, bus: 2}\n'
    )
    scheme = load_partition_scheme(path)
    assert scheme.name == 'fruit' and scheme.subset_of_class == (1, 1, 2, 2)
    assert resolve_scheme(path) == scheme


def test_user_scheme_coarse_labels(tmp_path: Path) -> None:
    path = tmp_path / 'coarse.yaml'
    path.write_text(
        'class_names: [apple, pear, car, bus, cat]\n'
        'coarse_label_names: [fruit, vehicle, animal]\n'
        'coarse_of_class: [0, 0, 1, 1, 2]\n'
        'subsets: {1: [fruit, animal], 2: [vehicle]}\n'
    )
    assert load_partition_scheme(path).subset_of_class == (1, 1, 2, 2, 1)


def test_digits_scheme_shipped() -> None:
    scheme = builtin_scheme('digits_s4')
    assert scheme.num_classes == 10 and scheme.num_subsets == 4
    assert PartitionScheme.from_dict(scheme.to_dict()) == scheme


@pytest.mark.parametrize(
    ('text', 'error'),
    [
        ('class_names: [a, b]\nclass_to_subset: {a: 1}\n', 'has no subset'),
        ('class_names: [a, b]\nsubsets: {1: [a], 2: [a, b]}\n', 'is in subsets 1 and 2'),
        ('class_names: [a, b]\nsubsets: {1: [a]}\n', 'in no subset'),
        ('class_names: [a, b]\nsubsets: {1: [a], 3: [b]}\n', 'subset ids must be 1..S'),
        ('class_names: [a, b]\nsubsets: {1: [a, zebra]}\n', "'zebra' is neither"),
        ('class_names: [a, a]\nclass_to_subset: {a: 1}\n', 'duplicate class names'),
        ('class_names: [a]\n', 'needs class_to_subset'),
    ],
)
def test_malformed_scheme_says_why(tmp_path: Path, text: str, error: str) -> None:
    path = tmp_path / 'bad.yaml'
    path.write_text(text)
    with pytest.raises(PartitionError, match=error):
        load_partition_scheme(path)


def test_multi_scheme_file_needs_a_choice() -> None:
    with pytest.raises(PartitionError, match='pick one'):
        load_partition_scheme(config_dir() / 'cifar100_hierarchy.yaml')
    with pytest.raises(PartitionError, match='unknown scheme'):
        load_partition_scheme(config_dir() / 'cifar100_hierarchy.yaml', 'S5')


@pytest.mark.parametrize(
    ('text', 'key'),
    [('1,3', (1, 3)), ('{3,1}', (1, 3)), ('1_3', (1, 3)), ('2', (2,)), ([3, 1, 3], (1, 3))],
)
def test_parse_key(text, key) -> None:
    assert parse_key(text) == key


def test_key_outside_scheme_rejected() -> None:
    scheme = builtin_scheme('digits_s4')
    with pytest.raises(PartitionError, match=r'\{1,5\}'):
        scheme.classes_of_key((1, 5))


def test_fashion_mnist_schemes_match_the_data_set_classes() -> None:
    from ask_expert_ros.core.inference.taxonomy import builtin_scheme
    from ask_expert_ros.core.training.datasets import FASHION_MNIST_NAMES

    sizes = {}
    for name in ('s3', 's4', 's3_random', 's4_random'):
        scheme = builtin_scheme(f'fashion_mnist_{name}')
        assert scheme.class_names == FASHION_MNIST_NAMES
        sizes[name] = sorted(
            len(scheme.classes_of_subset(s)) for s in range(1, scheme.num_subsets + 1)
        )
    assert sizes['s3'] == sizes['s3_random'] == [3, 3, 4]
    assert sizes['s4'] == sizes['s4_random'] == [2, 2, 3, 3]
    tops = builtin_scheme('fashion_mnist_s3').classes_of_subset(1)
    assert [FASHION_MNIST_NAMES[c] for c in tops] == ['T-shirt/top', 'Pullover', 'Coat', 'Shirt']
