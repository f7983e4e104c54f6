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
from launch.actions import (
    DeclareLaunchArgument,
    GroupAction,
    IncludeLaunchDescription,
    SetEnvironmentVariable,
)
from launch.launch_description import LaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import EnvironmentVariable, LaunchConfiguration

PACKAGE = 'ask_expert_ros'


def generate_launch_description() -> LaunchDescription:
    share = get_package_share_directory(PACKAGE)

    def include(name: str, arguments: dict[str, str]) -> GroupAction:
        """``launch/<name>`` with ``arguments``, scoped so its settings stay inside."""
        source = PythonLaunchDescriptionSource(os.path.join(share, 'launch', name))
        values = {k: LaunchConfiguration(v) for k, v in arguments.items()}
        return GroupAction(
            [IncludeLaunchDescription(source, launch_arguments=values.items())], scoped=True
        )

    common = {
        'library': 'library',
        'namespace': 'namespace',
        'log_level': 'log_level',
        'keystore': 'keystore',
        'security_strategy': 'security_strategy',
    }
    return LaunchDescription(
        [
            DeclareLaunchArgument(
                'library',
                default_value='',
                description='Model zoo manifest (library.yaml) or its folder, for both '
                'nodes; empty: the values in the params files.',
            ),
            DeclareLaunchArgument(
                'namespace',
                default_value='',
                description='Namespace of both nodes and their relative topics.',
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
                'edge_device',
                default_value='',
                description="Torch device of the edge model; empty: the params file's.",
            ),
            DeclareLaunchArgument(
                'expert_device',
                default_value='',
                description="Torch device of the experts; empty: the params file's.",
            ),
            DeclareLaunchArgument(
                'edge_backend',
                default_value='',
                description="Inference runtime of the edge node; empty: the params file's.",
            ),
            DeclareLaunchArgument(
                'edge_precision',
                default_value='',
                description="Inference precision of the edge node; empty: the params file's.",
            ),
            DeclareLaunchArgument(
                'expert_backend',
                default_value='',
                description="Inference runtime of the expert node; empty: the params file's.",
            ),
            DeclareLaunchArgument(
                'expert_precision',
                default_value='',
                description="Inference precision of the expert node; empty: the params file's.",
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
                description='Expert misses in a row after which the edge answers uncertain '
                "frames itself at once and only probes (0: never); empty: the params file's.",
            ),
            DeclareLaunchArgument(
                'probe_interval_ms',
                default_value='',
                description='While the expert is down, one frame per this long goes as a '
                "probe, milliseconds; empty: the params file's.",
            ),
            DeclareLaunchArgument(
                'offload_budget_mbps',
                default_value='',
                description='Offload bandwidth budget, Mbit/s: > 0 moves tau online to stay '
                "under it, 0 off; empty: the params file's.",
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
            DeclareLaunchArgument(
                'image_topic',
                default_value='image',
                description='Camera sensor_msgs/Image topic the edge classifies.',
            ),
            DeclareLaunchArgument(
                'keystore',
                default_value='',
                description='SROS2 keystore (scripts/create_security_keystore): both nodes run '
                'with DDS Security in their enclaves; empty: security off.',
            ),
            DeclareLaunchArgument(
                'security_strategy',
                default_value='Enforce',
                description='With a keystore: Enforce refuses to start without the enclaves, '
                'Permissive runs unsecured (ROS_SECURITY_STRATEGY).',
            ),
            DeclareLaunchArgument(
                'edge_enclave',
                default_value='/ask_expert/edge',
                description='SROS2 enclave of the edge node in the keystore.',
            ),
            DeclareLaunchArgument(
                'expert_enclave',
                default_value='/ask_expert/expert',
                description='SROS2 enclave of the expert node in the keystore.',
            ),
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
            include(
                'expert.launch.py',
                common
                | {
                    'params_file': 'expert_params_file',
                    'enclave': 'expert_enclave',
                    'device': 'expert_device',
                    'backend': 'expert_backend',
                    'precision': 'expert_precision',
                    'ragged': 'ragged',
                    'max_queue_per_edge': 'max_queue_per_edge',
                    'max_queued': 'max_queued',
                },
            ),
            include(
                'edge.launch.py',
                common
                | {
                    'params_file': 'edge_params_file',
                    'enclave': 'edge_enclave',
                    'device': 'edge_device',
                    'backend': 'edge_backend',
                    'precision': 'edge_precision',
                    'tau': 'tau',
                    'image_topic': 'image_topic',
                    'transport': 'transport',
                    'offload_mode': 'offload_mode',
                    'keep_ratio': 'keep_ratio',
                    'attention_mass': 'attention_mass',
                    'patch_selection': 'patch_selection',
                    'attention_source': 'attention_source',
                    'down_after_misses': 'down_after_misses',
                    'probe_interval_ms': 'probe_interval_ms',
                    'offload_budget_mbps': 'offload_budget_mbps',
                },
            ),
        ]
    )
