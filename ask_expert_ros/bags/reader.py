"""Read camera frames and their ground truth from any rosbag2 folder (sqlite3 or mcap).

The camera topic may hold ``sensor_msgs/Image`` in any encoding the core decodes
(mono8, rgb8, bgr8, rgba8, bgra8, mono16, ...) or ``sensor_msgs/CompressedImage``
(JPEG/PNG). Ground truth, when the bag has it, is a ``vision_msgs/Classification``
topic whose messages carry the camera frame's header stamp; a frame's label is the
``class_id`` of the first hypothesis with the frame's exact stamp.

A message that cannot be used -- CDR that does not decode, image data shorter than
``height * step``, an unknown encoding, a JPEG that does not decode -- is logged with
its reason, counted in :attr:`BagContents.skipped`, and skipped; reading goes on.
"""

from __future__ import annotations

import logging
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rosbags.rosbag2 import Reader, ReaderError
from rosbags.serde import SerdeError

from ask_expert_ros.bags.types import CLASSIFICATION, COMPRESSED_IMAGE, IMAGE, typestore
from ask_expert_ros.core.errors import AskExpertError, UnsupportedImageError
from ask_expert_ros.core.nodes.messages import ImageData
from ask_expert_ros.message_conversions import compressed_msg_to_frame, image_msg_to_frame

logger = logging.getLogger(__name__)

IMAGE_TYPES = (IMAGE, COMPRESSED_IMAGE)
# what rosbags raises on payloads that are not valid CDR for the type
_CDR_ERRORS = (SerdeError, ValueError, IndexError, KeyError, TypeError, UnicodeDecodeError)


class BagError(AskExpertError, ValueError):
    """The bag is missing, or has no usable camera or ground-truth topic as asked."""


@dataclass(frozen=True)
class BagFrame:
    """One decoded camera frame of a bag.

    Attributes:
        index: Position of the message on the camera topic (0-based, skipped ones count).
        stamp_ns: Header stamp, nanoseconds since the epoch (the camera's clock).
        bag_time_ns: Time the recorder received it, nanoseconds.
        frame_id: Header frame id.
        pixels: ``uint8 [H, W]`` mono or ``[H, W, 3]`` RGB.
        label: Ground-truth ``class_id`` with the same stamp, None when there is none.
        source: The image as recorded (what an edge node forwards to the expert).
    """

    index: int
    stamp_ns: int
    bag_time_ns: int
    frame_id: str
    pixels: np.ndarray
    label: str | None
    source: ImageData


@dataclass(frozen=True)
class SkippedMessage:
    """A message that was not used: topic, position on it, bag time and why."""

    topic: str
    index: int
    bag_time_ns: int
    reason: str


@dataclass
class BagContents:
    """What :func:`read_bag` found: usable frames, skipped messages, which topics."""

    path: Path
    topic: str
    msgtype: str
    label_topic: str | None
    frames: list[BagFrame] = field(default_factory=list)
    skipped: list[SkippedMessage] = field(default_factory=list)

    @property
    def labelled(self) -> int:
        return sum(f.label is not None for f in self.frames)

    def summary(self) -> dict[str, Any]:
        """JSON-ready counts: frames read, skipped (with reasons), labelled."""
        return {
            'path': str(self.path),
            'topic': self.topic,
            'msgtype': self.msgtype,
            'label_topic': self.label_topic,
            'frames': len(self.frames),
            'labelled_frames': self.labelled,
            'skipped': len(self.skipped),
            'skipped_messages': [
                {
                    'topic': s.topic,
                    'index': s.index,
                    'bag_time_ns': s.bag_time_ns,
                    'reason': s.reason,
                }
                for s in self.skipped
            ],
        }


def _stamp_ns(header: Any) -> int:
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


def _decode(msg: Any, msgtype: str) -> tuple[np.ndarray, ImageData]:
    # rosbags keeps ``data`` as a contiguous uint8 array: the shared decoders view it
    to_frame = compressed_msg_to_frame if msgtype == COMPRESSED_IMAGE else image_msg_to_frame
    frame = to_frame(msg)
    return frame.pixels, frame.source


def _listing(topics: dict[str, str]) -> str:
    """``'/a' (pkg/msg/A), '/b' (pkg/msg/B)`` or ``no topics at all``."""
    if not topics:
        return 'no topics at all'
    return ', '.join(f'{t!r} ({m})' for t, m in sorted(topics.items()))


def _pick_label_topic(topics: dict[str, str], wanted: str | None) -> str | None:
    if wanted == '':
        return None
    if wanted is not None:
        if topics.get(wanted) != CLASSIFICATION:
            raise BagError(
                f'label topic {wanted!r} is not a {CLASSIFICATION} topic of the bag; '
                f'its topics: {_listing(topics)}'
            )
        return wanted
    candidates = sorted(t for t, m in topics.items() if m == CLASSIFICATION)
    if len(candidates) > 1:
        raise BagError(
            f'several ground-truth topics {candidates}: choose one with --label-topic '
            "(or --label-topic '' to ignore ground truth)"
        )
    return candidates[0] if candidates else None


