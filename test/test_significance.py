"""Intervals and paired tests of the experiment pages, and the routing ceiling per tau."""

from __future__ import annotations

import numpy as np
import pytest

from ask_expert_ros.core.evaluation.recipe_eval import routing_ceilings
from ask_expert_ros.core.evaluation.significance import bootstrap_interval, paired_difference


def test_interval_of_an_accuracy_has_the_binomial_width() -> None:
    rng = np.random.default_rng(0)
    outcomes = (rng.random(4000) < 0.8).astype(float)
    stat = bootstrap_interval(outcomes, resamples=2000)
    p = outcomes.mean()
    assert stat['mean'] == pytest.approx(p)
    assert stat['low'] < p < stat['high']
    expected = 2 * 1.96 * np.sqrt(p * (1 - p) / len(outcomes))
    assert stat['high'] - stat['low'] == pytest.approx(expected, rel=0.15)


def test_equal_models_differ_by_nothing() -> None:
    a = (np.random.default_rng(1).random((3, 500)) < 0.7).astype(float)
    d = paired_difference(a, a.copy(), resamples=500)
    assert d['mean'] == d['low'] == d['high'] == 0.0
    assert d['p_bootstrap'] == 1.0 and d['mcnemar_p'] == [1.0, 1.0, 1.0]


def test_a_model_right_on_30_more_frames_is_significantly_better() -> None:
    b = (np.random.default_rng(2).random((1, 1000)) < 0.7).astype(float)
    a = b.copy()
    wrong = np.flatnonzero(b[0] == 0)[:30]
    a[0, wrong] = 1.0  # a fixes 30 of b's errors and breaks nothing
    d = paired_difference(a, b, resamples=2000)
    assert d['mean'] == pytest.approx(0.03)
    assert 0.0 < d['low'] < 0.03 < d['high']
    assert d['p_bootstrap'] < 0.01
    assert d['mcnemar_p'][0] == pytest.approx(2 * 0.5**30)


def test_seeds_that_disagree_widen_the_interval_over_zero() -> None:
    """Seed 0 gains 5 points, seed 1 loses 5: frames alone look certain, the recipe not."""
    rng = np.random.default_rng(3)
    b = (rng.random((2, 2000)) < 0.6).astype(float)
    a = b.copy()
    a[0, np.flatnonzero(b[0] == 0)[:100]] = 1.0
    a[1, np.flatnonzero(b[1] == 1)[:100]] = 0.0
    frames_only = paired_difference(a, b, resamples=2000, seeds=False)
    both = paired_difference(a, b, resamples=2000, seeds=True)
    assert frames_only['per_seed'] == pytest.approx([0.05, -0.05])
    assert both['high'] - both['low'] > 3 * (frames_only['high'] - frames_only['low'])
    assert both['low'] < -0.03 and both['high'] > 0.03


def test_outcomes_must_pair_up() -> None:
    with pytest.raises(ValueError, match='pair up'):
        paired_difference(np.ones((2, 10)), np.ones((2, 11)))
    with pytest.raises(ValueError, match='frames > 0'):
        bootstrap_interval(np.ones((2, 0)))


def test_routing_ceiling_counts_the_offloaded_frames_a_key_can_hold() -> None:
    # 4 classes, keys route to classes {0, 1} or {2, 3}; 6 frames
    labels = np.array([0, 1, 2, 3, 0, 2])
    topk = np.array([[0, 1], [0, 1], [3, 2], [0, 1], [1, 0], [0, 2]])
    key_classes = np.array(
        [[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 1], [1, 1, 0, 0]] + [[1, 1, 0, 0]] * 2, bool
    )
    offload = np.array(
        [
            [False] * 6,  # nothing sent: the edge alone
            [False, True, True, True, True, True],
        ]
    )
    rows = routing_ceilings(
        {'labels': labels, 'topk': topk, 'key_class_masks': key_classes, 'offload': offload}
    )
    assert rows[0] == {
        'topk_recall_offloaded': 1.0,
        'key_recall_offloaded': 1.0,
        'key_ceiling_accuracy': pytest.approx(1 / 6),  # edge Top-1 right on frame 0 only
    }
    # offloaded frames 1..5: class in Top-2 for 1, 2, 4, 5 (not 3); in the key for 1, 2, 4
    assert rows[1]['topk_recall_offloaded'] == pytest.approx(4 / 5)
    assert rows[1]['key_recall_offloaded'] == pytest.approx(3 / 5)
    assert rows[1]['key_ceiling_accuracy'] == pytest.approx((1 + 3) / 6)
