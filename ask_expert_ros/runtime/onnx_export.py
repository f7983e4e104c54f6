"""Torch model -> ONNX file (opset >= 17, dynamic batch axis), with the config inside.

The file's ``metadata_props`` carry the model's :class:`ModelConfig` JSON and the
hash of the weights it came from, so an exported file alone says how to feed it and
whether it is stale. Files are named ``<stem>.<hash12>.onnx`` so a cache directory
can be searched by :func:`model_hash`.
"""

from __future__ import annotations

import io
import json
import logging
import warnings
from pathlib import Path

import torch

from ask_expert_ros.core.inference.backends import BackendError
from ask_expert_ros.core.inference.models import LoadedModel, ModelConfig, model_weights_hash

logger = logging.getLogger(__name__)

MIN_OPSET = 17
DEFAULT_OPSET = 17
INPUT_NAME = 'input'
OUTPUT_NAME = 'logits'
CONFIG_KEY = 'ask_expert_ros.model_config'
HASH_KEY = 'ask_expert_ros.model_sha256'
HASH_CHARS = 12


model_hash = model_weights_hash
"""SHA-256 (hex) of a model's config and every weight (:func:`model_weights_hash`)."""


def onnx_file_name(stem: str, sha256: str) -> str:
    """``<stem>.<first 12 hex of the model hash>.onnx``."""
    return f'{stem}.{sha256[:HASH_CHARS]}.onnx'


def find_cached(cache_dir: Path, sha256: str, suffix: str = '.onnx') -> Path | None:
    """A file for the model with hash ``sha256`` in ``cache_dir``, if one was written."""
    if not cache_dir.is_dir():
        return None
    hits = sorted(cache_dir.rglob(f'*.{sha256[:HASH_CHARS]}{suffix}'))
    return hits[0] if hits else None


def _export_to(model: LoadedModel, target: str | io.BytesIO, opset: int) -> None:
    if opset < MIN_OPSET:
        raise BackendError(f'ONNX opset must be >= {MIN_OPSET}, got {opset}')
    cfg = model.config
    module = model.model
    device = next(module.parameters()).device
    dummy = torch.zeros((2, cfg.in_chans, cfg.img_size, cfg.img_size), device=device)
    was_training = module.training
    module.eval()
    try:
        with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
            # the TorchScript exporter is deprecated but exports a timm ViT in about a
            # second with a plain dynamic batch axis; the dynamo one takes ~6 s
            warnings.simplefilter('ignore')
            torch.onnx.export(
                module,
                (dummy,),
                target,  # type: ignore[arg-type]  # file-like objects work too
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                opset_version=opset,
                dynamic_axes={INPUT_NAME: {0: 'batch'}, OUTPUT_NAME: {0: 'batch'}},
                do_constant_folding=True,
                dynamo=False,
            )
    finally:
        module.train(was_training)


def export_onnx_bytes(model: LoadedModel, opset: int = DEFAULT_OPSET) -> bytes:
    """The model as a serialised ONNX ``ModelProto`` with config and hash in its metadata."""
    import onnx  # export needs it; the runtime alone does not

    buffer = io.BytesIO()
    _export_to(model, buffer, opset)
    proto = onnx.load_from_string(buffer.getvalue())
    sha = model_hash(model)
    for key, value in (
        (CONFIG_KEY, json.dumps(model.config.to_dict(), sort_keys=True)),
        (HASH_KEY, sha),
    ):
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.producer_name = 'ask_expert_ros'
    onnx.checker.check_model(proto)
    return proto.SerializeToString()


def export_onnx(
    model: LoadedModel, out_dir: str | Path, stem: str | None = None, opset: int = DEFAULT_OPSET
) -> Path:
    """Write ``out_dir/<stem>.<hash12>.onnx`` (reused if already there) and return its path.

    Args:
        model: The model to export (any device; exported as it is, fp32).
        out_dir: Directory for the file (created).
        stem: File name stem; default: the model file's stem, else its variant.
        opset: ONNX opset, >= 17 (LayerNormalization is a single op from 17 on).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sha = model_hash(model)
    stem = stem or (model.path.stem if model.path is not None else model.config.variant)
    path = out_dir / onnx_file_name(stem, sha)
    if path.is_file() and read_onnx_metadata(path)[1] == sha:
        logger.info('ONNX up to date: %s', path)
        return path
    tmp = path.with_suffix('.onnx.tmp')
    tmp.write_bytes(export_onnx_bytes(model, opset))
    tmp.replace(path)  # atomic: a reader never sees half a file
    logger.info('exported %s (opset %d)', path, opset)
    return path


def read_onnx_metadata(path: str | Path) -> tuple[ModelConfig, str]:
    """The model config and weight hash an exported file carries.

    Raises:
        BackendError: The file is not ONNX or was not written by :func:`export_onnx`.
    """
    import onnx

    path = Path(path)
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError/OSError variants
        raise BackendError(f'{path} is not a readable ONNX file: {exc}') from exc
    meta = {p.key: p.value for p in proto.metadata_props}
    if CONFIG_KEY not in meta or HASH_KEY not in meta:
        raise BackendError(f'{path} has no ask_expert_ros metadata; export it with ask-expert')
    return ModelConfig.from_dict(json.loads(meta[CONFIG_KEY])), meta[HASH_KEY]
