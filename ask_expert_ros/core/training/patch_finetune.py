"""Fine-tune the experts of an existing zoo on patch subsets, into a new zoo.

Retraining a zoo to make its experts robust to missing patches would redo the
teachers, the edge and the generalist, none of which change. This fine-tunes only
the experts (and, on request, the near-edge generalist) for a few epochs with
:class:`~ask_expert_ros.core.training.patch_training.PatchDropConfig`, and writes a zoo of its
own: the fine-tuned models, a copy of the edge (the same bytes, so routing is
unchanged), ``library.yaml`` and the resolved ``finetune.yaml``. It works on any zoo
with a manifest, recipe-made or not:

* a zoo written by the recipe (it holds ``recipe.yaml``): the experts continue the
  recipe's expert stage: the same data set, training subset, augmentation and
  progressive weights, hard-distilled from their specialist teachers (which see the
  whole frame) when those are in the zoo;
* any other zoo (the digits demo's): each expert trains on its target subset D_I,
  from preprocessed frames shifted by up to ``max_shift`` pixels, as the demo does.

``patch_drop=None`` runs the same fine-tuning on whole frames: the control that
separates the effect of the patch dropping from that of the extra epochs. Like the
recipe, a killed run continues: finished models are kept (``done/<name>``) and the
one in progress resumes from its per-epoch checkpoint.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal

import torch
import yaml

from ask_expert_ros.core.data import LabelledImages
from ask_expert_ros.core.inference.library import ExpertLibrary, write_manifest
from ask_expert_ros.core.inference.models import LoadedModel, load_model, save_model
from ask_expert_ros.core.inference.preprocess import Preprocessor
from ask_expert_ros.core.inference.taxonomy import ExpertKey, key_slug
from ask_expert_ros.core.training.augment import AugmentConfig, FrameDataset, train_transform
from ask_expert_ros.core.training.datasets import load_dataset
from ask_expert_ros.core.training.patch_training import PatchDropConfig
from ask_expert_ros.core.training.training import TrainConfig, TrainHistory, train_classifier

logger = logging.getLogger(__name__)

FinetuneData = Literal['auto', 'target', 'progressive']


@dataclass(frozen=True)
class FinetuneConfig:
    """Settings of :func:`finetune_zoo`.

    Attributes:
        patch_drop: The patch dropping; None fine-tunes on whole frames (the control).
        epochs: Fine-tuning epochs per model.
        lr: Peak learning rate (cosine decay to 0 after ``warmup_epochs``).
        batch_size: Frames per step.
        warmup_epochs: Linear warm-up, in epochs.
        weight_decay: AdamW weight decay.
        clip_grad: Max gradient norm (None: no clipping).
        data: ``target``: each expert on D_I only (the demo's and the static experts'
            data); ``progressive``: every frame, D_I weighted up by ``max_weight`` (the
            recipe's experts); ``auto``: ``progressive`` for a recipe zoo, else
            ``target``.
        max_weight: W of the progressive weights (None: the recipe's, else 14).
        distill: Hard-distil from the zoo's specialist teachers when it has them.
        generalist: Also fine-tune the near-edge generalist (on every frame).
        max_shift: Random shift in pixels, for zoos without a recipe (no augmentation
            is known for them).
        seed: Shuffling, augmentation and patch-drawing seed.
    """

    patch_drop: PatchDropConfig | None = None
    epochs: int = 3
    lr: float = 1e-4
    batch_size: int = 64
    warmup_epochs: int = 0
    weight_decay: float = 0.05
    clip_grad: float | None = 1.0
    data: FinetuneData = 'auto'
    max_weight: float | None = None
    distill: bool = True
    generalist: bool = False
    max_shift: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        if self.data not in ('auto', 'target', 'progressive'):
            raise ValueError(f"data must be 'auto', 'target' or 'progressive', got {self.data!r}")
        if self.max_weight is not None and self.max_weight < 1:
            raise ValueError(f'max_weight must be >= 1, got {self.max_weight}')
        if self.warmup_epochs >= self.epochs:
            raise ValueError(
                f'warmup_epochs ({self.warmup_epochs}) must be below epochs ({self.epochs})'
            )
        self.train_config()  # epochs, lr, batch size, shift

    def train_config(self, augmented: bool = False, cpu_bf16: bool = False) -> TrainConfig:
        """The training of one model; ``cpu_bf16`` as the zoo's recipe trained it."""
        return TrainConfig(
            epochs=self.epochs,
            batch_size=self.batch_size,
            lr=self.lr,
            weight_decay=self.weight_decay,
            warmup_epochs=self.warmup_epochs,
            clip_grad=self.clip_grad,
            max_shift=0 if augmented else self.max_shift,
            seed=self.seed,
            patch_drop=self.patch_drop,
            cpu_bf16=cpu_bf16,
        )

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        if self.patch_drop is None:
            out['patch_drop'] = None
        return out


@dataclass(frozen=True)
class _Source:
    """What the source zoo says about how its experts were trained."""

    data: LabelledImages
    augment: AugmentConfig | None  # None: preprocessed tensors + max_shift
    generalist_augment: AugmentConfig | None
    progressive: bool
    max_weight: float
    cpu_bf16: bool = False  # bf16 autocast on a CPU, as the recipe trained


def _source(zoo: Path, dataset: str | None, config: FinetuneConfig) -> _Source:
    recipe_path = zoo / 'recipe.yaml'
    if not recipe_path.is_file():
        if dataset is None:
            raise ValueError(f'{zoo} has no recipe.yaml: name the data set it was trained on')
        return _Source(
            load_dataset(dataset, seed=config.seed),
            None,
            None,
            config.data == 'progressive',
            config.max_weight or 14.0,
        )
    from ask_expert_ros.core.training.recipe import RecipeConfig, recipe_data

    recipe = RecipeConfig.from_file(recipe_path)
    if dataset is not None and dataset != recipe.dataset:
        recipe = replace(recipe, dataset=dataset)  # the same data at another path
    data = recipe_data(recipe)
    return _Source(
        data,
        recipe.stage('specialist_student').augment,
        recipe.stage('generalist').augment,
        config.data != 'target',
        config.max_weight or recipe.max_weight,
        recipe.cpu_bf16,
    )


def _train_one(
    loaded: LoadedModel,
    source: _Source,
    config: FinetuneConfig,
    key: ExpertKey | None,
    scheme: Any,
    teacher: torch.nn.Module | None,
    scorer: torch.nn.Module | None,
    checkpoint: Path,
    desc: str,
    progress: bool,
) -> TrainHistory:
    frames, labels = source.data.train_images, source.data.train_labels
    in_domain = None
    progressive = key is not None and source.progressive
    if key is not None:
        mask = scheme.class_mask(key)[labels]
        if progressive:
            in_domain = mask
        else:
            frames, labels = frames[mask], labels[mask]
    augment = source.augment if key is not None else source.generalist_augment
    model_config = loaded.config
    if augment is None:
        inputs: Any = Preprocessor(model_config)(frames)
        train_labels: torch.Tensor | None = torch.as_tensor(labels)
        flags = None if in_domain is None else torch.as_tensor(in_domain)
        mix = None
    else:
        if augment.mixes and len(labels) < 2 * config.batch_size:
            augment = replace(augment, mixup=0.0, cutmix=0.0)
        inputs = FrameDataset(
            frames,
            labels,
            train_transform(model_config, augment),
            model_config.in_chans,
            in_domain,
        )
        train_labels, flags, mix = None, None, augment
    return train_classifier(
        loaded.model,
        inputs,
        train_labels,
        config.train_config(augmented=augment is not None, cpu_bf16=source.cpu_bf16),
        desc=desc,
        progress=progress,
        teacher=teacher,
        in_domain=flags,
        max_weight=source.max_weight if progressive else 1.0,
        checkpoint=checkpoint,
        augment=mix,
        num_classes=model_config.num_classes,
        patch_scorer=scorer,
    )


def finetune_zoo(
    models: str | Path,
    out: str | Path,
    config: FinetuneConfig,
    dataset: str | None = None,
    device: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Fine-tune every expert of the zoo ``models`` into the new zoo ``out``.

    Args:
        models: The source zoo (its directory or ``library.yaml``); never written.
        out: The new zoo's directory.
        config: The fine-tuning.
        dataset: The data set spec the zoo was trained on (default: its recipe's).
        device: ``cpu``, ``cuda``... (default: CUDA when present).
        progress: Progress bars.

    Returns:
        A summary: the manifest path, per-model seconds and final training loss.

    Raises:
        ValueError: ``out`` is the source zoo, the zoo has no edge model, or no data
            set is known.
    """
    library = ExpertLibrary(models)
    src = library.root.resolve()
    dst = Path(out).resolve()
    if dst == src:
        raise ValueError('--out must be a new directory, not the source zoo')
    if library.edge_path is None:
        raise ValueError(f'{library.path} names no edge model; the new zoo routes with it')
    dev = torch.device(device or ('cuda' if torch.cuda.is_available() else 'cpu'))
    source = _source(src, dataset, config)
    dst.mkdir(parents=True, exist_ok=True)
    resolved = {
        'source': str(src),
        'dataset': dataset,
        'progressive': source.progressive,
        'max_weight': source.max_weight,
        **config.to_dict(),
    }
    (dst / 'finetune.yaml').write_text(yaml.safe_dump(resolved, sort_keys=False), encoding='utf-8')
    edge_path = dst / 'edge.safetensors'
    if not edge_path.is_file():
        shutil.copyfile(library.edge_path, edge_path)
    scorer = None
    if config.patch_drop is not None and config.patch_drop.mode == 'attention':
        scorer = load_model(edge_path, dev).model
    jobs: list[tuple[str, ExpertKey | None, Path, Path]] = [
        (f'expert_{key_slug(k)}', k, library.path_of(k), dst / 'experts') for k in library.keys
    ]
    general_out: Path | None = None
    if library.generalist_path is not None:
        if config.generalist:
            jobs.append(('generalist', None, library.generalist_path, dst))
        else:
            general_out = dst / 'generalist.safetensors'
            if not general_out.is_file():
                shutil.copyfile(library.generalist_path, general_out)
    log: list[dict[str, Any]] = []
    written: dict[str, Path] = {}
    for name, key, path, folder in jobs:
        target = folder / f'{name}.safetensors'
        written[name] = target
        done = dst / 'done' / name
        if done.is_file():
            continue
        t0 = time.perf_counter()
        loaded = load_model(path, dev)
        teacher = None
        if config.distill:
            teacher_file = (
                src / 'teachers' / f'teacher_{key_slug(key)}.safetensors'
                if key is not None
                else src / 'teacher.safetensors'
            )
            if teacher_file.is_file():
                teacher = load_model(teacher_file, dev).model
        history = _train_one(
            loaded,
            source,
            config,
            key,
            library.scheme,
            teacher,
            scorer,
            dst / 'checkpoints' / f'{name}.ckpt',
            name,
            progress,
        )
        save_model(loaded.model, loaded.config, target)
        seconds = time.perf_counter() - t0
        done.parent.mkdir(exist_ok=True)
        done.write_text(json.dumps({'loss': history.loss, 'seconds': seconds}) + '\n')
        (dst / 'checkpoints' / f'{name}.ckpt').unlink(missing_ok=True)
        log.append({'model': name, 'seconds': round(seconds, 2), 'loss': history.loss[-1]})
        logger.info('%s: fine-tuned in %.1f s -> %s', name, seconds, target)
    experts = {k: written[f'expert_{key_slug(k)}'] for k in library.keys}
    generalist = written.get('generalist', general_out)
    manifest = write_manifest(
        dst, library.scheme, library.k, experts, edge=edge_path, generalist=generalist
    )
    return {'manifest': str(manifest), 'trained_here': log, 'rows': len(source.data.train_labels)}
