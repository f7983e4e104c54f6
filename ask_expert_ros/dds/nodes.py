"""Edge and expert nodes on Cyclone DDS directly: the ROS 2 graph without a ROS install.

Topics, types and QoS are those of the rclpy nodes (ROS topic ``/ns/image`` is DDS
topic ``rt/ns/image``), so these processes talk to rclpy nodes and ``ros2`` tools
on a Cyclone (or any RTPS) graph. Each runner is one thread around a WaitSet:
take what arrived, hand it to the node logic, publish what the logic returns.

Both are managed nodes with the states of ROS 2 lifecycle nodes
(:mod:`~ask_expert_ros.core.nodes.lifecycle`), entered in the same order as the rclpy
nodes do: the models are loaded and warmed up (configure) before the input reader
exists (activate), and deactivate answers what is in flight before it returns.
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
    GuardCondition,
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
from ask_expert_ros.core.nodes.lifecycle import (
    IllegalTransitionError,
    Lifecycle,
    State,
    Transition,
    log_change,
)
from ask_expert_ros.core.nodes.messages import ExpertReply, FinalResult, Frame, Header, Stamp
from ask_expert_ros.core.nodes.node_config import default_edge_id
from ask_expert_ros.core.nodes.remote_expert import RemoteExpertLogic
from ask_expert_ros.dds import conversions as conv
from ask_expert_ros.dds import msgs

logger = logging.getLogger(__name__)

_ANY_NEW = SampleState.NotRead | ViewState.Any | InstanceState.Any
_MAX_TAKE = 64
# deactivate waits for the expert this long past the request deadline, then answers itself
_DRAIN_SLACK_S = 1.0


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
        # every endpoint alive now, for the node's entry in ros_discovery_info
        self.readers: list[DataReader] = []
        self.writers: list[DataWriter] = []
        self._conditions: dict[int, ReadCondition] = {}

    def _topic(self, name: str, cls: type) -> Topic:
        full = dds_topic(name, self.namespace)
        if full not in self._topics:
            self._topics[full] = Topic(self.participant, full, cls)
        return self._topics[full]

    def reader(self, name: str, cls: type, qos: Qos) -> DataReader:
        reader = DataReader(self.participant, self._topic(name, cls), qos=with_type_hash(qos, cls))
        condition = ReadCondition(reader, _ANY_NEW)
        self.waitset.attach(condition)
        self._conditions[id(reader)] = condition
        self.readers.append(reader)
        return reader

    def writer(self, name: str, cls: type, qos: Qos) -> DataWriter:
        writer = DataWriter(self.participant, self._topic(name, cls), qos=with_type_hash(qos, cls))
        self.writers.append(writer)
        return writer

    def delete(self, entity: DataReader | DataWriter | None) -> None:
        """Delete a reader or writer now, so that its peers see it unmatched at once."""
        if entity is None:
            return
        condition = self._conditions.pop(id(entity), None)
        if condition is not None:
            self.waitset.detach(condition)
            _delete_now(condition)
        for endpoints in (self.readers, self.writers):
            if entity in endpoints:
                endpoints.remove(entity)
        _delete_now(entity)

    def wait(self, timeout_s: float) -> None:
        self.waitset.wait(duration(seconds=max(0.0, timeout_s)))


def _delete_now(entity: Any) -> None:
    # cyclonedds-python deletes an entity when its object is collected (its __del__,
    # which is idempotent); a node that stops taking input must not wait for the GC
    entity.__del__()


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
    """Publishes the node's health on ``/diagnostics`` every ``period_s``, and at once
    when asked (a lifecycle transition)."""

    def __init__(self, io: _Endpoints, name: str, period_s: float) -> None:
        self._writer = io.writer('/diagnostics', msgs.DiagnosticArray, reliable_qos(10))
        self._monitor = HealthMonitor(name, socket.gethostname())
        self._period_ns = int(period_s * 1e9)
        self._next_ns = time.monotonic_ns()

    def maybe_publish(
        self,
        counters: dict[str, int],
        settings: dict[str, int | float | str] | None = None,
        now: bool = False,
    ) -> None:
        stamp = time.monotonic_ns()
        if stamp < self._next_ns and not now:
            return
        self._next_ns = stamp + self._period_ns
        record = self._monitor.update(counters, stamp / 1e9, settings)
        self._writer.write(conv.diagnostics_to_dds([record], Header(_now_stamp())))


class _ManagedRunner:
    """What both DDS nodes share: the lifecycle (:mod:`~ask_expert_ros.core.nodes.lifecycle`),
    their endpoints and diagnostics, and the spin loop.

    A runner starts unconfigured, with only its ``/diagnostics`` writer (which shows the
    lifecycle state). :meth:`configure` builds the logic (models loaded and warmed up)
    and the node's writers; :meth:`activate` creates the input reader, so nothing
    arrives before the models are ready; :meth:`deactivate` deletes it and answers
    everything in flight; :meth:`cleanup` releases the logic; :meth:`shutdown` does
    what the current state needs of those, from any state. Each returns False, the
    reason logged and the state unchanged, when its work failed (a bad library).
    """

    def __init__(
        self,
        name: str,
        participant: DomainParticipant,
        values: dict[str, Any],
        namespace: str,
        status_name: str,
        on_change: Callable[[], None] | None,
    ) -> None:
        self.values = values
        self._io = _Endpoints(participant, namespace)
        self._diagnostics = _Diagnostics(self._io, status_name, values['diagnostics_period_s'])
        self._on_change = on_change
        self.lifecycle = Lifecycle(name, on_change=self._changed)

    @property
    def endpoints(self) -> _Endpoints:
        """The node's readers and writers."""
        return self._io

    @property
    def state(self) -> State:
        return self.lifecycle.state

    def _changed(self, *change: Any) -> None:
        log_change(*change)
        self._publish_diagnostics(now=True)
        if self._on_change is not None:
            self._on_change()

    def configure(self) -> bool:
        return self.lifecycle.run(Transition.CONFIGURE, self._configure)

    def activate(self) -> bool:
        return self.lifecycle.run(Transition.ACTIVATE, self._activate)

    def deactivate(self) -> bool:
        return self.lifecycle.run(Transition.DEACTIVATE, self._deactivate)

    def cleanup(self) -> bool:
        return self.lifecycle.run(Transition.CLEANUP, self._cleanup)

    def start(self) -> bool:
        """Configure, then activate: True when the node is active."""
        return self.configure() and self.activate()

    def shutdown(self) -> None:
        """From any state to finalized: in-flight work answered, models released."""
        if self.state is State.FINALIZED:
            return
        was = self.state

        def work() -> None:
            if was is State.ACTIVE:
                self._deactivate()
            if was in (State.ACTIVE, State.INACTIVE):
                self._cleanup()

        self.lifecycle.run(Transition.SHUTDOWN, work)

    def run(self, stop: threading.Event) -> None:
        """Activate (configuring first if need be), spin until ``stop``, then shut down."""
        if self.state is State.UNCONFIGURED and not self.configure():
            return
        if self.state is State.INACTIVE and not self.activate():
            return
        while not stop.is_set():
            self.spin_once()
        self.shutdown()

    def spin_once(self, timeout_s: float = 0.05) -> None:
        """Wait for input or the next deadline, then handle everything that is due."""
        if self.state is State.ACTIVE:
            self._spin_active(timeout_s)
        else:
            self._io.wait(timeout_s)
        self._publish_diagnostics()

    def _publish_diagnostics(self, now: bool = False) -> None:
        counters, settings = self._status()
        settings['lifecycle'] = self.state.value
        self._diagnostics.maybe_publish(counters, settings, now=now)

    # the node's own work, in each transition (called with the state machine's blessing)
    def _configure(self) -> None:
        raise NotImplementedError

    def _activate(self) -> None:
        raise NotImplementedError

    def _deactivate(self) -> None:
        raise NotImplementedError

    def _cleanup(self) -> None:
        raise NotImplementedError

    def _spin_active(self, timeout_s: float) -> None:
        raise NotImplementedError

    def _status(self) -> tuple[dict[str, int], dict[str, int | float | str]]:
        raise NotImplementedError


