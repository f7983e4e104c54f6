"""Model variants of the paper's Table 2, built with timm, stored as safetensors.

Every variant is a DeiT: 12 layers, 64-dim heads, MLP ratio 4, 224 px, patch 16;
they differ in the number of heads. Image size, patch size, depth and input
channels may be overridden for small images (the digits demo runs 16 px, patch 4).

A model file is ``<name>.safetensors`` whose header metadata holds the model's
:class:`ModelConfig` as JSON, so the file alone says how to run it; a copy of the
config is written beside it as ``<name>.json`` for people and tools that do not
read safetensors headers. State-dict names are timm's, so an official DeiT
checkpoint (``deit_tiny_patch16_224`` = ``deit_3h``, ``deit_small`` = ``deit_6h``,
``deit_base``) loads with :func:`load_timm_checkpoint`.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from timm.models import adapt_input_conv
from timm.models.vision_transformer import VisionTransformer, checkpoint_filter_fn

from ask_expert_ros.core.errors import ModelConfigError
from ask_expert_ros.core.inference.taxonomy import ExpertKey

logger = logging.getLogger(__name__)

VariantName = Literal['deit_1h', 'deit_3h', 'deit_4h', 'deit_6h', 'deit_base']


@dataclass(frozen=True)
class VariantSpec:
    """Architecture of a variant, Table 2 of the paper."""

    embed_dim: int
    num_heads: int
    depth: int = 12
    mlp_ratio: float = 4.0

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads


VARIANTS: dict[str, VariantSpec] = {
    # not in the paper: one 64-wide head, for experiments where the near-edge model must
    # be capacity-bound (docs/results/fashion_mnist.md)
    'deit_1h': VariantSpec(embed_dim=64, num_heads=1),
    'deit_3h': VariantSpec(embed_dim=192, num_heads=3),
    'deit_4h': VariantSpec(embed_dim=256, num_heads=4),
    'deit_6h': VariantSpec(embed_dim=384, num_heads=6),
    'deit_base': VariantSpec(embed_dim=768, num_heads=12),
}

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
FORMAT_VERSION = 1
_METADATA_KEY = 'ask_expert_ros.model_config'


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a model and feed it: travels with the weights.

    Attributes:
        variant: One of :data:`VARIANTS`.
        class_names: Output classes in logit order.
        img_size: Input side in pixels (square).
        patch_size: ViT patch side in pixels.
        depth: Transformer blocks (12 in the paper).
        in_chans: Input channels: 3 for RGB, 1 for grayscale data.
        mean: Per-channel normalisation mean, on [0, 1] pixel values.
        std: Per-channel normalisation std.
        interpolation: Resize filter from the camera frame to ``img_size``.
        partition: Name of the partition scheme the model was trained under.
        expert_key: Subset ids the model is specialised on; None for a generalist.
    """

    variant: VariantName
    class_names: tuple[str, ...]
    img_size: int = 224
    patch_size: int = 16
    depth: int = 12
    in_chans: int = 3
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    interpolation: Literal['bilinear', 'bicubic', 'nearest'] = 'bicubic'
    partition: str | None = None
    expert_key: ExpertKey | None = None

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ModelConfigError(
                f'unknown variant {self.variant!r}; choose one of {sorted(VARIANTS)}'
            )
        if not self.class_names:
            raise ModelConfigError('a model needs at least one class name')
        if self.img_size < 1 or self.patch_size < 1 or self.img_size % self.patch_size:
            raise ModelConfigError(
                f'img_size {self.img_size} must be a positive multiple of patch_size '
                f'{self.patch_size}'
            )
        if self.depth < 1:
            raise ModelConfigError(f'depth must be >= 1, got {self.depth}')
        if not len(self.mean) == len(self.std) == self.in_chans:
            raise ModelConfigError(
                f'mean/std need one value per input channel ({self.in_chans}), got '
                f'{len(self.mean)}/{len(self.std)}'
            )
        if any(s <= 0 for s in self.std):
            raise ModelConfigError(f'std must be positive, got {self.std}')

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def spec(self) -> VariantSpec:
        return VARIANTS[self.variant]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data['format_version'] = FORMAT_VERSION
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        data = dict(data)
        version = data.pop('format_version', FORMAT_VERSION)
        if version > FORMAT_VERSION:
            raise ModelConfigError(
                f'model file format {version} is newer than this ask_expert_ros '
                f'({FORMAT_VERSION}); upgrade the package'
            )
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ModelConfigError(f'unknown model config fields {unknown}')
        for name in ('class_names', 'mean', 'std'):
            if name in data:
                data[name] = tuple(data[name])
        if data.get('expert_key') is not None:
            data['expert_key'] = tuple(int(s) for s in data['expert_key'])
        return cls(**data)


