"""A plain supervised trainer: AdamW, linear warm-up then cosine decay, progress bar.

It trains on model-ready tensors held in memory, which is what the small built-in
data needs. The paper's recipe (pruning, hard distillation, progressive
weighting) builds on this loop.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ask_expert_ros.core.distillation import (
    hard_distillation_loss,
    progressive_weight,
    sample_weights,
)


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings.

    Attributes:
        epochs: Passes over the data.
        batch_size: Samples per step.
        lr: Peak learning rate (after warm-up).
        weight_decay: AdamW decoupled weight decay.
        warmup_epochs: Linear warm-up length, in epochs.
        clip_grad: Max gradient norm, or None for no clipping.
        max_shift: Random translation augmentation, in input pixels (0: none).
        seed: Seeds initialisation-independent randomness (shuffling, augmentation).
    """

    epochs: int = 30
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_epochs: int = 2
    clip_grad: float | None = 1.0
    max_shift: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError('epochs and batch_size must be >= 1')
        if self.lr <= 0:
            raise ValueError(f'lr must be > 0, got {self.lr}')
        if self.warmup_epochs < 0 or self.max_shift < 0:
            raise ValueError('warmup_epochs and max_shift must be >= 0')


@dataclass
class TrainHistory:
    """Mean loss and training accuracy per epoch."""

    loss: list[float] = field(default_factory=list)
    accuracy: list[float] = field(default_factory=list)


def lr_at(step: int, total_steps: int, warmup_steps: int, peak: float) -> float:
    """Linear warm-up to ``peak`` then cosine decay to 0."""
    if warmup_steps and step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * peak * (1.0 + math.cos(math.pi * min(1.0, progress)))


def random_shift(x: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Translate the whole batch by up to ``max_shift`` pixels, padding by edge replication."""
    if max_shift == 0:
        return x
    dx, dy = (int(v) for v in torch.randint(-max_shift, max_shift + 1, (2,), generator=generator))
    padded = F.pad(x, (max_shift,) * 4, mode='replicate')
    h, w = x.shape[-2:]
    return padded[..., max_shift + dy : max_shift + dy + h, max_shift + dx : max_shift + dx + w]


def train_classifier(
    model: torch.nn.Module,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    config: TrainConfig,
    desc: str = 'train',
    progress: bool = True,
    teacher: torch.nn.Module | None = None,
    in_domain: torch.Tensor | None = None,
    max_weight: float = 1.0,
    checkpoint: str | Path | None = None,
) -> TrainHistory:
    """Train ``model`` in place on ``inputs [N, C, H, W]``, ``labels [N]``.

    Plain cross-entropy by default. With ``teacher``, the hard-label distillation loss of
    eq. (3); with ``in_domain`` (bool ``[N]``, the samples of D_I), the progressive
    weights of eqs. (1)-(2) rising from 1 to ``max_weight`` over the epochs.

    With ``checkpoint``, model, optimiser, RNG and history are saved there after every
    epoch, and a run that finds the file continues after its last finished epoch: a
    killed run resumes and ends with the same weights as an uninterrupted one.
    """
    if len(inputs) != len(labels) or len(inputs) == 0:
        raise ValueError(f'need as many labels as inputs (> 0), got {len(inputs)}/{len(labels)}')
    if in_domain is not None and len(in_domain) != len(labels):
        raise ValueError('in_domain needs one flag per sample')
    if teacher is not None:
        teacher.eval()
    generator = torch.Generator().manual_seed(config.seed)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.lr, weight_decay=config.weight_decay
    )
    steps_per_epoch = math.ceil(len(inputs) / config.batch_size)
    total = steps_per_epoch * config.epochs
    warmup = steps_per_epoch * config.warmup_epochs
    history = TrainHistory()
    first_epoch = 0
    if checkpoint is not None and Path(checkpoint).is_file():
        state = torch.load(checkpoint, map_location='cpu', weights_only=False)
        model.load_state_dict(state['model'])
        optimizer.load_state_dict(state['optimizer'])
        generator.set_state(state['generator'])
        history = TrainHistory(state['loss'], state['accuracy'])
        first_epoch = state['epoch'] + 1
    model.train()
    step = first_epoch * steps_per_epoch
    bar = tqdm(
        range(first_epoch, config.epochs),
        desc=desc,
        disable=not progress,
        leave=False,
        unit='ep',
        initial=first_epoch,
        total=config.epochs,
    )
    for epoch in bar:
        omega = progressive_weight(epoch, config.epochs, max_weight)
        order = torch.randperm(len(inputs), generator=generator)
        loss_sum, correct = 0.0, 0
        for start in range(0, len(inputs), config.batch_size):
            idx = order[start : start + config.batch_size]
            x = random_shift(inputs[idx], config.max_shift, generator)
            y = labels[idx]
            for group in optimizer.param_groups:
                group['lr'] = lr_at(step, total, warmup, config.lr)
            logits = model(x)
            teacher_logits = None
            if teacher is not None:
                with torch.no_grad():
                    teacher_logits = teacher(x)
            weights = None if in_domain is None else sample_weights(in_domain[idx], omega)
            loss = hard_distillation_loss(logits, y, teacher_logits, weights)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.clip_grad is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip_grad)
            optimizer.step()
            step += 1
            loss_sum += loss.item() * len(idx)
            correct += int((logits.argmax(dim=1) == y).sum())
        history.loss.append(loss_sum / len(inputs))
        history.accuracy.append(correct / len(inputs))
        bar.set_postfix(loss=f'{history.loss[-1]:.3f}', acc=f'{history.accuracy[-1]:.3f}')
        if checkpoint is not None:
            _save_checkpoint(Path(checkpoint), model, optimizer, generator, history, epoch)
    model.eval()
    return history


def _save_checkpoint(
    path: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    history: TrainHistory,
    epoch: int,
) -> None:
    """Write atomically, so a kill mid-write leaves the previous epoch's file intact."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + '.tmp')
    torch.save(
        {
            'model': model.state_dict(),
            'optimizer': optimizer.state_dict(),
            'generator': generator.get_state(),
            'loss': history.loss,
            'accuracy': history.accuracy,
            'epoch': epoch,
        },
        tmp,
    )
    tmp.replace(path)
