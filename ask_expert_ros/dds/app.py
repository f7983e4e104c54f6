"""Build and run the DDS edge/expert nodes from ROS-style parameters (``ask-expert edge``)."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Mapping
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from cyclonedds.domain import Domain, DomainParticipant

from ask_expert_ros.core.edge_logic import EdgeLogic
from ask_expert_ros.core.engine import EdgeStage, ExpertStage, FrameBatch
from ask_expert_ros.core.expert_logic import ExpertLogic
from ask_expert_ros.core.library import ExpertLibrary
from ask_expert_ros.core.node_config import (
    edge_params,
    expert_params,
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


def build_edge_logic(values: Mapping[str, Any]) -> EdgeLogic:
    params = edge_params(values)
    library = ExpertLibrary(values['library'], device=values['device'])
    model = library.load_edge()
    stage = EdgeStage(model, library.scheme, params.routing)
    _warm_up(stage.model.config, lambda b: stage.run(b))
    return EdgeLogic(stage, params)


def build_expert_logic(values: Mapping[str, Any]) -> ExpertLogic:
    library = ExpertLibrary(
        values['library'], device=values['device'], max_resident=values['max_resident'] or None
    )
    stage = ExpertStage(library)
    if values['preload']:
        for key in library.keys:
            expert = library.get(key)
            _warm_up(expert.config, lambda b, k=key: stage.run(b, {k: [0]}))
    return ExpertLogic(stage, expert_params(values))


def _warm_up(config: Any, run: Any) -> None:
    """One forward pass at start, so the first frame does not pay for lazy init."""
    size = (config.img_size, config.img_size) + ((3,) if config.in_chans == 3 else ())
    with torch.inference_mode():
        run(FrameBatch(np.zeros((1, *size), dtype=np.uint8)))


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
        runner = EdgeRunner(build_edge_logic(values), dp, values, namespace, topics)
    else:
        topics = remapped(ExpertTopics(), remaps or {})
        runner = ExpertRunner(build_expert_logic(values), dp, values, namespace, topics)
    logger.info('%s ready on domain %d', node, domain_id)
    return serve(runner)
