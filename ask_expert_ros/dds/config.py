"""Cyclone DDS configuration for the DDS adapter.

:func:`loopback_config` keeps all DDS traffic of a domain on the loopback interface, for
tests and for processes that share one machine (a ``ros2 bag play`` and the edge node on
a Jetson, say) when the network has no multicast or should not see the traffic. The
loopback interface usually has no multicast, so discovery goes by unicast to 127.0.0.1.

Use it in one of two ways, before the first participant of that domain exists:

* in Python, create the domain with it and keep the object alive::

      domain = Domain(domain_id, loopback_config())
      participant = DomainParticipant(domain_id)

* for any Cyclone process (ROS 2 nodes with ``RMW_IMPLEMENTATION=rmw_cyclonedds_cpp``
  included), put the XML itself in the environment:
  ``CYCLONEDDS_URI="$(python -c 'from ask_expert_ros.dds.config import loopback_config;
  print(loopback_config())')"``.

Every process on the domain needs the same setting: a participant that only uses
multicast on another interface does not find these ones.
"""

from __future__ import annotations


def loopback_config(max_participants: int = 32) -> str:
    """Cyclone DDS XML that binds to 127.0.0.1 and discovers peers by unicast there.

    Args:
        max_participants: How many participants of one domain may run on this machine;
            each takes a participant index, and discovery probes the ports of every
            index up to this bound.

    Returns:
        A ``<CycloneDDS>`` document for any domain id, for ``Domain(id, xml)`` or
        ``CYCLONEDDS_URI``.

    Raises:
        ValueError: ``max_participants`` is not in [1, 120].
    """
    if not 1 <= max_participants <= 120:  # Cyclone's port mapping leaves room for ~120
        raise ValueError(f'max_participants must be in [1, 120], got {max_participants}')
    return (
        '<CycloneDDS><Domain id="any">'
        '<General>'
        '<Interfaces><NetworkInterface address="127.0.0.1"/></Interfaces>'
        '<AllowMulticast>false</AllowMulticast>'
        '</General>'
        '<Discovery>'
        '<ParticipantIndex>auto</ParticipantIndex>'
        f'<MaxAutoParticipantIndex>{max_participants - 1}</MaxAutoParticipantIndex>'
        '<Peers><Peer address="127.0.0.1"/></Peers>'
        '</Discovery>'
        '</Domain></CycloneDDS>'
    )
