"""Data sets from disk in their own on-disk formats, built here as small fixtures."""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import cv2
import numpy as np
import pytest

from ask_expert_ros.core.data import LabelledImages
from ask_expert_ros.core.inference.taxonomy import PartitionScheme
from ask_expert_ros.core.training.datasets import (
    DatasetError,
    fashion_mnist,
    load_dataset,
    read_idx,
    scene,
    subset,
)


def _write_cifar(root: Path, rng: np.random.Generator) -> tuple[np.ndarray, list[int]]:
    """A cifar-100-python folder with 12 train / 6 test images and 3 fine classes."""
    root.mkdir(parents=True)
    names = [b'apple', b'bee', b'castle']
    pickle.dump(
        {b'fine_label_names': names, b'coarse_label_names': [b'x']}, (root / 'meta').open('wb')
    )
    train = rng.integers(0, 256, size=(12, 3072), dtype=np.uint8)
    labels = [i % 3 for i in range(12)]
    pickle.dump(
        {b'data': train, b'fine_labels': labels, b'coarse_labels': [0] * 12},
        (root / 'train').open('wb'),
    )
    test = rng.integers(0, 256, size=(6, 3072), dtype=np.uint8)
    pickle.dump({b'data': test, b'fine_labels': [0, 1, 2, 0, 1, 2]}, (root / 'test').open('wb'))
    return train, labels


def test_cifar100_python_format(tmp_path: Path) -> None:
    train, labels = _write_cifar(tmp_path / 'cifar-100-python', np.random.default_rng(0))
    data = load_dataset(f'cifar100:{tmp_path}')  # the parent folder works too
    assert data.class_names == ('apple', 'bee', 'castle')
    assert data.train_images.shape == (12, 32, 32, 3) and data.test_images.shape == (6, 32, 32, 3)
    assert data.train_labels.tolist() == labels
    # pixel (row 2, col 5) of image 4: R, G, B planes of 1024 values each
    i = 2 * 32 + 5
    assert data.train_images[4, 2, 5].tolist() == [
        train[4, i],
        train[4, 1024 + i],
        train[4, 2048 + i],
    ]


def test_cifar100_missing_files_are_named(tmp_path: Path) -> None:
    (tmp_path / 'train').write_bytes(b'')
    with pytest.raises(DatasetError, match='missing test, meta'):
        load_dataset(f'cifar100:{tmp_path}')
    with pytest.raises(DatasetError, match='needs a path'):
        load_dataset('cifar100')


def test_image_folder_with_train_and_test(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    for split, count in (('train', 3), ('val', 2)):
        for name, colour in (('cat', (0, 0, 255)), ('dog', (0, 255, 0))):
            folder = tmp_path / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                img = np.full((20, 30, 3), colour, np.uint8)  # BGR on disk
                img[0, 0] = rng.integers(0, 255, 3)
                cv2.imwrite(str(folder / f'{i}.png'), img)
    (tmp_path / 'train' / 'cat' / 'broken.jpg').write_bytes(b'not a jpeg')
    (tmp_path / 'train' / 'cat' / 'notes.txt').write_text('ignored')
    data = load_dataset(f'folder:{tmp_path}', folder_size=16)
    assert data.class_names == ('cat', 'dog')
    assert data.train_images.shape == (6, 16, 16, 3) and len(data.test_labels) == 4
    cat = data.train_images[data.train_labels == 0]
    assert (cat[:, 8, 8] == [255, 0, 0]).all()  # red cat stored in RGB order


def test_flat_image_folder_is_split_stratified(tmp_path: Path) -> None:
    for name in ('a', 'b'):
        (tmp_path / name).mkdir()
        for i in range(10):
            cv2.imwrite(str(tmp_path / name / f'{i}.jpg'), np.full((8, 8), 25 * i, np.uint8))
    data = load_dataset(f'folder:{tmp_path}', test_fraction=0.2, folder_size=8)
    assert len(data.train_labels) == 16 and np.bincount(data.test_labels).tolist() == [2, 2]
    assert data.train_images.shape[1:] == (8, 8, 3)


def _write_idx(path: Path, array: np.ndarray, gz: bool) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, '>u4').tobytes()
    payload = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(payload) if gz else payload)


