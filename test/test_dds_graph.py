"""``ros_discovery_info`` of the DDS nodes: the CDR ROS 2 expects and the gids it matches.

The message bytes are checked against ``rosbags``, an independent serialiser, with
rmw_dds_common's definitions of both distros registered from their ``.msg`` text (and
against rosbags' own Humble and Jazzy stores). The cross-process test reads what an
``ask-expert edge`` process announces and compares the gids with the keys Cyclone's
builtin topics give for that process's participant and endpoints -- what ``ros2 node
info`` matches them against.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip('cyclonedds', reason='the DDS adapter needs `pip install cyclonedds`')

from conftest import open_loopback_domain
from cyclonedds.builtin import (
    BuiltinDataReader,
    BuiltinTopicDcpsPublication,
    BuiltinTopicDcpsSubscription,
)
from cyclonedds.domain import DomainParticipant
from cyclonedds.sub import DataReader
from cyclonedds.topic import Topic
from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore

from ask_expert_ros.dds import graph
from ask_expert_ros.dds.live import spawn_node

pytestmark = pytest.mark.timeout(120)
PEI = 'rmw_dds_common/msg/ParticipantEntitiesInfo'


def rosbags_store(distro: graph.Distro) -> Typestore:
    store = get_typestore(Stores.EMPTY)
    for name, text in graph.MSG_TEXT[distro].items():
        store.register(get_types_from_msg(text, name))
    return store


@pytest.fixture(scope='module')
def dp() -> Iterator[DomainParticipant]:
    domain_id, domain = open_loopback_domain()
    yield DomainParticipant(domain_id)
    del domain


@pytest.mark.parametrize(('distro', 'size'), [('jazzy', 16), ('humble', 24)])
def test_cdr_matches_rosbags_for_both_distros(dp: DomainParticipant, distro, size) -> None:
    """Two nodes, the second with no endpoints: rosbags decodes our bytes to the same
    fields and encodes them back to the same bytes, with the distro's gid size."""
    info = graph.participant_info(
        dp,
        [
            graph.NodeEntry('edge', 'robot1/', readers=[dp, dp], writers=[dp]),
            graph.NodeEntry('expert', '', readers=[], writers=[]),
        ],
        distro,
    )
    data = info.serialize()
    guid = dp.guid.bytes + bytes(size - 16)
    for store in (rosbags_store(distro), get_typestore(getattr(Stores, f'ROS2_{distro.upper()}'))):
        msg = store.deserialize_cdr(data, PEI)
        assert bytes(msg.gid.data) == guid
        edge, expert = msg.node_entities_info_seq
        assert (edge.node_namespace, edge.node_name) == ('/robot1', 'edge')
        assert [bytes(g.data) for g in edge.reader_gid_seq] == [guid, guid]
        assert [bytes(g.data) for g in edge.writer_gid_seq] == [guid]
        assert (expert.node_namespace, expert.node_name) == ('/', 'expert')
        assert expert.reader_gid_seq == [] and expert.writer_gid_seq == []
        assert bytes(store.serialize_cdr(msg, PEI)) == data
    assert type(info).deserialize(data) == type(info).deserialize(bytes(data))


def test_gid_is_the_guid_then_zeros(dp: DomainParticipant) -> None:
    """rmw_cyclonedds: memset 0, then memcpy the 16 GUID bytes (prefix + entity id)."""
    assert graph.gid(dp, 'jazzy').data == dp.guid.bytes
    assert graph.gid(dp, 'humble').data == dp.guid.bytes + bytes(8)


def test_distro_from_argument_environment_or_jazzy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv('ROS_DISTRO', 'humble')
    assert graph.resolve_distro() == 'humble' and graph.resolve_distro('jazzy') == 'jazzy'
    monkeypatch.setenv('ROS_DISTRO', 'kilted')  # newer distros keep Jazzy's 16 bytes
    assert graph.resolve_distro() == 'jazzy'
    monkeypatch.delenv('ROS_DISTRO')
    assert graph.resolve_distro() == 'jazzy'
    with pytest.raises(ValueError, match=r"--ros-distro must be one of .* got 'iron'"):
        graph.resolve_distro('iron')


