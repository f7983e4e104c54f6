"""Edge and expert nodes on Cyclone DDS directly: the ROS 2 graph without a ROS install.

Topics, types and QoS are those of the rclpy nodes (ROS topic ``/ns/image`` is DDS
topic ``rt/ns/image``), so these processes talk to rclpy nodes and ``ros2`` tools
on a Cyclone (or any RTPS) graph. Each runner is one thread around a WaitSet:
take what arrived, hand it to the node logic, publish what the logic returns.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from cyclonedds.core import (
    DDSException,
    InstanceState,
    Policy,
    Qos,
    ReadCondition,
    SampleState,
    ViewState,
    WaitSet,
)
from cyclonedds.domain import DomainParticipant
from cyclonedds.pub import DataWriter
from cyclonedds.sub import DataReader
from cyclonedds.topic import Topic
from cyclonedds.util import duration

from ask_expert_ros.core.errors import UnsupportedImageError
from ask_expert_ros.core.nodes.annotate import annotate
from ask_expert_ros.core.nodes.diagnostics import HealthMonitor, offload_settings
from ask_expert_ros.core.nodes.edge_logic import EdgeLogic
from ask_expert_ros.core.nodes.expert_logic import ExpertLogic
from ask_expert_ros.core.nodes.messages import FinalResult, Frame, Header, Stamp
from ask_expert_ros.dds import conversions as conv
from ask_expert_ros.dds import msgs

logger = logging.getLogger(__name__)

_ANY_NEW = SampleState.NotRead | ViewState.Any | InstanceState.Any
_MAX_TAKE = 64


def dds_topic(name: str, namespace: str = '') -> str:
    """ROS topic name (relative names resolved in ``namespace``) -> DDS topic name."""
    if not name.startswith('/'):
        name = f'{namespace.rstrip("/")}/{name}' if namespace else f'/{name}'
    return msgs.ros_topic(name)


def reliable_qos(depth: int) -> Qos:
    """Requests and responses: reliable, volatile, deep keep-last."""
    return Qos(
        Policy.Reliability.Reliable(duration(milliseconds=100)),
        Policy.History.KeepLast(depth),
        Policy.Durability.Volatile,
    )


def sensor_qos(reliability: str, depth: int) -> Qos:
    """Camera input: best-effort by default, which matches either kind of publisher."""
    kind = (
        Policy.Reliability.BestEffort
        if reliability == 'best_effort'
        else Policy.Reliability.Reliable(duration(milliseconds=100))
    )
    return Qos(kind, Policy.History.KeepLast(depth), Policy.Durability.Volatile)


def latched_qos() -> Qos:
    """``LabelInfo``: transient-local so late joiners get the class names."""
    return Qos(
        Policy.Reliability.Reliable(duration(milliseconds=100)),
        Policy.History.KeepLast(1),
        Policy.Durability.TransientLocal,
    )


def with_type_hash(qos: Qos, cls: type) -> Qos:
    """``qos`` plus the USER_DATA every ROS 2 Jazzy endpoint carries: its type hash.

    Jazzy's ``rmw_cyclonedds_cpp`` reads ``typehash=RIHS01_<sha256>;`` from the USER_DATA
    of each endpoint it discovers (``ros2 topic info -v`` shows it). Without it, every
    rclpy node on the graph logged "Failed to parse type hash for topic ... from USER_DATA
    '(null)'" once per endpoint of ours (seen on a Jazzy built from source). Humble
    ignores it.
    """
    userdata = f'typehash={msgs.type_hash(cls)};'.encode()
    return qos + Qos(Policy.Userdata(userdata))


class _Endpoints:
    """Readers and writers of one node, created by ROS topic name."""

    def __init__(self, participant: DomainParticipant, namespace: str) -> None:
        self.participant = participant
        self.namespace = namespace
        self._topics: dict[str, Topic] = {}
        self.waitset = WaitSet(participant)
        # every endpoint made here, for the node's entry in ros_discovery_info
        self.readers: list[DataReader] = []
        self.writers: list[DataWriter] = []

    def _topic(self, name: str, cls: type) -> Topic:
        full = dds_topic(name, self.namespace)
        if full not in self._topics:
            self._topics[full] = Topic(self.participant, full, cls)
        return self._topics[full]

    def reader(self, name: str, cls: type, qos: Qos) -> DataReader:
        reader = DataReader(self.participant, self._topic(name, cls), qos=with_type_hash(qos, cls))
        self.waitset.attach(ReadCondition(reader, _ANY_NEW))
        self.readers.append(reader)
        return reader

    def writer(self, name: str, cls: type, qos: Qos) -> DataWriter:
        writer = DataWriter(self.participant, self._topic(name, cls), qos=with_type_hash(qos, cls))
        self.writers.append(writer)
        return writer

    def wait(self, timeout_s: float) -> None:
        self.waitset.wait(duration(seconds=max(0.0, timeout_s)))


@dataclass(frozen=True)
class EdgeTopics:
    """ROS topic names of the edge node (relative to its namespace)."""

    image: str = 'image'
    compressed: str = 'image/compressed'
    classification: str = 'classification'
    label_info: str = 'label_info'
    annotated: str = 'annotated'
    requests: str = 'expert/requests'
    responses: str = 'expert/responses'


class _Diagnostics:
    """Publishes the node's health on ``/diagnostics`` every ``period_s``."""

    def __init__(self, io: _Endpoints, name: str, period_s: float) -> None:
        self._writer = io.writer('/diagnostics', msgs.DiagnosticArray, reliable_qos(10))
        self._monitor = HealthMonitor(name, socket.gethostname())
        self._period_ns = int(period_s * 1e9)
        self._next_ns = time.monotonic_ns()

    def maybe_publish(
        self, counters: dict[str, int], settings: dict[str, int | float | str] | None = None
    ) -> None:
        now = time.monotonic_ns()
        if now < self._next_ns:
            return
        self._next_ns = now + self._period_ns
        record = self._monitor.update(counters, now / 1e9, settings)
        self._writer.write(conv.diagnostics_to_dds([record], Header(_now_stamp())))


