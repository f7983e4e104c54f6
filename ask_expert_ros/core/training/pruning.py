"""Structured pruning of a trained DeiT into a smaller one by loss-based importance.

The importance of a structure is how much the loss moves when it is scaled, i.e. the
gradient of the loss with respect to a multiplicative mask held at 1 (Michel et al.
2019; Voita et al. 2019; used by DynaBERT and DeViT, which the paper follows):

* attention head h of block l: ``|dL/dm_lh|`` with ``m_lh`` scaling that head's output;
* MLP neuron j of block l: the same for the hidden unit's activation;
* embedding channel d: one mask shared by every point of the residual stream (the
  embedded tokens and each block's output), so its gradient sums ``x_d * dL/dx_d`` over
  the whole stream.

Per-batch gradients are taken in absolute value and summed over the batches. The
student keeps, per block, the most important heads (head width stays the teacher's,
64 for every variant of Table 2) and MLP neurons (4x its width), and globally the most
important channels; its weights are the teacher's rows and columns at those indices.
With nothing removed, the student is the teacher exactly.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer

from ask_expert_ros.core.inference.models import VARIANTS, ModelConfig, VariantName, create_model

logger = logging.getLogger(__name__)

Batch = tuple[torch.Tensor, torch.Tensor] | tuple[torch.Tensor, torch.Tensor, torch.Tensor]
LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]


@dataclass(frozen=True)
class Importance:
    """Accumulated importance scores of a ViT's prunable structures.

    Attributes:
        heads: ``[depth, num_heads]``.
        neurons: ``[depth, mlp_hidden]``.
        channels: ``[embed_dim]``.
        batches: How many batches were accumulated.
    """

    heads: torch.Tensor
    neurons: torch.Tensor
    channels: torch.Tensor
    batches: int


@dataclass(frozen=True)
class KeepPlan:
    """Indices to keep, ascending: per block for heads and neurons, global for channels."""

    heads: tuple[tuple[int, ...], ...]
    neurons: tuple[tuple[int, ...], ...]
    channels: tuple[int, ...]


def _weighted_ce(
    logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor | None
) -> torch.Tensor:
    loss = F.cross_entropy(logits, labels, reduction='none')
    if weights is None:
        return loss.mean()
    return (loss * weights).sum() / weights.sum()


def estimate_importance(
    model: VisionTransformer,
    batches: Iterable[Batch],
    loss_fn: LossFn = _weighted_ce,
    max_batches: int | None = None,
) -> Importance:
    """Loss-based importance of heads, MLP neurons and embedding channels.

    Args:
        model: A timm VisionTransformer (the teacher); its weights are not changed.
        batches: ``(inputs, labels)`` or ``(inputs, labels, sample_weights)``.
        loss_fn: ``(logits, labels, weights or None) -> scalar``; weighted CE by default.
        max_batches: Stop after this many batches (None: all).
    """
    blocks: list[Any] = list(model.blocks)
    if not blocks:
        raise ValueError('the model has no transformer blocks to prune')
    attn0 = blocks[0].attn
    num_heads, head_dim = attn0.num_heads, attn0.head_dim
    hidden = blocks[0].mlp.fc1.out_features
    device = next(model.parameters()).device
    head_mask = torch.ones(len(blocks), num_heads, device=device, requires_grad=True)
    neuron_mask = torch.ones(len(blocks), hidden, device=device, requires_grad=True)
    channel_mask = torch.ones(model.embed_dim, device=device, requires_grad=True)

    def scale_heads(layer: int) -> Callable:
        def hook(_module: torch.nn.Module, args: tuple) -> tuple:
            return (args[0] * head_mask[layer].repeat_interleave(head_dim),)

        return hook

    def scale_neurons(layer: int) -> Callable:
        def hook(_module: torch.nn.Module, args: tuple) -> tuple:
            return (args[0] * neuron_mask[layer],)

        return hook

    def scale_channels(_module: torch.nn.Module, _args: tuple, out: torch.Tensor) -> torch.Tensor:
        return out * channel_mask

    handles = [model.norm_pre.register_forward_hook(scale_channels)]
    for layer, block in enumerate(blocks):
        handles.append(block.attn.proj.register_forward_pre_hook(scale_heads(layer)))
        handles.append(block.mlp.fc2.register_forward_pre_hook(scale_neurons(layer)))
        handles.append(block.register_forward_hook(scale_channels))
    was_training = model.training
    model.eval()  # no dropout / drop-path noise in the scores
    scores = [torch.zeros_like(m) for m in (head_mask, neuron_mask, channel_mask)]
    count = 0
    try:
        for batch in batches:
            if max_batches is not None and count >= max_batches:
                break
            x, y = batch[0].to(device), batch[1].to(device)
            w = batch[2].to(device) if len(batch) > 2 else None
            loss = loss_fn(model(x), y, w)
            grads = torch.autograd.grad(loss, (head_mask, neuron_mask, channel_mask))
            for score, grad in zip(scores, grads, strict=True):
                score += grad.detach().abs()
            count += 1
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    if count == 0:
        raise ValueError('importance needs at least one batch')
    return Importance(scores[0].cpu(), scores[1].cpu(), scores[2].cpu(), count)


def keep_plan(importance: Importance, heads: int, neurons: int, channels: int) -> KeepPlan:
    """Keep the ``heads`` / ``neurons`` per block and ``channels`` scoring highest."""
    depth, num_heads = importance.heads.shape
    if not 1 <= heads <= num_heads:
        raise ValueError(f'cannot keep {heads} of {num_heads} heads')
    if not 1 <= neurons <= importance.neurons.shape[1]:
        raise ValueError(f'cannot keep {neurons} of {importance.neurons.shape[1]} MLP neurons')
    if not 1 <= channels <= importance.channels.numel():
        raise ValueError(f'cannot keep {channels} of {importance.channels.numel()} channels')

    def top(scores: torch.Tensor, n: int) -> tuple[int, ...]:
        # stable: ties go to the lower index, so a no-op plan is the identity
        order = torch.argsort(-scores, stable=True)[:n]
        return tuple(sorted(int(i) for i in order))

    return KeepPlan(
        heads=tuple(top(importance.heads[layer], heads) for layer in range(depth)),
        neurons=tuple(top(importance.neurons[layer], neurons) for layer in range(depth)),
        channels=top(importance.channels, channels),
    )


def student_config(teacher: ModelConfig, variant: VariantName, **changes: object) -> ModelConfig:
    """The teacher's config with a smaller variant (same depth, input, classes)."""
    t, s = VARIANTS[teacher.variant], VARIANTS[variant]
    if s.head_dim != t.head_dim:
        raise ValueError(
            f'{variant} has {s.head_dim}-dim heads, {teacher.variant} {t.head_dim}: '
            'pruning keeps whole heads, so both need the same head width'
        )
    if s.num_heads > t.num_heads:
        raise ValueError(f'cannot prune {teacher.variant} ({t.num_heads} heads) into {variant}')
    return replace(teacher, variant=variant, **changes)  # type: ignore[arg-type]


