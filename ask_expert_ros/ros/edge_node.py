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
from rclpy.node import Node
from rclpy.parameter import Parameter
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header as HeaderMsg
from vision_msgs.msg import Classification, LabelInfo

from ask_expert_ros.core.errors import UnsupportedImageError
from ask_expert_ros.core.inference.backends import release_openmp_threads
from ask_expert_ros.core.nodes.annotate import annotate
from ask_expert_ros.core.nodes.batch_worker import BatchWorker
from ask_expert_ros.core.nodes.diagnostics import HealthMonitor, offload_settings
from ask_expert_ros.core.nodes.messages import FinalResult, Frame, Header, OffloadRequest
from ask_expert_ros.core.nodes.node_config import EDGE_PARAMS, build_edge_logic, edge_params
from ask_expert_ros.msg import ExpertRequest, ExpertResponse
from ask_expert_ros.ros import conversions as conv
from ask_expert_ros.ros.node_main import run_node

NODE_NAME = 'edge'
# The deadline watcher wakes at least this often with nothing pending, to notice shutdown.
_IDLE_WAKE_S = 1.0
_THROTTLE_S = 5.0


class EdgeNode(Node):
    """The edge node. Keyword arguments go to :class:`rclpy.node.Node` (e.g. ``context``,
    ``namespace``, ``parameter_overrides``).

    Raises:
        ParameterException, ValueError, AskExpertError, OSError: Bad parameters or an
            unusable model library; the node cannot start.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **kwargs)
        self._values = conv.declare_parameters(self, EDGE_PARAMS)
        self.logic = build_edge_logic(self._values)
        self.get_logger().info(f'edge model runs on {self.logic.stage.backend.describe()}')
        self._values['edge_id'] = self.logic.params.edge_id
        values = self._values
        self._request_sent = threading.Event()
        self._stop = threading.Event()
        self._watcher = threading.Thread(target=self._watch_deadlines, name='edge-deadlines')
        self._inference: BatchWorker[Frame] = BatchWorker(
            self._handle_frames,
            max_queued=self._values['image_qos_depth'],
            name='edge-inference',
            on_error=self._on_inference_error,
        )

        camera_group = MutuallyExclusiveCallbackGroup()
        io_group = MutuallyExclusiveCallbackGroup()
        qos = conv.image_qos(values['image_qos_reliability'], values['image_qos_depth'])
        self.create_subscription(Image, 'image', self._on_image, qos, callback_group=camera_group)
        self.create_subscription(
            CompressedImage,
            'image/compressed',
            self._on_compressed,
            qos,
            callback_group=camera_group,
        )
        self.create_subscription(
            ExpertResponse,
            'expert/responses',
            self._on_response,
            conv.reliable_qos(values['response_qos_depth']),
            callback_group=io_group,
        )
        self._requests = self.create_publisher(
            ExpertRequest, 'expert/requests', conv.reliable_qos(values['request_qos_depth'])
        )
        self._results = self.create_publisher(
            Classification, 'classification', conv.reliable_qos(values['response_qos_depth'])
        )
        # REP-2003: publishers reliable; rviz (best effort or reliable) matches either way
        self._annotated = self.create_publisher(Image, 'annotated', conv.reliable_qos(5))
        self._labels = self.create_publisher(LabelInfo, 'label_info', conv.latched_qos())
        self._diagnostics = self.create_publisher(DiagnosticArray, '/diagnostics', 10)

        # pixels of frames waiting for the expert, for the annotated image of their result
        self._waiting: dict[Header, np.ndarray] = {}
        self._waiting_lock = threading.Lock()
        self._monitor = HealthMonitor(
            f'ask_expert: edge {self.logic.params.edge_id}', socket.gethostname()
        )
        self.create_timer(
            values['diagnostics_period_s'], self._on_diagnostics_timer, callback_group=io_group
        )
        self._publish_label_info()
        conv.add_parameter_callbacks(self, self._check_parameters, self._apply_parameters)
        # the model was warmed up on this thread; the inference thread runs it: without
        # this, this thread's idle OpenMP pool makes its every op wait (2.5x slower)
        release_openmp_threads()
        self._inference.start()
        self._watcher.start()
        self.get_logger().info(
            f'edge {self.logic.params.edge_id}: scheme {self.logic.stage.scheme.name!r}, '
            f'{len(self.logic.class_names)} classes, tau={self.logic.params.routing.tau}, '
            f'device {self.logic.stage.device}'
        )

    # ------------------------------------------------------------ callbacks

    def _on_image(self, msg: Image) -> None:
        self._on_frame(msg, conv.image_to_frame)

    def _on_compressed(self, msg: CompressedImage) -> None:
        self._on_frame(msg, conv.compressed_to_frame)

    def _on_frame(self, msg: Image | CompressedImage, decode: Callable[[Any], Frame]) -> None:
        try:
            frame = decode(msg)
        except UnsupportedImageError as exc:
            self.get_logger().warning(f'bad frame: {exc}', throttle_duration_sec=_THROTTLE_S)
            self._publish(self.logic.reject(conv.header_to_core(msg.header), str(exc)))
            return
        self._inference.put(frame)  # refused only while the node shuts down

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
        counters = self.logic.counters.as_dict() | {'pending': self.logic.pending_count}
        settings = offload_settings(self.logic.params) | self.logic.link_status()
        record = self._monitor.update(counters, time.monotonic(), settings)
        self._diagnostics.publish(conv.diagnostics_to_ros([record], self._now_header()))

    def _check_parameters(self, parameters: list[Parameter]) -> SetParametersResult:
        """On-set: validate the whole change; nothing changes yet (rclpy may still refuse)."""
        try:
            edge_params(conv.updated_values(EDGE_PARAMS, self._values, parameters))
        except ValueError as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        return SetParametersResult(successful=True)

    def _apply_parameters(self, parameters: list[Parameter]) -> None:
        """Post-set: the change is accepted; swap the typed settings in one assignment."""
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

    def destroy_node(self) -> None:
        """Answer the frames still queued, stop the deadline watcher, then go."""
        self._inference.stop()
        self._stop.set()
        self._request_sent.set()
        if self._watcher.is_alive():
            self._watcher.join()
        super().destroy_node()

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
