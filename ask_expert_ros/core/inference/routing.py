"""Top-k routing (Algorithm 1 of the paper), vectorised over a batch.

The edge model's logits are all the router reads: a confidence score decides
whether the edge answer stands (``conf >= tau``); otherwise the Top-k classes are
mapped through S(c) and their subset ids form the key I of the expert to ask.

Confidence scores, all in [0, 1], higher meaning surer:

* ``max_softmax`` -- ``max_c p_c`` (the paper),
* ``margin`` -- ``p_top1 - p_top2``,
* ``entropy`` -- ``1 - H(p) / log(C)`` (normalised Shannon entropy),
* ``min_entropy`` -- Im et al.'s gate: a frame stays on the edge when its min-entropy
  ``H_min = -log2 max_c p_c`` is below ``eta`` bits. Its threshold is given in bits:
  with this method ``tau`` *is* eta (>= 0; Im et al.'s default is 1 bit). Min-entropy
  is a monotone map of max softmax, so this is the max-softmax gate with
  ``tau_max_softmax = 2 ** -eta`` (1 bit = 0.5, 0.5 bit = 0.707, 0.152 bit = 0.9); its
  confidence score is reported on the same [0, 1] scale, ``2 ** -H_min = max_c p_c``.

So for the [0, 1] methods ``tau = 0`` never offloads and ``tau > 1`` always does; for
``min_entropy``, ``eta = 0`` always offloads and a large eta never does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal, get_args

import numpy as np

from ask_expert_ros.core.inference.taxonomy import ExpertKey, PartitionScheme

if TYPE_CHECKING:
    import torch

ConfidenceMethod = Literal['max_softmax', 'margin', 'entropy', 'min_entropy']
CONFIDENCE_METHODS: tuple[str, ...] = get_args(ConfidenceMethod)
MAX_SUBSETS = 62  # keys travel as bits of an int64
MAX_ETA_BITS = 16.0  # the top of min_entropy's tau range (the tau parameter's)


@dataclass(frozen=True)
class RoutingConfig:
    """How the edge decides.

    Attributes:
        tau: Confidence threshold; samples with ``conf < tau`` are offloaded. For
            ``min_entropy`` it is eta in bits: samples with ``H_min >= eta`` are.
        k: How many top classes form the routing key.
        confidence: Which confidence score to compare with ``tau``.
    """

    tau: float = 0.8
    k: int = 2
    confidence: ConfidenceMethod = 'max_softmax'

    def __post_init__(self) -> None:
        if not np.isfinite(self.tau) or self.tau < 0:
            raise ValueError(
                f'tau must be a finite number >= 0 (> 1 offloads all), got {self.tau}'
            )
        if self.k < 1:
            raise ValueError(f'k must be >= 1, got {self.k}')
        if self.confidence not in CONFIDENCE_METHODS:
            raise ValueError(
                f'confidence must be one of {CONFIDENCE_METHODS}, got {self.confidence!r}'
            )

    @property
    def threshold(self) -> float:
        """The threshold on the [0, 1] confidence score: tau, or ``2 ** -eta`` for
        ``min_entropy`` (a frame goes to the expert when its score is below it)."""
        return 2.0**-self.tau if self.confidence == 'min_entropy' else self.tau

    @property
    def threshold_range(self) -> tuple[float, float]:
        """The range :attr:`threshold` may be moved in (by a controller): [0, 1], or for
        ``min_entropy`` the thresholds of eta in [0, MAX_ETA_BITS] bits."""
        return (2.0**-MAX_ETA_BITS, 1.0) if self.confidence == 'min_entropy' else (0.0, 1.0)

    def with_threshold(self, threshold: float) -> RoutingConfig:
        """This routing with tau set so that :attr:`threshold` is ``threshold``, clamped
        to :attr:`threshold_range` (the inverse of :attr:`threshold`)."""
        low, high = self.threshold_range
        threshold = min(high, max(low, threshold))
        tau = -math.log2(threshold) if self.confidence == 'min_entropy' else threshold
        return replace(self, tau=tau + 0.0)  # -log2(1) is -0.0


@dataclass(frozen=True)
class RoutingResult:
    """Per-sample routing decisions of one batch (arrays of length N).

    Attributes:
        prediction: Edge Top-1 class.
        confidence: Confidence score in [0, 1]; NaN where the logits were not finite.
        offload: True where the sample goes to an expert.
        valid: False where the logits held NaN/inf (never offloaded, never trusted).
        topk_classes: ``[N, k]`` Top-k class indices, best first.
        topk_scores: ``[N, k]`` their softmax probabilities.
        key_bits: Expert key as a bit set (bit ``s - 1`` for subset ``s``); 0 when not
            offloaded.
    """

    prediction: np.ndarray
    confidence: np.ndarray
    offload: np.ndarray
    valid: np.ndarray
    topk_classes: np.ndarray
    topk_scores: np.ndarray
    key_bits: np.ndarray

    def __len__(self) -> int:
        return len(self.prediction)

    @property
    def offload_ratio(self) -> float:
        """alpha(tau): fraction of samples offloaded."""
        return float(self.offload.mean()) if len(self) else 0.0

    def key(self, i: int) -> ExpertKey | None:
        """The expert key of sample ``i``, or None when it stays on the edge."""
        return bits_to_key(int(self.key_bits[i])) if self.offload[i] else None

    def groups(self) -> dict[ExpertKey, np.ndarray]:
        """Offloaded sample indices grouped by expert key (ascending indices)."""
        idx = np.flatnonzero(self.offload)
        bits = self.key_bits[idx]
        return {bits_to_key(int(b)): idx[bits == b] for b in np.unique(bits)}


def bits_to_key(bits: int) -> ExpertKey:
    """Bit set -> sorted key: ``0b101`` -> ``(1, 3)``."""
    return tuple(i + 1 for i in range(bits.bit_length()) if bits >> i & 1)


def key_to_bits(key: ExpertKey) -> int:
    return sum(1 << (s - 1) for s in key)


def _as_numpy(logits: np.ndarray | torch.Tensor) -> np.ndarray:
    if hasattr(logits, 'detach'):  # a torch tensor; avoid importing torch here
        logits = logits.detach().float().cpu().numpy()
    array = np.asarray(logits, dtype=np.float32)
    if array.ndim != 2 or array.shape[1] < 1:
        raise ValueError(f'logits must be [N, C], got shape {array.shape}')
    return array


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=1, keepdims=True)


def confidence_scores(
    probs: np.ndarray, sorted_top2: np.ndarray, method: ConfidenceMethod
) -> np.ndarray:
    """Confidence in [0, 1] from softmax ``probs`` and their two largest values."""
    if method in ('max_softmax', 'min_entropy'):  # 2 ** -H_min is max p
        return sorted_top2[:, 0]
    if method == 'margin':
        second = sorted_top2[:, 1] if sorted_top2.shape[1] > 1 else 0.0
        return sorted_top2[:, 0] - second
    num_classes = probs.shape[1]
    if num_classes == 1:
        return np.ones(len(probs), dtype=probs.dtype)
    with np.errstate(divide='ignore', invalid='ignore'):
        plogp = np.where(probs > 0, probs * np.log(probs), 0.0)
    entropy = -plogp.sum(axis=1)
    return np.clip(1.0 - entropy / np.log(num_classes), 0.0, 1.0)


def route(
    logits: np.ndarray | Any, scheme: PartitionScheme, config: RoutingConfig
) -> RoutingResult:
    """Algorithm 1 over a batch of edge logits (numpy array or torch tensor, ``[N, C]``).

    Ties between equal scores go to the lower class index, so the result is
    deterministic and the same for numpy and torch inputs.
    """
    array = _as_numpy(logits)
    num_classes = array.shape[1]
    if scheme.num_subsets > MAX_SUBSETS:
        raise ValueError(f'routing supports up to {MAX_SUBSETS} subsets, got {scheme.num_subsets}')
    if num_classes != scheme.num_classes:
        raise ValueError(
            f'logits have {num_classes} classes but scheme {scheme.name!r} has '
            f'{scheme.num_classes}'
        )
    valid = np.isfinite(array).all(axis=1)
    safe = np.where(valid[:, None], array, 0.0).astype(np.float32)
    probs = softmax(safe)
    k = min(config.k, num_classes)
    width = max(k, min(2, num_classes))
    # stable argsort on -p: among equal probabilities the lower index comes first
    order = np.argsort(-probs, axis=1, kind='stable')[:, :width]
    top = np.take_along_axis(probs, order, axis=1)
    conf = confidence_scores(probs, top, config.confidence).astype(np.float32)
    conf = np.where(valid, conf, np.nan)

    if config.confidence == 'min_entropy':
        # Im et al.: stay on the edge when H_min < eta, i.e. offload when max p <= 2^-eta
        offload = valid & (conf <= config.threshold)
    else:
        offload = valid & (conf < config.tau)
    topk_classes = order[:, :k]
    subsets = scheme.subset_lookup[topk_classes]  # [N, k], 1-based
    key_bits = np.bitwise_or.reduce(np.left_shift(np.int64(1), subsets - 1), axis=1)
    key_bits = np.where(offload, key_bits, 0)
    return RoutingResult(
        prediction=order[:, 0].astype(np.int64),
        confidence=conf,
        offload=offload,
        valid=valid,
        topk_classes=topk_classes.astype(np.int64),
        topk_scores=top[:, :k].astype(np.float32),
        key_bits=key_bits.astype(np.int64),
    )
