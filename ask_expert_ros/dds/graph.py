"""``ros_discovery_info``: make the DDS nodes visible to ``ros2 node list`` / ``ros2 node info``.

A ROS 2 rmw does not find nodes in DDS discovery: DDS knows participants and endpoints,
not nodes. Every ROS 2 participant publishes, on the DDS topic ``ros_discovery_info``,
one ``rmw_dds_common/msg/ParticipantEntitiesInfo``: its own gid and, per node, the node's
namespace, name and the gids of its readers and writers. ``ros2 node info`` then looks
those gids up among the endpoints it discovered on the builtin topics
(``DCPSPublication``/``DCPSSubscription``) for their topic names and types.

What ``rmw_cyclonedds_cpp`` does, and this module too:

* a gid is the entity's 16-byte DDS GUID (12-byte prefix, 4-byte entity id) in the first
  16 bytes, the rest zero (``convert_guid_to_gid``); the pip ``cyclonedds`` gives the
  GUID as ``entity.guid`` (a :class:`uuid.UUID`, whose ``bytes`` are those 16 bytes);
* ``Gid`` is ``char[16] data`` from Jazzy on and ``char[24] data`` in Humble (the
  ``RMW_GID_STORAGE_SIZE`` of each), so the message depends on the distro;
* the topic is ``ros_discovery_info`` (no ``rt/`` prefix), reliable, transient-local,
  keep-last 1; Jazzy endpoints also carry the type hash in USER_DATA.

Checked by hand against a Jazzy built from source: docs/results/ros2_jazzy.md.
"""

# no `from __future__ import annotations`: cyclonedds resolves the IDL annotations

import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from cyclonedds.core import Entity, Policy, Qos
from cyclonedds.domain import DomainParticipant
from cyclonedds.idl import IdlStruct
from cyclonedds.idl import annotations as idl
from cyclonedds.idl import types as t
from cyclonedds.pub import DataWriter
from cyclonedds.topic import Topic
from cyclonedds.util import duration

logger = logging.getLogger(__name__)

Distro = Literal['humble', 'jazzy']
DISTROS: tuple[Distro, ...] = ('humble', 'jazzy')
TOPIC = 'ros_discovery_info'
GID_SIZE: dict[Distro, int] = {'humble': 24, 'jazzy': 16}
"""Bytes of ``rmw_dds_common/msg/Gid`` (``RMW_GID_STORAGE_SIZE``) per distro."""
# RIHS01 of rmw_dds_common/msg/ParticipantEntitiesInfo as rosidl computes it, from Jazzy's
# share/rmw_dds_common/msg/ParticipantEntitiesInfo.json (test_dds_graph compares it where
# a Jazzy install is found). rosbags' Jazzy store computes another hash (RIHS01_e725...):
# its type description of char[16] and string<=256 differs from rosidl's.
JAZZY_TYPE_HASH = 'RIHS01_91a0593bacdcc50ea9bdcf849a938b128412cc1ea821245c663bcd26f83c295e'
# the .msg definitions of each distro (rmw_dds_common 1.6.x for Humble, 3.1.x for Jazzy)
MSG_TEXT: dict[Distro, dict[str, str]] = {
    distro: {
        'rmw_dds_common/msg/Gid': f'char[{size}] data\n',
        'rmw_dds_common/msg/NodeEntitiesInfo': (
            'string<=256 node_namespace\nstring<=256 node_name\n'
            'rmw_dds_common/Gid[] reader_gid_seq\nrmw_dds_common/Gid[] writer_gid_seq\n'
        ),
        'rmw_dds_common/msg/ParticipantEntitiesInfo': (
            'rmw_dds_common/Gid gid\nrmw_dds_common/NodeEntitiesInfo[] node_entities_info_seq\n'
        ),
    }
    for distro, size in GID_SIZE.items()
}


def resolve_distro(distro: str | None = None) -> Distro:
    """``distro``, else ``$ROS_DISTRO``, else jazzy; later distros use Jazzy's 16 bytes.

    Raises:
        ValueError: ``distro`` is given and is neither humble nor jazzy.
    """
    if distro is not None:
        if distro not in DISTROS:
            raise ValueError(f'--ros-distro must be one of {DISTROS}, got {distro!r}')
        return distro  # type: ignore[return-value]
    return 'humble' if os.environ.get('ROS_DISTRO', '').lower() == 'humble' else 'jazzy'


# Gid, NodeEntitiesInfo and ParticipantEntitiesInfo with Jazzy's 16-byte and Humble's
# 24-byte gid (cyclonedds serialises them itself; the annotations must resolve at module
# level, so each distro has its three classes here)
_GID = 'rmw_dds_common::msg::dds_::Gid_'
_NODE = 'rmw_dds_common::msg::dds_::NodeEntitiesInfo_'
_PARTICIPANT = 'rmw_dds_common::msg::dds_::ParticipantEntitiesInfo_'


