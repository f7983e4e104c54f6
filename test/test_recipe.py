"""The whole recipe on a tiny image folder: zoo, manifest, resume, key subsets, torchrun."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from ask_expert_ros.core.inference.engine import (
    CoInferenceEngine,
    EdgeStage,
    ExpertStage,
    ResultSource,
)
from ask_expert_ros.core.inference.library import ExpertLibrary
from ask_expert_ros.core.inference.routing import RoutingConfig
from ask_expert_ros.core.training.datasets import load_dataset
from ask_expert_ros.core.training.recipe import RecipeConfig, run_recipe

ONE_EPOCH = {'epochs': 1, 'batch_size': 16, 'warmup_epochs': 0}


@pytest.fixture(scope='module')
def tiny_recipe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """6 classes x 12 frames of 8 px in an image folder, a 3-subset scheme, a recipe file."""
    root = tmp_path_factory.mktemp('recipe')
    rng = np.random.default_rng(0)
    for c, name in enumerate('abcdef'):
        for split, count in (('train', 12), ('test', 4)):
            folder = root / 'data' / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                img = rng.integers(0, 60, size=(8, 8), dtype=np.uint8)
                img[c, :] = 255  # class c: a bright row
                cv2.imwrite(str(folder / f'{i}.png'), img)
    (root / 'scheme.yaml').write_text(
        yaml.safe_dump(
            {
                'name': 'toy_s3',
                'class_names': list('abcdef'),
                'subsets': {1: ['a', 'b'], 2: ['c', 'd'], 3: ['e', 'f']},
            }
        )
    )
    recipe = {
        'dataset': f'folder:{root / "data"}',
        'partition': str(root / 'scheme.yaml'),
        'k': 2,
        'teacher_variant': 'deit_6h',
        'edge_variant': 'deit_3h',
        'expert_variant': 'deit_4h',
        'img_size': 8,
        'patch_size': 4,
        'depth': 1,
        'in_chans': 1,
        'interpolation': 'bilinear',
        'prune_batches': 1,
        'taus': [0.9, 0.5],
        'stages': {
            name: {**ONE_EPOCH, 'augment': {'hflip': 0.0, 'scale_min': 0.8}}
            for name in ('teacher', 'student', 'specialist_teacher', 'specialist_student')
        },
    }
    (root / 'recipe.yaml').write_text(yaml.safe_dump(recipe))
    return root


def _config(root: Path) -> RecipeConfig:
    return RecipeConfig.from_file(root / 'recipe.yaml')


def test_one_epoch_recipe_writes_a_zoo_the_engine_loads(tiny_recipe: Path, tmp_path: Path) -> None:
    out = tmp_path / 'zoo'
    summary = run_recipe(_config(tiny_recipe), out, progress=False)
    stages = [entry['stage'] for entry in summary['trained_here']]
    assert stages[:3] == ['teacher', 'edge', 'generalist']
    assert len(stages) == 3 + 6 * 4  # 6 keys x (teacher, expert, static teacher, static)
    library = ExpertLibrary(out)
    assert library.missing_keys() == [] and len(library.keys) == 6
    assert library.load_edge().config.variant == 'deit_3h'
    assert library.get((1, 3)).config.variant == 'deit_4h'
    assert library.get((1, 3)).config.expert_key == (1, 3)
    assert library.load_generalist().config.variant == 'deit_4h'
    assert ExpertLibrary(out / 'static').get((2,)).config.expert_key == (2,)
    # the engine runs the zoo: every frame gets one result, low confidence goes to experts
    engine = CoInferenceEngine(
        EdgeStage(library.load_edge(), library.scheme, RoutingConfig(tau=1.01, k=2)),
        ExpertStage(library),
    )
    frames = np.random.default_rng(1).integers(0, 256, size=(7, 8, 8), dtype=np.uint8)
    result = engine.infer(frames)
    assert len(result.labels) == 7
    assert all(s == ResultSource.EXPERT for s in result.sources)
    report = json.loads((out / 'eval.json').read_text())
    assert report['test_frames'] == 24 and len(report['experts']) == 6
    assert {'progressive', 'static', 'generalist', 'teacher'} <= set(report['experts_mean'])
    assert [row['tau'] for row in report['sweep']] == [0.9, 0.5]
    assert 'static_co_inference_accuracy' in report['sweep'][0]
    arrays = np.load(out / 'eval_frames.npz')  # every answer behind the tables
    assert arrays['final'].shape == arrays['static_final'].shape == (2, 24)
    assert arrays['progressive_key_pred'].shape == arrays['key_masks'].shape == (6, 24)
    for t, row in enumerate(report['sweep']):
        right = (arrays['final'][t] == arrays['labels']).mean()
        assert right == pytest.approx(row['co_inference_accuracy'])
        assert 0 <= row['key_recall_offloaded'] <= row['topk_recall_offloaded'] <= 1
    # the in-key figures (restrict_to_key: true) are what the serving path answers
    data = load_dataset(f'folder:{tiny_recipe / "data"}')
    for t, row in enumerate(report['sweep']):
        routing = RoutingConfig(tau=row['tau'], k=2)
        for name, experts, series in (
            ('in_key_final', library, 'specialist'),
            ('generalist_in_key_final', library.generalist_library(), 'generalist'),
        ):
            served = CoInferenceEngine(
                EdgeStage(library.load_edge(), library.scheme, routing),
                ExpertStage(experts, restrict_to_key=True),
            ).infer(data.test_images)
            assert list(arrays[name][t]) == list(served.labels)
            right = (arrays[name][t] == arrays['labels']).mean()
            assert right == pytest.approx(row[f'{series}_in_key_co_inference_accuracy'])
        sent = arrays['offload'][t]
        answers = arrays['in_key_final'][t][sent]
        assert arrays['key_class_masks'][sent, answers].all()
    for row in report['experts']:
        assert 0 <= row['progressive_in_key'] <= 1 and 0 <= row['generalist_in_key'] <= 1
        # restricting to the key can only turn a target frame's wrong answer right
        assert row['progressive_in_key'] >= row['progressive'][0]
    assert set(report['experts_in_key_mean']) == set(report['experts_mean'])
    assert arrays['generalist_key_pred_in_key'].shape == (6, 24)
    text = (out / 'eval.md').read_text()
    assert '## Experts on their target subset and overall (Table 3)' in text
    assert 'generalist co-inf. in key' in text and '| progressive in key |' in text
    assert yaml.safe_load((out / 'recipe.yaml').read_text())['max_weight'] == 14.0


def test_key_subsets_then_the_rest_and_finished_stages_are_skipped(
    tiny_recipe: Path, tmp_path: Path
) -> None:
    out = tmp_path / 'zoo'
    config = RecipeConfig.from_dict(
        {**yaml.safe_load((tiny_recipe / 'recipe.yaml').read_text()), 'static': False}
    )
    first = run_recipe(config, out, keys=[(1,), (2, 3)], progress=False)
    assert [e['stage'] for e in first['trained_here']] == [
        'teacher',
        'edge',
        'generalist',
        'teacher_1',
        'expert_1',
        'teacher_2_3',
        'expert_2_3',
    ]
    assert sorted(first['missing_keys']) == ['1_2', '1_3', '2', '3']
    assert 'eval' not in first and not (out / 'eval.json').exists()
    assert sorted(ExpertLibrary(out).keys) == [(1,), (2, 3)]
    second = run_recipe(config, out, progress=False)
    trained = [e['stage'] for e in second['trained_here']]
    assert 'teacher' not in trained and 'expert_1' not in trained and 'expert_2_3' not in trained
    assert sorted(trained) == sorted(
        f'{kind}_{slug}' for slug in ('2', '3', '1_2', '1_3') for kind in ('teacher', 'expert')
    )
    assert second['missing_keys'] == [] and (out / 'eval.json').is_file()
    assert not list((out / 'checkpoints').glob('*.ckpt'))  # finished stages drop theirs
    # a finished zoo run again (an experiment resumed) trains nothing and keeps its
    # evaluation; a recipe with other thresholds is evaluated anew
    written = (out / 'eval.json').stat().st_mtime_ns
    third = run_recipe(config, out, progress=False)
    assert third['trained_here'] == [] and third['eval'] == str(out / 'eval.json')
    assert (out / 'eval.json').stat().st_mtime_ns == written
    run_recipe(replace(config, taus=(0.5,)), out, progress=False)
    assert json.loads((out / 'eval.json').read_text())['recipe']['taus'] == [0.5]


def test_recipe_config_errors(tiny_recipe: Path) -> None:
    with pytest.raises(ValueError, match='unknown recipe settings'):
        RecipeConfig.from_dict({'epochs': 3})
    with pytest.raises(ValueError, match='unknown stage'):
        RecipeConfig.from_dict({'stages': {'warmup': {}}})
    with pytest.raises(ValueError, match='needs teacher_init'):
        RecipeConfig(specialist_teacher_init='pretrained')
    config = RecipeConfig.from_file(
        tiny_recipe / 'recipe.yaml', {'stages.teacher.epochs': 7, 'max_weight': 3.0}
    )
    assert config.stages['teacher'].epochs == 7 and config.max_weight == 3.0
    assert config.stages['student'].augment.hflip == 0.0  # file values survive


def test_torchrun_two_ranks_share_the_keys(tiny_recipe: Path, tmp_path: Path) -> None:
    """DDP (gloo on the CPU) for the generalist stages, keys split over the two ranks."""
    out = tmp_path / 'zoo'
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    proc = subprocess.run(
        [
            sys.executable,
            '-m',
            'torch.distributed.run',
            '--standalone',
            '--nproc_per_node',
            '2',
            '-m',
            'ask_expert_ros.cli',
            'train',
            '--config',
            str(tiny_recipe / 'recipe.yaml'),
            '--out',
            str(out),
            '--quiet',
            '--set',
            'static=false',
            '--keys',
            '1',
            '2',
            '3',
        ],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    library = ExpertLibrary(out)
    assert library.keys == [(1,), (2,), (3,)]
    assert 'model zoo:' in proc.stdout
    ranks = {
        stage: json.loads((out / 'done' / stage).read_text())['rank']
        for stage in ('teacher', 'edge', 'expert_1', 'expert_2', 'expert_3')
    }
    # rank 0 writes the DDP stages; keys go round-robin: 1 -> rank 0, 2 -> 1, 3 -> 0
    assert ranks == {'teacher': 0, 'edge': 0, 'expert_1': 0, 'expert_2': 1, 'expert_3': 0}


def test_experiment_over_seeds_and_partitions(tiny_recipe: Path, tmp_path: Path) -> None:
    """2 seeds x 2 schemes: generalists trained once per seed, spreads, tables, plots."""
    from ask_expert_ros.core.training.experiment import ExperimentConfig, run_experiment

    other = tiny_recipe / 'scheme_b.yaml'
    other.write_text(
        yaml.safe_dump(
            {
                'name': 'toy_b',
                'class_names': list('abcdef'),
                'subsets': {1: ['a', 'f'], 2: ['b', 'c'], 3: ['d', 'e']},
            }
        )
    )
    every = tiny_recipe / 'all.yaml'  # the control: one subset, every class
    every.write_text(
        yaml.safe_dump(
            {'name': 'all', 'class_names': list('abcdef'), 'subsets': {1: list('abcdef')}}
        )
    )
    experiment = {
        'recipe': str(tiny_recipe / 'recipe.yaml'),
        'overrides': {'k': 1, 'static': True, 'train_subset': 60},
        'seeds': [0, 1],
        'partitions': [str(tiny_recipe / 'scheme.yaml'), str(other), str(every)],
        'control': str(every),
    }
    (tmp_path / 'exp.yaml').write_text(yaml.safe_dump(experiment))
    config = ExperimentConfig.from_file(tmp_path / 'exp.yaml')
    out = tmp_path / 'exp'
    summary = run_experiment(config, out, progress=False)
    assert set(summary['partitions']) == {'scheme', 'scheme_b', 'all'}
    # against the control, paired by frame: its co-inference is the all-class expert's
    versus = summary['partitions']['scheme']['vs_control']
    assert versus['seeds'] == 2 and 'vs_control' not in summary['partitions']['all']
    for t, row in enumerate(versus['sweep']):
        gain = row['specialist_minus_control']['mean']
        own = summary['partitions']['scheme']['sweep'][t]['co_inference_accuracy']['mean']
        ctrl = summary['partitions']['all']['sweep'][t]['co_inference_accuracy']['mean']
        assert gain == pytest.approx(own - ctrl)
    assert '### Against the control `all`' in (out / 'results.md').read_text()
    # in key: the control's answer restricted to each key's classes can only gain on target
    control = versus['control_experts']
    assert control['in_key']['mean'] >= control['target']['mean'] - 1e-9
    assert 'in_key' in versus['progressive_minus_control']
    # static experts against the control and the generalist, paired like the progressive
    assert set(versus['static_minus_control']) == {'target', 'overall', 'in_key'}
    part_iv = summary['partitions']['scheme']['intervals']['sweep'][0]
    static_gain = part_iv['static_minus_generalist']['mean']
    assert static_gain == pytest.approx(
        part_iv['static_co_inference_accuracy']['mean']
        - part_iv['generalist_co_inference_accuracy']['mean']
    )
    assert 'static_minus_control' in versus['sweep'][0]
    # the control trains no static expert (its one subset is every class)
    assert not (out / 'seed_0' / 'all' / 'static').exists()
    assert (out / 'seed_0' / 'scheme' / 'static' / 'library.yaml').is_file()
    (tmp_path / 'bad.yaml').write_text(yaml.safe_dump({**experiment, 'control': 'nowhere'}))
    with pytest.raises(ValueError, match='must be one of the partitions'):
        ExperimentConfig.from_file(tmp_path / 'bad.yaml')
    for seed in (0, 1):
        shared = out / f'seed_{seed}' / 'scheme_b' / 'done' / 'teacher'
        first = out / f'seed_{seed}' / 'scheme' / 'teacher.safetensors'
        assert shared.is_file() and first.is_file()
        # the second scheme reused the seed's generalists: its own run trained only experts
        report = json.loads((shared.parent.parent / 'eval.json').read_text())
        assert [e['stage'] for e in report['trained_here']][:1] == ['teacher_1']
    part = summary['partitions']['scheme_b']
    assert part['seeds'] == 2 and part['generalists']['edge']['top1']['n'] == 2
    assert part['sweep'][0]['specialist_minus_generalist']['n'] == 2
    text = (out / 'results.md').read_text()
    assert '±' in text and 'specialist − generalist' in text
    for png in (
        'specialist_gain.png',
        'fig4_scheme.png',
        'fig4_scheme_b.png',
        'curves_scheme.png',
        'curves_scheme_b.png',
    ):
        assert (out / png).stat().st_size > 1000
    intervals = part['intervals']  # pooled over both seeds, paired frame by frame
    gain = intervals['sweep'][0]['specialist_minus_generalist']
    assert gain['seeds'] == 2 and gain['low'] <= gain['mean'] <= gain['high']
    assert gain['mean'] == pytest.approx(part['sweep'][0]['specialist_minus_generalist']['mean'])
    assert '95 % intervals' in text
    # in-key figures: means over seeds agree with the pooled intervals and the paired test
    in_key = intervals['sweep'][0]['specialist_minus_generalist_in_key']
    assert in_key['mean'] == pytest.approx(
        part['sweep'][0]['specialist_in_key_co_inference_accuracy']['mean']
        - part['sweep'][0]['generalist_in_key_co_inference_accuracy']['mean']
    )
    assert part['experts']['generalist']['in_key']['n'] == 2
    assert 'in_key' in intervals['progressive_minus_generalist']
    assert 'specialist − generalist, both in key' in text
    for t, rows in enumerate(intervals['routed_by_key']):  # the gain, key by key
        spec_minus_gen = sum(r['share'] * (r['specialist'] - r['generalist']) for r in rows)
        assert spec_minus_gen == pytest.approx(
            intervals['sweep'][t]['specialist_minus_generalist']['mean']
        )


@pytest.mark.parametrize(
    'name',
    [
        'recipe_digits.yaml',
        'recipe_cifar100.yaml',
        'recipe_fashion_mnist.yaml',
        'recipe_fashion_mnist_patches.yaml',
        'recipe_fashion_mnist_scene.yaml',
    ],
)
def test_shipped_recipes_parse(name: str) -> None:
    from ask_expert_ros.core.inference.taxonomy import config_dir, resolve_scheme

    config = RecipeConfig.from_file(config_dir() / name)
    assert resolve_scheme(config.partition).num_subsets >= 3
    assert config.max_weight == 14.0 and config.stages['specialist_student'].augment.mixup == 0


@pytest.mark.parametrize(
    'name',
    [
        'experiment_fashion_mnist.yaml',
        'experiment_fashion_mnist_cpu.yaml',
        'experiment_fashion_mnist_full.yaml',
        'experiment_fashion_mnist_capacity.yaml',
    ],
)
def test_shipped_experiment_parses(name: str) -> None:
    from ask_expert_ros.core.inference.taxonomy import config_dir
    from ask_expert_ros.core.training.experiment import ExperimentConfig

    config = ExperimentConfig.from_file(config_dir() / name)
    assert config.seeds == (0, 1, 2) and config.recipe.dataset == 'fashion_mnist'
    if name.endswith('_capacity.yaml'):  # a DeiT-1H near-edge model, against its control
        assert config.recipe.expert_variant == 'deit_1h'
        assert config.control == 'fashion_mnist_s1'
        return
    assert 'fashion_mnist_s3_random' in config.partitions
    if name.endswith('_full.yaml'):  # issue 20: every training frame, experts from the generalist
        recipe = config.recipe
        assert recipe.train_subset is None and recipe.expert_init == 'generalist'
        assert all(stage.augment.on_batch for stage in recipe.stages.values())


def test_experts_can_start_from_the_trained_generalist(tiny_recipe: Path, tmp_path: Path) -> None:
    """expert_init: generalist copies the near-edge generalist into each expert before its
    own stage (at lr 1e-12 that stage changes nothing visible, so the copy shows)."""
    import torch

    from ask_expert_ros.core.inference.models import load_model

    data = yaml.safe_load((tiny_recipe / 'recipe.yaml').read_text())
    data['static'] = False
    data['expert_init'] = 'generalist'
    data['stages']['specialist_student'] = {**ONE_EPOCH, 'lr': 1e-12}
    out = tmp_path / 'zoo'
    run_recipe(RecipeConfig.from_dict(data), out, keys=[(1,)], progress=False, evaluate=False)
    expert = load_model(out / 'experts' / 'expert_1.safetensors')
    general = load_model(out / 'generalist.safetensors')
    assert expert.config.expert_key == (1,) and expert.config.variant == 'deit_4h'
    for (name, a), b in zip(
        expert.model.state_dict().items(), general.model.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(a, b, msg=name)
    assert RecipeConfig.from_dict(data).to_dict()['expert_init'] == 'generalist'
    assert 'expert_init' not in _config(tiny_recipe).to_dict()  # older eval.json still match
    with pytest.raises(ValueError, match='expert_init'):
        RecipeConfig.from_dict({**data, 'expert_init': 'teacher'})
