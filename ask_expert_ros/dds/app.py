"""Build and run the DDS edge/expert nodes from ROS-style parameters (``ask-expert edge``)."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Mapping
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

from cyclonedds.domain import Domain, DomainParticipant

from ask_expert_ros.core.inference.backends.factory import factory_from_params
from ask_expert_ros.core.nodes.node_config import (
    build_edge_logic,
    build_expert_logic,
    load_params_file,
    resolve,
)
from ask_expert_ros.dds.config import loopback_config
from ask_expert_ros.dds.nodes import EdgeRunner, EdgeTopics, ExpertRunner, ExpertTopics

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
        raise ValueError(f'{node}: parameter library is required (path to library.yaml)')
    return resolved


def participant(domain_id: int, loopback: bool) -> tuple[DomainParticipant, Domain | None]:
    """A participant; with ``loopback`` all traffic stays on 127.0.0.1 (keep the Domain)."""
    domain = Domain(domain_id, loopback_config()) if loopback else None
    return DomainParticipant(domain_id), domain


def serve(runner: EdgeRunner | ExpertRunner) -> int:
    """Spin until SIGINT/SIGTERM."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    runner.run(stop)
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
) -> int:
    """Build the ``'edge'`` or ``'expert'`` node from its parameters and spin it."""
    dp, _domain = participant(domain_id, loopback)
    runner: EdgeRunner | ExpertRunner
    if node == 'edge':
        topics = remapped(EdgeTopics(), remaps or {})
        runner = EdgeRunner(
            build_edge_logic(values, factory_from_params(values)), dp, values, namespace, topics
        )
    else:
        topics = remapped(ExpertTopics(), remaps or {})
        runner = ExpertRunner(
            build_expert_logic(values, factory_from_params(values)), dp, values, namespace, topics
        )
    if isinstance(runner, EdgeRunner):
        logger.info('edge model runs on %s', runner.logic.stage.backend.describe())
    logger.info('%s ready on domain %d', node, domain_id)
    return serve(runner)
