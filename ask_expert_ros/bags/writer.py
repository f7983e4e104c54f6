"""Write a labelled image set as a rosbag2 folder (``ask-expert make-bag``).

Frames go to one camera topic as ``sensor_msgs/Image`` in a chosen encoding or as
``sensor_msgs/CompressedImage`` (JPEG/PNG, the ``format`` string image_transport
writes); ground truth goes to its own topic as ``vision_msgs/Classification`` with the
same header (one hypothesis: the class name, score 1.0). Frame ``i`` is stamped
``start_ns + i / rate_hz`` in both the message header and the bag's receive time, as
a camera recorded at ``rate_hz`` would be.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
from rosbags.rosbag2 import StoragePlugin, Writer

from ask_expert_ros.bags.types import CLASSIFICATION, COMPRESSED_IMAGE, IMAGE, typestore
from ask_expert_ros.core.inference.image_codec import encode_compressed

Storage = Literal['mcap', 'sqlite3']
Encoding = Literal['rgb8', 'bgr8', 'mono8', 'rgba8', 'bgra8']
Compression = Literal['jpeg', 'png']
STORAGES: tuple[Storage, ...] = ('mcap', 'sqlite3')
ENCODINGS: tuple[Encoding, ...] = ('rgb8', 'bgr8', 'mono8', 'rgba8', 'bgra8')
COMPRESSIONS: tuple[Compression, ...] = ('jpeg', 'png')
DEFAULT_START_NS = 1_700_000_000 * 1_000_000_000
"""First stamp, nanoseconds since the epoch (2023-11-14): fixed so bags are reproducible."""


@dataclass(frozen=True)
class BagWriteConfig:
    """How ``make-bag`` lays out a bag.

    Attributes:
        storage: rosbag2 storage plugin.
        encoding: ``sensor_msgs/Image`` encoding; None: mono8 for grey frames, rgb8
            for colour. Ignored when ``compressed`` is set.
        compressed: Write ``CompressedImage`` in this format instead of ``Image``.
        jpeg_quality: JPEG quality, 1..100.
        rate_hz: Camera rate, frames per second (sets stamps and bag times).
        topic: Camera topic (absolute name).
        label_topic: Ground-truth topic; None writes no ground truth.
        frame_id: Camera optical frame id in every header.
        start_ns: Stamp of the first frame, nanoseconds since the epoch.
    """

    storage: Storage = 'mcap'
    encoding: Encoding | None = None
    compressed: Compression | None = None
    jpeg_quality: int = 90
    rate_hz: float = 30.0
    topic: str = '/image'
    label_topic: str | None = '/ground_truth'
    frame_id: str = 'camera'
    start_ns: int = DEFAULT_START_NS

    def __post_init__(self) -> None:
        if self.storage not in STORAGES:
            raise ValueError(f'storage must be one of {STORAGES}, got {self.storage!r}')
        if self.encoding is not None and self.encoding not in ENCODINGS:
            raise ValueError(f'encoding must be one of {ENCODINGS}, got {self.encoding!r}')
        if self.compressed is not None and self.compressed not in COMPRESSIONS:
            raise ValueError(f'compressed must be one of {COMPRESSIONS}, got {self.compressed!r}')
        if not self.rate_hz > 0:
            raise ValueError(f'rate_hz must be > 0, got {self.rate_hz}')
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f'jpeg_quality must be in 1..100, got {self.jpeg_quality}')
        for name in ('topic', 'label_topic'):
            value = getattr(self, name)
            if value is not None and not value.startswith('/'):
                raise ValueError(f'{name} must be an absolute topic name, got {value!r}')
        if self.label_topic == self.topic:
            raise ValueError('label_topic must differ from the camera topic')


def pixels_as(frame: np.ndarray, encoding: Encoding) -> np.ndarray:
    """An RGB or mono ``uint8`` frame laid out as ``encoding`` (channel order, alpha 255)."""
    if frame.dtype != np.uint8 or frame.ndim not in (2, 3) or 0 in frame.shape:
        raise ValueError(f'expected a non-empty uint8 frame, got {frame.dtype} {frame.shape}')
    rgb = cv2.cvtColor(frame, cv2.COLOR_GRAY2RGB) if frame.ndim == 2 else frame[..., :3]
    if encoding == 'mono8':
        return frame if frame.ndim == 2 else cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    if encoding == 'rgb8':
        return np.ascontiguousarray(rgb)
    if encoding == 'bgr8':
        return np.ascontiguousarray(rgb[..., ::-1])
    alpha = np.full((*rgb.shape[:2], 1), 255, np.uint8)
    order = rgb if encoding == 'rgba8' else rgb[..., ::-1]
    return np.ascontiguousarray(np.concatenate([order, alpha], axis=2))


def make_bag(
    out: str | Path,
    frames: np.ndarray | Sequence[np.ndarray],
    labels: Sequence[int] | np.ndarray | None,
    class_names: Sequence[str],
    config: BagWriteConfig = BagWriteConfig(),
) -> Path:
    """Write ``frames`` (``uint8`` RGB or mono) and their labels as a rosbag2 folder.

    Args:
        out: Bag folder to create; it must not exist yet (rosbag2's rule).
        frames: Frames in camera order.
        labels: Class index per frame, or None for a bag without ground truth.
        class_names: Index -> name, for the ``class_id`` strings of the ground truth.
        config: Layout of the bag.

    Returns:
        The bag folder.

    Raises:
        ValueError: Labels do not match the frames, a label is out of range, a frame
            is not ``uint8``, or ``out`` exists.
    """
    out = Path(out)
    if out.exists():
        raise ValueError(f'{out} exists; rosbag2 writes a new folder, choose another --out')
    if labels is not None:
        if len(labels) != len(frames):
            raise ValueError(f'{len(labels)} labels for {len(frames)} frames')
        bad = [int(v) for v in labels if not 0 <= int(v) < len(class_names)]
        if bad:
            raise ValueError(f'labels {bad[:5]} outside 0..{len(class_names) - 1}')
    store = typestore()
    t = store.types
    plugin = StoragePlugin.MCAP if config.storage == 'mcap' else StoragePlugin.SQLITE3
    period_ns = 1e9 / config.rate_hz
    with Writer(out, version=9, storage_plugin=plugin) as writer:
        msgtype = COMPRESSED_IMAGE if config.compressed else IMAGE
        camera = writer.add_connection(config.topic, msgtype, typestore=store)
        truth = None
        if labels is not None and config.label_topic is not None:
            truth = writer.add_connection(config.label_topic, CLASSIFICATION, typestore=store)
        for i, frame in enumerate(frames):
            stamp_ns = config.start_ns + round(i * period_ns)
            sec, nanosec = divmod(stamp_ns, 1_000_000_000)
            header = t['std_msgs/msg/Header'](
                stamp=t['builtin_interfaces/msg/Time'](sec=sec, nanosec=nanosec),
                frame_id=config.frame_id,
            )
            frame = np.asarray(frame)
            if config.compressed:
                fmt, data = encode_compressed(
                    pixels_as(frame, 'mono8' if frame.ndim == 2 else 'rgb8'),
                    config.compressed,
                    config.jpeg_quality,
                )
                msg = t[COMPRESSED_IMAGE](
                    header=header, format=fmt, data=np.frombuffer(data, np.uint8)
                )
            else:
                encoding = config.encoding or ('mono8' if frame.ndim == 2 else 'rgb8')
                pixels = pixels_as(frame, encoding)
                height, width = pixels.shape[:2]
                msg = t[IMAGE](
                    header=header,
                    height=height,
                    width=width,
                    encoding=encoding,
                    is_bigendian=0,
                    step=pixels.strides[0],
                    data=pixels.reshape(-1),
                )
            writer.write(camera, stamp_ns, store.serialize_cdr(msg, msgtype))
            if truth is not None and labels is not None:
                hypothesis = t['vision_msgs/msg/ObjectHypothesis'](
                    class_id=class_names[int(labels[i])], score=1.0
                )
                label_msg = t[CLASSIFICATION](header=header, results=[hypothesis])
                writer.write(truth, stamp_ns, store.serialize_cdr(label_msg, CLASSIFICATION))
    return out
