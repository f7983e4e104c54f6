"""Algorithm 1: confidence gate, Top-k -> key I, on numpy and torch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from ask_expert_ros.core.inference.routing import (
    CONFIDENCE_METHODS,
    RoutingConfig,
    bits_to_key,
    key_to_bits,
    route,
)
from ask_expert_ros.core.inference.taxonomy import PartitionScheme, builtin_scheme


def test_paper_example_top2_in_subsets_1_and_3(scheme: PartitionScheme) -> None:
    """k = 2, Top-2 classes 'a' (subset 1) and 'e' (subset 3), unsure -> expert {1, 3}."""
    logits = np.log(np.array([[0.40, 0.05, 0.05, 0.05, 0.40 - 1e-3, 0.05 + 1e-3]]))
    result = route(logits, scheme, RoutingConfig(tau=0.9, k=2))
    assert result.offload[0]
    assert list(result.topk_classes[0]) == [0, 4]
    assert result.key(0) == (1, 3)
    assert result.groups() == {(1, 3): np.array([0])}


def test_both_top2_in_one_subset_give_single_key(scheme: PartitionScheme) -> None:
    logits = np.log(np.array([[0.05, 0.05, 0.45, 0.35, 0.05, 0.05]]))
    assert route(logits, scheme, RoutingConfig(tau=0.9, k=2)).key(0) == (2,)


def test_confident_samples_stay_on_edge(scheme: PartitionScheme) -> None:
    """p_max = 0.95 >= tau = 0.9: accepted, no key; p_max = 0.5 < 0.9: offloaded."""
    logits = np.log(
        np.array([[0.95, 0.01, 0.01, 0.01, 0.01, 0.01], [0.50, 0.10, 0.10, 0.10, 0.10, 0.10]])
    )
    result = route(logits, scheme, RoutingConfig(tau=0.9, k=2))
    assert list(result.offload) == [False, True]
    assert result.key(0) is None and result.key_bits[0] == 0
    assert result.confidence[0] == pytest.approx(0.95, abs=1e-6)
    assert list(result.prediction) == [0, 0]
    assert result.offload_ratio == 0.5


@pytest.mark.parametrize('method', [m for m in CONFIDENCE_METHODS if m != 'min_entropy'])
def test_tau_zero_offloads_nothing_tau_above_one_everything(method, scheme) -> None:
    logits = np.random.default_rng(1).normal(size=(200, 6)) * 3
    logits[0] = 0.0  # uniform: the least confident possible, conf = 0 for margin/entropy
    assert not route(logits, scheme, RoutingConfig(tau=0.0, confidence=method)).offload.any()
    assert route(logits, scheme, RoutingConfig(tau=1.01, confidence=method)).offload.all()


def test_min_entropy_gate_in_bits(scheme: PartitionScheme) -> None:
    """Im et al.'s gate: stay on the edge when H_min = -log2 max p < eta bits.

    max p = 0.6 -> H_min = 0.737 bit: offloaded at eta = 0.5, kept at eta = 1.0 (the
    max-softmax gate at tau = 2^-1 = 0.5). max p = 0.9 -> 0.152 bit: kept at both.
    eta = 0 offloads every frame (H_min >= 0 always); the confidence score is max p.
    """
    p = np.array([[0.6, 0.2, 0.1, 0.05, 0.03, 0.02], [0.9, 0.04, 0.03, 0.01, 0.01, 0.01]])
    logits = np.log(p)
    half = route(logits, scheme, RoutingConfig(tau=0.5, confidence='min_entropy'))
    one = route(logits, scheme, RoutingConfig(tau=1.0, confidence='min_entropy'))
    zero = route(logits, scheme, RoutingConfig(tau=0.0, confidence='min_entropy'))
    assert half.offload.tolist() == [True, False]
    assert one.offload.tolist() == [False, False]
    assert zero.offload.tolist() == [True, True]
    assert one.confidence == pytest.approx([0.6, 0.9], abs=1e-5)
    assert RoutingConfig(tau=1.0, confidence='min_entropy').threshold == 0.5
    same = route(logits, scheme, RoutingConfig(tau=0.5, confidence='max_softmax'))
    assert same.offload.tolist() == one.offload.tolist()


def test_margin_and_entropy_values(scheme: PartitionScheme) -> None:
    """p = (0.5, 0.3, 0.2, 0, 0, 0): margin 0.2; entropy conf 1 - H/log 6."""
    p = np.array([[0.5, 0.3, 0.2, 1e-12, 1e-12, 1e-12]])
    logits = np.log(p)
    margin = route(logits, scheme, RoutingConfig(confidence='margin')).confidence[0]
    assert margin == pytest.approx(0.2, abs=1e-5)
    h = -(0.5 * np.log(0.5) + 0.3 * np.log(0.3) + 0.2 * np.log(0.2))
    ent = route(logits, scheme, RoutingConfig(confidence='entropy')).confidence[0]
    assert ent == pytest.approx(1 - h / np.log(6), abs=1e-4)


def test_non_finite_logits_are_invalid_not_offloaded(scheme: PartitionScheme) -> None:
    logits = np.zeros((3, 6), dtype=np.float32)
    logits[1, 2] = np.nan
    logits[2, 0] = np.inf
    result = route(logits, scheme, RoutingConfig(tau=1.01))
    assert list(result.valid) == [True, False, False]
    assert list(result.offload) == [True, False, False]
    assert np.isnan(result.confidence[1:]).all()


def test_ties_go_to_lower_class_index(scheme: PartitionScheme) -> None:
    result = route(np.zeros((1, 6)), scheme, RoutingConfig(tau=1.01, k=2))
    assert list(result.topk_classes[0]) == [0, 1] and result.key(0) == (1,)


def test_cifar_batch_shapes() -> None:
    scheme = builtin_scheme('cifar100_s8')
    logits = torch.randn(64, 100)
    result = route(logits, scheme, RoutingConfig(tau=0.99, k=2))
    assert result.topk_classes.shape == (64, 2) and result.topk_scores.shape == (64, 2)
    assert sum(len(v) for v in result.groups().values()) == int(result.offload.sum())


@pytest.mark.parametrize(
    ('kwargs', 'error'),
    [
        ({'tau': -0.1}, 'tau'),
        ({'tau': float('nan')}, 'tau'),
        ({'k': 0}, 'k must'),
        ({'confidence': 'vibes'}, 'confidence must'),
    ],
)
def test_bad_routing_config(kwargs, error) -> None:
    with pytest.raises(ValueError, match=error):
        RoutingConfig(**kwargs)


def test_wrong_class_count_rejected(scheme: PartitionScheme) -> None:
    with pytest.raises(ValueError, match='7 classes'):
        route(np.zeros((2, 7)), scheme, RoutingConfig())


# -- properties -------------------------------------------------------------------------

SCHEME_S5 = PartitionScheme.from_class_subsets(
    'prop_s5',
    tuple(f'c{i}' for i in range(12)),
    {1: [0, 5, 10], 2: [1, 6, 11], 3: [2, 7], 4: [3, 8], 5: [4, 9]},
)
logit_batches = arrays(
    np.float32,
    st.tuples(st.integers(1, 16), st.just(12)),
    elements=st.floats(-20, 20, width=32),
)


@settings(max_examples=150, deadline=None)
@given(
    logits=logit_batches,
    k=st.integers(1, 4),
    tau=st.floats(0, 1.2),
    method=st.sampled_from(CONFIDENCE_METHODS),
)
def test_routing_properties(logits, k, tau, method) -> None:
    """Key size <= k, key within {1..S}, offload iff conf < tau (min_entropy: conf <=
    2^-eta), same for numpy/torch."""
    config = RoutingConfig(tau=tau, k=k, confidence=method)
    a = route(logits, SCHEME_S5, config)
    b = route(torch.from_numpy(logits), SCHEME_S5, config)
    c = route(logits.copy(), SCHEME_S5, config)  # deterministic
    for other in (b, c):
        for name in ('prediction', 'offload', 'topk_classes', 'key_bits'):
            np.testing.assert_array_equal(getattr(a, name), getattr(other, name))
        np.testing.assert_allclose(a.confidence, other.confidence)
    if method == 'min_entropy':
        np.testing.assert_array_equal(a.offload, a.confidence <= 2.0**-tau)
    else:
        np.testing.assert_array_equal(a.offload, a.confidence < tau)
    for i in range(len(a)):
        key = a.key(i)
        if key is None:
            continue
        assert 1 <= len(key) <= k
        assert set(key) <= set(range(1, SCHEME_S5.num_subsets + 1))
        assert set(key) == {SCHEME_S5.subset_of_class[c] for c in a.topk_classes[i]}
        assert a.prediction[i] == a.topk_classes[i, 0]


@given(st.sets(st.integers(1, 62), min_size=1))
def test_key_bits_round_trip(ids) -> None:
    key = tuple(sorted(ids))
    assert bits_to_key(key_to_bits(key)) == key
