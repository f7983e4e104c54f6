"""recorder_node: packaging checks here always; the node itself only with rclpy.

Its measurement logic is :class:`~ask_expert_ros.core.nodes.live_metrics.LiveRecorder`,
tested without ROS in ``test_live_metrics.py``.
"""

from __future__ import annotations

import ast
import json
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_recorder_is_installed_and_launched() -> None:
    assert 'scripts/recorder_node' in (ROOT / 'CMakeLists.txt').read_text()
    assert (ROOT / 'scripts' / 'recorder_node').stat().st_mode & 0o111
    launch = (ROOT / 'launch' / 'bag_replay.launch.py').read_text()
    tree = ast.parse(launch)
    declared = {
        node.args[0].value
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and getattr(node.func, 'id', '') == 'DeclareLaunchArgument'
        and isinstance(node.args[0], ast.Constant)
    }
    assert {'record', 'record_output', 'label_topic'} <= declared
    assert "executable='recorder_node'" in launch


def test_recorder_node_measures_a_frame(tmp_path: Path) -> None:
    rclpy = pytest.importorskip(
        'rclpy', reason='rclpy not importable: source a ROS 2 Humble/Jazzy setup.bash'
    )
    pytest.importorskip(
        'ask_expert_ros.msg',
        reason='ask_expert_ros.msg not generated: colcon build this package and source '
        'install/setup.bash',
    )
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.parameter import Parameter
    from sensor_msgs.msg import Image
    from vision_msgs.msg import Classification, ObjectHypothesis

    from ask_expert_ros.ros import conversions as conv
    from ask_expert_ros.ros.recorder import RecorderNode

    out = tmp_path / 'live.json'
    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        node = RecorderNode(
            context=context,
            namespace='/rec_test',
            parameter_overrides=[Parameter('output', value=str(out))],
        )
        pub_node = rclpy.create_node('rec_test_pub', namespace='/rec_test', context=context)
        image = pub_node.create_publisher(Image, 'image', conv.reliable_qos(10))
        result = pub_node.create_publisher(Classification, 'classification', conv.reliable_qos(10))
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(node)
        executor.add_node(pub_node)
        deadline = time.monotonic() + 10
        while image.get_subscription_count() == 0 and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
        msg = Image(height=1, width=1, encoding='mono8', step=1, data=[7])
        msg.header.stamp.sec = 5
        image.publish(msg)
        while node.recorder.frames_seen == 0 and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
        res = Classification(header=msg.header, results=[ObjectHypothesis(class_id='a')])
        result.publish(res)
        while node.recorder.results_seen == 0 and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
        node.destroy_node()
        pub_node.destroy_node()
    finally:
        rclpy.try_shutdown(context=context)
    live = json.loads(out.read_text())['live']
    assert live['frames_sent'] == live['results'] == 1 and live['dropped'] == 0
    assert live['latency_ms']['max'] > 0