def test_fashion_mnist_idx_plain_and_gz(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    x = rng.integers(0, 256, size=(5, 28, 28), dtype=np.uint8)
    y = np.array([0, 9, 3, 4, 5], np.uint8)
    _write_idx(tmp_path / 'train-images-idx3-ubyte.gz', x, gz=True)
    _write_idx(tmp_path / 'train-labels-idx1-ubyte', y, gz=False)
    _write_idx(tmp_path / 't10k-images-idx3-ubyte', x[:2], gz=False)
    _write_idx(tmp_path / 't10k-labels-idx1-ubyte.gz', y[:2], gz=True)
    data = load_dataset(f'fashion_mnist:{tmp_path}')
    assert np.array_equal(data.train_images, x) and data.train_labels.tolist() == [0, 9, 3, 4, 5]
    assert data.class_names[9] == 'Ankle boot' and len(data.test_labels) == 2


def test_fashion_mnist_missing_names_the_apt_package(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match='apt-get install dataset-fashion-mnist'):
        fashion_mnist(tmp_path)


def test_idx_rejects_bad_magic_and_truncation(tmp_path: Path) -> None:
    (tmp_path / 'bad').write_bytes(b'\x01\x02\x08\x01')
    with pytest.raises(DatasetError, match='not an IDX'):
        read_idx(tmp_path / 'bad')
    _write_idx(tmp_path / 'short', np.zeros((4, 2), np.uint8), gz=False)
    (tmp_path / 'short').write_bytes((tmp_path / 'short').read_bytes()[:-1])
    with pytest.raises(DatasetError, match='7 data bytes, expected 8'):
        read_idx(tmp_path / 'short')


def test_unknown_kind() -> None:
    with pytest.raises(DatasetError, match='unknown data set'):
        load_dataset('imagenet:/data')


def test_subset_view_holds_only_the_key_classes(scheme: PartitionScheme) -> None:
    from ask_expert_ros.core.data import LabelledImages

    labels = np.arange(12) % 6
    data = LabelledImages(
        scheme.class_names,
        np.zeros((12, 4, 4), np.uint8),
        labels,
        np.zeros((6, 4, 4), np.uint8),
        np.arange(6),
    )
    d_i = subset(data, scheme, (1, 3))  # classes a, b, e, f
    assert sorted(set(d_i.train_labels.tolist())) == [0, 1, 4, 5] and len(d_i.train_labels) == 8
    assert d_i.test_labels.tolist() == [0, 1, 4, 5]
    other = PartitionScheme.from_class_subsets('x', ('p', 'q'), {1: [0], 2: [1]})
    with pytest.raises(DatasetError, match='other classes'):
        subset(data, other, (1,))


def test_digits_spec_matches_builtin() -> None:
    data = load_dataset('digits', seed=3)
    assert data.train_images.dtype == np.uint8 and len(data.class_names) == 10


def _object_spots(canvas: np.ndarray, frame: np.ndarray) -> list[tuple[int, int]]:
    """Every spot of ``canvas`` where the whole ``frame`` shows (pixels combine by max)."""
    h, w = frame.shape[:2]
    windows = np.lib.stride_tricks.sliding_window_view(canvas, (h, w), axis=(0, 1))
    if frame.ndim == 3:  # [Y, X, C, h, w] -> [Y, X, h, w, C]
        windows = np.moveaxis(windows, 2, -1)
    covered = (windows >= frame).reshape(*windows.shape[:2], -1).all(axis=-1)
    return [tuple(int(v) for v in spot) for spot in np.argwhere(covered)]


def test_scene_places_every_frame_whole_on_a_faint_canvas() -> None:
    data = load_dataset('digits')
    scenes = load_dataset('scene:digits')
    assert scenes.class_names == data.class_names
    assert np.array_equal(scenes.train_labels, data.train_labels)
    assert np.array_equal(scenes.test_labels, data.test_labels)
    assert scenes.train_images.shape == (len(data.train_labels), 24, 24)
    assert scenes.test_images.shape == (len(data.test_labels), 24, 24)
    spots = set()
    for i in range(40):
        frame, canvas = data.test_images[i], scenes.test_images[i]
        found = _object_spots(canvas, frame)
        assert found, f'test frame {i} is not in its scene'
        spots.add(found[0])
        # away from the object only the background (<= 68) and half-bright fragments
        y, x = found[0]
        outside = canvas.copy()
        outside[y : y + 8, x : x + 8] = 0
        assert outside.max() <= 128
    assert len(spots) > 20  # placed at random, not at one spot


def test_scene_is_the_same_for_every_split_seed_and_call() -> None:
    a = load_dataset('scene:digits', seed=0)
    b = load_dataset('scene:digits', seed=0)
    assert np.array_equal(a.test_images, b.test_images)
    assert np.array_equal(a.train_images, b.train_images)
    # the placement seed is the scene's own: another seed moves the objects
    other = scene(load_dataset('digits'), seed=1)
    assert not np.array_equal(other.test_images, a.test_images)


def test_scene_of_colour_frames_keeps_the_channels() -> None:
    rng = np.random.default_rng(3)
    frames = rng.integers(0, 256, size=(6, 10, 10, 3), dtype=np.uint8)
    labels = np.arange(6) % 2
    data = LabelledImages(('a', 'b'), frames, labels, frames[:2], labels[:2])
    scenes = scene(data, factor=2, distractors=1)
    assert scenes.train_images.shape == (6, 20, 20, 3)
    for frame, canvas in zip(frames, scenes.train_images, strict=True):
        assert _object_spots(canvas, frame)


def test_scene_spec_errors_are_clear() -> None:
    with pytest.raises(DatasetError, match='scene needs the data set'):
        load_dataset('scene')
    with pytest.raises(DatasetError, match='unknown data set'):
        load_dataset('scene:nothing')
    with pytest.raises(ValueError, match='factor'):
        scene(load_dataset('digits'), factor=0)
