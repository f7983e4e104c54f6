"""Side by side, one process: slices of an epoch of the DeiT-6H teacher (28 px, 2 blocks,
bf16 autocast) fed by the per-frame PIL transform and by ``augment.on_batch``, alternated.

Needs Fashion-MNIST (``apt-get install dataset-fashion-mnist``)::

    python benchmarks/augment_on_batch.py
"""

from __future__ import annotations

import time

import numpy as np
import torch

from ask_expert_ros.core.inference.models import ModelConfig, create_model
from ask_expert_ros.core.training.augment import AugmentConfig, FrameDataset, train_transform
from ask_expert_ros.core.training.datasets import load_dataset
from ask_expert_ros.core.training.training import TrainConfig, train_classifier

FRAMES = 128 * 60
ROUNDS = 2


def main() -> None:
    data = load_dataset('fashion_mnist')
    frames, labels = data.train_images[:FRAMES], data.train_labels[:FRAMES]
    config = ModelConfig(
        variant='deit_6h',
        class_names=tuple(data.class_names),
        img_size=28,
        patch_size=7,
        depth=2,
        in_chans=1,
        mean=(0.286,),
        std=(0.353,),
    )
    train = TrainConfig(epochs=1, batch_size=128, lr=1e-3, warmup_epochs=0, cpu_bf16=True)
    rates: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(ROUNDS):
        for on_batch in (False, True):
            augment = AugmentConfig(0.6, 0.5, None, 0.0, on_batch=on_batch)
            dataset = FrameDataset(frames, labels, train_transform(config, augment), 1)
            torch.manual_seed(0)
            model = create_model(config)
            start = time.perf_counter()
            train_classifier(model, dataset, None, train, progress=False, augment=augment)
            rates[on_batch].append(FRAMES / (time.perf_counter() - start))
    for on_batch, values in rates.items():
        name = 'on_batch' if on_batch else 'per-frame PIL'
        print(f'{name:>14}: frames/s {[round(v) for v in values]}')
    print(f'ratio (medians): {np.median(rates[True]) / np.median(rates[False]):.2f}')


if __name__ == '__main__':
    main()
