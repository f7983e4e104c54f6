"""The edge node (``ros2 run ask_expert_ros edge_node``): one Classification per camera frame.

Topics (relative; remap them at launch):

* in  ``image`` (sensor_msgs/Image), ``image/compressed`` (sensor_msgs/CompressedImage):
  camera frames, QoS from ``image_qos_reliability`` / ``image_qos_depth``;
* out ``classification`` (vision_msgs/Classification): exactly one per frame, with the
  frame's header; ``results`` holds one hypothesis (class name, score), or none when
  the frame could not be classified (INVALID: undecodable frame, non-finite output);
* out ``label_info`` (vision_msgs/LabelInfo, transient local): class names and the
  offload threshold on the [0, 1] confidence scale (tau, or 2^-tau for min_entropy,
  whose tau is in bits), at start and again when it changes;
* out ``annotated`` (sensor_msgs/Image rgb8): the frame with label, score and who
  answered drawn on it, while ``publish_annotated`` is true and someone listens;
* out ``expert/requests`` (ExpertRequest, reliable) / in ``expert/responses``
  (ExpertResponse, reliable): the conversation with the expert node;
* out ``/diagnostics`` (diagnostic_msgs/DiagnosticArray) every ``diagnostics_period_s``,
  with the counters, the offload mode and rho or m, the tau in use and why (a bandwidth
  budget, measured Mbit/s), and the expert's health (up/down, answer rate, round trip,
  outages and recovery times).

What happens to a frame is decided by :class:`~ask_expert_ros.core.nodes.edge_logic.EdgeLogic`;
this node converts, calls it and publishes. Threads:

* camera callbacks (one mutually exclusive group) decode frames and queue them for
  the inference thread (:class:`~ask_expert_ros.core.nodes.batch_worker.BatchWorker`), which
  runs the model on everything queued as one batch. One thread, because a model called
  from the executor's rotating threads ran at half speed on CPU (OpenMP pools; numbers
  in that module). While ``image_qos_depth`` frames wait, the camera callback blocks,
  so the subscription's keep-last history drops the oldest frames, not this node;
* expert responses and the diagnostics timer run in another group, so a reply is never
  stuck behind a forward pass;
* deadlines are watched by a thread that sleeps until
  :meth:`~ask_expert_ros.core.nodes.edge_logic.EdgeLogic.next_deadline_ns` (woken when a
  request goes out): the fallback goes out on time, and an idle node costs nothing,
  where a 5 ms rclpy timer cost about a fifth of a CPU core doing nothing.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.parameter import Parameter
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header as HeaderMsg
from vision_msgs.msg import Classification, LabelInfo

from ask_expert_ros.core.errors import UnsupportedImageError
from ask_expert_ros.core.inference.backends import release_openmp_threads
from ask_expert_ros.core.nodes.annotate import annotate
from ask_expert_ros.core.nodes.batch_worker import BatchWorker
from ask_expert_ros.core.nodes.diagnostics import HealthMonitor, offload_settings
from ask_expert_ros.core.nodes.edge_logic import EdgeLogic
from ask_expert_ros.core.nodes.lifecycle import IllegalTransitionError
from ask_expert_ros.core.nodes.messages import FinalResult, Frame, Header, OffloadRequest
from ask_expert_ros.core.nodes.node_config import (
    EDGE_PARAMS,
    build_edge_logic,
    edge_params,
    resolve,
)
from ask_expert_ros.msg import ExpertRequest, ExpertResponse
from ask_expert_ros.ros import conversions as conv
from ask_expert_ros.ros.managed import ManagedNode
from ask_expert_ros.ros.node_main import run_node

NODE_NAME = 'edge'
# The deadline watcher wakes at least this often with nothing pending, to notice shutdown.
_IDLE_WAKE_S = 1.0
_THROTTLE_S = 5.0
# deactivate waits for the expert this long past the request deadline, then answers itself
_DRAIN_SLACK_S = 1.0
_DRAIN_POLL_S = 0.01


class EdgeNode(ManagedNode):
    """The edge node, a lifecycle node. Keyword arguments go to
    :class:`rclpy.lifecycle.LifecycleNode` (e.g. ``context``, ``namespace``,
    ``parameter_overrides``).

    * configure: read and check the parameters, load the model and warm it up, create
      the (lifecycle) publishers; a bad library or parameter fails with the reason;
    * activate: publish ``label_info``, start the inference and deadline threads, then
      subscribe to ``expert/responses`` and the camera;
    * deactivate: unsubscribe from the camera, answer the frames already taken, wait
      for the expert's answers to the requests out (or their fallback at the
      deadline), then stop the threads: every frame taken gets exactly one result;
    * cleanup: drop the publishers and the model.

    Raises:
        ParameterException: A parameter override of the wrong type or out of range.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **kwargs)
        self.declare(EDGE_PARAMS)
        conv.add_parameter_callbacks(self, self._check_parameters, self._apply_parameters)
        self._camera_group = MutuallyExclusiveCallbackGroup()
        self._io_group = MutuallyExclusiveCallbackGroup()
        # set while configured (configure .. cleanup)
        self._logic: EdgeLogic | None = None
        self._values: dict[str, Any] = {}
        self._publishers: list[Any] = []
        self._diagnostics_timer: Any = None
        # set while active (activate .. deactivate)
        self._subscriptions_in_use: list[Any] = []
        self._inference: BatchWorker[Frame] | None = None
        self._watcher: threading.Thread | None = None
        self._request_sent = threading.Event()
        self._stop = threading.Event()
        # a camera callback holds it while it hands a frame over; deactivate takes it to
        # know none is half-way when it stops taking frames
        self._intake = threading.Lock()
        self._taking = False
        # pixels of frames waiting for the expert, for the annotated image of their result
        self._waiting: dict[Header, np.ndarray] = {}
        self._waiting_lock = threading.Lock()

    @property
    def logic(self) -> EdgeLogic:
        """The edge logic (configured nodes only)."""
        if self._logic is None:
            raise IllegalTransitionError(f'edge is {self.lifecycle.state.value}: no model loaded')
        return self._logic

    # ------------------------------------------------------------ lifecycle

    def _configure(self) -> None:
        values = conv.parameter_values(self, EDGE_PARAMS)
        logic = build_edge_logic(values)
        values['edge_id'] = logic.params.edge_id
        self.get_logger().info(f'edge model runs on {logic.stage.backend.describe()}')
        self._requests = self.create_lifecycle_publisher(
            ExpertRequest, 'expert/requests', conv.reliable_qos(values['request_qos_depth'])
        )
        self._results = self.create_lifecycle_publisher(
            Classification, 'classification', conv.reliable_qos(values['response_qos_depth'])
        )
        # REP-2003: publishers reliable; rviz (best effort or reliable) matches either way
        self._annotated = self.create_lifecycle_publisher(Image, 'annotated', conv.reliable_qos(5))
        self._labels = self.create_lifecycle_publisher(LabelInfo, 'label_info', conv.latched_qos())
        self._publishers = [self._requests, self._results, self._annotated, self._labels]
        # diagnostics also while inactive: they say so
        self._diagnostics = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        self._monitor = HealthMonitor(
            f'ask_expert: edge {logic.params.edge_id}', socket.gethostname()
        )
        self._diagnostics_timer = self.create_timer(
            values['diagnostics_period_s'],
            self._on_diagnostics_timer,
            callback_group=self._io_group,
        )
        self._logic, self._values = logic, values
        # the model was warmed up on this thread; the inference thread runs it: without
        # this, this thread's idle OpenMP pool makes its every op wait (2.5x slower)
        release_openmp_threads()
        self.get_logger().info(
            f'edge {logic.params.edge_id}: scheme {logic.stage.scheme.name!r}, '
            f'{len(logic.class_names)} classes, tau={logic.params.routing.tau}, '
            f'device {logic.stage.device}'
        )

    def _activate(self) -> None:
        values = self._values
        self._publish_label_info()
        self._stop.clear()
        self._inference = BatchWorker(
            self._handle_frames,
            max_queued=values['image_qos_depth'],
            name='edge-inference',
            on_error=self._on_inference_error,
        )
        self._watcher = threading.Thread(target=self._watch_deadlines, name='edge-deadlines')
        self._inference.start()
        self._watcher.start()
        responses = self.create_subscription(
            ExpertResponse,
            'expert/responses',
            self._on_response,
            conv.reliable_qos(values['response_qos_depth']),
            callback_group=self._io_group,
        )
        with self._intake:
            self._taking = True
        qos = conv.image_qos(values['image_qos_reliability'], values['image_qos_depth'])
        camera = self._camera_group
        self._subscriptions_in_use = [
            responses,
            self.create_subscription(Image, 'image', self._on_image, qos, callback_group=camera),
            self.create_subscription(
                CompressedImage,
                'image/compressed',
                self._on_compressed,
                qos,
                callback_group=camera,
            ),
        ]

    def _deactivate(self) -> None:
        responses, *camera = self._subscriptions_in_use
        for subscription in camera:
            self.destroy_subscription(subscription)
        with self._intake:  # a camera callback half-way hands its frame over first
            self._taking = False
        if self._inference is not None:
            self._inference.stop()  # the frames queued get their results or requests out
        logic = self.logic
        give_up = time.monotonic() + logic.params.deadline_ms / 1000 + _DRAIN_SLACK_S
        while logic.pending_count and time.monotonic() < give_up:
            time.sleep(_DRAIN_POLL_S)  # the expert's answers, or the watcher's fallbacks
        for result in logic.abandon('edge deactivated before the expert answered'):
            self._publish(result)
        self._stop_watcher()
        self.destroy_subscription(responses)
        self._subscriptions_in_use = []
        counters = logic.counters
        self.get_logger().info(
            f'stopped taking frames: {counters.frames} taken, '
            f'{counters.results} results, {logic.pending_count} pending'
        )

    def _cleanup(self) -> None:
        for publisher in self._publishers:
            self.destroy_lifecycle_publisher(publisher)
        self._publishers = []
        if self._diagnostics_timer is not None:
            self.destroy_timer(self._diagnostics_timer)
            self.destroy_publisher(self._diagnostics)
            self._diagnostics_timer = None
        with self._waiting_lock:
            self._waiting.clear()
        self._logic = None  # the model goes with it
        self._values = {}

    def _release(self) -> None:
        with self._intake:
            self._taking = False
        for subscription in self._subscriptions_in_use:
            self.destroy_subscription(subscription)
        self._subscriptions_in_use = []
        if self._inference is not None:
            self._inference.stop()
        self._stop_watcher()
        self._cleanup()

    def _stop_watcher(self) -> None:
        self._stop.set()
        self._request_sent.set()
        if self._watcher is not None and self._watcher.is_alive():
            self._watcher.join()
        self._watcher = None

    # ------------------------------------------------------------ callbacks

    def _on_image(self, msg: Image) -> None:
        self._on_frame(msg, conv.image_to_frame)

    def _on_compressed(self, msg: CompressedImage) -> None:
        self._on_frame(msg, conv.compressed_to_frame)

    def _on_frame(self, msg: Image | CompressedImage, decode: Callable[[Any], Frame]) -> None:
        with self._intake:
            if not self._taking or self._inference is None:
                return  # deactivating: this frame is not taken, as if it came after
            try:
                frame = decode(msg)
            except UnsupportedImageError as exc:
                self.get_logger().warning(f'bad frame: {exc}', throttle_duration_sec=_THROTTLE_S)
                self._publish(self.logic.reject(conv.header_to_core(msg.header), str(exc)))
                return
            self._inference.put(frame)

    def _handle_frames(self, frames: list[Frame]) -> None:
        """On the inference thread: the model on every queued frame, then publish."""
        step = self.logic.process(frames)
        pixels = {f.header: f.pixels for f in frames}
        for result in step.results:
            self._publish(result, pixels.get(result.header))
        self._send(step.requests, pixels)

    def _on_inference_error(self, exc: Exception) -> None:
        if self.context.ok():  # else: shutting down, the publishers are gone
            self.get_logger().error(
                f'cannot publish results: {exc}', throttle_duration_sec=_THROTTLE_S
            )

    def _on_response(self, msg: ExpertResponse) -> None:
        self._publish(self.logic.on_reply(conv.reply_to_core(msg)))

    def _on_diagnostics_timer(self) -> None:
        logic = self._logic
        if logic is None:  # cleaned up meanwhile
            return
        counters = logic.counters.as_dict() | {'pending': logic.pending_count}
        settings = offload_settings(logic.params) | logic.link_status()
        settings['lifecycle'] = self.lifecycle.state.value
        record = self._monitor.update(counters, time.monotonic(), settings)
        self._diagnostics.publish(conv.diagnostics_to_ros([record], self._now_header()))

    def _current_values(self) -> dict[str, Any]:
        """The parameters in use: as configured, or (unconfigured) as declared."""
        if self._values:
            return self._values
        return resolve(
            EDGE_PARAMS, {s.name: self.get_parameter(s.name).value for s in EDGE_PARAMS}
        )

    def _check_parameters(self, parameters: list[Parameter]) -> SetParametersResult:
        """On-set: validate the whole change; nothing changes yet (rclpy may still refuse)."""
        try:
            edge_params(conv.updated_values(EDGE_PARAMS, self._current_values(), parameters))
        except ValueError as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        return SetParametersResult(successful=True)

    def _apply_parameters(self, parameters: list[Parameter]) -> None:
        """Post-set: the change is accepted; swap the typed settings in one assignment.
        Unconfigured, there is nothing to apply it to: configure reads the parameters."""
        if self._logic is None:
            return
        values = conv.updated_values(EDGE_PARAMS, self._values, parameters)
        params = edge_params(values)
        threshold_changed = params.routing.threshold != self.logic.params.routing.threshold
        self.logic.params = params
        self._values = values
        if threshold_changed:
            self._publish_label_info()

    # ------------------------------------------------------------ deadlines

    def _watch_deadlines(self) -> None:
        """Publish the fallback of every request whose deadline passed, when it passes."""
        while not self._stop.is_set():
            try:
                for result in self.logic.expire():
                    self._publish(result)
            except RuntimeError as exc:
                if not self.context.ok():
                    return  # shutting down: the publishers are gone
                self.get_logger().error(
                    f'cannot publish a fallback: {exc}', throttle_duration_sec=_THROTTLE_S
                )
            due = self.logic.next_deadline_ns()
            timeout = _IDLE_WAKE_S if due is None else (due - time.monotonic_ns()) / 1e9
            if timeout > 0:
                self._request_sent.wait(min(timeout, _IDLE_WAKE_S))
            self._request_sent.clear()  # next_deadline_ns() is read again before waiting

    # ------------------------------------------------------------ publishing

    def _send(self, requests: list[OffloadRequest], pixels: dict[Header, np.ndarray]) -> None:
        for request in requests:
            if self._annotating():
                with self._waiting_lock:
                    self._waiting[request.header] = pixels[request.header]
            if self._requests.get_subscription_count() == 0:
                self._publish(self.logic.fail(request.request_id, 'no expert node'))
                continue
            self._requests.publish(conv.request_to_ros(request))
        if requests:
            self._request_sent.set()

    def _publish(self, result: FinalResult | None, pixels: np.ndarray | None = None) -> None:
        if result is None:  # a reply for another edge, or one after the fallback
            return
        self._results.publish(conv.result_to_classification(result))
        with self._waiting_lock:
            waiting = self._waiting.pop(result.header, None)
        pixels = waiting if waiting is not None else pixels
        if pixels is not None and self._annotating():
            self._annotated.publish(conv.frame_to_image(annotate(pixels, result), result.header))

    def _annotating(self) -> bool:
        return self._values['publish_annotated'] and self._annotated.get_subscription_count() > 0

    def _publish_label_info(self) -> None:
        self._labels.publish(
            conv.label_info(
                self.logic.class_names, self._now_header(), self.logic.params.routing.threshold
            )
        )

    def _now_header(self) -> HeaderMsg:
        """For label_info and diagnostics only: results always carry the camera header."""
        return HeaderMsg(stamp=self.get_clock().now().to_msg())


def main(args: list[str] | None = None) -> int:
    return run_node(EdgeNode, NODE_NAME, args)