class EdgeRunner(_ManagedRunner):
    """The edge node: camera frames in, one ``Classification`` per frame out.

    Args:
        participant: The DDS participant to create endpoints on.
        values: Resolved edge parameters
            (:data:`~ask_expert_ros.core.nodes.node_config.EDGE_PARAMS`).
        build_logic: Builds the edge logic (loads and warms up the model), on configure.
        namespace: ROS namespace of the node's topics.
        topics: Topic names, for remapping.
        on_change: Called after every lifecycle transition (the app re-announces the
            node's endpoints on ``ros_discovery_info``).
    """

    def __init__(
        self,
        participant: DomainParticipant,
        values: dict[str, Any],
        build_logic: Callable[[], EdgeLogic],
        namespace: str = '',
        topics: EdgeTopics | None = None,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self._build_logic = build_logic
        self._topics = topics or EdgeTopics()
        self._logic: EdgeLogic | None = None
        self._images: DataReader | None = None
        self._compressed: DataReader | None = None
        self._responses: DataReader | None = None
        self._requests: DataWriter | None = None
        self._results: DataWriter | None = None
        self._annotated: DataWriter | None = None
        self._labels: DataWriter | None = None
        # pixels of frames waiting for the expert, for the annotated image of their result
        self._waiting: dict[Header, np.ndarray] = {}
        edge_id = values['edge_id'] or default_edge_id()
        super().__init__(
            'edge', participant, values, namespace, f'ask_expert: edge {edge_id}', on_change
        )

    @property
    def logic(self) -> EdgeLogic:
        """The edge logic (configured nodes only)."""
        if self._logic is None:
            raise IllegalTransitionError(f'edge is {self.state.value}: no model loaded')
        return self._logic

    @property
    def requests_writer(self) -> DataWriter:
        """Where requests go: an expert's reader matching it is the edge's peer."""
        if self._requests is None:
            raise IllegalTransitionError(f'edge is {self.state.value}: no requests writer')
        return self._requests

    def _configure(self) -> None:
        logic = self._build_logic()
        io, topics, values = self._io, self._topics, self.values
        self._responses = io.reader(
            topics.responses, msgs.ExpertResponse, reliable_qos(values['response_qos_depth'])
        )
        self._requests = io.writer(
            topics.requests, msgs.ExpertRequest, reliable_qos(values['request_qos_depth'])
        )
        self._results = io.writer(
            topics.classification, msgs.Classification, reliable_qos(values['response_qos_depth'])
        )
        if values['publish_annotated']:
            self._annotated = io.writer(topics.annotated, msgs.Image, sensor_qos('best_effort', 5))
        self._labels = io.writer(topics.label_info, msgs.LabelInfo, latched_qos())
        self._labels.write(
            conv.label_info(
                logic.class_names, Header(_now_stamp()), logic.params.routing.threshold
            )
        )
        self._logic = logic
        logger.info('edge model runs on %s', logic.stage.backend.describe())

    def _activate(self) -> None:
        values, topics = self.values, self._topics
        image_qos = sensor_qos(values['image_qos_reliability'], values['image_qos_depth'])
        self._images = self._io.reader(topics.image, msgs.Image, image_qos)
        self._compressed = self._io.reader(topics.compressed, msgs.CompressedImage, image_qos)

    def _deactivate(self) -> None:
        """Frames already received are answered; then the readers go and every request
        still waiting gets its expert's answer or, at its deadline, the fallback."""
        self._take_frames()
        self._io.delete(self._images)
        self._io.delete(self._compressed)
        self._images = self._compressed = None
        logic = self.logic
        give_up = time.monotonic() + logic.params.deadline_ms / 1000 + _DRAIN_SLACK_S
        while logic.pending_count and time.monotonic() < give_up:
            self._spin_io(0.05)
        for result in logic.abandon('edge deactivated before the expert answered'):
            self._publish(result)
        counters = logic.counters
        logger.info(
            'edge stopped taking frames: %d taken, %d results, %d pending',
            counters.frames,
            counters.results,
            logic.pending_count,
        )

    def _cleanup(self) -> None:
        for entity in (self._responses, self._requests, self._results, self._annotated):
            self._io.delete(entity)
        self._io.delete(self._labels)
        self._responses = self._requests = self._results = None
        self._annotated = self._labels = None
        self._waiting.clear()
        self._logic = None  # the model goes with it

    def _status(self) -> tuple[dict[str, int], dict[str, int | float | str]]:
        if self._logic is None:
            return {}, {}
        logic = self._logic
        counters = logic.counters.as_dict() | {'pending': logic.pending_count}
        return counters, offload_settings(logic.params) | logic.link_status()

    def _spin_active(self, timeout_s: float) -> None:
        deadline = self.logic.next_deadline_ns()
        if deadline is not None:
            timeout_s = min(timeout_s, max(0.0, (deadline - time.monotonic_ns()) / 1e9))
        self._spin_io(timeout_s)
        self._take_frames()

    def _spin_io(self, timeout_s: float) -> None:
        """Wait, then replies in and fallbacks out."""
        self._io.wait(timeout_s)
        assert self._responses is not None  # configured
        for msg in take_valid(self._responses):
            self._publish(self.logic.on_reply(conv.reply_to_core(msg)))
        for result in self.logic.expire():
            self._publish(result)

    def _take_frames(self) -> None:
        frames = []
        raw: list[tuple[Any, Callable[[Any], Frame]]] = []
        if self._images is not None and self._compressed is not None:
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

    def _handle_frames(self, frames: list[Frame]) -> None:
        step = self.logic.process(frames)
        pixels = {f.header: f.pixels for f in frames}
        for result in step.results:
            self._publish(result, pixels.get(result.header))
        requests = self.requests_writer
        expert_present = bool(requests.get_matched_subscriptions())
        for request in step.requests:
            if self._annotated is not None:
                self._waiting[request.header] = pixels[request.header]
            if not expert_present:
                self._publish(self.logic.fail(request.request_id, 'no expert node matched'))
                continue
            try:
                requests.write(conv.request_to_dds(request))
            except DDSException as exc:  # e.g. reliable write timed out
                self._publish(self.logic.fail(request.request_id, f'send failed: {exc}'))

    def _publish(self, result: FinalResult | None, pixels: np.ndarray | None = None) -> None:
        if result is None or self._results is None:
            return
        self._results.write(conv.result_to_classification(result))
        if self._annotated is not None:
            pixels = self._waiting.pop(result.header, pixels)
            if pixels is not None:
                self._annotated.write(conv.frame_to_image(annotate(pixels, result), result.header))


@dataclass(frozen=True)
class ExpertTopics:
    requests: str = 'expert/requests'
    responses: str = 'expert/responses'


class ExpertRunner(_ManagedRunner):
    """The expert node: requests in, one ``ExpertResponse`` per request out.

    Args: as :class:`EdgeRunner`'s, ``build_logic`` building the expert logic.
    """

    def __init__(
        self,
        participant: DomainParticipant,
        values: dict[str, Any],
        build_logic: Callable[[], ExpertLogic],
        namespace: str = '',
        topics: ExpertTopics | None = None,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self._build_logic = build_logic
        self._topics = topics or ExpertTopics()
        self._logic: ExpertLogic | None = None
        self._requests: DataReader | None = None
        self._responses: DataWriter | None = None
        super().__init__('expert', participant, values, namespace, 'ask_expert: expert', on_change)
        # a serving engine's answers arrive on its thread: this wakes the spin for them
        self._answers = GuardCondition(participant)
        self._io.waitset.attach(self._answers)

    @property
    def logic(self) -> ExpertLogic:
        """The expert logic (configured nodes only)."""
        if self._logic is None:
            raise IllegalTransitionError(f'expert is {self.state.value}: no experts loaded')
        return self._logic

    @property
    def requests_reader(self) -> DataReader:
        """Where requests come from: an edge's writer matching it is the expert's peer."""
        if self._requests is None:
            raise IllegalTransitionError(f'expert is {self.state.value}: no requests reader')
        return self._requests

    def _configure(self) -> None:
        logic = self._build_logic()
        if isinstance(logic, RemoteExpertLogic):
            logic.on_ready(lambda: self._answers.set(True))
            logger.info('expert node is the front of %s', logic.service.describe())
        self._responses = self._io.writer(
            self._topics.responses,
            msgs.ExpertResponse,
            reliable_qos(self.values['response_qos_depth']),
        )
        self._logic = logic

    def _activate(self) -> None:
        self._requests = self._io.reader(
            self._topics.requests,
            msgs.ExpertRequest,
            reliable_qos(self.values['request_qos_depth']),
        )

    def _deactivate(self) -> None:
        """Requests already received are queued, the reader goes, and every queued
        request is answered (the partial micro-batches run now)."""
        self._take_requests()
        self._io.delete(self._requests)
        self._requests = None
        logic = self.logic
        while logic.queued:
            replies = logic.poll(flush=True)
            for reply in replies:
                self._reply(reply)
            if not replies:  # in flight in a serving engine: its answer or expiry comes
                due = logic.next_due_ns()
                logic.wait(0.05 if due is None else (due - time.monotonic_ns()) / 1e9)

    def _cleanup(self) -> None:
        self._io.delete(self._responses)
        self._responses = None
        if self._logic is not None:
            self._logic.close()
        self._logic = None  # the experts go with it

    def _status(self) -> tuple[dict[str, int], dict[str, int | float | str]]:
        if self._logic is None:
            return {}, {}
        return self._logic.counters.as_dict(), self._logic.queue_status()

    def _spin_active(self, timeout_s: float) -> None:
        due = self.logic.next_due_ns()
        if due is not None:
            timeout_s = min(timeout_s, max(0.0, (due - time.monotonic_ns()) / 1e9))
        self._io.wait(timeout_s)
        self._answers.set(False)  # before poll: an answer arriving after it wakes the next wait
        self._take_requests()
        # one batch per turn: its replies go out before the next batch runs, and
        # requests that came meanwhile join the queues before the next pick
        for reply in self.logic.poll(max_batches=1):
            self._reply(reply)

    def _take_requests(self) -> None:
        if self._requests is None:
            return
        for msg in take_valid(self._requests):
            try:
                reply = self.logic.submit(conv.request_to_core(msg))
            except (UnsupportedImageError, ValueError) as exc:
                logger.warning('malformed request from %r: %s', msg.edge_id, exc)
                reply = self.logic.reject(
                    conv.header_to_core(msg.header), msg.edge_id, msg.request_id, str(exc)
                )
            if reply is not None:
                self._reply(reply)

    def _reply(self, reply: ExpertReply) -> None:
        if self._responses is not None:
            self._responses.write(conv.reply_to_dds(reply))


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
