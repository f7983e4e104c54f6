"""The paper's training recipe (§4.3, Appendix A) as one resumable run.

Stages, each writing one model file and a ``done/<stage>`` marker:

1. ``teacher``: the generalist teacher M_D (DeiT-Base in the paper), optionally
   initialised from an official timm checkpoint.
2. ``edge``: the edge student m_D, pruned from M_D by loss-based importance and
   hard-distilled from it on the whole data set.
3. ``generalist``: a near-edge generalist of the experts' size, made the same way
   (the "Gen." baseline of Table 3 and the generalist co-inference of Fig. 4).
4. per expert key I: ``teacher_<I>`` (M_I, progressive weighting, eqs. 1-2) and
   ``expert_<I>`` (m_I pruned from M_I, hard-distilled with the progressive weights,
   eq. 3); with ``static: true`` also ``static_teacher_<I>`` / ``static_<I>``, the
   same pipeline trained on D_I only (the "Static" column of Table 3).

A killed run continues where it stopped: finished stages are skipped and the stage
in progress resumes from its per-epoch checkpoint. Under ``torchrun`` the generalist
stages run DistributedDataParallel over all ranks and the expert keys are shared out
round-robin, one rank per key (experts are independent, so that is the better use of
many GPUs); ``keys`` restricts a run to some keys, so separate jobs can split them too.
The output directory is a model zoo with the expert-library manifest the engine and
the nodes load (``library.yaml``), plus ``static/library.yaml`` for the baseline.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import yaml
from torch.utils.data import DataLoader

from ask_expert_ros.core.data import LabelledImages, channel_stats
from ask_expert_ros.core.inference.library import write_manifest
from ask_expert_ros.core.inference.models import (
    VARIANTS,
    ModelConfig,
    VariantName,
    create_model,
    load_model,
    load_timm_checkpoint,
    save_model,
)
from ask_expert_ros.core.inference.preprocess import Preprocessor
from ask_expert_ros.core.inference.taxonomy import (
    ExpertKey,
    PartitionScheme,
    key_slug,
    resolve_scheme,
)
from ask_expert_ros.core.training.augment import AugmentConfig, FrameDataset, train_transform
from ask_expert_ros.core.training.datasets import load_dataset
from ask_expert_ros.core.training.distillation import DEFAULT_MAX_WEIGHT, sample_weights
from ask_expert_ros.core.training.patch_training import PatchDropConfig
from ask_expert_ros.core.training.pruning import prune_to_variant, student_config
from ask_expert_ros.core.training.training import TrainConfig, train_classifier

logger = logging.getLogger(__name__)

# DeiT's generalist augmentation; experts turn Mixup/CutMix/smoothing off (Appendix A.1)
DEIT_AUGMENT = AugmentConfig(mixup=0.8, cutmix=1.0, label_smoothing=0.1)


# stages whose models may train on patch subsets: the experts (progressive and static)
# and the near-edge generalist; never the edge, which picks the patches
PATCH_DROP_STAGES = ('specialist_student', 'generalist')


@dataclass(frozen=True)
class StageConfig:
    """Optimisation of one kind of stage (Table 6 columns).

    ``patch_drop`` (None: off) trains on patch subsets, see
    :class:`~ask_expert_ros.core.training.patch_training.PatchDropConfig`; only the
    ``specialist_student`` and ``generalist`` stages take it.
    """

    epochs: int = 200
    batch_size: int = 256
    lr: float = 1e-4
    weight_decay: float = 0.05
    warmup_epochs: int = 5
    clip_grad: float | None = None
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    patch_drop: PatchDropConfig | None = None

    def train_config(
        self, seed: int, workers: int, amp: bool, cpu_bf16: bool = False
    ) -> TrainConfig:
        return TrainConfig(
            epochs=self.epochs,
            batch_size=self.batch_size,
            lr=self.lr,
            weight_decay=self.weight_decay,
            warmup_epochs=min(self.warmup_epochs, self.epochs - 1),
            clip_grad=self.clip_grad,
            seed=seed,
            workers=workers,
            amp=amp,
            patch_drop=self.patch_drop,
            cpu_bf16=cpu_bf16,
        )


def _default_stages() -> dict[str, StageConfig]:
    expert_aug = AugmentConfig()
    return {
        'teacher': StageConfig(lr=1e-4, clip_grad=None, augment=DEIT_AUGMENT),
        'student': StageConfig(lr=8e-5, clip_grad=1.0, augment=DEIT_AUGMENT),
        'specialist_teacher': StageConfig(lr=1e-4, clip_grad=None, augment=expert_aug),
        'specialist_student': StageConfig(lr=8e-5, clip_grad=1.0, augment=expert_aug),
    }


@dataclass(frozen=True)
class RecipeConfig:
    """Everything one recipe run needs; Table 6 of the paper by default.

    Attributes:
        dataset: A :func:`~ask_expert_ros.core.training.datasets.load_dataset` spec.
        partition: Scheme name or file (see :func:`resolve_scheme`).
        k: Top-k of the router; experts for every key with 1 <= |I| <= k.
        teacher_variant / edge_variant / expert_variant: Table 2 names.
        teacher_init: Official timm checkpoint for the teachers (None: random init).
        specialist_teacher_init: ``generalist`` (fine-tune M_D), ``pretrained``
            (``teacher_init``) or ``scratch``.
        expert_init: Where an expert (progressive or static) starts: ``pruned`` from
            its specialist teacher, as §4.3 of the paper does, or ``generalist``, the
            trained near-edge generalist (same variant and depth), so that an expert
            starts where its baseline ends and its own stage only specialises it.
        img_size / patch_size / depth / in_chans / interpolation: Model input and depth.
        mean / std: Normalisation; None computes them from the training frames.
        max_weight: W of eq. (1).
        prune_batches: Batches used to estimate importance.
        static: Also train the static-expert baseline.
        train_subset: Train on a stratified sample of this many frames (None: all), to
            bound CPU time; the test split stays whole.
        seed: Initialisation, shuffling and augmentation seed.
        workers: DataLoader worker processes.
        amp: Mixed precision on CUDA.
        cpu_bf16: bfloat16 autocast when training on a CPU with avx512_bf16/AMX (off by
            default: the committed CPU results were trained in fp32).
        taus: Thresholds of the evaluation sweep.
        stages: ``teacher``, ``student``, ``specialist_teacher``, ``specialist_student``;
            optionally ``generalist``, the near-edge generalist's own settings (those it
            does not give are the ``student`` stage's, which otherwise trains it too).
    """

    dataset: str = 'digits'
    partition: str = 'digits_s4'
    k: int = 2
    teacher_variant: VariantName = 'deit_base'
    edge_variant: VariantName = 'deit_3h'
    expert_variant: VariantName = 'deit_4h'
    teacher_init: str | None = None
    specialist_teacher_init: str = 'generalist'
    expert_init: str = 'pruned'
    img_size: int = 224
    patch_size: int = 16
    depth: int = 12
    in_chans: int = 3
    interpolation: str = 'bicubic'
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    max_weight: float = DEFAULT_MAX_WEIGHT
    prune_batches: int = 8
    static: bool = True
    train_subset: int | None = None
    seed: int = 0
    workers: int = 0
    amp: bool = True
    cpu_bf16: bool = False
    taus: tuple[float, ...] = (0.99, 0.9, 0.8, 0.7, 0.6, 0.5)
    eval_batch_size: int = 10
    stages: dict[str, StageConfig] = field(default_factory=_default_stages)

    def __post_init__(self) -> None:
        for name in ('teacher_variant', 'edge_variant', 'expert_variant'):
            if getattr(self, name) not in VARIANTS:
                raise ValueError(f'{name}: unknown variant {getattr(self, name)!r}')
        if self.specialist_teacher_init not in ('generalist', 'pretrained', 'scratch'):
            raise ValueError(
                "specialist_teacher_init must be 'generalist', 'pretrained' or 'scratch'"
            )
        if self.expert_init not in ('pruned', 'generalist'):
            raise ValueError("expert_init must be 'pruned' or 'generalist'")
        if self.specialist_teacher_init == 'pretrained' and not self.teacher_init:
            raise ValueError("specialist_teacher_init 'pretrained' needs teacher_init")
        missing = {'teacher', 'student', 'specialist_teacher', 'specialist_student'} - set(
            self.stages
        )
        if missing:
            raise ValueError(f'stages missing: {sorted(missing)}')
        for name, stage in self.stages.items():
            if stage.patch_drop is not None and name not in PATCH_DROP_STAGES:
                hint = (
                    ' (the student stage also trains the edge model, which picks the '
                    'patches; give the generalist stage its own patch_drop)'
                    if name == 'student'
                    else ''
                )
                raise ValueError(
                    f'stage {name}: patch_drop applies only to the stages '
                    f'{list(PATCH_DROP_STAGES)}{hint}'
                )
        if self.train_subset is not None and self.train_subset < 1:
            raise ValueError(f'train_subset must be >= 1 or null, got {self.train_subset}')
        if self.max_weight < 1 or self.k < 1 or self.prune_batches < 1:
            raise ValueError('max_weight must be >= 1, k and prune_batches >= 1')

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RecipeConfig:
        """Build from YAML data; ``stages`` entries override the defaults key by key."""
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f'unknown recipe settings: {sorted(unknown)}')
        data = dict(data)
        stages = _default_stages()
        given = dict(data.pop('stages', None) or {})
        # the generalist stage, when given, starts from the (overridden) student stage
        order = [n for n in given if n != 'generalist'] + (
            ['generalist'] if 'generalist' in given else []
        )
        for name in order:
            if name not in stages and name != 'generalist':
                raise ValueError(
                    f'unknown stage {name!r}; choose from {sorted([*stages, "generalist"])}'
                )
            values = dict(given[name] or {})
            augment = values.pop('augment', None)
            patch_drop = values.pop('patch_drop', None)
            base = stages[name if name != 'generalist' else 'student']
            unknown = set(values) - {f.name for f in fields(StageConfig)}
            if unknown:
                raise ValueError(f'stage {name}: unknown settings {sorted(unknown)}')
            stages[name] = replace(base, **values)
            if augment is not None:
                stages[name] = replace(stages[name], augment=replace(base.augment, **augment))
            if patch_drop is not None:
                try:
                    drop = PatchDropConfig.from_dict(patch_drop)
                except (TypeError, ValueError) as exc:
                    raise ValueError(f'stage {name}: {exc}') from exc
                stages[name] = replace(stages[name], patch_drop=drop)
        for name in ('mean', 'std', 'taus'):
            if data.get(name) is not None:
                data[name] = tuple(float(v) for v in data[name])
        return cls(**data, stages=stages)

    @classmethod
    def from_file(cls, path: str | Path, overrides: dict[str, Any] | None = None) -> RecipeConfig:
        data = yaml.safe_load(Path(path).read_text(encoding='utf-8')) or {}
        for dotted, value in (overrides or {}).items():
            node = data
            *parents, leaf = dotted.split('.')
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = value
        return cls.from_dict(data)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for name in ('mean', 'std', 'taus'):
            if out[name] is not None:
                out[name] = list(out[name])
        # a recipe without patch dropping, generalist-initialised experts or batch
        # augmentation reads (and compares, see _evaluated) as before
        for stage in out['stages'].values():
            if stage['patch_drop'] is None:
                del stage['patch_drop']
            if not stage['augment']['on_batch']:
                del stage['augment']['on_batch']
        if out['expert_init'] == 'pruned':
            del out['expert_init']
        return out

    def stage(self, name: str) -> StageConfig:
        """The settings of a stage kind; ``generalist`` falls back to ``student``."""
        if name == 'generalist':
            return self.stages.get('generalist', self.stages['student'])
        return self.stages[name]


@dataclass
class _Context:
    config: RecipeConfig
    out: Path
    data: LabelledImages
    scheme: PartitionScheme
    base: ModelConfig
    device: torch.device
    rank: int
    world: int
    progress: bool
    log: list[dict[str, Any]]


def _rank_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_distributed() -> bool:
    """Join the ``torchrun`` process group when launched by it (``WORLD_SIZE`` > 1)."""
    if int(os.environ.get('WORLD_SIZE', '1')) <= 1 or dist.is_initialized():
        return False
    backend = 'nccl' if torch.cuda.is_available() else 'gloo'
    if backend == 'nccl':
        torch.cuda.set_device(int(os.environ.get('LOCAL_RANK', '0')))
    # expert keys take each rank a different time: wait long at the final barrier
    dist.init_process_group(backend, timeout=timedelta(hours=72))
    return True


def _device(requested: str | None) -> torch.device:
    if requested:
        return torch.device(requested)
    if torch.cuda.is_available():
        return torch.device('cuda', int(os.environ.get('LOCAL_RANK', '0')))
    return torch.device('cpu')


def run_recipe(
    config: RecipeConfig,
    out_dir: str | Path,
    keys: list[ExpertKey] | None = None,
    device: str | None = None,
    progress: bool = True,
    evaluate: bool = True,
) -> dict[str, Any]:
    """Train (or continue) the whole zoo into ``out_dir``; returns the run summary.

    Args:
        keys: Train only these expert keys (None: every key of the scheme).
        device: ``cpu``, ``cuda``, ``cuda:1``...; default CUDA when present.
        evaluate: Write ``eval.json`` / ``eval.md`` once every expert exists.
    """
    out = Path(out_dir)
    rank, world = _rank_world()
    torch.manual_seed(config.seed)
    data = recipe_data(config)
    scheme = resolve_scheme(config.partition)
    if scheme.class_names != data.class_names:
        raise ValueError(
            f'partition {scheme.name!r} lists other classes than data set {config.dataset!r}'
        )
    all_keys = scheme.expert_keys(config.k)
    for key in keys or []:
        if key not in all_keys:
            raise ValueError(f'key {key} is not an expert key of {scheme.name} with k={config.k}')
    mean, std = config.mean, config.std
    if mean is None or std is None:
        frames = data.train_images
        if config.in_chans == 1 and frames.ndim == 4:
            frames = frames.mean(axis=-1).astype(np.uint8)
        mean, std = channel_stats(frames)
        if len(mean) != config.in_chans:
            mean, std = (mean[0],) * config.in_chans, (std[0],) * config.in_chans
    base = ModelConfig(
        variant=config.teacher_variant,
        class_names=scheme.class_names,
        img_size=config.img_size,
        patch_size=config.patch_size,
        depth=config.depth,
        in_chans=config.in_chans,
        mean=tuple(mean),
        std=tuple(std),
        interpolation=config.interpolation,  # type: ignore[arg-type]
        partition=scheme.name,
    )
    out.mkdir(parents=True, exist_ok=True)
    if rank == 0:
        (out / 'recipe.yaml').write_text(
            yaml.safe_dump(config.to_dict(), sort_keys=False), encoding='utf-8'
        )
    ctx = _Context(config, out, data, scheme, base, _device(device), rank, world, progress, [])
    started = time.perf_counter()

    teacher_path = _stage(ctx, 'teacher', lambda: _train_generalist_teacher(ctx))
    _stage(ctx, 'edge', lambda: _train_student(ctx, 'edge', teacher_path, config.edge_variant))
    general_path = _stage(
        ctx,
        'generalist',
        lambda: _train_student(ctx, 'generalist', teacher_path, config.expert_variant),
    )
    chosen = keys or all_keys
    mine = [key for i, key in enumerate(chosen) if i % world == rank]
    for key in mine:
        slug = key_slug(key)
        for prefix, progressive in (
            (('', True), ('static_', False)) if config.static else (('', True),)
        ):
            t_path = _stage(
                ctx,
                f'{prefix}teacher_{slug}',
                lambda key=key, p=progressive, pre=prefix: _train_specialist_teacher(
                    ctx, key, teacher_path, p, pre
                ),
                distributed=False,
            )
            name = f'expert_{slug}' if progressive else f'static_{slug}'
            _stage(
                ctx,
                name,
                lambda key=key, t=t_path, p=progressive: _train_specialist_student(ctx, key, t, p),
                distributed=False,
            )
    if world > 1:
        dist.barrier()
    summary: dict[str, Any] = {'out': str(out), 'trained_here': ctx.log}
    if rank != 0:
        return summary
    present = {k: out / 'experts' / f'expert_{key_slug(k)}.safetensors' for k in all_keys}
    present = {k: p for k, p in present.items() if _done(out, f'expert_{key_slug(k)}')}
    manifest = write_manifest(
        out, scheme, config.k, present, edge=out / 'edge.safetensors', generalist=general_path
    )
    summary['manifest'] = str(manifest)
    missing = [key_slug(k) for k in all_keys if k not in present]
    summary['missing_keys'] = missing
    if config.static:
        static = {k: out / 'static' / f'static_{key_slug(k)}.safetensors' for k in all_keys}
        static = {k: p for k, p in static.items() if _done(out, f'static_{key_slug(k)}')}
        write_manifest(
            out / 'static',
            scheme,
            config.k,
            static,
            edge=out / 'edge.safetensors',
            generalist=general_path,
        )
    summary['train_seconds'] = time.perf_counter() - started
    if evaluate and not missing and not ctx.log and _evaluated(out, config):
        logger.info('evaluation up to date: %s (nothing trained, same recipe)', out / 'eval.json')
        summary['eval'] = str(out / 'eval.json')
    elif evaluate and not missing:
        from ask_expert_ros.core.evaluation.recipe_eval import evaluate_zoo, write_report

        report = evaluate_zoo(out, data, taus=config.taus, batch_size=config.eval_batch_size)
        report['recipe'] = config.to_dict()
        report['trained_here'] = ctx.log
        write_report(report, out)
        summary['eval'] = str(out / 'eval.json')
    elif missing:
        logger.warning('no evaluation yet: experts missing for keys %s', ', '.join(missing))
    return summary


def recipe_data(config: RecipeConfig) -> LabelledImages:
    """The frames a recipe trains on: its data set, cut to ``train_subset`` (stratified,
    by the recipe's seed); the test split whole."""
    data = load_dataset(config.dataset, seed=config.seed)
    if config.train_subset is not None and config.train_subset < len(data.train_labels):
        data = _subsample(data, config.train_subset, config.seed)
    return data


def _subsample(data: LabelledImages, size: int, seed: int) -> LabelledImages:
    from sklearn.model_selection import train_test_split

    x, _, y, _ = train_test_split(
        data.train_images,
        data.train_labels,
        train_size=size,
        random_state=seed,
        stratify=data.train_labels,
    )
    return replace(data, train_images=x, train_labels=y)


def _evaluated(out: Path, config: RecipeConfig) -> bool:
    """Whether ``eval.json`` exists, was written for this very recipe and has every
    figure the evaluation now makes (one from before the in-key figures is redone)."""
    try:
        report = json.loads((out / 'eval.json').read_text())
    except (OSError, ValueError):
        return False
    same = report.get('recipe') == json.loads(json.dumps(config.to_dict()))
    return bool(same and 'experts_in_key_mean' in report)


def _done(out: Path, stage: str) -> bool:
    return (out / 'done' / stage).is_file()


def _stage_path(out: Path, stage: str) -> Path:
    if stage in ('teacher', 'edge', 'generalist'):
        return out / f'{stage}.safetensors'
    if stage.startswith('static'):
        return out / 'static' / f'{stage}.safetensors'
    if stage.startswith('teacher_'):
        return out / 'teachers' / f'{stage}.safetensors'
    return out / 'experts' / f'{stage}.safetensors'


def _stage(ctx: _Context, stage: str, train: Any, distributed: bool = True) -> Path:
    """Run ``train() -> (model, config)`` unless the stage is done; save; mark done."""
    path = _stage_path(ctx.out, stage)
    if _done(ctx.out, stage):
        logger.info('%s: done already (%s)', stage, path)
        return path
    t0 = time.perf_counter()
    model, config, history = train()
    if ctx.rank == 0 or not distributed:
        save_model(model, config, path)
        (ctx.out / 'done').mkdir(exist_ok=True)
        (ctx.out / 'done' / stage).write_text(
            json.dumps(
                {'rank': ctx.rank, 'loss': history.loss, 'train_accuracy': history.accuracy}
            )
            + '\n'
        )
        ckpt = _checkpoint(ctx, stage)
        if ckpt.is_file():
            ckpt.unlink()
    if distributed and ctx.world > 1:
        dist.barrier()
    seconds = time.perf_counter() - t0
    ctx.log.append({'stage': stage, 'seconds': round(seconds, 2), 'rank': ctx.rank})
    logger.info('%s: trained in %.1f s -> %s', stage, seconds, path)
    return path


def _checkpoint(ctx: _Context, stage: str) -> Path:
    return ctx.out / 'checkpoints' / f'{stage}.ckpt'


def _dataset(
    ctx: _Context, model: ModelConfig, stage: StageConfig, key: ExpertKey | None, only_d_i: bool
) -> FrameDataset:
    frames, labels = ctx.data.train_images, ctx.data.train_labels
    in_domain = None
    if key is not None:
        in_domain = ctx.scheme.class_mask(key)[labels]
        if only_d_i:
            frames, labels, in_domain = frames[in_domain], labels[in_domain], None
    return FrameDataset(
        frames, labels, train_transform(model, stage.augment), model.in_chans, in_domain
    )


def _fit(
    ctx: _Context,
    stage_name: str,
    stage: StageConfig,
    model: torch.nn.Module,
    config: ModelConfig,
    key: ExpertKey | None = None,
    teacher: torch.nn.Module | None = None,
    progressive: bool = False,
    only_d_i: bool = False,
    distributed: bool = True,
) -> Any:
    dataset = _dataset(ctx, config, stage, key, only_d_i)
    augment = stage.augment
    if stage.augment.mixes and len(dataset) < 2 * stage.batch_size:
        augment = replace(augment, mixup=0.0, cutmix=0.0)  # tiny sets: no full batches
    scorer = None
    if stage.patch_drop is not None and stage.patch_drop.mode == 'attention':
        # the edge stage ran before every stage that drops patches
        scorer = load_model(_stage_path(ctx.out, 'edge'), ctx.device).model
    return train_classifier(
        model.to(ctx.device),
        dataset,
        None,
        stage.train_config(
            ctx.config.seed, ctx.config.workers, ctx.config.amp, ctx.config.cpu_bf16
        ),
        desc=stage_name,
        progress=ctx.progress,
        teacher=teacher,
        max_weight=ctx.config.max_weight if progressive else 1.0,
        checkpoint=_checkpoint(ctx, stage_name),
        augment=augment,
        num_classes=config.num_classes,
        # a per-key stage trains on one rank: no DDP wrapping, no sharding
        distributed=distributed,
        patch_scorer=scorer,
    )


def _train_generalist_teacher(ctx: _Context) -> tuple[Any, ModelConfig, Any]:
    config = ctx.base
    model = create_model(config)
    if ctx.config.teacher_init:
        load_timm_checkpoint(model, ctx.config.teacher_init)
    history = _fit(ctx, 'teacher', ctx.config.stages['teacher'], model, config)
    return model, config, history


def _load(ctx: _Context, path: Path) -> tuple[Any, ModelConfig]:
    loaded = load_model(path, ctx.device)
    return loaded.model, loaded.config


def _prune_batches(
    ctx: _Context, config: ModelConfig, key: ExpertKey | None, progressive: bool, only_d_i: bool
) -> DataLoader:
    """Un-augmented batches for importance, weighted like the student's final epoch."""
    frames, labels = ctx.data.train_images, ctx.data.train_labels
    mask = None if key is None else ctx.scheme.class_mask(key)[labels]
    if only_d_i and mask is not None:
        frames, labels, mask = frames[mask], labels[mask], None
    rng = np.random.default_rng(ctx.config.seed)
    take = rng.permutation(len(labels))[: ctx.config.prune_batches * 64]
    x = Preprocessor(config)(frames[take])
    y = torch.as_tensor(labels[take])
    flags = (
        torch.zeros(len(take), dtype=torch.bool) if mask is None else torch.as_tensor(mask[take])
    )
    w = sample_weights(flags, ctx.config.max_weight if progressive else 1.0)
    return DataLoader(torch.utils.data.TensorDataset(x, y, w), batch_size=64)


def _student(
    ctx: _Context,
    name: str,
    teacher: Any,
    t_cfg: ModelConfig,
    variant: VariantName,
    key: ExpertKey | None = None,
    progressive: bool = False,
) -> tuple[torch.nn.Module, ModelConfig]:
    """The student ``name`` starts from: pruned from ``teacher`` (on batches weighted like
    the student's training: a specialist's on D_I alone unless ``progressive``), or, when
    its checkpoint exists (a resumed run), a fresh model of the pruned shape that the
    checkpoint's weights fill."""
    if _checkpoint(ctx, name).is_file():
        config = student_config(t_cfg, variant)
        return create_model(config), config
    only_d_i = key is not None and not progressive
    batches = _prune_batches(ctx, t_cfg, key, progressive, only_d_i)
    student, config, _ = prune_to_variant(
        teacher, t_cfg, variant, batches, max_batches=ctx.config.prune_batches
    )
    return student, config


def _train_student(
    ctx: _Context, name: str, teacher_path: Path, variant: VariantName
) -> tuple[Any, ModelConfig, Any]:
    teacher, t_cfg = _load(ctx, teacher_path)
    student, config = _student(ctx, name, teacher, t_cfg, variant)
    stage = ctx.config.stage('generalist' if name == 'generalist' else 'student')
    history = _fit(ctx, name, stage, student, config, teacher=teacher)
    return student, config, history


def _train_specialist_teacher(
    ctx: _Context, key: ExpertKey, generalist_teacher: Path, progressive: bool, prefix: str
) -> tuple[Any, ModelConfig, Any]:
    config = replace(ctx.base, expert_key=key)
    model = create_model(config)
    init = ctx.config.specialist_teacher_init
    if init == 'generalist':
        model.load_state_dict(load_model(generalist_teacher).model.state_dict())
    elif init == 'pretrained' and ctx.config.teacher_init:
        load_timm_checkpoint(model, ctx.config.teacher_init)
    history = _fit(
        ctx,
        f'{prefix}teacher_{key_slug(key)}',
        ctx.config.stages['specialist_teacher'],
        model,
        config,
        key=key,
        progressive=progressive,
        only_d_i=not progressive,
        distributed=False,
    )
    return model, config, history


def _train_specialist_student(
    ctx: _Context, key: ExpertKey, teacher_path: Path, progressive: bool
) -> tuple[Any, ModelConfig, Any]:
    name = f'expert_{key_slug(key)}' if progressive else f'static_{key_slug(key)}'
    teacher, t_cfg = _load(ctx, teacher_path)
    if ctx.config.expert_init == 'generalist':
        student, config = _from_generalist(ctx, key)
    else:
        variant = ctx.config.expert_variant
        student, config = _student(ctx, name, teacher, t_cfg, variant, key, progressive)
    history = _fit(
        ctx,
        name,
        ctx.config.stages['specialist_student'],
        student,
        config,
        key=key,
        teacher=teacher,
        progressive=progressive,
        only_d_i=not progressive,
        distributed=False,
    )
    return student, config, history


def _from_generalist(ctx: _Context, key: ExpertKey) -> tuple[torch.nn.Module, ModelConfig]:
    """A copy of the trained near-edge generalist, labelled as the expert for ``key``."""
    loaded = load_model(_stage_path(ctx.out, 'generalist'), ctx.device)
    if loaded.config.variant != ctx.config.expert_variant:
        raise ValueError(
            f'expert_init generalist: the generalist is {loaded.config.variant}, '
            f'the experts {ctx.config.expert_variant}'
        )
    config = replace(loaded.config, expert_key=key)
    model = create_model(config)
    model.load_state_dict(loaded.model.state_dict())
    return model, config