def create_model(config: ModelConfig) -> VisionTransformer:
    """A randomly initialised timm ``VisionTransformer`` for ``config``."""
    spec = config.spec
    return VisionTransformer(
        img_size=config.img_size,
        patch_size=config.patch_size,
        in_chans=config.in_chans,
        num_classes=config.num_classes,
        embed_dim=spec.embed_dim,
        depth=config.depth,
        num_heads=spec.num_heads,
        mlp_ratio=spec.mlp_ratio,
        qkv_bias=True,
    )


@dataclass
class LoadedModel:
    """A model ready to run: eval mode, on its device, with its config."""

    model: torch.nn.Module
    config: ModelConfig
    path: Path | None = None


def model_weights_hash(model: LoadedModel) -> str:
    """SHA-256 (hex) of the model's config and every weight: changes when either does.

    What exported files (ONNX, TensorRT engines, AOTInductor packages) record, so a
    file built from other weights is known as stale.
    """
    digest = hashlib.sha256(json.dumps(model.config.to_dict(), sort_keys=True).encode())
    for name, tensor in sorted(model.model.state_dict().items()):
        if tensor.device.type == 'meta':
            raise ModelConfigError(f'the weights of {name} were released; cannot hash them')
        t = tensor.detach().cpu().contiguous()
        digest.update(f'{name}:{t.dtype}:{tuple(t.shape)}'.encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b'')
    return digest.hexdigest()


def save_model(model: torch.nn.Module, config: ModelConfig, path: str | Path) -> Path:
    """Write ``path`` (``.safetensors``) with the config in its header and ``.json`` beside it."""
    path = Path(path)
    if path.suffix != '.safetensors':
        path = path.with_suffix('.safetensors')
    path.parent.mkdir(parents=True, exist_ok=True)
    config_json = json.dumps(config.to_dict(), sort_keys=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(tensors, str(path), metadata={_METADATA_KEY: config_json})
    path.with_suffix('.json').write_text(
        json.dumps(config.to_dict(), indent=2, sort_keys=True) + '\n', encoding='utf-8'
    )
    return path


def read_model_config(path: str | Path) -> ModelConfig:
    """The config stored in a model file's header, without loading the weights."""
    path = Path(path)
    if not path.is_file():
        raise ModelConfigError(f'model file {path} does not exist')
    try:
        with safe_open(str(path), framework='pt') as f:
            metadata = f.metadata() or {}
    except Exception as exc:  # safetensors raises its own untyped errors on bad files
        raise ModelConfigError(f'{path} is not a readable safetensors file: {exc}') from exc
    if _METADATA_KEY not in metadata:
        raise ModelConfigError(
            f'{path} has no ask_expert_ros config in its header; to use a plain timm/DeiT '
            f'checkpoint, create the model and call load_timm_checkpoint()'
        )
    return ModelConfig.from_dict(json.loads(metadata[_METADATA_KEY]))


def load_model(path: str | Path, device: str | torch.device = 'cpu') -> LoadedModel:
    """Rebuild a model from its file, in eval mode on ``device``."""
    path = Path(path)
    config = read_model_config(path)
    model = create_model(config)
    state = load_file(str(path))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ModelConfigError(
            f'{path}: weights do not match {config.variant} (missing {missing[:3]}, '
            f'unexpected {unexpected[:3]})'
        )
    model.to(device).eval()
    return LoadedModel(model=model, config=config, path=path)


def load_timm_checkpoint(model: VisionTransformer, path: str | Path) -> list[str]:
    """Load an official DeiT/timm checkpoint (``.pth`` or ``.safetensors``) into ``model``.

    Position embeddings are resampled to the model's grid, RGB patch filters are
    folded for grayscale input, and a classifier head of another size is left at
    its initialisation.

    Returns:
        The names of the parameters left at their initialisation.
    """
    path = Path(path)
    if path.suffix == '.safetensors':
        state: dict[str, Any] = load_file(str(path))
    else:
        state = torch.load(str(path), map_location='cpu', weights_only=True)
    state = checkpoint_filter_fn(state, model)
    own = model.state_dict()
    key = 'patch_embed.proj.weight'
    if key in state and state[key].shape[1] != own[key].shape[1]:
        state[key] = adapt_input_conv(own[key].shape[1], state[key])
    kept = {k: v for k, v in state.items() if k in own and v.shape == own[k].shape}
    skipped = sorted(set(own) - set(kept))
    model.load_state_dict(kept, strict=False)
    if skipped:
        logger.info('left at initialisation: %s', ', '.join(skipped))
    return skipped