class EdgeRunner:
    """The edge node: camera frames in, one ``Classification`` per frame out.

    Args:
        logic: The edge logic (model, router, pending requests).
        participant: The DDS participant to create endpoints on.
        values: Resolved edge parameters
            (:data:`~ask_expert_ros.core.nodes.node_config.EDGE_PARAMS`).
        namespace: ROS namespace of the node's topics.
        topics: Topic names, for remapping.
    """

    def __init__(
        self,
        logic: EdgeLogic,
        participant: DomainParticipant,
        values: dict[str, Any],
        namespace: str = '',
        topics: EdgeTopics | None = None,
    ) -> None:
        self.logic = logic
        topics = topics or EdgeTopics()
        io = _Endpoints(participant, namespace)
        self._io = io
        image_qos = sensor_qos(values['image_qos_reliability'], values['image_qos_depth'])
        self._images = io.reader(topics.image, msgs.Image, image_qos)
        self._compressed = io.reader(topics.compressed, msgs.CompressedImage, image_qos)
        self._responses = io.reader(
            topics.responses, msgs.ExpertResponse, reliable_qos(values['response_qos_depth'])
        )
        self._requests = io.writer(
            topics.requests, msgs.ExpertRequest, reliable_qos(values['request_qos_depth'])
        )
        self._results = io.writer(
            topics.classification, msgs.Classification, reliable_qos(values['response_qos_depth'])
        )
        self._annotated = (
            io.writer(topics.annotated, msgs.Image, sensor_qos('best_effort', 5))
            if values['publish_annotated']
            else None
        )
        # pixels of frames waiting for the expert, for the annotated image of their result
        self._waiting: dict[Header, np.ndarray] = {}
        self._labels = io.writer(topics.label_info, msgs.LabelInfo, latched_qos())
        self._labels.write(
            conv.label_info(
                logic.class_names, Header(_now_stamp()), logic.params.routing.threshold
            )
        )
        self._diagnostics = _Diagnostics(
            io, f'ask_expert: edge {logic.params.edge_id}', values['diagnostics_period_s']
        )

    @property
    def endpoints(self) -> _Endpoints:
        """The node's readers and writers."""
        return self._io

    @property
    def requests_writer(self) -> DataWriter:
        """Where requests go: an expert's reader matching it is the edge's peer."""
        return self._requests

    def spin_once(self, timeout_s: float = 0.05) -> None:
        """Wait for input or the next deadline, then handle everything that is due."""
        deadline = self.logic.next_deadline_ns()
        if deadline is not None:
            timeout_s = min(timeout_s, max(0.0, (deadline - time.monotonic_ns()) / 1e9))
        self._io.wait(timeout_s)
        for msg in take_valid(self._responses):
            self._publish(self.logic.on_reply(conv.reply_to_core(msg)))
        frames = []
        raw: list[tuple[Any, Callable[[Any], Frame]]] = []
        raw.extend((msg, conv.image_to_frame) for msg in take_valid(self._images))
        raw.extend((msg, conv.compressed_to_frame) for msg in take_valid(self._compressed))
        for msg, decode in raw:
            try:
                frames.append(decode(msg))
            except UnsupportedImageError as exc:
                logger.warning('bad frame: %s', exc)
                self._publish(self.logic.reject(conv.header_to_core(msg.header), str(exc)))
        if frames:
            self._handle_frames(frames)
        for result in self.logic.expire():
            self._publish(result)
        self._diagnostics.maybe_publish(
            self.logic.counters.as_dict() | {'pending': self.logic.pending_count},
            offload_settings(self.logic.params) | self.logic.link_status(),
        )

    def _handle_frames(self, frames: list[Frame]) -> None:
        step = self.logic.process(frames)
        pixels = {f.header: f.pixels for f in frames}
        for result in step.results:
            self._publish(result, pixels.get(result.header))
        expert_present = bool(self._requests.get_matched_subscriptions())
        for request in step.requests:
            if self._annotated is not None:
                self._waiting[request.header] = pixels[request.header]
            if not expert_present:
                self._publish(self.logic.fail(request.request_id, 'no expert node matched'))
                continue
            try:
                self._requests.write(conv.request_to_dds(request))
            except DDSException as exc:  # e.g. reliable write timed out
                self._publish(self.logic.fail(request.request_id, f'send failed: {exc}'))

    def _publish(self, result: FinalResult | None, pixels: np.ndarray | None = None) -> None:
        if result is None:
            return
        self._results.write(conv.result_to_classification(result))
        if self._annotated is not None:
            pixels = self._waiting.pop(result.header, pixels)
            if pixels is not None:
                self._annotated.write(conv.frame_to_image(annotate(pixels, result), result.header))

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self.spin_once()


