"""Replay a recorded camera bag through edge and expert (benchmark on recorded data).

    ros2 launch ask_expert_ros bag_replay.launch.py bag:=/data/run1 \\
        bag_topic:=/camera/image_raw library:=/path/to/zoo/library.yaml

Starts ``both.launch.py`` and, once both nodes are up (``wait_ready``: each has
subscribed to its input, which it does after loading and warming up its models),
``ros2 bag play <bag>`` with the bag's camera topic remapped into the edge's ``image``
topic (or ``image/compressed`` with ``compressed:=true``). If they are not up within
``ready_timeout_s``, the launch ends with the reason instead of playing. Results go to
``classification`` as on the robot; record them with ``ros2 bag record`` or use
``ask-expert bench`` for the offline report.

With ``record:=true`` a recorder node (``recorder_node``) also watches the graph and
writes end-to-end latency (frame seen -> result), its edge / network / expert split,
drops and -- when the bag's ``label_topic`` is played too -- accuracy to
``record_output`` as JSON, the same keys as ``ask-expert bench --live``.
"""

from __future__ import annotations

import os
from typing import Any

from ament_index_python.packages import get_package_share_directory
from launch.actions import (
    DeclareLaunchArgument,
    EmitEvent,
    ExecuteProcess,
    IncludeLaunchDescription,
    LogInfo,
    OpaqueFunction,
    RegisterEventHandler,
)
from launch.event_handlers import OnProcessExit
from launch.events import Shutdown
from launch.events.process import ProcessExited
from launch.launch_context import LaunchContext
from launch.launch_description import LaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

PACKAGE = 'ask_expert_ros'


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
    both = PythonLaunchDescriptionSource(os.path.join(share, 'launch', 'both.launch.py'))
    forwarded = (
        'library',
        'namespace',
        'edge_params_file',
        'expert_params_file',
        'tau',
        'transport',
        'offload_mode',
        'keep_ratio',
        'attention_mass',
        'patch_selection',
        'attention_source',
        'ragged',
        'down_after_misses',
        'probe_interval_ms',
        'offload_budget_mbps',
        'max_queue_per_edge',
        'max_queued',
    )
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
                'library',
                default_value='',
                description='Model zoo manifest (library.yaml) or its folder, for both nodes.',
            ),
            DeclareLaunchArgument(
                'namespace',
                default_value='',
                description='Namespace of both nodes; the bag is remapped into it.',
            ),
            DeclareLaunchArgument(
                'edge_params_file',
                default_value=os.path.join(share, 'config', 'edge.yaml'),
                description='ROS params YAML of the edge node.',
            ),
            DeclareLaunchArgument(
                'expert_params_file',
                default_value=os.path.join(share, 'config', 'expert.yaml'),
                description='ROS params YAML of the expert node.',
            ),
            DeclareLaunchArgument(
                'tau',
                default_value='',
                description="Edge confidence threshold; empty: the params file's.",
            ),
            DeclareLaunchArgument(
                'transport',
                default_value='',
                description='How the edge sends frames or patches: raw or compressed; empty: '
                "the params file's.",
            ),
            DeclareLaunchArgument(
                'offload_mode',
                default_value='',
                description="Edge offload: frame or patches; empty: the params file's.",
            ),
            DeclareLaunchArgument(
                'keep_ratio',
                default_value='',
                description='Patch mode: fraction rho of the patches sent; empty: the params '
                "file's.",
            ),
            DeclareLaunchArgument(
                'attention_mass',
                default_value='',
                description='Patch mode: > 0 selects by this attention mass instead of rho; '
                "empty: the params file's.",
            ),
            DeclareLaunchArgument(
                'patch_selection',
                default_value='',
                description="Patch mode: attention, random or centre; empty: the params file's.",
            ),
            DeclareLaunchArgument(
                'attention_source',
                default_value='',
                description="Patch mode: last or rollout attention; empty: the params file's.",
            ),
            DeclareLaunchArgument(
                'ragged',
                default_value='',
                description='Expert: patch requests of different lengths pad or group; '
                "empty: the params file's.",
            ),
            DeclareLaunchArgument(
                'down_after_misses',
                default_value='',
                description='Edge: expert misses in a row before it answers at once and '
                "probes (0: never); empty: the params file's.",
            ),
            DeclareLaunchArgument(
                'probe_interval_ms',
                default_value='',
                description='Edge: probe period while the expert is down, ms; empty: the '
                "params file's.",
            ),
            DeclareLaunchArgument(
                'offload_budget_mbps',
                default_value='',
                description='Edge: offload bandwidth budget, Mbit/s (tau moves to fit; 0 '
                "off); empty: the params file's.",
            ),
            DeclareLaunchArgument(
                'max_queue_per_edge',
                default_value='',
                description="Expert: requests one edge may queue; empty: the params file's.",
            ),
            DeclareLaunchArgument(
                'max_queued',
                default_value='',
                description="Expert: requests that may wait in all; empty: the params file's.",
            ),
            IncludeLaunchDescription(
                both, launch_arguments={k: LaunchConfiguration(k) for k in forwarded}.items()
            ),
            OpaqueFunction(function=bag_play),
        ]
    )
