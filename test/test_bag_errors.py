"""Bag errors say what the bag holds and what was expected (rosbags-written bags)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from rosbags.rosbag2 import Writer

from ask_expert_ros.bags.bench import frames_and_labels
from ask_expert_ros.bags.reader import BagError, iter_bag, read_bag
from ask_expert_ros.bags.types import COMPRESSED_IMAGE, IMAGE, typestore
from ask_expert_ros.cli import main

STRING = 'std_msgs/msg/String'


def message(msgtype: str, i: int) -> object:
    """A String, or an image (stamp ``i`` s) without pixels: nothing usable to decode."""
    t = typestore().types
    if msgtype == STRING:
        return t[STRING](data='hello')
    stamp = t['builtin_interfaces/msg/Time'](sec=i, nanosec=0)
    header = t['std_msgs/msg/Header'](stamp=stamp, frame_id='c')
    empty = np.zeros(0, np.uint8)
    if msgtype == COMPRESSED_IMAGE:
        return t[msgtype](header=header, format='jpeg', data=empty)
    return t[IMAGE](header=header, height=2, width=2, encoding='mono8', is_bigendian=0,
                    step=2, data=empty)  # fmt: skip


def write_bag(path: Path, topics: dict[str, str], messages: int = 1) -> Path:
    """A bag with ``messages`` messages (:func:`message`) on each ``topic: msgtype``."""
    store = typestore()
    with Writer(path, version=9) as writer:
        for topic, msgtype in topics.items():
            conn = writer.add_connection(topic, msgtype, typestore=store)
            for i in range(messages):
                writer.write(conn, i, store.serialize_cdr(message(msgtype, i), msgtype))
    return path


def test_bag_without_a_camera_topic_lists_what_it_has(tmp_path: Path, capsys) -> None:
    bag = write_bag(tmp_path / 'bag', {'/chatter': STRING, '/status': STRING})
    with pytest.raises(BagError) as info:
        read_bag(bag)
    text = str(info.value)
    assert 'has no camera topic' in text
    assert f'expected a topic of type {IMAGE} or {COMPRESSED_IMAGE}' in text
    assert f"found '/chatter' ({STRING}), '/status' ({STRING})" in text
    assert main(['bench', '--bag', str(bag), '--models', str(tmp_path)]) == 2
    assert f"found '/chatter' ({STRING})" in capsys.readouterr().err


def test_empty_bag_says_it_has_no_topics(tmp_path: Path) -> None:
    bag = write_bag(tmp_path / 'bag', {})
    with pytest.raises(BagError, match='found no topics at all'):
        read_bag(bag)


def test_two_camera_topics_ask_for_topic_and_list_both(tmp_path: Path) -> None:
    bag = write_bag(tmp_path / 'bag', {'/a/image': IMAGE, '/b/compressed': COMPRESSED_IMAGE})
    with pytest.raises(BagError) as info:
        read_bag(bag)
    assert 'has 2 camera topics: choose one with --topic' in str(info.value)
    assert f"'/a/image' ({IMAGE}), '/b/compressed' ({COMPRESSED_IMAGE})" in str(info.value)


@pytest.mark.parametrize(
    ('topic', 'what'), [('/chatter', f'of type {STRING}'), ('/nope', 'not in the bag')]
)
def test_wrong_topic_says_its_type_and_lists_the_bag(tmp_path: Path, topic: str, what: str):
    bag = write_bag(tmp_path / 'bag', {'/chatter': STRING, '/cam': IMAGE})
    with pytest.raises(BagError) as info:
        read_bag(bag, topic)
    assert f'({what}); expected {IMAGE} or {COMPRESSED_IMAGE}' in str(info.value)
    assert f"the bag has '/cam' ({IMAGE}), '/chatter' ({STRING})" in str(info.value)


def test_not_a_bag_says_what_the_folder_holds(tmp_path: Path) -> None:
    (tmp_path / 'notes.txt').write_text('x')
    with pytest.raises(BagError, match=r"expected a folder with metadata.yaml .* \['notes.txt'\]"):
        read_bag(tmp_path)
    with pytest.raises(BagError, match='found no such folder'):
        read_bag(tmp_path / 'missing')


def test_no_usable_frames_gives_the_reasons(tmp_path: Path) -> None:
    """Two 2x2 mono8 images with no data: both skipped, the error quotes why."""
    bag = write_bag(tmp_path / 'bag', {'/cam': IMAGE}, messages=2)
    contents = read_bag(bag)
    with pytest.raises(BagError) as info:
        frames_and_labels(contents, ['a'])
    text = str(info.value)
    assert f'no usable frames on /cam ({IMAGE})' in text and '2 messages skipped; why:' in text
    assert contents.skipped[0].reason in text


def test_topic_without_messages_says_so(tmp_path: Path) -> None:
    bag = write_bag(tmp_path / 'bag', {'/cam': IMAGE}, messages=0)
    contents, frames = iter_bag(bag)
    assert list(frames) == []
    with pytest.raises(BagError, match=r'0 messages skipped \(the topic has no messages\)'):
        frames_and_labels(contents, ['a'])
