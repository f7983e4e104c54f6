"""Variants of Table 2, safetensors round trips, timm checkpoint compatibility."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file

from ask_expert_ros.core.errors import ModelConfigError
from ask_expert_ros.core.inference.models import (
    VARIANTS,
    ModelConfig,
    create_model,
    load_model,
    load_timm_checkpoint,
    read_model_config,
    save_model,
)

NAMES = tuple(f'c{i}' for i in range(10))


@pytest.mark.parametrize(
    ('variant', 'dim', 'heads'),
    [
        ('deit_3h', 192, 3),
        ('deit_4h', 256, 4),
        ('deit_6h', 384, 6),
        ('deit_base', 768, 12),
    ],
)
def test_table2_architecture(variant: str, dim: int, heads: int) -> None:
    """12 layers, 64-dim heads, MLP = 4 x dim, 224 px, patch 16 (paper Table 2)."""
    spec = VARIANTS[variant]
    assert (spec.embed_dim, spec.num_heads, spec.depth, spec.head_dim) == (dim, heads, 12, 64)
    model = create_model(ModelConfig(variant=variant, class_names=NAMES))
    assert len(model.blocks) == 12
    assert model.patch_embed.proj.kernel_size == (16, 16)
    assert model.patch_embed.img_size == (224, 224)
    assert model.blocks[0].attn.num_heads == heads
    assert model.blocks[0].mlp.fc1.out_features == 4 * dim
    assert model.head.out_features == 10


def test_deit_3h_is_timm_deit_tiny() -> None:
    """Same state-dict names and shapes as timm's deit_tiny_patch16_224, so it loads strictly."""
    ours = create_model(ModelConfig(variant='deit_3h', class_names=tuple(map(str, range(1000)))))
    reference = timm.create_model('deit_tiny_patch16_224', pretrained=False)
    ref_state = reference.state_dict()
    assert {k: v.shape for k, v in ours.state_dict().items()} == {
        k: v.shape for k, v in ref_state.items()
    }
    ours.load_state_dict(ref_state, strict=True)


@pytest.mark.parametrize('variant', sorted(VARIANTS))
def test_save_load_identical_logits(tmp_path: Path, variant: str) -> None:
    config = ModelConfig(
        variant=variant, class_names=NAMES, img_size=32, partition='toy', expert_key=(1, 3)
    )
    torch.manual_seed(0)
    model = create_model(config).eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        expected = model(x)
    path = save_model(model, config, tmp_path / variant)
    assert path.suffix == '.safetensors' and path.with_suffix('.json').is_file()
    loaded = load_model(path)
    assert loaded.config == config
    assert not loaded.model.training
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x), expected, rtol=0, atol=0)


def test_config_travels_in_the_file_alone(tmp_path: Path) -> None:
    config = ModelConfig(
        variant='deit_3h',
        class_names=NAMES,
        img_size=16,
        patch_size=4,
        in_chans=1,
        mean=(0.3,),
        std=(0.4,),
        interpolation='bilinear',
    )
    path = save_model(create_model(config), config, tmp_path / 'm')
    path.with_suffix('.json').unlink()
    assert read_model_config(path) == config


def test_official_checkpoint_loads_with_new_head_and_grid(tmp_path: Path) -> None:
    """A timm/FB DeiT checkpoint ({'model': state}) into a 10-class, 32 px, grey model."""
    reference = timm.create_model('deit_tiny_patch16_224', pretrained=False)
    ckpt = tmp_path / 'deit_tiny.pth'
    torch.save({'model': reference.state_dict()}, ckpt)
    config = ModelConfig(
        variant='deit_3h', class_names=NAMES, img_size=32, in_chans=1, mean=(0.5,), std=(0.5,)
    )
    model = create_model(config)
    skipped = load_timm_checkpoint(model, ckpt)
    assert skipped == ['head.bias', 'head.weight']
    torch.testing.assert_close(
        model.blocks[5].attn.qkv.weight, reference.blocks[5].attn.qkv.weight
    )
    assert model.pos_embed.shape == (1, 1 + 4, 192)  # resampled from 14x14 to 2x2
    grey = reference.patch_embed.proj.weight.sum(dim=1, keepdim=True)
    torch.testing.assert_close(model.patch_embed.proj.weight, grey)

    st_path = tmp_path / 'deit_tiny.safetensors'
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(st_path))
    assert load_timm_checkpoint(create_model(config), st_path) == ['head.bias', 'head.weight']


@pytest.mark.parametrize(
    ('kwargs', 'error'),
    [
        ({'variant': 'deit_huge'}, 'unknown variant'),
        ({'class_names': ()}, 'at least one class'),
        ({'img_size': 30}, 'multiple of patch_size'),
        ({'in_chans': 1}, 'one value per input channel'),
        ({'std': (0.2, 0.0, 0.2)}, 'std must be positive'),
    ],
)
def test_bad_config_says_why(kwargs, error) -> None:
    base = {'variant': 'deit_3h', 'class_names': NAMES}
    with pytest.raises(ModelConfigError, match=error):
        ModelConfig(**{**base, **kwargs})


def test_plain_safetensors_without_config_explains(tmp_path: Path) -> None:
    path = tmp_path / 'plain.safetensors'
    save_file({'w': torch.zeros(2)}, str(path))
    with pytest.raises(ModelConfigError, match='load_timm_checkpoint'):
        load_model(path)
    garbage = tmp_path / 'garbage.safetensors'
    garbage.write_bytes(b'not a model')
    with pytest.raises(ModelConfigError, match='not a readable safetensors'):
        load_model(garbage)


def test_newer_format_rejected(tmp_path: Path) -> None:
    data = ModelConfig(variant='deit_3h', class_names=NAMES).to_dict()
    data['format_version'] = 99
    with pytest.raises(ModelConfigError, match='upgrade'):
        ModelConfig.from_dict(json.loads(json.dumps(data)))
