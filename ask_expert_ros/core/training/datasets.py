"""Labelled image sets read from disk (never from the network), by one spec string.

=============================  ==========================================================
spec                           what is read
=============================  ==========================================================
``digits``                     scikit-learn's handwritten digits (ship in its wheel)
``cifar100:DIR``               CIFAR-100, python format: ``DIR/{train,test,meta}``
                               (``DIR`` may also be the folder holding ``cifar-100-python``)
``folder:DIR``                 an image folder: ``DIR/train/<class>/*.jpg`` and
                               ``DIR/test/<class>/*`` (or ``val/``); without those two,
                               ``DIR/<class>/*`` split stratified by ``test_fraction``
``fashion_mnist[:DIR]``        Fashion-MNIST IDX files (Debian ``dataset-fashion-mnist``)
``scene:SPEC``                 the frames of ``SPEC`` (any spec above), each placed at a
                               random spot of a canvas three times its side, over a
                               smooth textured background with two faint fragments of
                               other frames (see :func:`scene`)
=============================  ==========================================================

Every source returns :class:`LabelledImages`: ``uint8`` frames ``[N, H, W]`` or
``[N, H, W, 3]`` in RGB order and ``int64`` labels. Images of an image folder are
decoded once, resized to ``folder_size`` pixels square, and kept in memory; that suits
the tens of thousands of frames of a robot's own data set, not ImageNet.
"""

from __future__ import annotations

import gzip
import logging
import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from sklearn.model_selection import train_test_split

from ask_expert_ros.core.data import LabelledImages, digits
from ask_expert_ros.core.inference.taxonomy import ExpertKey, PartitionScheme

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = ('.jpg', '.jpeg', '.png', '.bmp', '.ppm', '.pgm', '.webp', '.tif', '.tiff')
FASHION_MNIST_DIR = Path('/usr/share/datasets/fashion-mnist')
FASHION_MNIST_NAMES = (
    'T-shirt/top',
    'Trouser',
    'Pullover',
    'Dress',
    'Coat',
    'Sandal',
    'Shirt',
    'Sneaker',
    'Bag',
    'Ankle boot',
)
DATASET_KINDS = ('digits', 'cifar100', 'folder', 'fashion_mnist', 'scene')


class DatasetError(ValueError):
    """A data set is missing, incomplete or not in the expected format."""


def load_dataset(
    spec: str, seed: int = 0, test_fraction: float = 0.3, folder_size: int = 64
) -> LabelledImages:
    """The data set a spec string names (see the module docstring).

    Args:
        spec: ``kind[:path]``.
        seed: Split seed where the source has no fixed split (digits, flat folders).
        test_fraction: Test share for such splits.
        folder_size: Side in pixels image-folder frames are stored at.

    Raises:
        DatasetError: Unknown kind, missing files, or files of the wrong format.
    """
    kind, _, path = spec.partition(':')
    kind = kind.strip().lower().replace('-', '_')
    if kind == 'digits':
        return digits(test_fraction=test_fraction, seed=seed)
    if kind == 'cifar100':
        if not path:
            raise DatasetError('cifar100 needs a path: cifar100:/data/cifar-100-python')
        return cifar100(path)
    if kind == 'folder':
        if not path:
            raise DatasetError('folder needs a path: folder:/data/my_images')
        return image_folder(path, size=folder_size, test_fraction=test_fraction, seed=seed)
    if kind == 'fashion_mnist':
        return fashion_mnist(path or FASHION_MNIST_DIR)
    if kind == 'scene':
        if not path:
            raise DatasetError('scene needs the data set to place: scene:fashion_mnist')
        return scene(load_dataset(path, seed, test_fraction, folder_size))
    raise DatasetError(f'unknown data set {kind!r} in {spec!r}; choose one of {DATASET_KINDS}')


def cifar100(root: str | Path) -> LabelledImages:
    """CIFAR-100 in its python format (``train``, ``test``, ``meta`` pickles), fine labels."""
    root = Path(root)
    if (root / 'cifar-100-python').is_dir():
        root = root / 'cifar-100-python'
    missing = [name for name in ('train', 'test', 'meta') if not (root / name).is_file()]
    if missing:
        raise DatasetError(
            f'{root} is not a cifar-100-python folder: missing {", ".join(missing)} (get '
            'cifar-100-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html and '
            'unpack it; nothing is downloaded for you)'
        )
    meta = _unpickle(root / 'meta')
    names = tuple(_text(n) for n in _field(meta, 'fine_label_names', root / 'meta'))
    parts = []
    for split in ('train', 'test'):
        batch = _unpickle(root / split)
        data = np.asarray(_field(batch, 'data', root / split), dtype=np.uint8)
        labels = np.asarray(_field(batch, 'fine_labels', root / split), dtype=np.int64)
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(data) != len(labels):
            raise DatasetError(
                f'{root / split}: expected data [N, 3072] and N fine_labels, got '
                f'{data.shape} and {labels.shape}'
            )
        if labels.size and (labels.min() < 0 or labels.max() >= len(names)):
            raise DatasetError(f'{root / split}: labels outside 0..{len(names) - 1}')
        # rows are R plane, G plane, B plane of 32x32 each -> [N, 32, 32, 3]
        parts.append((data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).copy(), labels))
    (x_train, y_train), (x_test, y_test) = parts
    return LabelledImages(names, x_train, y_train, x_test, y_test)


