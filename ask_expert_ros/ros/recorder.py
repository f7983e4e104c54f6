"""The bag-replay recorder (``ros2 run ask_expert_ros recorder_node``): end-to-end latency
and accuracy of the running edge/expert graph, written as JSON.

Topics (relative; remap them at launch):

* in ``image`` (sensor_msgs/Image) or ``image/compressed`` (CompressedImage): the
  camera frames as the edge receives them; the time a frame is seen here starts its
  clock (``ros2 bag play`` keeps the bag's header stamps, so the stamp itself cannot);
* in ``expert/requests`` / ``expert/responses``: the edge and expert timing fields;
* in ``classification`` (vision_msgs/Classification): the final results;
* in ``ground_truth`` (vision_msgs/Classification, optional): labels by stamp, e.g.
  the bag's ground-truth topic played alongside the camera.

Matching and arithmetic are :class:`ask_expert_ros.core.nodes.live_metrics.LiveRecorder`'s,
the same that ``ask-expert bench --live`` uses; the JSON has the same keys as that
report's ``live`` section. It is rewritten every ``write_period_s`` and at shutdown.

Parameters: ``output`` (JSON path), ``edge_id`` (only that edge's requests; '' any),
``write_period_s``, ``compressed`` (listen on ``image/compressed``).
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

from rcl_interfaces.msg import ParameterDescriptor
from rclpy.node import Node
from sensor_msgs.msg import CompressedImage, Image
from vision_msgs.msg import Classification

from ask_expert_ros.core.nodes.live_metrics import LiveRecorder
from ask_expert_ros.msg import ExpertRequest, ExpertResponse
from ask_expert_ros.ros import conversions as conv
from ask_expert_ros.ros.node_main import run_node

NODE_NAME = 'recorder'


def _stamp_ns(header: Any) -> int:
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


class RecorderNode(Node):
    """Observes the graph and writes the live measurement (see the module docstring)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **kwargs)

        def param(name: str, default: Any, description: str) -> Any:
            return self.declare_parameter(
                name, default, ParameterDescriptor(description=description)
            ).value

        self._output = Path(param('output', 'bench_live.json', 'JSON file to write'))
        edge_id = param('edge_id', '', "count only this edge's requests ('' = any)")
        period = float(param('write_period_s', 2.0, 'seconds between JSON writes (> 0)'))
        compressed = bool(param('compressed', False, 'camera on image/compressed'))
        if period <= 0:
            raise ValueError(f'write_period_s must be > 0, got {period}')
        self.recorder = LiveRecorder(edge_id=edge_id)
        self._truth: dict[int, str] = {}
        self._truth_lock = threading.Lock()
        qos = conv.reliable_qos(100)
        camera_type = CompressedImage if compressed else Image
        camera_topic = 'image/compressed' if compressed else 'image'
        self.create_subscription(camera_type, camera_topic, self._on_image, qos)
        self.create_subscription(ExpertRequest, 'expert/requests', self._on_request, qos)
        self.create_subscription(ExpertResponse, 'expert/responses', self._on_response, qos)
        self.create_subscription(Classification, 'classification', self._on_result, qos)
        self.create_subscription(Classification, 'ground_truth', self._on_truth, qos)
        self.create_timer(period, self.write)

    def _on_image(self, msg: Any) -> None:
        self.recorder.on_frame(_stamp_ns(msg.header), time.time_ns())

    def _on_request(self, msg: Any) -> None:
        self.recorder.on_request(
            _stamp_ns(msg.header),
            time.time_ns(),
            msg.edge_id,
            msg.edge_preprocess_ms,
            msg.edge_inference_ms,
        )

    def _on_response(self, msg: Any) -> None:
        self.recorder.on_response(
            _stamp_ns(msg.header),
            msg.edge_id,
            msg.status,
            msg.queue_ms,
            msg.inference_ms,
            msg.batch_size,
        )

    def _on_result(self, msg: Any) -> None:
        label = msg.results[0].class_id if msg.results else ''
        self.recorder.on_result(_stamp_ns(msg.header), time.time_ns(), label)

    def _on_truth(self, msg: Any) -> None:
        if msg.results:
            with self._truth_lock:
                self._truth[_stamp_ns(msg.header)] = msg.results[0].class_id

    def write(self) -> None:
        """Write the summary so far (atomically: a reader never sees half a file)."""
        with self._truth_lock:
            truth = dict(self._truth) or None
        summary = self.recorder.summary(truth)
        summary['transport'] = 'ROS 2 (rclpy recorder node on the live graph)'
        summary['clock'] = 'end_to_end_ms: frame seen on image -> Classification seen, here'
        self._output.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._output.with_suffix('.tmp')
        tmp.write_text(json.dumps({'live': summary}, indent=2) + '\n', encoding='utf-8')
        tmp.replace(self._output)

    def destroy_node(self) -> None:
        self.write()
        super().destroy_node()


def main(args: list[str] | None = None) -> int:
    return run_node(RecorderNode, NODE_NAME, args)
