"""Attention-aware patch offload (Im et al., 2024): pick patches on the edge, run the
expert on that token subset.

The edge ViT already computes how much its class token attends to every patch; the
patches it looked at are the ones worth sending. This module holds the three pieces
that make that work, all tensor ops with no Python loop over patches:

* :func:`forward_with_cls_attention` -- the edge model's ordinary forward pass that also
  returns the class token's attention over the patch tokens (``'last'``: the last
  block's CLS row, mean over heads, as Im et al.; ``'rollout'``: attention rollout
  over all blocks). ``'last'`` costs one ``[1 x N]`` score row per head on top of the
  forward pass: the last block's own q and k are reused.
* :func:`select_patches` -- a keep ratio rho (the top ``ceil(rho N)``) or a cumulative
  attention mass m (the smallest set whose scores sum to >= m), with the random and
  centre baselines.
* :func:`forward_tokens` -- the expert on the received patches only: patch embedding,
  the position embeddings of their indices, the class token, the blocks on the
  shorter sequence; requests with different patch counts share a batch by padding
  with an attention mask.

Plus the pixel side: frames cut into a patch grid and the selected patches packed
into one mosaic image (what travels in ``ExpertRequest``), and back.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal, get_args

import numpy as np
import torch
import torch.nn.functional as F

from ask_expert_ros.core.errors import AskExpertError

SelectionMethod = Literal['attention', 'random', 'centre']
AttentionSource = Literal['last', 'rollout']
SELECTION_METHODS: tuple[str, ...] = get_args(SelectionMethod)
ATTENTION_SOURCES: tuple[str, ...] = get_args(AttentionSource)


class PatchRequestError(AskExpertError, ValueError):
    """A patch request does not fit the model: indices, grid, pixels or patch size."""


@dataclass(frozen=True)
class PatchSelection:
    """How the edge picks patches.

    Exactly one of ``keep_ratio`` and ``attention_mass`` is set.

    Attributes:
        method: ``attention`` (the edge's CLS attention), ``random`` or ``centre``
            (the baselines: a uniformly random set, or the patches nearest the centre).
        keep_ratio: rho in (0, 1]: keep the top ``ceil(rho N)`` patches.
        attention_mass: m in (0, 1]: keep the smallest set whose attention sums to
            >= m (``attention`` only; Im et al.'s default is 0.97).
        source: Which attention scores the patches: ``last`` block or ``rollout``.
        seed: Seed of the ``random`` baseline (a generator per selector).
    """

    method: SelectionMethod = 'attention'
    keep_ratio: float | None = 0.3
    attention_mass: float | None = None
    source: AttentionSource = 'last'
    seed: int = 0

    def __post_init__(self) -> None:
        if self.method not in SELECTION_METHODS:
            raise ValueError(f'selection must be one of {SELECTION_METHODS}, got {self.method!r}')
        if self.source not in ATTENTION_SOURCES:
            raise ValueError(
                f'attention source must be one of {ATTENTION_SOURCES}, got {self.source!r}'
            )
        if (self.keep_ratio is None) == (self.attention_mass is None):
            raise ValueError('give exactly one of keep_ratio (rho) and attention_mass (m)')
        if self.keep_ratio is not None and not 0 < self.keep_ratio <= 1:
            raise ValueError(f'keep_ratio must be in (0, 1], got {self.keep_ratio}')
        if self.attention_mass is not None:
            if not 0 < self.attention_mass <= 1:
                raise ValueError(f'attention_mass must be in (0, 1], got {self.attention_mass}')
            if self.method != 'attention':
                raise ValueError(
                    f'attention_mass selects by attention; the {self.method} baseline '
                    f'needs keep_ratio'
                )

    @property
    def label(self) -> str:
        """Short text for tables: ``attention rho=0.3`` or ``attention m=0.9``."""
        if self.keep_ratio is not None:
            return f'{self.method} rho={self.keep_ratio:g}'
        return f'{self.method} m={self.attention_mass:g}'


# ---------------------------------------------------------------------------
# edge: the forward pass that also scores the patches


def _grid(model: Any) -> tuple[int, int]:
    grid = model.patch_embed.grid_size
    return int(grid[0]), int(grid[1])


def _embed(model: Any, x: torch.Tensor) -> torch.Tensor:
    """timm's VisionTransformer up to the blocks: patches, prefix tokens, positions."""
    x = model.patch_embed(x)
    x = model._pos_embed(x)
    x = model.patch_drop(x)
    return model.norm_pre(x)


def _attention_parts(
    block: Any, x: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q, k, v ``[B, heads, N, head_dim]`` of ``block``'s attention on its input ``x``."""
    attn = block.attn
    if getattr(attn, 'gate', None) is not None:
        raise AskExpertError('gated attention is not supported for patch scoring')
    h = block.norm1(x)
    b, n, _ = h.shape
    qkv = attn.qkv(h).reshape(b, n, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    return attn.q_norm(q), attn.k_norm(k), v


def _finish_block(block: Any, x: torch.Tensor, mixed: torch.Tensor) -> torch.Tensor:
    """The rest of a timm ``Block`` after attention: proj, residuals, MLP."""
    attn = block.attn
    b, n, _ = x.shape
    out = mixed.transpose(1, 2).reshape(b, n, -1)
    out = getattr(attn, 'norm', torch.nn.Identity())(out)
    out = attn.proj_drop(attn.proj(out))
    x = x + block.drop_path1(block.ls1(out))
    return x + block.drop_path2(block.ls2(block.mlp(block.norm2(x))))


def forward_with_cls_attention(
    model: Any, x: torch.Tensor, source: AttentionSource = 'last'
) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's logits and its class token's attention over the patch tokens.

    The computation is the model's own forward (same logits, within float rounding);
    the last block (``'last'``) or every block (``'rollout'``) is unrolled so its
    attention can be read.

    Args:
        model: A timm ``VisionTransformer`` with a class token.
        x: Preprocessed input ``[B, C, H, W]``.
        source: ``'last'``: the last block's CLS row, mean over heads (Im et al.);
            ``'rollout'``: attention rollout (Abnar & Zuidema), the product over blocks
            of ``(A + I) / 2`` with A the head-mean attention, CLS row.

    Returns:
        ``(logits [B, classes], scores [B, N])``, scores >= 0 summing to 1 per row, in
        row-major grid order.
    """
    if getattr(model, 'cls_token', None) is None:
        raise AskExpertError('patch scoring needs a ViT with a class token')
    prefix = int(model.num_prefix_tokens)
    x = _embed(model, x)
    blocks = list(model.blocks)
    rollout: torch.Tensor | None = None
    if source == 'last':
        for block in blocks[:-1]:
            x = block(x)
        block = blocks[-1]
        q, k, v = _attention_parts(block, x)
        mixed = F.scaled_dot_product_attention(q, k, v)
        scale = block.attn.head_dim**-0.5
        cls_row = ((q[:, :, :1].float() * scale) @ k.float().transpose(-2, -1)).softmax(-1)
        scores = cls_row.mean(dim=1)[:, 0, prefix:]
        x = _finish_block(block, x, mixed)
    elif source == 'rollout':
        for block in blocks:
            q, k, v = _attention_parts(block, x)
            scale = block.attn.head_dim**-0.5
            weights = ((q.float() * scale) @ k.float().transpose(-2, -1)).softmax(-1)
            mixed = (weights.to(v.dtype) @ v).to(v.dtype)
            mean = weights.mean(dim=1)
            eye = torch.eye(mean.shape[-1], device=mean.device, dtype=mean.dtype)
            step = 0.5 * mean + 0.5 * eye
            rollout = step if rollout is None else step @ rollout
            x = _finish_block(block, x, mixed)
        assert rollout is not None
        scores = rollout[:, 0, prefix:]
    else:
        raise ValueError(f'attention source must be one of {ATTENTION_SOURCES}, got {source!r}')
    x = model.norm(x)
    logits = model.forward_head(x)
    scores = scores.float()
    scores = scores / scores.sum(dim=1, keepdim=True).clamp_min(1e-12)
    return logits, scores


class AttentionTap(torch.nn.Module):
    """A ViT whose forward returns ``(logits, CLS attention scores)``: what a backend
    runs (and compiles) for an edge in patch mode."""

    def __init__(self, model: Any, source: AttentionSource = 'last') -> None:
        super().__init__()
        self.model = model
        self.source = source

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return forward_with_cls_attention(self.model, x, self.source)


def resample_scores(
    scores: torch.Tensor, grid: tuple[int, int], target: tuple[int, int]
) -> torch.Tensor:
    """Patch scores ``[B, gh * gw]`` on the edge model's grid -> the expert's grid."""
    if tuple(grid) == tuple(target):
        return scores
    b = scores.shape[0]
    mapped = F.interpolate(
        scores.float().reshape(b, 1, grid[0], grid[1]),
        size=target,
        mode='area' if target[0] <= grid[0] and target[1] <= grid[1] else 'bilinear',
        **({} if target[0] <= grid[0] and target[1] <= grid[1] else {'align_corners': False}),
    ).reshape(b, -1)
    mapped = mapped.clamp_min(0)
    return mapped / mapped.sum(dim=1, keepdim=True).clamp_min(1e-12)


# ---------------------------------------------------------------------------
# selection


def keep_count(num_patches: int, keep_ratio: float) -> int:
    """``ceil(rho N)``, at least 1 (rounding guards 0.3 * 10 = 3.0000000000000004)."""
    return max(1, min(num_patches, math.ceil(round(keep_ratio * num_patches, 9))))


def centre_order(grid: tuple[int, int]) -> np.ndarray:
    """Patch indices of a grid ordered by distance of their centre from the grid's
    centre (ties by index): the ``centre`` baseline keeps a prefix of it."""
    rows, cols = np.meshgrid(np.arange(grid[0]), np.arange(grid[1]), indexing='ij')
    dist = (rows + 0.5 - grid[0] / 2) ** 2 + (cols + 0.5 - grid[1] / 2) ** 2
    return np.argsort(dist.ravel(), kind='stable')


def select_patches(
    scores: torch.Tensor | np.ndarray | None,
    selection: PatchSelection,
    grid: tuple[int, int],
    generator: np.random.Generator | None = None,
    batch: int | None = None,
) -> list[np.ndarray]:
    """The patches to send, per frame: ascending grid indices (int64).

    Args:
        scores: ``[B, N]`` attention scores (``attention`` only; ignored otherwise).
        selection: The rule.
        grid: ``(rows, cols)`` of the patch grid, ``N = rows * cols``.
        generator: Random source of the ``random`` baseline.
        batch: Number of frames when ``scores`` is None.

    Returns:
        One index array per frame. Ties in the scores go to the lower index.
    """
    n = grid[0] * grid[1]
    if selection.method == 'attention':
        if scores is None:
            raise ValueError('attention selection needs the attention scores')
        s = torch.as_tensor(scores).float()
        if s.ndim != 2 or s.shape[1] != n:
            raise ValueError(f'scores must be [B, {n}] for grid {grid}, got {list(s.shape)}')
        # stable descending sort: equal scores keep the lower index first
        values, order = torch.sort(s, dim=1, descending=True, stable=True)
        if selection.keep_ratio is not None:
            counts = torch.full((s.shape[0],), keep_count(n, selection.keep_ratio))
        else:
            mass = values.cumsum(dim=1)
            total = values.sum(dim=1, keepdim=True).clamp_min(1e-12)
            # patches needed before the running sum reaches m, plus the one that reaches it
            wanted = float(selection.attention_mass or 1.0)
            counts = ((mass / total) < wanted - 1e-7).sum(dim=1) + 1
            counts = counts.clamp(1, n)
        sorted_idx = torch.sort(
            torch.where(
                torch.arange(n)[None, :] < counts[:, None], order, torch.full_like(order, n)
            ),
            dim=1,
        ).values.numpy()
        return [row[:c] for row, c in zip(sorted_idx, counts.tolist(), strict=True)]
    count = keep_count(n, selection.keep_ratio or 1.0)
    frames = batch if batch is not None else (len(scores) if scores is not None else 1)
    if selection.method == 'centre':
        chosen = np.sort(centre_order(grid)[:count])
        return [chosen.copy() for _ in range(frames)]
    rng = generator if generator is not None else np.random.default_rng(selection.seed)
    picks = np.argsort(rng.random((frames, n)), axis=1)[:, :count]
    return list(np.sort(picks, axis=1))


# ---------------------------------------------------------------------------
# pixels: frame <-> patches <-> mosaic


def frame_to_patches(frame: np.ndarray, patch_size: int) -> np.ndarray:
    """``uint8 [H, W(, C)]`` at the model's input size -> ``[N, p, p(, C)]``, row-major."""
    h, w = frame.shape[:2]
    p = patch_size
    if h % p or w % p:
        raise PatchRequestError(f'frame {w}x{h} is not a whole number of {p}-pixel patches')
    tail = frame.shape[2:]
    grid = frame.reshape(h // p, p, w // p, p, *tail).swapaxes(1, 2)
    return grid.reshape((h // p) * (w // p), p, p, *tail)


def mosaic_shape(count: int) -> tuple[int, int]:
    """(rows, cols) of tiles for ``count`` patches: ``rows`` the largest divisor of
    ``count`` up to its square root, so every tile holds a patch (a prime count is one
    row of tiles).

    Unused tiles would be zeros sent for nothing: the near-square ``ceil(sqrt n)``
    columns of an earlier version sent 64 tiles for 59 patches (rho = 0.3 of 196), 8 %
    more bytes in a raw request.
    """
    count = max(1, count)
    rows = next(r for r in range(math.isqrt(count), 0, -1) if count % r == 0)
    return rows, count // rows


def pack_mosaic(patches: np.ndarray) -> np.ndarray:
    """``[n, p, p(, C)]`` -> one image of the ``mosaic_shape(n)`` tiles, row-major.

    The expert reads the n tiles back in order.
    """
    p = patches.shape[1]
    rows, cols = mosaic_shape(patches.shape[0])
    tail = patches.shape[3:]
    return np.ascontiguousarray(
        patches.reshape(rows, cols, p, p, *tail).swapaxes(1, 2).reshape(rows * p, cols * p, *tail)
    )


def unpack_mosaic(image: np.ndarray, patch_size: int, count: int) -> np.ndarray:
    """The ``count`` tiles of a mosaic, ``[count, p, p(, C)]``.

    Raises:
        PatchRequestError: The image is not a whole number of tiles, or its tiles are
            not the ``mosaic_shape(count)`` grid.
    """
    h, w = image.shape[:2]
    p = patch_size
    if p < 1 or h % p or w % p:
        raise PatchRequestError(f'patch mosaic {w}x{h} is not a whole number of {p}-pixel patches')
    tiles = (h // p) * (w // p)
    if (h // p, w // p) != mosaic_shape(count):
        raise PatchRequestError(
            f'patch mosaic of {w // p}x{h // p} tiles does not hold {count} patches '
            f'(expected {mosaic_shape(count)[1]}x{mosaic_shape(count)[0]}, {tiles} tiles)'
        )
    return frame_to_patches(image, p)


def check_layout(
    indices: np.ndarray | tuple[int, ...],
    grid: tuple[int, int],
    patch_size: int,
    model_grid: tuple[int, int],
    model_patch: int,
) -> np.ndarray:
    """A request's patch layout checked against the model that will run it.

    Returns:
        The indices as ``int64``.

    Raises:
        PatchRequestError: Patch size or grid not the model's, no index, an index
            outside the grid, a duplicate, or indices not ascending.
    """
    if patch_size != model_patch:
        raise PatchRequestError(
            f'patch size {patch_size} is not the expert model patch size {model_patch}'
        )
    if tuple(grid) != tuple(model_grid):
        raise PatchRequestError(
            f'patch grid {grid[0]}x{grid[1]} is not the expert model grid '
            f'{model_grid[0]}x{model_grid[1]}'
        )
    idx = np.asarray(indices, dtype=np.int64)
    n = model_grid[0] * model_grid[1]
    if idx.ndim != 1 or idx.size == 0:
        raise PatchRequestError('a patch request needs at least one patch index')
    if idx.min() < 0 or idx.max() >= n:
        raise PatchRequestError(f'patch index {int(idx.max())} outside the grid of {n} patches')
    if np.unique(idx).size != idx.size:
        raise PatchRequestError('duplicate patch indices')
    if np.any(np.diff(idx) <= 0):
        raise PatchRequestError('patch indices must be ascending')
    return idx


# ---------------------------------------------------------------------------
# expert: the forward pass on a token subset


def forward_tokens(
    model: Any,
    patches: torch.Tensor,
    indices: torch.Tensor,
    lengths: torch.Tensor | None = None,
    masked: bool | None = None,
) -> torch.Tensor:
    """The ViT on the given patches only.

    Args:
        model: A timm ``VisionTransformer`` with a class token and learned positions.
        patches: Normalised patch pixels ``[B, n, C, p, p]`` (float).
        indices: Grid index of every patch ``[B, n]`` (int64, row-major).
        lengths: Real patches per row when rows were padded to ``n``; the padding is
            masked out of attention (None: every row holds n real patches).
        masked: Always run the masked blocks (True), as an exported graph must (it
            cannot branch on the lengths' values); None: only when a row is padded.

    Returns:
        Logits ``[B, classes]``; equal to ``model(x)`` when every patch is sent in order.
    """
    b, n = patches.shape[:2]
    proj = model.patch_embed.proj
    weight = proj.weight.reshape(proj.weight.shape[0], -1)
    tokens = F.linear(patches.reshape(b, n, -1).to(weight.dtype), weight, proj.bias)
    tokens = model.patch_embed.norm(tokens)
    pos = model.pos_embed
    prefix = int(model.num_prefix_tokens)
    if model.no_embed_class:  # positions only for the patches (DeiT-3 style)
        patch_pos, cls_pos = pos[0], None
    else:
        patch_pos, cls_pos = pos[0, prefix:], pos[:, :prefix]
    x = tokens + patch_pos[indices]
    cls = model.cls_token.expand(b, -1, -1)
    if cls_pos is not None:
        cls = cls + cls_pos
    x = torch.cat([cls.to(x.dtype), x], dim=1)
    x = model.norm_pre(model.patch_drop(model.pos_drop(x)))
    if lengths is None or (not masked and bool((lengths == n).all())):
        x = model.blocks(x)
    else:
        keep = torch.arange(n + 1, device=x.device)[None, :] <= lengths[:, None]
        mask = keep[:, None, None, :]  # [B, 1, 1, 1 + n]: True = attend
        for block in model.blocks:
            x = block(x, attn_mask=mask)
    x = model.norm(x)
    return model.forward_head(x)


def pad_patches(
    items: list[tuple[np.ndarray, np.ndarray]],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ragged ``(patches [n_i, ...], indices [n_i])`` -> padded arrays and lengths.

    Returns:
        ``patches [B, n_max, ...]`` (zero padding), ``indices [B, n_max]`` (padding
        repeats index 0, masked out later) and ``lengths [B]``.
    """
    lengths = np.array([len(idx) for _, idx in items], dtype=np.int64)
    n_max = int(lengths.max())
    first = items[0][0]
    out = np.zeros((len(items), n_max, *first.shape[1:]), dtype=first.dtype)
    idx_out = np.zeros((len(items), n_max), dtype=np.int64)
    for row, (pix, idx) in enumerate(items):
        out[row, : len(idx)] = pix
        idx_out[row, : len(idx)] = idx
    return out, idx_out, lengths


# ---------------------------------------------------------------------------
# the edge's side of a patch request


def encode_patches(frame: np.ndarray, indices: np.ndarray, patch_size: int) -> np.ndarray:
    """The selected patches of a frame at the expert's input size, as one mosaic."""
    return pack_mosaic(frame_to_patches(frame, patch_size)[indices])


def model_grid(config: Any) -> tuple[int, int]:
    """``(rows, cols)`` of a model config's patch grid
    (:class:`~ask_expert_ros.core.inference.models.ModelConfig`)."""
    g = int(config.img_size) // int(config.patch_size)
    return (g, g)
