"""``finetune_zoo`` and ``measure_patch_robustness`` on a tiny digits zoo (8 px frames,
4 px patches: a 2x2 grid; untrained models), on the real digits data."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from ask_expert_ros.cli import build_parser
from ask_expert_ros.core.inference.library import ExpertLibrary, write_manifest
from ask_expert_ros.core.inference.models import ModelConfig, create_model, load_model, save_model
from ask_expert_ros.core.inference.taxonomy import key_slug, resolve_scheme
from ask_expert_ros.core.training.datasets import load_dataset
from ask_expert_ros.core.training.patch_finetune import FinetuneConfig, finetune_zoo
from ask_expert_ros.core.training.patch_robustness import (
    format_robustness,
    measure_patch_robustness,
)
from ask_expert_ros.core.training.patch_training import PatchDropConfig


def _config(key=None, variant='deit_3h') -> ModelConfig:
    scheme = resolve_scheme('digits_s4')
    return ModelConfig(
        variant=variant,
        class_names=scheme.class_names,
        partition=scheme.name,
        expert_key=key,
        interpolation='bilinear',
        img_size=8,
        patch_size=4,
        depth=1,
        in_chans=1,
        mean=(0.3,),
        std=(0.37,),
    )


@pytest.fixture(scope='module')
def digits_zoo(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp('digits_zoo')
    scheme = resolve_scheme('digits_s4')
    torch.manual_seed(0)
    edge = save_model(create_model(_config()), _config(), root / 'edge')
    experts = {}
    for key in scheme.expert_keys(2):
        cfg = _config(key, 'deit_4h')
        experts[key] = save_model(create_model(cfg), cfg, root / f'expert_{key_slug(key)}')
    return write_manifest(root, scheme, 2, experts, edge=edge).parent


@pytest.fixture(scope='module')
def tuned(digits_zoo, tmp_path_factory: pytest.TempPathFactory):
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp('tuned')
    config = FinetuneConfig(
        patch_drop=PatchDropConfig('attention', min_keep=0.25, prob=1.0),
        epochs=1,
        lr=1e-3,
        batch_size=128,
    )
    summary = finetune_zoo(digits_zoo, out, config, dataset='digits', progress=False)
    yield out, summary, config
    torch.set_num_threads(before)


def test_finetune_writes_a_zoo_with_the_same_edge_and_new_experts(digits_zoo, tuned) -> None:
    out, summary, _ = tuned
    source, library = ExpertLibrary(digits_zoo), ExpertLibrary(out)
    assert library.keys == source.keys
    assert library.edge_path.read_bytes() == source.edge_path.read_bytes()
    assert {row['model'] for row in summary['trained_here']} == {
        f'expert_{key_slug(k)}' for k in source.keys
    }
    for key in source.keys:
        old = load_model(source.path_of(key), 'cpu').model.state_dict()
        new = load_model(library.path_of(key), 'cpu').model.state_dict()
        assert old.keys() == new.keys()
        assert any(not torch.equal(old[name], new[name]) for name in old), key
    written = (out / 'finetune.yaml').read_text()
    assert 'attention' in written and 'min_keep: 0.25' in written


def test_finetune_again_keeps_finished_models(digits_zoo, tuned) -> None:
    out, _, config = tuned
    stamps = {p.name: p.stat().st_mtime_ns for p in (out / 'experts').iterdir()}
    again = finetune_zoo(digits_zoo, out, config, dataset='digits', progress=False)
    assert again['trained_here'] == []
    assert {p.name: p.stat().st_mtime_ns for p in (out / 'experts').iterdir()} == stamps
    assert json.loads((out / 'done' / 'expert_1').read_text())['seconds'] > 0


def test_finetune_refuses_its_own_source(digits_zoo) -> None:
    with pytest.raises(ValueError, match='new directory'):
        finetune_zoo(digits_zoo, digits_zoo, FinetuneConfig(), dataset='digits')


def test_robustness_compares_zoos_on_the_same_patches(digits_zoo, tuned) -> None:
    out, _, _ = tuned
    data = load_dataset('digits')
    report = measure_patch_robustness(
        {'base': digits_zoo, 'tuned': out},
        data,
        rhos=(0.25, 1.0),
        methods=('attention', 'random'),
        test_subset=200,
        progress=False,
    )
    rows = {(r['zoo'], r['method'], r['rho']): r for r in report['rows']}
    assert len(rows) == 2 * 2 * 2
    assert report['meta']['num_patches'] == 4 and report['meta']['test_frames'] == 200
    for zoo in ('base', 'tuned'):
        # every patch sent: the selection rule cannot matter
        full_a, full_r = rows[(zoo, 'attention', 1.0)], rows[(zoo, 'random', 1.0)]
        assert full_a['routed_accuracy'] == full_r['routed_accuracy']
        assert rows[(zoo, 'attention', 0.25)]['patches'] == 1
        for row in (full_a, full_r):
            assert 0.0 <= row['co_inference_accuracy'] <= 1.0
    # fine-tuned experts answer differently (the two zoos are not the same models)
    assert any(
        rows[('base', m, r)]['routed_accuracy'] != rows[('tuned', m, r)]['routed_accuracy']
        for m in ('attention', 'random')
        for r in (0.25, 1.0)
    )
    table = format_robustness(report)
    assert '| attention | 0.25 | 1 |' in table and 'base' in table and 'tuned' in table


def test_robustness_refuses_zoos_with_different_edges(digits_zoo, tmp_path) -> None:
    scheme = resolve_scheme('digits_s4')
    torch.manual_seed(1)
    edge = save_model(create_model(_config()), _config(), tmp_path / 'edge')
    experts = {k: ExpertLibrary(digits_zoo).path_of(k) for k in scheme.expert_keys(2)}
    other = write_manifest(tmp_path, scheme, 2, experts, edge=edge).parent
    with pytest.raises(ValueError, match='edge'):
        measure_patch_robustness(
            {'a': digits_zoo, 'b': other}, load_dataset('digits'), rhos=(1.0,), progress=False
        )


def test_cli_parses_both_commands(tmp_path) -> None:
    parser = build_parser()
    args = parser.parse_args(
        ['finetune-patches', '--models', 'z', '--out', str(tmp_path), '--mode', 'random']
    )
    assert args.mode == 'random'
    args = parser.parse_args(['patch-robustness', '--zoo', 'a=z1', '--zoo', 'b=z2'])
    assert dict(args.zoo) == {'a': Path('z1'), 'b': Path('z2')}
    assert np.isclose(args.tau, 0.8)


def test_a_recipe_zoo_is_fine_tuned_as_its_recipe_trained(tmp_path) -> None:
    """Data, augmentation, progressive weights and bf16 autocast come from recipe.yaml."""
    import yaml

    from ask_expert_ros.core.training.patch_finetune import _source
    from ask_expert_ros.core.training.recipe import RecipeConfig

    recipe = RecipeConfig.from_file(
        Path(__file__).parents[1] / 'config' / 'recipe_digits.yaml', {'cpu_bf16': True}
    )
    (tmp_path / 'recipe.yaml').write_text(yaml.safe_dump(recipe.to_dict()))
    config = FinetuneConfig()
    source = _source(tmp_path, None, config)
    assert source.cpu_bf16 and source.progressive
    assert source.max_weight == recipe.max_weight
    assert source.augment == recipe.stage('specialist_student').augment
    assert config.train_config(True, source.cpu_bf16).cpu_bf16
    assert not _source(tmp_path, 'digits', replace(config, data='target')).progressive
