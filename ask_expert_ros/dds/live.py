"""The real system on one machine: expert and edge as separate processes over Cyclone DDS.

:func:`run_live` starts ``ask-expert expert`` and ``ask-expert edge`` on a domain of
its own (loopback only), plays a labelled image set into the edge as
``sensor_msgs/Image`` with real camera stamps, records every ``Classification`` and
``ExpertResponse`` on the graph, and measures accuracy, the offload ratio and the
end-to-end latency from camera stamp to final result.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
from cyclonedds.core import DDSException
from cyclonedds.domain import Domain, DomainParticipant
from cyclonedds.pub import DataWriter
from cyclonedds.sub import DataReader
from cyclonedds.topic import Topic

from ask_expert_ros.core.messages import Header, Stamp
from ask_expert_ros.dds import msgs
from ask_expert_ros.dds.config import loopback_config
from ask_expert_ros.dds.conversions import frame_to_image
from ask_expert_ros.dds.nodes import reliable_qos, take_valid

START_TIMEOUT_S = 120.0


class LiveRunError(RuntimeError):
    """The node processes did not start or did not answer every frame in time."""


def spawn_node(
    node: str, manifest: Path, domain_id: int, log_dir: Path, args: Sequence[str] = ()
) -> subprocess.Popen:
    """Start ``ask-expert <node>`` on a loopback-only domain; its output goes to a log."""
    cmd = [
        sys.executable,
        '-m',
        'ask_expert_ros.cli',
        node,
        '--library',
        str(manifest),
        '--domain',
        str(domain_id),
        '--loopback',
        *args,
    ]
    log = (log_dir / f'{node}-{time.monotonic_ns()}.log').open('w')
    # one intra-op thread each: the two processes share the machine's cores
    return subprocess.Popen(
        cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, 'OMP_NUM_THREADS': '1'}
    )


def _settings(values: dict[str, Any]) -> list[str]:
    return [arg for name, value in values.items() for arg in ('--set', f'{name}={value}')]


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def _wait(
    condition: Any, timeout_s: float, what: str, procs: Sequence[subprocess.Popen], log_dir: Path
) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        dead = [p for p in procs if p.poll() is not None]
        if dead or time.monotonic() > deadline:
            why = 'a node process exited' if dead else f'timed out after {timeout_s:.0f} s'
            raise LiveRunError(f'{why} waiting for {what}; see the logs in {log_dir}')
        time.sleep(0.01)


def _free_domain(wanted: int | None) -> tuple[int, Domain]:
    """A loopback-only domain: ``wanted``, or a random id this process does not use yet."""
    for domain_id in [wanted] if wanted is not None else random.sample(range(100, 231), 10):
        try:
            return domain_id, Domain(domain_id, loopback_config())
        except DDSException:
            continue
    raise LiveRunError('no free DDS domain id for the live run')


def run_live(
    manifest: Path,
    frames: np.ndarray,
    labels: np.ndarray,
    class_names: Sequence[str],
    tau: float,
    log_dir: Path,
    rate_hz: float = 100.0,
    deadline_ms: float = 500.0,
    domain_id: int | None = None,
) -> dict[str, Any]:
    """Stream ``frames`` through the two-process graph and measure what comes out."""
    log_dir.mkdir(parents=True, exist_ok=True)
    domain_id, domain = _free_domain(domain_id)
    dp = DomainParticipant(domain_id)
    qos = reliable_qos(len(frames) + 10)
    camera = DataWriter(dp, Topic(dp, msgs.ros_topic('image'), msgs.Image), qos=qos)
    results_reader = DataReader(
        dp, Topic(dp, msgs.ros_topic('classification'), msgs.Classification), qos=qos
    )
    responses_reader = DataReader(
        dp, Topic(dp, msgs.ros_topic('expert/responses'), msgs.ExpertResponse), qos=qos
    )
    edge_settings = {
        'tau': tau,
        'deadline_ms': deadline_ms,
        'edge_id': 'demo_edge',
        'image_qos_reliability': 'reliable',
        'image_qos_depth': len(frames) + 10,
        'publish_annotated': False,
    }
    with ExitStack() as stack:
        expert = spawn_node(
            'expert', manifest, domain_id, log_dir, _settings({'max_wait_ms': 2.0})
        )
        stack.callback(_stop, expert)
        edge = spawn_node('edge', manifest, domain_id, log_dir, _settings(edge_settings))
        stack.callback(_stop, edge)
        procs = (expert, edge)
        _wait(
            lambda: (
                camera.get_matched_subscriptions() and responses_reader.get_matched_publications()
            ),
            START_TIMEOUT_S,
            'the nodes to start',
            procs,
            log_dir,
        )
        time.sleep(0.5)  # the edge's request writer and the expert's reader match too

        sent: dict[tuple[int, int], tuple[int, float]] = {}
        received: dict[tuple[int, int], tuple[str, float]] = {}
        responses: list[msgs.ExpertResponse] = []

        def drain() -> None:
            now = time.time_ns()
            for msg in take_valid(results_reader, 256):
                key = (msg.header.stamp.sec, msg.header.stamp.nanosec)
                label = msg.results[0].class_id if msg.results else ''
                received[key] = (label, now)
            responses.extend(take_valid(responses_reader, 256))

        period_ns = int(1e9 / rate_hz)
        start = time.time_ns()
        for i, pixels in enumerate(frames):
            while time.time_ns() < start + i * period_ns:
                drain()
                time.sleep(0.0005)
            stamp_ns = time.time_ns()
            stamp = Stamp.from_ns(stamp_ns)
            sent[(stamp.sec, stamp.nanosec)] = (i, stamp_ns)
            camera.write(frame_to_image(pixels, Header(stamp, 'demo_camera')))
        _wait(
            lambda: drain() or len(received) >= len(frames),
            deadline_ms / 1e3 + 60,
            'every frame to be answered',
            procs,
            log_dir,
        )
        time.sleep(0.3)
        drain()  # anything beyond one result per frame would show up here

    extra = set(received) - set(sent)
    latencies = np.array([(received[k][1] - sent[k][1]) / 1e6 for k in sent if k in received])
    correct = sum(
        received[k][0] == class_names[labels[i]] for k, (i, _) in sent.items() if k in received
    )
    ours = [r for r in responses if r.edge_id == 'demo_edge']
    answered = sum(r.status == msgs.ExpertResponse.STATUS_OK for r in ours)
    del domain
    return {
        'tau': float(tau),
        'frames_sent': len(sent),
        'results': len(received),
        'unexpected_results': len(extra),
        'accuracy': correct / len(sent),
        'offload_ratio': len(ours) / len(sent),
        'expert_answers': answered,
        'rate_hz': rate_hz,
        'deadline_ms': deadline_ms,
        'latency_ms': {
            'mean': float(latencies.mean()),
            'p50': float(np.percentile(latencies, 50)),
            'p95': float(np.percentile(latencies, 95)),
            'max': float(latencies.max()),
        },
        'transport': 'Cyclone DDS, loopback, two processes (expert, edge)',
        'logs': str(log_dir),
    }