@dataclass(frozen=True)
class ExpertTopics:
    requests: str = 'expert/requests'
    responses: str = 'expert/responses'


class ExpertRunner:
    """The expert node: requests in, one ``ExpertResponse`` per request out."""

    def __init__(
        self,
        logic: ExpertLogic,
        participant: DomainParticipant,
        values: dict[str, Any],
        namespace: str = '',
        topics: ExpertTopics | None = None,
    ) -> None:
        self.logic = logic
        topics = topics or ExpertTopics()
        io = _Endpoints(participant, namespace)
        self._io = io
        self._requests = io.reader(
            topics.requests, msgs.ExpertRequest, reliable_qos(values['request_qos_depth'])
        )
        self._responses = io.writer(
            topics.responses, msgs.ExpertResponse, reliable_qos(values['response_qos_depth'])
        )
        self._diagnostics = _Diagnostics(io, 'ask_expert: expert', values['diagnostics_period_s'])

    @property
    def endpoints(self) -> _Endpoints:
        """The node's readers and writers."""
        return self._io

    @property
    def requests_reader(self) -> DataReader:
        """Where requests come from: an edge's writer matching it is the expert's peer."""
        return self._requests

    def spin_once(self, timeout_s: float = 0.05) -> None:
        due = self.logic.next_due_ns()
        if due is not None:
            timeout_s = min(timeout_s, max(0.0, (due - time.monotonic_ns()) / 1e9))
        self._io.wait(timeout_s)
        for msg in take_valid(self._requests):
            try:
                reply = self.logic.submit(conv.request_to_core(msg))
            except (UnsupportedImageError, ValueError) as exc:
                logger.warning('malformed request from %r: %s', msg.edge_id, exc)
                reply = self.logic.reject(
                    conv.header_to_core(msg.header), msg.edge_id, msg.request_id, str(exc)
                )
            if reply is not None:
                self._responses.write(conv.reply_to_dds(reply))
        # one batch per turn: its replies go out before the next batch runs, and
        # requests that came meanwhile join the queues before the next pick
        for reply in self.logic.poll(max_batches=1):
            self._responses.write(conv.reply_to_dds(reply))
        self._diagnostics.maybe_publish(self.logic.counters.as_dict(), self.logic.queue_status())

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self.spin_once()


def take_valid(reader: DataReader, n: int = _MAX_TAKE) -> list:
    """New samples with data on ``reader``, at most ``n``.

    Skips the data-less samples DDS uses to announce instance state changes (a writer
    left), and logs and skips payloads that are not valid CDR for the type. Samples are
    taken one at a time: ``DataReader.take(N)`` takes all N before deserialising them and
    raises on the first bad one, so one hostile payload would lose the valid samples
    taken with it.
    """
    samples = []
    for _ in range(n):
        try:
            taken = reader.take(N=1)
        except msgs.CdrError as exc:
            logger.warning('dropped an undecodable sample on %s: %s', reader.topic.name, exc)
            continue
        if not taken:
            break
        samples.extend(s for s in taken if s.sample_info.valid_data)
    return samples


def _now_stamp() -> Stamp:
    return Stamp.from_ns(time.time_ns())
