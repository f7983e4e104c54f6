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
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
from cyclonedds.core import DDSException
from cyclonedds.domain import Domain, DomainParticipant
from cyclonedds.pub import DataWriter
from cyclonedds.sub import DataReader
from cyclonedds.topic import Topic

from ask_expert_ros.core.nodes.live_metrics import LiveRecorder
from ask_expert_ros.core.nodes.messages import Header, Stamp
from ask_expert_ros.core.nodes.node_config import EDGE_PARAMS
from ask_expert_ros.dds import msgs
from ask_expert_ros.dds.config import loopback_config
from ask_expert_ros.dds.conversions import frame_to_image
from ask_expert_ros.dds.nodes import reliable_qos, take_valid

START_TIMEOUT_S = 120.0
_MAX_IMAGE_DEPTH = next(p.high for p in EDGE_PARAMS if p.name == 'image_qos_depth')


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
    labels: np.ndarray | None,
    class_names: Sequence[str],
    tau: float,
    log_dir: Path,
    rate_hz: float | None = 100.0,
    deadline_ms: float = 500.0,
    domain_id: int | None = None,
    stamps_ns: Sequence[int] | None = None,
    allow_drops: bool = False,
    drain_timeout_s: float = 60.0,
    edge_params: Mapping[str, Any] | None = None,
    expert_params: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Stream ``frames`` through the two-process graph and measure what comes out.

    Args:
        manifest: Model zoo for both nodes.
        frames: ``uint8`` frames, published as ``sensor_msgs/Image`` on ``image``.
        labels: Class index per frame, or None (no accuracy).
        class_names: Index -> name, to compare with the results' ``class_id``.
        tau: The edge's threshold.
        log_dir: Where the node processes' logs go.
        rate_hz: Publishing rate, frames per second; None: follow the spacing of
            ``stamps_ns`` (as ``ros2 bag play`` does).
        deadline_ms: The edge's expert deadline.
        domain_id: DDS domain; None: a free random one.
        stamps_ns: Header stamps to publish (e.g. a bag's, nanoseconds); None: the
            wall clock at publishing. They must be distinct.
        allow_drops: Count frames without a result as dropped instead of raising.
        drain_timeout_s: How long to wait for the last results after the deadline.
        edge_params / expert_params: More node parameters (``--set name=value``), e.g.
            the edge's ``offload_mode``, ``keep_ratio``, ``patch_selection``,
            ``transport`` or the expert's ``ragged``; they win over this function's.

    Returns:
        Counts, accuracy, offload ratio, end-to-end latency (camera frame sent ->
        result received) and its split into edge / network / expert queue / expert
        inference (:class:`~ask_expert_ros.core.nodes.live_metrics.LiveRecorder`), per frame
        under ``per_frame``; the pixel bytes per request seen on the wire
        (``pixel_bytes_per_request``: the frame or the patch mosaic, raw or compressed)
        and the node parameters set (``edge_params``, ``expert_params``).

    Raises:
        LiveRunError: The nodes did not start, or (unless ``allow_drops``) not every
            frame was answered in time.
        ValueError: Stamps that are not one per frame or not distinct, no rate.
    """
    if stamps_ns is not None:
        if len(stamps_ns) != len(frames) or len(set(stamps_ns)) != len(stamps_ns):
            raise ValueError('stamps_ns needs one distinct stamp per frame')
    elif rate_hz is None:
        raise ValueError('give rate_hz, or stamps_ns to follow their spacing')
    if rate_hz is not None and not rate_hz > 0:
        raise ValueError(f'rate_hz must be > 0, got {rate_hz}')
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
    requests_reader = DataReader(
        dp, Topic(dp, msgs.ros_topic('expert/requests'), msgs.ExpertRequest), qos=qos
    )
    edge_id = 'demo_edge'
    edge_settings = {
        'tau': tau,
        'deadline_ms': deadline_ms,
        'edge_id': edge_id,
        'image_qos_reliability': 'reliable',
        # the whole bag, up to the parameter's bound (1000: 33 s of a 30 Hz camera)
        'image_qos_depth': min(len(frames) + 10, _MAX_IMAGE_DEPTH),
        'publish_annotated': False,
        **(edge_params or {}),
    }
    expert_settings = {'max_wait_ms': 2.0, **(expert_params or {})}
    pixel_bytes: list[int] = []
    recorder = LiveRecorder(edge_id=edge_id)
    truth: dict[int, str] = {}
    with ExitStack() as stack:
        expert = spawn_node('expert', manifest, domain_id, log_dir, _settings(expert_settings))
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

        def drain() -> None:
            now = time.time_ns()
            for msg in take_valid(requests_reader, 256):
                pixel_bytes.append(len(msg.image.data) + len(msg.compressed_image.data))
                recorder.on_request(
                    msgs.time_to_ns(msg.header.stamp),
                    now,
                    msg.edge_id,
                    msg.edge_preprocess_ms,
                    msg.edge_inference_ms,
                )
            for msg in take_valid(results_reader, 256):
                label = msg.results[0].class_id if msg.results else ''
                recorder.on_result(msgs.time_to_ns(msg.header.stamp), now, label)
            for msg in take_valid(responses_reader, 256):
                recorder.on_response(
                    msgs.time_to_ns(msg.header.stamp),
                    msg.edge_id,
                    msg.status,
                    msg.queue_ms,
                    msg.inference_ms,
                    msg.batch_size,
                )

        if rate_hz is not None:
            offsets = [round(i * 1e9 / rate_hz) for i in range(len(frames))]
        else:
            assert stamps_ns is not None
            offsets = [int(s) - int(stamps_ns[0]) for s in stamps_ns]
        start = time.time_ns()
        for i, pixels in enumerate(frames):
            while time.time_ns() < start + offsets[i]:
                drain()
                time.sleep(0.0005)
            sent_ns = time.time_ns()
            stamp_ns = int(stamps_ns[i]) if stamps_ns is not None else sent_ns
            recorder.on_frame(stamp_ns, sent_ns)
            if labels is not None:
                truth[stamp_ns] = class_names[int(labels[i])]
            camera.write(frame_to_image(pixels, Header(Stamp.from_ns(stamp_ns), 'demo_camera')))
        try:
            _wait(
                lambda: drain() or recorder.results_seen >= len(frames),
                deadline_ms / 1e3 + drain_timeout_s,
                'every frame to be answered',
                procs,
                log_dir,
            )
        except LiveRunError:
            if not allow_drops:
                raise
        time.sleep(0.3)
        drain()  # anything beyond one result per frame would show up here

    del domain
    summary = recorder.summary(truth if labels is not None else None)
    return {
        'tau': float(tau),
        **summary,
        'rate_hz': rate_hz,
        'deadline_ms': deadline_ms,
        'pixel_bytes_per_request': float(np.mean(pixel_bytes)) if pixel_bytes else None,
        'edge_params': edge_settings,
        'expert_params': expert_settings,
        'clock': "end_to_end_ms: frame written -> Classification taken, on this process's "
        'wall clock; edge/expert splits from the ExpertRequest/ExpertResponse timing fields; '
        'network = the rest (DDS both ways, serialisation, waiting)',
        'transport': 'Cyclone DDS, loopback, two processes (expert, edge)',
        'logs': str(log_dir),
    }
