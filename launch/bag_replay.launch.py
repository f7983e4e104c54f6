"""Replay a recorded camera bag through edge and expert (benchmark on recorded data).

    ros2 launch ask_expert_ros bag_replay.launch.py bag:=/data/run1 \\
        bag_topic:=/camera/image_raw library:=/path/to/zoo/library.yaml

Starts ``both.launch.py`` and, once both nodes are up (``wait_ready``: each has
subscribed to its input, which a lifecycle node does once active, after configure
loaded and warmed up its models; with ``autostart:=false`` whenever a lifecycle
manager activates them),
``ros2 bag play <bag>`` with the bag's camera topic remapped into the edge's ``image``
topic (or ``image/compressed`` with ``compressed:=true``). If they are not up within
``ready_timeout_s``, the launch ends with the reason instead of playing. Results go to
``classification`` as on the robot; record them with ``ros2 bag record`` or use
``ask-expert bench`` for the offline report. ``keystore``, ``security_strategy``,
``edge_enclave`` and ``expert_enclave`` go to ``both.launch.py``: the two nodes run with
DDS Security (docs/security.md); ``ros2 bag play``, ``wait_ready`` and the recorder do
not, so with ``security_strategy:=Enforce`` and a governance that refuses
unauthenticated participants they cannot see the nodes.

With ``record:=true`` a recorder node (``recorder_node``) also watches the graph and
writes end-to-end latency (frame seen -> result), its edge / network / expert split,
drops and -- when the bag's ``label_topic`` is played too -- accuracy to
``record_output`` as JSON, the same keys as ``ask-expert bench --live``.
"""

from __future__ import annotations

from typing import Any

from ament_index_python.packages import get_package_share_directory
from launch.actions import (
    DeclareLaunchArgument,
    EmitEvent,
    ExecuteProcess,
    LogInfo,
    OpaqueFunction,
    RegisterEventHandler,
)
from launch.event_handlers import OnProcessExit
from launch.events import Shutdown
from launch.events.process import ProcessExited
from launch.launch_context import LaunchContext
from launch.launch_description import LaunchDescription
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from ask_expert_ros.launch_common import (
    BOTH_ARGUMENTS,
    FORWARDED_TO_BOTH,
    PACKAGE,
    autostart_argument,
    include,
    parameter_arguments,
    params_file_arguments,
    security_arguments,
)


def in_namespace(namespace: str, name: str) -> str:
    """The absolute name of node or topic ``name`` in ``namespace``."""
    return '/' + '/'.join(p for p in (namespace.strip('/'), name) if p)


def edge_input_topic(namespace: str, compressed: bool) -> str:
    """The absolute name of the edge's camera input in ``namespace``."""
    return in_namespace(namespace, 'image/compressed' if compressed else 'image')


def _true(text: str) -> bool:
    return text.lower() in ('true', '1', 'yes')


def ground_truth_topic(namespace: str) -> str:
    """The absolute name the recorder reads ground truth from in ``namespace``."""
    return in_namespace(namespace, 'ground_truth')


def bag_play(context: LaunchContext) -> list[ExecuteProcess | Node | RegisterEventHandler]:
    def arg(name: str) -> str:
        return LaunchConfiguration(name).perform(context)

    compressed = _true(arg('compressed'))
    record = _true(arg('record'))
    target = edge_input_topic(arg('namespace'), compressed)
    cmd = ['ros2', 'bag', 'play', arg('bag'), '--rate', arg('rate')]
    topics = [arg('bag_topic')]
    remaps = [f'{arg("bag_topic")}:={target}']
    if record and arg('label_topic'):
        topics.append(arg('label_topic'))
        remaps.append(f'{arg("label_topic")}:={ground_truth_topic(arg("namespace"))}')
    cmd += ['--topics', *topics, '--remap', *remaps]
    if float(arg('start_delay_s')) > 0:
        cmd += ['--delay', arg('start_delay_s')]
    if arg('loop').lower() in ('true', '1', 'yes'):
        cmd.append('--loop')
    play = ExecuteProcess(cmd=cmd, output='screen', name='bag_play')
    namespace = arg('namespace')
    gate = ExecuteProcess(
        cmd=[
            'ros2',
            'run',
            PACKAGE,
            'wait_ready',
            '--timeout',
            arg('ready_timeout_s'),
            f'{in_namespace(namespace, "edge")}={target}',
            f'{in_namespace(namespace, "expert")}={in_namespace(namespace, "expert/requests")}',
        ],
        output='screen',
        name='wait_ready',
    )

    def after_gate(event: ProcessExited, _: LaunchContext) -> list[Any]:
        if event.returncode == 0:
            return [play]
        return [
            LogInfo(msg='bag_replay: the nodes did not come up (see wait_ready); not playing'),
            EmitEvent(event=Shutdown(reason='edge or expert node not ready')),
        ]

    actions: list[ExecuteProcess | Node | RegisterEventHandler] = [
        gate,
        RegisterEventHandler(OnProcessExit(target_action=gate, on_exit=after_gate)),
    ]
    if record:
        actions.append(
            Node(
                package=PACKAGE,
                executable='recorder_node',
                name='recorder',
                namespace=arg('namespace'),
                output='screen',
                parameters=[{'output': arg('record_output'), 'compressed': compressed}],
            )
        )
    return actions


def generate_launch_description() -> LaunchDescription:
    share = get_package_share_directory(PACKAGE)
    return LaunchDescription(
        [
            DeclareLaunchArgument(
                'bag', description='rosbag2 folder (sqlite3 or mcap) holding camera frames.'
            ),
            DeclareLaunchArgument(
                'bag_topic',
                default_value='/image',
                description='The camera topic as recorded in the bag (absolute name).',
            ),
            DeclareLaunchArgument(
                'compressed',
                default_value='false',
                description='true: bag_topic holds sensor_msgs/CompressedImage and goes to '
                "the edge's image/compressed; false: sensor_msgs/Image to image.",
            ),
            DeclareLaunchArgument(
                'rate', default_value='1.0', description='Playback rate factor (> 0).'
            ),
            DeclareLaunchArgument(
                'start_delay_s',
                default_value='1.0',
                description='Seconds ros2 bag play waits before the first frame, after '
                'both nodes are up.',
            ),
            DeclareLaunchArgument(
                'ready_timeout_s',
                default_value='600',
                description='Seconds to wait for the edge and expert nodes to load their '
                'models and subscribe; past it the launch ends without playing.',
            ),
            DeclareLaunchArgument(
                'loop', default_value='false', description='true: replay the bag forever.'
            ),
            DeclareLaunchArgument(
                'record',
                default_value='false',
                description='true: start recorder_node, which writes end-to-end latency, '
                'its split, drops and accuracy to record_output as JSON.',
            ),
            DeclareLaunchArgument(
                'record_output',
                default_value='bench_live.json',
                description='JSON file the recorder writes (with record:=true).',
            ),
            DeclareLaunchArgument(
                'label_topic',
                default_value='/ground_truth',
                description='Ground-truth vision_msgs/Classification topic in the bag, '
                'played to the recorder with record:=true; empty: no accuracy.',
            ),
            DeclareLaunchArgument(
                'namespace',
                default_value='',
                description='Namespace of both nodes; the bag is remapped into it.',
            ),
            *params_file_arguments(share),
            *parameter_arguments(BOTH_ARGUMENTS),
            *security_arguments(['edge', 'expert']),
            autostart_argument(),
            include(share, 'both.launch.py', {name: name for name in FORWARDED_TO_BOTH}),
            OpaqueFunction(function=bag_play),
        ]
    )