def test_jazzy_type_hash_is_rosidls() -> None:
    """The constant equals share/rmw_dds_common/msg/ParticipantEntitiesInfo.json of a
    Jazzy install, where one is found ($AMENT_PREFIX_PATH or /opt/ros2_jazzy)."""
    prefixes = os.environ.get('AMENT_PREFIX_PATH', '').split(os.pathsep)
    candidates = [Path(p) for p in prefixes if p] + [Path('/opt/ros2_jazzy/install')]
    for prefix in candidates:
        path = prefix / 'share/rmw_dds_common/msg/ParticipantEntitiesInfo.json'
        if path.is_file():
            hashes = json.loads(path.read_text())['type_hashes']
            assert hashes[0]['hash_string'] == graph.JAZZY_TYPE_HASH
            return
    pytest.skip('no Jazzy install with rmw_dds_common here')


def test_edge_process_announces_its_node_with_the_gids_of_its_endpoints(zoo: Path) -> None:
    """``ask-expert edge --namespace r7``: one ros_discovery_info entry naming /r7/edge,
    whose participant gid is the participant key of its endpoints, and whose reader and
    writer gids are exactly the keys of the subscriptions and publications that
    participant has (the ros_discovery_info writer itself excepted), once it is active."""
    domain_id, _domain = open_loopback_domain()
    dp = DomainParticipant(domain_id)
    # the process announces in the format of $ROS_DISTRO (24-byte gids with Humble sourced)
    distro = graph.resolve_distro()
    cls = graph.discovery_types(distro).participant
    infos = DataReader(dp, Topic(dp, graph.TOPIC, cls), qos=graph.discovery_qos(distro))
    pubs = BuiltinDataReader(dp, BuiltinTopicDcpsPublication)
    subs = BuiltinDataReader(dp, BuiltinTopicDcpsSubscription)
    proc = spawn_node('edge', zoo, domain_id, zoo.parent, ('--namespace', 'r7'))
    try:
        # the entry is announced again at each lifecycle transition; the active node's
        # lists its input readers (image, image/compressed) besides expert/responses
        entries: list = []
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            entries += [s for s in infos.take(N=10) if s.sample_info.valid_data]
            if entries and len(entries[-1].node_entities_info_seq[0].reader_gid_seq) == 3:
                break
            time.sleep(0.1)
        assert entries, 'no ros_discovery_info from the edge process'
        entry = entries[-1]
        (node,) = entry.node_entities_info_seq
        assert (node.node_namespace, node.node_name) == ('/r7', 'edge')

        def guid(gid: Any) -> uuid.UUID:  # the 16-byte GUID, zero-padded to 24 in Humble
            data = bytes(gid.data)
            assert len(data) == graph.GID_SIZE[distro] and not any(data[16:])
            return uuid.UUID(bytes=data[:16])

        participant = guid(entry.gid)
        assert participant != dp.guid

        def keys(reader: BuiltinDataReader) -> dict[uuid.UUID, str]:
            samples = reader.read(N=200)
            return {
                s.key: s.topic_name
                for s in samples
                if s.participant_key == participant and s.topic_name != graph.TOPIC
            }

        readers = {guid(g) for g in node.reader_gid_seq}
        writers = {guid(g) for g in node.writer_gid_seq}
        deadline = time.monotonic() + 10
        while (set(keys(subs)), set(keys(pubs))) != (readers, writers):
            assert time.monotonic() < deadline, (keys(subs), keys(pubs), readers, writers)
            time.sleep(0.1)
        assert sorted(keys(subs).values()) == [
            'rt/r7/expert/responses',
            'rt/r7/image',
            'rt/r7/image/compressed',
        ]
        assert 'rt/r7/expert/requests' in keys(pubs).values()
        assert 'rt/diagnostics' in keys(pubs).values()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
