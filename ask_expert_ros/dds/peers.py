"""Say so when a DDS node finds no peer, instead of waiting silently.

An edge whose expert runs on another domain id, under another namespace, or with a
Cyclone configuration that cannot reach it (one side ``--loopback``, the other on
multicast; a network without multicast and no peers listed) sees nothing wrong: it
answers every uncertain frame itself as a fallback. :class:`PeerWatch` notices that no
peer has matched one endpoint after ``warn_after_s`` and logs one warning that names the
domain, the topic, the Cyclone configuration in use and what to check; it logs again
when a peer turns up, and warns once more if every peer has been gone that long. It
never blocks: the node's loop calls :meth:`PeerWatch.poll` each turn.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable

from cyclonedds.pub import DataWriter
from cyclonedds.sub import DataReader

logger = logging.getLogger(__name__)

WARN_AFTER_S = 5.0
"""Default seconds without a matched peer before the warning: discovery on one machine
or a LAN takes well under a second, so five seconds only fire when something is wrong."""

_URI_SHOWN = 300  # characters of an inline CYCLONEDDS_URI XML in the message


def cyclone_config_in_use(loopback: bool) -> str:
    """How this process's Cyclone DDS is configured, in words for a log message."""
    if loopback:
        return '--loopback (bound to 127.0.0.1, unicast discovery there)'
    uri = os.environ.get('CYCLONEDDS_URI', '').strip()
    if not uri:
        return 'Cyclone defaults (CYCLONEDDS_URI is unset: multicast on the default interface)'
    if len(uri) > _URI_SHOWN:
        uri = uri[:_URI_SHOWN] + '...'
    return f'CYCLONEDDS_URI={uri}'


class PeerWatch:
    """Warns when no peer has matched one endpoint for ``warn_after_s``.

    Args:
        node: Who is waiting, e.g. ``'edge'``.
        peer: Who it waits for, e.g. ``'expert'``.
        topic: DDS topic name of the endpoint, e.g. ``'rt/expert/requests'``.
        domain_id: DDS domain id of the participant.
        config: The Cyclone configuration in use (:func:`cyclone_config_in_use`).
        matched: Number of peers matched right now.
        warn_after_s: Seconds without a peer before the warning.
        clock: Monotonic seconds (a test's fake clock).

    Raises:
        ValueError: ``warn_after_s`` is not positive.
    """

    def __init__(
        self,
        node: str,
        peer: str,
        topic: str,
        domain_id: int,
        config: str,
        matched: Callable[[], int],
        warn_after_s: float = WARN_AFTER_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if warn_after_s <= 0:
            raise ValueError(f'warn_after_s must be > 0 seconds, got {warn_after_s}')
        self._node, self._peer, self._topic = node, peer, topic
        self._domain_id, self._config = domain_id, config
        self._matched = matched
        self._warn_after_s = warn_after_s
        self._clock = clock
        self._alone_since: float | None = clock()
        self.warned = False

    def message(self, waited_s: float) -> str:
        """The warning: what was found, what was expected, what to check."""
        return (
            f'{self._node}: no {self._peer} has matched on DDS topic {self._topic!r} after '
            f'{waited_s:.0f} s (domain id {self._domain_id}, Cyclone config: {self._config}). '
            f'Check that the peer runs with the same domain id (--domain or ROS_DOMAIN_ID), '
            f'the same topic after namespace and remaps, a Cyclone config that reaches this '
            f'one (both --loopback, or CYCLONEDDS_URI files whose interfaces and peers see '
            f'each other; multicast allowed on the network or <Peers> listed), and the same '
            f'SROS2 keystore when security is on'
        )

    def poll(self) -> None:
        """Check the endpoint; log at most once per change. Never blocks."""
        now = self._clock()
        if self._matched() > 0:
            if self.warned:
                logger.warning('%s: %s matched on %r now', self._node, self._peer, self._topic)
            self._alone_since, self.warned = None, False
            return
        if self._alone_since is None:
            self._alone_since = now
        waited = now - self._alone_since
        if not self.warned and waited >= self._warn_after_s:
            logger.warning(self.message(waited))
            self.warned = True


def endpoint_watch(
    node: str,
    peer: str,
    endpoint: DataReader | DataWriter,
    loopback: bool,
    warn_after_s: float = WARN_AFTER_S,
) -> PeerWatch:
    """A :class:`PeerWatch` on a reader (matched writers) or a writer (matched readers)."""
    matched: Callable[[], list] = (
        endpoint.get_matched_subscriptions
        if isinstance(endpoint, DataWriter)
        else endpoint.get_matched_publications
    )
    return PeerWatch(
        node,
        peer,
        endpoint.topic.name,
        endpoint.participant.domain_id,
        cyclone_config_in_use(loopback),
        lambda: len(matched()),
        warn_after_s,
    )
