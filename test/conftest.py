"""Shared fixtures: a small partition scheme and a zoo of tiny, untrained models."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from ask_expert_ros.core.inference.library import write_manifest
from ask_expert_ros.core.inference.models import ModelConfig, create_model, save_model
from ask_expert_ros.core.inference.taxonomy import PartitionScheme, key_slug

_FRESH_IDS = random.sample(range(30, 201), 171)


def fresh_domain_id() -> int:
    """A DDS domain id in [30, 200] that no earlier call in this process returned."""
    if not _FRESH_IDS:
        raise RuntimeError('the test process used every DDS domain id in [30, 200]')
    return _FRESH_IDS.pop()


def open_loopback_domain() -> tuple[int, Any]:
    """``(domain id, Domain)``: a random id in [30, 200] this process has not opened,
    opened on the loopback interface. Cyclone refuses a second ``Domain`` for an id the
    process has open (PRECONDITION_NOT_MET): two tests drawing the same random id made a
    suite run fail now and then."""
    from cyclonedds.core import DDSException
    from cyclonedds.domain import Domain

    from ask_expert_ros.dds.config import loopback_config

    for _ in range(16):
        domain_id = fresh_domain_id()
        try:
            return domain_id, Domain(domain_id, loopback_config())
        except DDSException:  # opened by a test that picked its own id
            continue
    raise RuntimeError('no free DDS domain id in [30, 200] in this process')


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