def prune_model(
    teacher: VisionTransformer, plan: KeepPlan, config: ModelConfig
) -> VisionTransformer:
    """A ``config``-shaped student whose weights are the teacher's at the plan's indices."""
    spec = config.spec
    hidden = int(spec.embed_dim * spec.mlp_ratio)
    if len(plan.channels) != spec.embed_dim or any(len(h) != spec.num_heads for h in plan.heads):
        raise ValueError(
            f'plan keeps {len(plan.channels)} channels / {len(plan.heads[0])} heads, '
            f'{config.variant} needs {spec.embed_dim} / {spec.num_heads}'
        )
    if any(len(n) != hidden for n in plan.neurons) or len(plan.heads) != config.depth:
        raise ValueError(f'plan does not match {config.variant} depth {config.depth}')
    attn: Any = teacher.blocks[0].attn
    head_dim, teacher_heads = int(attn.head_dim), int(attn.num_heads)
    state = teacher.state_dict()
    ch = torch.tensor(plan.channels)
    out: dict[str, torch.Tensor] = {}
    out['cls_token'] = state['cls_token'][..., ch]
    out['pos_embed'] = state['pos_embed'][..., ch]
    out['patch_embed.proj.weight'] = state['patch_embed.proj.weight'][ch]
    out['patch_embed.proj.bias'] = state['patch_embed.proj.bias'][ch]
    for layer, (heads, neurons) in enumerate(zip(plan.heads, plan.neurons, strict=True)):
        p = f'blocks.{layer}.'
        dims = torch.cat([torch.arange(h * head_dim, (h + 1) * head_dim) for h in heads])
        qkv_rows = torch.cat([part * teacher_heads * head_dim + dims for part in range(3)])
        nrn = torch.tensor(neurons)
        for norm in ('norm1', 'norm2'):
            out[p + norm + '.weight'] = state[p + norm + '.weight'][ch]
            out[p + norm + '.bias'] = state[p + norm + '.bias'][ch]
        out[p + 'attn.qkv.weight'] = state[p + 'attn.qkv.weight'][qkv_rows][:, ch]
        out[p + 'attn.qkv.bias'] = state[p + 'attn.qkv.bias'][qkv_rows]
        out[p + 'attn.proj.weight'] = state[p + 'attn.proj.weight'][ch][:, dims]
        out[p + 'attn.proj.bias'] = state[p + 'attn.proj.bias'][ch]
        out[p + 'mlp.fc1.weight'] = state[p + 'mlp.fc1.weight'][nrn][:, ch]
        out[p + 'mlp.fc1.bias'] = state[p + 'mlp.fc1.bias'][nrn]
        out[p + 'mlp.fc2.weight'] = state[p + 'mlp.fc2.weight'][ch][:, nrn]
        out[p + 'mlp.fc2.bias'] = state[p + 'mlp.fc2.bias'][ch]
    out['norm.weight'] = state['norm.weight'][ch]
    out['norm.bias'] = state['norm.bias'][ch]
    out['head.weight'] = state['head.weight'][:, ch]
    out['head.bias'] = state['head.bias']
    student = create_model(config)
    student.load_state_dict({k: v.clone() for k, v in out.items()}, strict=True)
    return student.to(next(teacher.parameters()).device)


def prune_to_variant(
    teacher: VisionTransformer,
    teacher_config: ModelConfig,
    variant: VariantName,
    batches: Iterable[Batch],
    max_batches: int | None = 8,
    loss_fn: LossFn = _weighted_ce,
    **config_changes: object,
) -> tuple[VisionTransformer, ModelConfig, Importance]:
    """Estimate importance on ``batches`` and slice ``teacher`` into ``variant``."""
    config = student_config(teacher_config, variant, **config_changes)
    importance = estimate_importance(teacher, batches, loss_fn, max_batches)
    spec = config.spec
    plan = keep_plan(
        importance, spec.num_heads, int(spec.embed_dim * spec.mlp_ratio), spec.embed_dim
    )
    logger.info(
        'pruned %s -> %s on %d batches', teacher_config.variant, variant, importance.batches
    )
    return prune_model(teacher, plan, config), config, importance
