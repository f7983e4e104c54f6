"""Edge and expert node on one machine (development, benchmarks, a single big board).

    ros2 launch ask_expert_ros both.launch.py library:=/path/to/zoo/library.yaml
    ros2 launch ask_expert_ros both.launch.py library:=... keystore:=/path/to/keystore

With ``keystore`` both nodes run with DDS Security (SROS2) in their enclaves
(``edge_enclave``, ``expert_enclave``); see docs/security.md.

Includes ``edge.launch.py`` and ``expert.launch.py`` in the same namespace, so the
edge's ``expert/requests`` and ``expert/responses`` meet the expert's.

The two nodes share the machine's cores, so each gets ``threads_per_node`` CPU threads
(``OMP_NUM_THREADS``; default half the cores, or what the environment says). Measured
on 2 cores, a 30 Hz bag of 540 frames, DeiT-3H edge and DeiT-4H experts at 224²,
every frame offloaded: with torch's default (2 threads each, OpenMP spinning) the two
processes starved each other, 152 frames were answered and the camera QoS dropped the
rest, p50 1.4 s; with ``OMP_WAIT_POLICY=PASSIVE`` 540/540, p50 126 ms, p95 229 ms; with
1 thread each 540/540, p50 58 ms, p95 77 ms.
"""

from __future__ import annotations

import os

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument, SetEnvironmentVariable
from launch.launch_description import LaunchDescription
from launch.substitutions import EnvironmentVariable, LaunchConfiguration

from ask_expert_ros.launch_common import (
    BOTH_ARGUMENTS,
    PACKAGE,
    autostart_argument,
    include,
    included_arguments,
    parameter_arguments,
    params_file_arguments,
    security_arguments,
)


def generate_launch_description() -> LaunchDescription:
    share = get_package_share_directory(PACKAGE)
    return LaunchDescription(
        [
            DeclareLaunchArgument(
                'namespace',
                default_value='',
                description='Namespace of both nodes and their relative topics.',
            ),
            *params_file_arguments(share),
            *parameter_arguments(BOTH_ARGUMENTS),
            DeclareLaunchArgument(
                'image_topic',
                default_value='image',
                description='Camera sensor_msgs/Image topic the edge classifies.',
            ),
            *security_arguments(['edge', 'expert']),
            autostart_argument(),
            DeclareLaunchArgument(
                'log_level',
                default_value='info',
                description='Log level of both nodes: debug, info, warn, error or fatal.',
            ),
            DeclareLaunchArgument(
                'threads_per_node',
                default_value=EnvironmentVariable(
                    'OMP_NUM_THREADS', default_value=str(max(1, (os.cpu_count() or 2) // 2))
                ),
                description='CPU threads of each node (OMP_NUM_THREADS): the two share the '
                'cores; default $OMP_NUM_THREADS, else half the cores.',
            ),
            SetEnvironmentVariable('OMP_NUM_THREADS', LaunchConfiguration('threads_per_node')),
            include(share, 'expert.launch.py', included_arguments('expert')),
            include(
                share,
                'edge.launch.py',
                included_arguments('edge') | {'image_topic': 'image_topic'},
            ),
        ]
    )
