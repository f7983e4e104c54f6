"""Intervals and paired tests over a test set, pooled over training seeds.

Every accuracy of the experiment pages is a mean of per-frame 0/1 outcomes over the same
test frames, once per seed. Two sources of uncertainty sit in such a figure: which
frames happen to be in the test set, and which seed trained the models. The bootstrap
here resamples both, seeds first and then frames (the same frames for every model, so a
difference between two models is paired frame by frame):

* :func:`bootstrap_interval`: a 95 % interval on a mean accuracy;
* :func:`paired_difference`: the mean difference of two models' outcomes with its
  interval and a two-sided bootstrap p-value, plus the per-seed exact McNemar test
  (scipy's binomial test on the discordant frames).

With the frame resampling alone (``seeds=False``) an interval says how sure we are about
*these* trained models; with seeds too, about the recipe.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.stats import binomtest

DEFAULT_RESAMPLES = 4000
_CHUNK = 250


def _outcomes(values: np.ndarray) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[1] == 0 or arr.shape[0] == 0:
        raise ValueError(f'need outcomes [seeds, frames] with frames > 0, got {arr.shape}')
    return arr


def _resampled_means(values: np.ndarray, resamples: int, seed: int, seeds: bool) -> np.ndarray:
    """``resamples`` means of ``values [S, N]``: seeds with replacement, then frames."""
    s, n = values.shape
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    for start in range(0, resamples, _CHUNK):
        size = min(_CHUNK, resamples - start)
        if seeds and s > 1:
            picks = rng.integers(0, s, size=(size, s))
            per_frame = values[picks].mean(axis=1)  # [size, N]
        else:
            per_frame = np.broadcast_to(values.mean(axis=0), (size, n))
        frames = rng.integers(0, n, size=(size, n))
        means[start : start + size] = np.take_along_axis(per_frame, frames, axis=1).mean(axis=1)
    return means


def bootstrap_interval(
    outcomes: np.ndarray,
    level: float = 0.95,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    seeds: bool = True,
) -> dict[str, float]:
    """Mean of ``outcomes`` (0/1 per frame, ``[seeds, frames]`` or ``[frames]``) with a
    percentile bootstrap interval at ``level``."""
    values = _outcomes(outcomes)
    means = _resampled_means(values, resamples, seed, seeds)
    tail = (1.0 - level) / 2
    return {
        'mean': float(values.mean()),
        'low': float(np.quantile(means, tail)),
        'high': float(np.quantile(means, 1.0 - tail)),
        'seeds': int(values.shape[0]),
        'frames': int(values.shape[1]),
    }


def paired_difference(
    a: np.ndarray,
    b: np.ndarray,
    level: float = 0.95,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    seeds: bool = True,
) -> dict[str, Any]:
    """Mean of ``a - b`` over the same frames and seeds, with its interval and tests.

    Args:
        a / b: 0/1 outcomes ``[seeds, frames]`` of two models on the same test frames,
            row ``i`` of both from seed ``i``.

    Returns:
        ``mean``, ``low``, ``high`` (the interval of the difference), ``p_bootstrap``
        (two-sided: twice the share of resampled differences on the far side of 0), and
        ``mcnemar_p`` per seed (exact, on the frames where exactly one model is right).
    """
    first, second = _outcomes(a), _outcomes(b)
    if first.shape != second.shape:
        raise ValueError(f'outcomes must pair up: {first.shape} vs {second.shape}')
    diff = first - second
    means = _resampled_means(diff, resamples, seed, seeds)
    tail = (1.0 - level) / 2
    below, above = float((means <= 0).mean()), float((means >= 0).mean())
    mcnemar = []
    for row_a, row_b in zip(first, second, strict=True):
        wins = int(((row_a == 1) & (row_b == 0)).sum())
        losses = int(((row_a == 0) & (row_b == 1)).sum())
        mcnemar.append(float(binomtest(wins, wins + losses, 0.5).pvalue) if wins + losses else 1.0)
    return {
        'mean': float(diff.mean()),
        'low': float(np.quantile(means, tail)),
        'high': float(np.quantile(means, 1.0 - tail)),
        'p_bootstrap': min(1.0, 2 * min(below, above)),
        'mcnemar_p': mcnemar,
        'per_seed': [float(row.mean()) for row in diff],
        'seeds': int(diff.shape[0]),
        'frames': int(diff.shape[1]),
    }
