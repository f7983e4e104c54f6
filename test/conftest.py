"""Shared fixtures: a small partition scheme and a zoo of tiny, untrained models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from ask_expert_ros.core.inference.library import write_manifest
from ask_expert_ros.core.inference.models import ModelConfig, create_model, save_model
from ask_expert_ros.core.inference.taxonomy import PartitionScheme, key_slug

TINY = dict(img_size=8, patch_size=4, depth=1, in_chans=1, mean=(0.5,), std=(0.5,))


@pytest.fixture
def scheme() -> PartitionScheme:
    """6 classes in 3 subsets: {a, b} -> 1, {c, d} -> 2, {e, f} -> 3."""
    return PartitionScheme.from_class_subsets(
        'toy_s3', ('a', 'b', 'c', 'd', 'e', 'f'), {1: [0, 1], 2: [2, 3], 3: [4, 5]}
    )


def tiny_config(scheme: PartitionScheme, key=None, variant='deit_3h') -> ModelConfig:
    return ModelConfig(
        variant=variant,
        class_names=scheme.class_names,
        partition=scheme.name,
        expert_key=key,
        interpolation='bilinear',
        **TINY,
    )


@pytest.fixture
def zoo(tmp_path: Path, scheme: PartitionScheme) -> Path:
    """A library with an edge model and an expert for every key of k = 2 (random weights)."""
    torch.manual_seed(0)
    edge = save_model(
        create_model(tiny_config(scheme)), tiny_config(scheme), tmp_path / 'edge.safetensors'
    )
    experts = {}
    for key in scheme.expert_keys(2):
        cfg = tiny_config(scheme, key, 'deit_4h')
        experts[key] = save_model(create_model(cfg), cfg, tmp_path / f'expert_{key_slug(key)}')
    return write_manifest(tmp_path, scheme, 2, experts, edge=edge)


@pytest.fixture
def frames() -> np.ndarray:
    """20 random 8x8 grey frames."""
    return np.random.default_rng(0).integers(0, 256, size=(20, 8, 8), dtype=np.uint8)