def iter_bag(
    path: str | Path, topic: str | None = None, label_topic: str | None = None
) -> tuple[BagContents, Generator[BagFrame, None, None]]:
    """Open a bag; the contents record (filled as the iterator runs) and a frame iterator.

    Args:
        path: rosbag2 folder.
        topic: Camera topic; None: the only Image/CompressedImage topic of the bag.
        label_topic: Ground-truth topic; None: the only Classification topic if any;
            '': ignore ground truth.

    Raises:
        BagError: No such bag, topic, or an ambiguous choice.
    """
    path = Path(path)
    if not (path / 'metadata.yaml').is_file():
        found = sorted(p.name for p in path.iterdir())[:10] if path.is_dir() else []
        raise BagError(
            f'{path} is not a rosbag2 folder: expected a folder with metadata.yaml '
            f'(what ros2 bag record writes), found '
            + (f'a folder with {found}' if path.is_dir() else 'no such folder')
        )
    store = typestore()
    try:
        with Reader(path) as reader:
            topics = {c.topic: c.msgtype for c in reader.connections}
    except ReaderError as exc:
        raise BagError(f'cannot open the bag {path}: {exc}') from exc
    if topic is None:
        images = sorted(t for t, m in topics.items() if m in IMAGE_TYPES)
        if not images:
            raise BagError(
                f'{path} has no camera topic: expected a topic of type {IMAGE} or '
                f'{COMPRESSED_IMAGE}, found {_listing(topics)}'
            )
        if len(images) > 1:
            raise BagError(
                f'{path} has {len(images)} camera topics: choose one with --topic '
                f'({_listing({t: topics[t] for t in images})})'
            )
        topic = images[0]
    if topics.get(topic) not in IMAGE_TYPES:
        what = f'of type {topics[topic]}' if topic in topics else 'not in the bag'
        raise BagError(
            f'topic {topic!r} is not an Image/CompressedImage topic of {path} ({what}); '
            f'expected {IMAGE} or {COMPRESSED_IMAGE}; the bag has {_listing(topics)}'
        )
    msgtype = topics[topic]
    chosen = _pick_label_topic(topics, label_topic)
    contents = BagContents(path, topic, msgtype, chosen)

    def skip(topic_name: str, index: int, time_ns: int, reason: str) -> None:
        logger.warning('%s: skipped message %d on %s: %s', path, index, topic_name, reason)
        contents.skipped.append(SkippedMessage(topic_name, index, time_ns, reason))

    def frames() -> Generator[BagFrame, None, None]:
        with Reader(path) as reader:
            labels: dict[int, str] = {}
            if chosen is not None:
                conns = [c for c in reader.connections if c.topic == chosen]
                for i, (_, time_ns, raw) in enumerate(reader.messages(conns)):
                    try:
                        msg: Any = store.deserialize_cdr(raw, CLASSIFICATION)
                    except _CDR_ERRORS as exc:
                        skip(chosen, i, time_ns, f'bad CDR: {type(exc).__name__}: {exc}')
                        continue
                    if msg.results:
                        labels[_stamp_ns(msg.header)] = str(msg.results[0].class_id)
            conns = [c for c in reader.connections if c.topic == topic]
            for i, (_, time_ns, raw) in enumerate(reader.messages(conns)):
                try:
                    image: Any = store.deserialize_cdr(raw, msgtype)
                except _CDR_ERRORS as exc:
                    skip(topic, i, time_ns, f'bad CDR: {type(exc).__name__}: {exc}')
                    continue
                try:
                    pixels, source = _decode(image, msgtype)
                except UnsupportedImageError as exc:
                    skip(topic, i, time_ns, str(exc))
                    continue
                stamp = _stamp_ns(image.header)
                frame = BagFrame(
                    i, stamp, time_ns, image.header.frame_id, pixels, labels.get(stamp), source
                )
                contents.frames.append(frame)
                yield frame

    return contents, frames()


def read_bag(
    path: str | Path,
    topic: str | None = None,
    label_topic: str | None = None,
    limit: int | None = None,
) -> BagContents:
    """Every usable frame of a bag (up to ``limit``) with its label; see :func:`iter_bag`."""
    if limit is not None and limit < 1:
        raise ValueError(f'limit must be >= 1 or None, got {limit}')
    contents, frames = iter_bag(path, topic, label_topic)
    try:
        for n, _ in enumerate(frames, start=1):
            if limit is not None and n >= limit:
                break
    finally:
        frames.close()  # closes the bag when stopped early
    return contents