@dataclass
@idl.final
class Gid16(IdlStruct, typename=_GID):
    data: t.array[t.uint8, 16]


@dataclass
@idl.final
class NodeEntitiesInfo16(IdlStruct, typename=_NODE):
    node_namespace: t.bounded_str[256]
    node_name: t.bounded_str[256]
    reader_gid_seq: t.sequence[Gid16] = field(default_factory=list)
    writer_gid_seq: t.sequence[Gid16] = field(default_factory=list)


@dataclass
@idl.final
class ParticipantEntitiesInfo16(IdlStruct, typename=_PARTICIPANT):
    gid: Gid16
    node_entities_info_seq: t.sequence[NodeEntitiesInfo16] = field(default_factory=list)


@dataclass
@idl.final
class Gid24(IdlStruct, typename=_GID):
    data: t.array[t.uint8, 24]


@dataclass
@idl.final
class NodeEntitiesInfo24(IdlStruct, typename=_NODE):
    node_namespace: t.bounded_str[256]
    node_name: t.bounded_str[256]
    reader_gid_seq: t.sequence[Gid24] = field(default_factory=list)
    writer_gid_seq: t.sequence[Gid24] = field(default_factory=list)


@dataclass
@idl.final
class ParticipantEntitiesInfo24(IdlStruct, typename=_PARTICIPANT):
    gid: Gid24
    node_entities_info_seq: t.sequence[NodeEntitiesInfo24] = field(default_factory=list)


@dataclass(frozen=True)
class DiscoveryTypes:
    """The three message classes of one distro."""

    gid: type[IdlStruct]
    node: type[IdlStruct]
    participant: type[IdlStruct]


_TYPES: dict[Distro, DiscoveryTypes] = {
    'jazzy': DiscoveryTypes(Gid16, NodeEntitiesInfo16, ParticipantEntitiesInfo16),
    'humble': DiscoveryTypes(Gid24, NodeEntitiesInfo24, ParticipantEntitiesInfo24),
}


def discovery_types(distro: Distro) -> DiscoveryTypes:
    """``Gid``, ``NodeEntitiesInfo`` and ``ParticipantEntitiesInfo`` for ``distro``."""
    return _TYPES[distro]


def gid(entity: Entity, distro: Distro) -> Any:
    """The ``Gid`` of a DDS entity as rmw_cyclonedds makes it: GUID bytes, zero-padded."""
    size = GID_SIZE[distro]
    return discovery_types(distro).gid(data=entity.guid.bytes.ljust(size, b'\0'))


@dataclass(frozen=True)
class NodeEntry:
    """One node of the participant: its name and the endpoints it owns."""

    name: str
    namespace: str
    readers: Sequence[Entity]
    writers: Sequence[Entity]


def participant_info(
    participant: DomainParticipant, nodes: Iterable[NodeEntry], distro: Distro
) -> IdlStruct:
    """The ``ParticipantEntitiesInfo`` naming ``nodes`` of ``participant``."""
    types = discovery_types(distro)
    return types.participant(
        gid=gid(participant, distro),
        node_entities_info_seq=[
            types.node(
                node_namespace='/' + node.namespace.strip('/'),
                node_name=node.name,
                reader_gid_seq=[gid(r, distro) for r in node.readers],
                writer_gid_seq=[gid(w, distro) for w in node.writers],
            )
            for node in nodes
        ],
    )


def discovery_qos(distro: Distro) -> Qos:
    """Reliable, transient-local, keep-last 1, as rmw_cyclonedds' own; Jazzy's type hash."""
    qos = Qos(
        Policy.Reliability.Reliable(duration(milliseconds=100)),
        Policy.History.KeepLast(1),
        Policy.Durability.TransientLocal,
    )
    if distro == 'jazzy':
        qos += Qos(Policy.Userdata(f'typehash={JAZZY_TYPE_HASH};'.encode()))
    return qos


class GraphAnnouncer:
    """Publishes this participant's nodes on ``ros_discovery_info`` (latched, once).

    Args:
        participant: The participant the nodes' endpoints belong to.
        distro: Whose ``Gid`` size to use (:func:`resolve_distro`).
    """

    def __init__(self, participant: DomainParticipant, distro: Distro) -> None:
        self.distro = distro
        self._participant = participant
        cls = discovery_types(distro).participant
        self._writer = DataWriter(
            participant, Topic(participant, TOPIC, cls), qos=discovery_qos(distro)
        )

    def announce(self, nodes: Iterable[NodeEntry]) -> None:
        """Publish the entry for ``nodes`` (it replaces any earlier one)."""
        nodes = list(nodes)
        self._writer.write(participant_info(self._participant, nodes, self.distro))
        logger.info(
            'announced node(s) %s on %s (%s gids)',
            ', '.join(f'{n.namespace.rstrip("/")}/{n.name}' for n in nodes),
            TOPIC,
            self.distro,
        )