def _unpickle(path: Path) -> dict:
    try:
        with path.open('rb') as f:
            return pickle.load(f, encoding='bytes')
    except (pickle.UnpicklingError, EOFError, ValueError) as exc:
        raise DatasetError(f'{path}: not a CIFAR pickle ({exc})') from exc


def _field(obj: dict, name: str, path: Path) -> Any:
    for key in (name, name.encode()):
        if key in obj:
            return obj[key]
    raise DatasetError(f'{path}: no field {name!r}')


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def image_folder(
    root: str | Path, size: int = 64, test_fraction: float = 0.3, seed: int = 0
) -> LabelledImages:
    """``root/train/<class>/*`` + ``root/test|val/<class>/*``, or ``root/<class>/*`` split.

    Class names are the sorted folder names (the torchvision ImageFolder convention);
    grey images are expanded to RGB; files OpenCV cannot decode are logged and skipped.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f'no image folder at {root}')
    if size < 1:
        raise ValueError(f'size must be >= 1, got {size}')
    test_dir = next((root / d for d in ('test', 'val') if (root / d).is_dir()), None)
    if (root / 'train').is_dir() and test_dir is not None:
        names = _class_dirs(root / 'train')
        if _class_dirs(test_dir) != names:
            raise DatasetError(f'{root / "train"} and {test_dir} must hold the same class folders')
        x_train, y_train = _read_classes(root / 'train', names, size)
        x_test, y_test = _read_classes(test_dir, names, size)
        return LabelledImages(names, x_train, y_train, x_test, y_test)
    names = _class_dirs(root)
    images, labels = _read_classes(root, names, size)
    x_train, x_test, y_train, y_test = train_test_split(
        images, labels, test_size=test_fraction, random_state=seed, stratify=labels
    )
    return LabelledImages(names, x_train, y_train, x_test, y_test)


def _class_dirs(root: Path) -> tuple[str, ...]:
    names = tuple(sorted(d.name for d in root.iterdir() if d.is_dir()))
    if not names:
        raise DatasetError(f'{root} has no class folders (expected {root}/<class>/*.jpg)')
    return names


def _read_classes(root: Path, names: Sequence[str], size: int) -> tuple[np.ndarray, np.ndarray]:
    images, labels, skipped = [], [], 0
    for label, name in enumerate(names):
        for path in sorted((root / name).iterdir()):
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if bgr is None:
                skipped += 1
                logger.warning('skipping %s: not a decodable image', path)
                continue
            frame = cv2.resize(bgr, (size, size), interpolation=cv2.INTER_AREA)
            images.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
            labels.append(label)
    if not images:
        raise DatasetError(f'no readable images under {root} (suffixes {IMAGE_SUFFIXES})')
    if skipped:
        logger.warning('%s: %d undecodable files skipped', root, skipped)
    return np.stack(images), np.asarray(labels, dtype=np.int64)


def fashion_mnist(root: str | Path = FASHION_MNIST_DIR) -> LabelledImages:
    """Fashion-MNIST from its IDX files (plain or ``.gz``), 60 000 train / 10 000 test."""
    root = Path(root)
    files = {
        'x_train': 'train-images-idx3-ubyte',
        'y_train': 'train-labels-idx1-ubyte',
        'x_test': 't10k-images-idx3-ubyte',
        'y_test': 't10k-labels-idx1-ubyte',
    }
    arrays = {}
    for field, stem in files.items():
        path = next((p for p in (root / stem, root / f'{stem}.gz') if p.is_file()), None)
        if path is None:
            raise DatasetError(
                f'Fashion-MNIST file {stem}[.gz] not found in {root}; on Debian/Ubuntu: '
                '`sudo apt-get install dataset-fashion-mnist` (installs it under '
                f'{FASHION_MNIST_DIR}), or pass fashion_mnist:/path/to/idx/files'
            )
        arrays[field] = read_idx(path)
    for split in ('train', 'test'):
        x, y = arrays[f'x_{split}'], arrays[f'y_{split}']
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise DatasetError(f'{root}: {split} images {x.shape} do not match labels {y.shape}')
    return LabelledImages(
        FASHION_MNIST_NAMES,
        arrays['x_train'],
        arrays['y_train'].astype(np.int64),
        arrays['x_test'],
        arrays['y_test'].astype(np.int64),
    )


_IDX_TYPES: dict[int, str] = {
    0x08: 'u1',
    0x09: 'i1',
    0x0B: '>i2',
    0x0C: '>i4',
    0x0D: '>f4',
    0x0E: '>f8',
}


SCENE_FACTOR = 3
SCENE_SEED = 0


def scene(
    data: LabelledImages,
    factor: int = SCENE_FACTOR,
    seed: int = SCENE_SEED,
    distractors: int = 2,
) -> LabelledImages:
    """Every frame of ``data`` as one object in a larger scene, as a robot's camera sees one.

    Fashion-MNIST and digits fill their frame, so a patch subset cannot be better than
    the whole frame there. Here each frame of side ``s`` lands at a uniformly random
    spot of a ``factor * s`` canvas (a ninth of the area at ``factor`` 3), over a smooth
    random background (a coarse 4 x 4 field of grey levels 0-60 resized to the canvas,
    plus pixel noise of +-8) and ``distractors`` fragments, a quarter of the side each,
    cut from other frames of the same split at half intensity. Pixels combine by their
    maximum, so the object's own dark border does not erase the background.

    The placements are a fixed function of ``seed`` (0 by default, independent of the
    split seed) and of the frame's index, so the recipe, ``bench-patches`` and a bag of
    the same data set see the same scenes. Labels and class names are unchanged.
    """
    if factor < 1:
        raise ValueError(f'scene factor must be >= 1, got {factor}')
    splits = []
    for index, frames in enumerate((data.train_images, data.test_images)):
        rng = np.random.default_rng([seed, index])
        splits.append(_scenes(frames, factor, rng, distractors))
    return LabelledImages(
        data.class_names, splits[0], data.train_labels, splits[1], data.test_labels
    )


def _scenes(
    frames: np.ndarray, factor: int, rng: np.random.Generator, distractors: int
) -> np.ndarray:
    n, h, w = frames.shape[:3]
    side = factor * max(h, w)
    extra = frames.shape[3:]
    coarse = rng.integers(0, 61, size=(n, 4, 4), dtype=np.uint8)
    noise = rng.integers(-8, 9, size=(n, side, side), dtype=np.int16)
    spot = rng.integers(0, side - np.array([h, w]) + 1, size=(n, 2))
    frag = max(1, min(h, w) // 4)
    donor = rng.integers(0, n, size=(n, distractors))
    cut = rng.integers(0, np.array([h, w]) - frag + 1, size=(n, distractors, 2))
    place = rng.integers(0, side - frag + 1, size=(n, distractors, 2))
    out = np.empty((n, side, side, *extra), dtype=np.uint8)
    for i in range(n):
        ground = cv2.resize(coarse[i], (side, side), interpolation=cv2.INTER_CUBIC)
        canvas = np.clip(ground.astype(np.int16) + noise[i], 0, 255).astype(np.uint8)
        if extra:
            canvas = np.repeat(canvas[..., None], extra[0], axis=-1)
        for j in range(distractors):
            (cy, cx), (py, px) = cut[i, j], place[i, j]
            piece = frames[donor[i, j], cy : cy + frag, cx : cx + frag] // 2
            window = canvas[py : py + frag, px : px + frag]
            np.maximum(window, piece, out=window)
        y, x = spot[i]
        window = canvas[y : y + h, x : x + w]
        np.maximum(window, frames[i], out=window)
        out[i] = canvas
    return out


def read_idx(path: str | Path) -> np.ndarray:
    """An IDX file (the MNIST format): magic ``0 0 type ndim``, big-endian dims, data."""
    path = Path(path)
    opener = gzip.open if path.suffix == '.gz' else open
    with opener(path, 'rb') as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES:
        raise DatasetError(f'{path}: not an IDX file (bad magic {raw[:4]!r})')
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DatasetError(f'{path}: truncated IDX header')
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype='>u4', count=ndim, offset=4))
    dtype = np.dtype(_IDX_TYPES[raw[2]])
    expected = int(np.prod(dims)) * dtype.itemsize
    if len(raw) - header != expected:
        raise DatasetError(
            f'{path}: {len(raw) - header} data bytes, expected {expected} for dims {dims}'
        )
    return (
        np.frombuffer(raw, dtype=dtype, offset=header)
        .reshape(dims)
        .astype(dtype.newbyteorder('='))
    )


def subset(data: LabelledImages, scheme: PartitionScheme, key: ExpertKey) -> LabelledImages:
    """D_I: the frames of ``data`` whose class falls in the subsets of ``key``."""
    if scheme.class_names != data.class_names:
        raise DatasetError(
            f'scheme {scheme.name!r} is for other classes than this data set '
            f'({len(scheme.class_names)} vs {len(data.class_names)} classes)'
        )
    mask = scheme.class_mask(key)
    train, test = mask[data.train_labels], mask[data.test_labels]
    return LabelledImages(
        data.class_names,
        data.train_images[train],
        data.train_labels[train],
        data.test_images[test],
        data.test_labels[test],
    )
