"""Build and run the DDS edge/expert nodes from ROS-style parameters (``ask-expert edge``)."""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable, Mapping
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

from cyclonedds.core import DDSException
from cyclonedds.domain import Domain, DomainParticipant

from ask_expert_ros.core.nodes.lifecycle import TransitionFailedError
from ask_expert_ros.core.nodes.node_config import (
    build_edge_logic,
    build_expert_logic,
    load_params_file,
    resolve,
)
from ask_expert_ros.dds.config import loopback_config
from ask_expert_ros.dds.graph import GraphAnnouncer, NodeEntry, resolve_distro
from ask_expert_ros.dds.nodes import EdgeRunner, EdgeTopics, ExpertRunner, ExpertTopics
from ask_expert_ros.dds.peers import (
    WARN_AFTER_S,
    PeerWatch,
    cyclone_config_in_use,
    endpoint_watch,
)
from ask_expert_ros.dds.security import SecurityRequest, resolve_request, secure_participant

logger = logging.getLogger(__name__)


def node_values(
    specs: tuple, node: str, params_file: str | Path | None, overrides: Mapping[str, Any]
) -> dict[str, Any]:
    """Defaults < params file (section ``node``) < command-line overrides; all validated."""
    values: dict[str, Any] = {}
    if params_file:
        values.update(load_params_file(params_file, node))
    values.update(overrides)
    resolved = resolve(specs, values)
    if not resolved['library']:
        raise ValueError(
            f'{node}: parameter library is not set: give --library ZOO/library.yaml, '
            f'--set library=..., or library: in the {node!r} section of --params-file'
        )
    return resolved


def participant(
    domain_id: int, loopback: bool, security: SecurityRequest | None = None
) -> tuple[DomainParticipant, Domain | None]:
    """A participant (keep the Domain too).

    Args:
        domain_id: DDS domain id.
        loopback: All traffic stays on 127.0.0.1.
        security: Authenticate as this enclave and apply its permissions; the
            security settings extend the loopback ones, or else ``$CYCLONEDDS_URI``.

    Raises:
        ValueError: Cyclone rejected its configuration (``CYCLONEDDS_URI``).
        SecurityConfigError: The enclave's files are missing (strategy Enforce).
        SecurityUnavailableError: Cyclone here cannot run a secured participant.
    """
    files = resolve_request(security) if security is not None else None
    if files is not None:
        base = loopback_config() if loopback else os.environ.get('CYCLONEDDS_URI')
        return secure_participant(domain_id, files, base)
    try:
        domain = Domain(domain_id, loopback_config()) if loopback else None
        return DomainParticipant(domain_id), domain
    except DDSException as exc:
        raise ValueError(
            f'Cyclone DDS could not start a participant on domain {domain_id} ({exc}) with '
            f'{cyclone_config_in_use(loopback)}; its log line above says what it rejected '
            '(an interface that does not exist, invalid XML, a domain id over 232); fix '
            'CYCLONEDDS_URI or use --loopback'
        ) from exc


def serve(runner: EdgeRunner | ExpertRunner, watch: Callable[[], PeerWatch] | None = None) -> int:
    """Bring the node up (configure, activate), spin until SIGINT/SIGTERM, then shut it down.

    A signal while the models load ends the process at once, as before (nothing is in
    flight yet); once configured, SIGINT/SIGTERM end the spin, and on the way out
    deactivate answers what is in flight (every frame its result, every queued request
    its reply) before the models are released.

    Args:
        runner: The node, unconfigured.
        watch: Makes the warning that no peer has matched, once the node is active.

    Raises:
        TransitionFailedError: Configure or activate failed (e.g. an expert that does
            not load); the reason was logged, and the node shut down.
    """
    lifecycle = runner.lifecycle
    configured = runner.configure()
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    if not configured or not runner.activate():
        reason = lifecycle.last_error
        runner.shutdown()
        raise TransitionFailedError(f'{lifecycle.node} did not come up: {reason}')
    peers = watch() if watch is not None else None
    while not stop.is_set():
        runner.spin_once()
        if peers is not None:
            peers.poll()
    runner.shutdown()
    return 0


def remapped(topics: Any, remaps: Mapping[str, str]) -> Any:
    """``topics`` with every name that appears in ``remaps`` replaced."""
    names = {f.name: getattr(topics, f.name) for f in fields(topics)}
    unknown = sorted(set(remaps) - set(names.values()))
    if unknown:
        raise ValueError(f'cannot remap {unknown}: topics are {sorted(names.values())}')
    return replace(topics, **{k: remaps.get(v, v) for k, v in names.items()})


def run_node(
    node: str,
    values: dict[str, Any],
    domain_id: int,
    loopback: bool,
    namespace: str,
    remaps: Mapping[str, str] | None = None,
    security: SecurityRequest | None = None,
    warn_no_peer_after_s: float = WARN_AFTER_S,
    ros_distro: str | None = None,
) -> int:
    """Build the ``'edge'`` or ``'expert'`` node from its parameters, bring it up and spin it.

    The node goes through the lifecycle states of a ROS 2 managed node (logged, and
    shown as ``lifecycle`` on its ``/diagnostics`` status): unconfigured, configure
    (models loaded and warmed up), activate (the input reader created), and on
    SIGINT/SIGTERM deactivate (in-flight work answered) and shutdown (finalized).

    Logs a warning when no peer (an expert for the edge, an edge for the expert) has
    matched on the requests topic after ``warn_no_peer_after_s`` seconds. The node is
    announced on ``ros_discovery_info`` with the gids of ``ros_distro`` (None:
    ``$ROS_DISTRO``, else jazzy), so that ``ros2 node list`` shows it.
    """
    distro = resolve_distro(ros_distro)
    dp, _domain = participant(domain_id, loopback, security)
    announcer = GraphAnnouncer(dp, distro)
    runner: EdgeRunner | ExpertRunner

    def announce() -> None:  # after each lifecycle transition: the endpoints changed
        endpoints = runner.endpoints
        announcer.announce([NodeEntry(node, namespace, endpoints.readers, endpoints.writers)])

    watch: Callable[[], PeerWatch]
    if node == 'edge':
        edge = EdgeRunner(
            dp,
            values,
            lambda: build_edge_logic(values),
            namespace,
            remapped(EdgeTopics(), remaps or {}),
            on_change=announce,
        )
        runner = edge

        def watch() -> PeerWatch:
            return endpoint_watch(
                'edge', 'expert', edge.requests_writer, loopback, warn_no_peer_after_s
            )
    else:
        expert = ExpertRunner(
            dp,
            values,
            lambda: build_expert_logic(values),
            namespace,
            remapped(ExpertTopics(), remaps or {}),
            on_change=announce,
        )
        runner = expert

        def watch() -> PeerWatch:
            return endpoint_watch(
                'expert', 'edge', expert.requests_reader, loopback, warn_no_peer_after_s
            )

    announce()
    logger.info('%s on domain %d: %s', node, domain_id, runner.state.value)
    return serve(runner, watch)
