"""Training on patch subsets: experts that answer from the patches the edge sends.

In patch mode (:mod:`ask_expert_ros.core.inference.patches`) an expert sees only the
``ceil(rho N)`` patches the edge picked. A model trained on whole frames has never
met a sequence that short; patch dropping shows it such sequences during training.
For each training batch, with probability ``prob``, a keep ratio rho is drawn
uniformly from ``[min_keep, 1]``, the batch's patches are chosen by the same rule the
edge uses at run time (:func:`~ask_expert_ros.core.inference.patches.select_patches`): uniformly
at random, or by the edge model's class-token attention on the same augmented batch
(no gradient), and the model runs on that token subset
(:func:`~ask_expert_ros.core.inference.patches.forward_tokens`) for the loss. The other batches
keep every patch, so full frames stay well served.

The draws come from a generator of their own, reseeded from the run's seed at every
epoch, so the data order, augmentation and dropout of a run are the same with and
without patch dropping, and a run resumed at an epoch draws what an uninterrupted
one would (no state to checkpoint).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Literal, get_args

import numpy as np
import torch

from ask_expert_ros.core.inference.patches import (
    ATTENTION_SOURCES,
    AttentionSource,
    PatchSelection,
    forward_tokens,
    forward_with_cls_attention,
    keep_count,
    resample_scores,
    select_patches,
)

PatchDropMode = Literal['random', 'attention']
PATCH_DROP_MODES: tuple[str, ...] = get_args(PatchDropMode)
# the patch generator's seed is the run's seed plus this, so its stream is not the
# shuffling generator's
_SEED_OFFSET = 0x5EED
_EPOCH_STRIDE = 1_000_003


@dataclass(frozen=True)
class PatchDropConfig:
    """Patch dropping during training (off unless a stage names one).

    Attributes:
        mode: ``random`` (a uniformly random subset) or ``attention`` (the top patches
            of the edge model's class-token attention, as the edge picks them).
        min_keep: rho_min in (0, 1]: each dropped batch keeps ``ceil(rho N)`` patches
            with rho uniform in ``[min_keep, 1]``.
        prob: Chance in [0, 1] that a batch is dropped at all; the rest train on whole
            frames (0.8: one batch in five sees every patch).
        source: Which attention scores the patches in ``attention`` mode: the ``last``
            block's CLS row (what the edge sends by) or ``rollout``.
    """

    mode: PatchDropMode = 'random'
    min_keep: float = 0.2
    prob: float = 0.8
    source: AttentionSource = 'last'

    def __post_init__(self) -> None:
        if self.mode not in PATCH_DROP_MODES:
            raise ValueError(
                f'patch_drop.mode must be one of {PATCH_DROP_MODES}, got {self.mode!r}'
            )
        if not 0.0 < self.min_keep <= 1.0:
            raise ValueError(
                f'patch_drop.min_keep must be in (0, 1] (the smallest keep ratio), '
                f'got {self.min_keep}'
            )
        if not 0.0 <= self.prob <= 1.0:
            raise ValueError(f'patch_drop.prob must be in [0, 1], got {self.prob}')
        if self.source not in ATTENTION_SOURCES:
            raise ValueError(
                f'patch_drop.source must be one of {ATTENTION_SOURCES}, got {self.source!r}'
            )

    @classmethod
    def from_dict(cls, data: dict[str, Any] | PatchDropConfig | None) -> PatchDropConfig | None:
        """From YAML (``{mode: attention, min_keep: 0.2, prob: 0.8}``); None stays None."""
        if data is None or isinstance(data, PatchDropConfig):
            return data
        if not isinstance(data, dict):
            raise ValueError(
                f'patch_drop must be a mapping such as {{mode: random, min_keep: 0.2, '
                f'prob: 0.8}} or null, got {data!r}'
            )
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(
                f'patch_drop: unknown settings {sorted(unknown)}; '
                f'choose from {[f.name for f in fields(cls)]}'
            )
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def image_patches(x: torch.Tensor, patch_size: int) -> torch.Tensor:
    """``[B, C, H, W]`` -> ``[B, N, C, p, p]`` in row-major grid order (what
    :func:`forward_tokens` takes)."""
    b, c, h, w = x.shape
    p = patch_size
    if h % p or w % p:
        raise ValueError(f'input {w}x{h} is not a whole number of {p}-pixel patches')
    grid = x.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5)
    return grid.reshape(b, (h // p) * (w // p), c, p, p)


class TokenSubsetModel(torch.nn.Module):
    """A ViT whose forward takes an optional patch subset: ``net(x)`` is the model's
    own forward, ``net(x, indices)`` runs it on the patches ``indices [B, n]`` of
    ``x`` only. Wrapping the model (rather than calling :func:`forward_tokens` on it)
    keeps DistributedDataParallel's gradient hooks in the path."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model
        self.patch_size = _patch_size(model)

    def forward(self, x: torch.Tensor, indices: torch.Tensor | None = None) -> torch.Tensor:
        if indices is None:
            return self.model(x)
        patches = image_patches(x, self.patch_size)
        rows = torch.arange(len(x), device=x.device)[:, None]
        return forward_tokens(self.model, patches[rows, indices], indices)


def _embed_attr(model: torch.nn.Module, name: str) -> tuple[int, int]:
    """``patch_size``, ``grid_size`` or ``img_size`` of a timm ViT's patch embedding."""
    embed: Any = getattr(model, 'patch_embed', None)
    if embed is None:
        raise ValueError('patch dropping needs a ViT (a model with a patch embedding)')
    value = getattr(embed, name)
    return int(value[0]), int(value[1])


def _patch_size(model: torch.nn.Module) -> int:
    size = _embed_attr(model, 'patch_size')
    if size[0] != size[1]:
        raise ValueError(f'patch dropping needs square patches, got {size}')
    return size[0]


def patch_grid(model: torch.nn.Module) -> tuple[int, int]:
    """``(rows, cols)`` of a timm ViT's patch grid."""
    return _embed_attr(model, 'grid_size')


class PatchDropper:
    """Draws, per batch, whether to drop, the keep ratio and the patches to keep.

    Args:
        config: The settings.
        model: The model being trained (its patch grid).
        scorer: The edge model whose class-token attention picks the patches
            (``attention`` mode; it takes the same input size as ``model``).
        seed: The run's seed; the dropper's generator is seeded from it.

    Raises:
        ValueError: ``attention`` mode without a scorer, or a scorer that takes another
            input size or has no class token.
    """

    def __init__(
        self,
        config: PatchDropConfig,
        model: torch.nn.Module,
        scorer: torch.nn.Module | None = None,
        seed: int = 0,
    ) -> None:
        self.config = config
        self.grid = patch_grid(model)
        self.scorer = scorer if config.mode == 'attention' else None
        if config.mode == 'attention':
            if scorer is None:
                raise ValueError(
                    'patch_drop mode attention needs the edge model to score the patches '
                    '(train the edge stage first, or use mode random)'
                )
            if getattr(scorer, 'cls_token', None) is None:
                raise ValueError('patch_drop mode attention needs an edge ViT with a class token')
            img, mine = _embed_attr(scorer, 'img_size'), _embed_attr(model, 'img_size')
            if img != mine:
                raise ValueError(
                    f'the edge model takes {img[1]}x{img[0]} inputs, the model trained '
                    f'{mine[1]}x{mine[0]}: attention-guided dropping needs one input size'
                )
            self.scorer_grid = patch_grid(scorer)
            scorer.eval()
        self.seed = seed
        self.generator = torch.Generator()
        self.start_epoch(0)

    def start_epoch(self, epoch: int) -> None:
        """Reseed for ``epoch``: its draws depend on the run's seed and the epoch only."""
        self.generator.manual_seed(self.seed + _SEED_OFFSET + _EPOCH_STRIDE * epoch)

    @property
    def num_patches(self) -> int:
        return self.grid[0] * self.grid[1]

    def draw(self) -> float | None:
        """This batch's keep ratio rho, or None to keep the whole frame."""
        drop, u = torch.rand(2, generator=self.generator).tolist()
        if drop >= self.config.prob:
            return None
        return self.config.min_keep + (1.0 - self.config.min_keep) * u

    def count(self, rho: float) -> int:
        """Patches kept at keep ratio ``rho``: ``ceil(rho N)``, as on the edge."""
        return keep_count(self.num_patches, rho)

    def indices(self, x: torch.Tensor, rho: float) -> torch.Tensor:
        """``[B, ceil(rho N)]`` ascending grid indices of the patches of ``x`` to keep."""
        selection = PatchSelection(method=self.config.mode, keep_ratio=rho)
        scores = None
        if self.scorer is not None:
            with torch.no_grad():
                _, raw = forward_with_cls_attention(self.scorer, x, self.config.source)
            scores = resample_scores(raw, self.scorer_grid, self.grid).cpu()
        seed = int(torch.randint(0, 2**62, (1,), generator=self.generator))
        chosen = select_patches(
            scores, selection, self.grid, np.random.default_rng(seed), batch=len(x)
        )
        return torch.from_numpy(np.stack(chosen)).to(x.device)
