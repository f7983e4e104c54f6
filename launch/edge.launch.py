"""The edge node (on the robot, e.g. a Jetson Orin Nano).

    ros2 launch ask_expert_ros edge.launch.py library:=/path/to/zoo/library.yaml \\
        image_topic:=/camera/image_raw

Parameters come from ``params_file`` (``config/edge.yaml`` by default); the arguments
named after a node parameter (``library``, ``device``, ``tau``, the patch offload ones
``offload_mode``, ``keep_ratio`` ...) override it when given. Topic names inside the
node are relative (``image``, ``classification``, ``expert/requests`` ...) and remapped
here. ``down_after_misses``, ``probe_interval_ms`` and ``offload_budget_mbps`` set how the
edge adapts to its link (answer at once while the expert is down; keep the offload
traffic under a budget by moving tau). Patch offload, a third of the patches as one JPEG
mosaic::

    ros2 launch ask_expert_ros edge.launch.py library:=... offload_mode:=patches \\
        keep_ratio:=0.3 transport:=compressed
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml
from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.launch_context import LaunchContext
from launch.launch_description import LaunchDescription
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from ask_expert_ros.ros.security import security_settings

PACKAGE = 'ask_expert_ros'
NODE = 'edge'
# launch arguments that set the node parameter of the same name (empty: the params
# file's), with the parameter's type
OVERRIDES = {
    'library': str,
    'device': str,
    'backend': str,
    'precision': str,
    'tau': float,
    'transport': str,
    'offload_mode': str,
    'keep_ratio': float,
    'attention_mass': float,
    'patch_selection': str,
    'attention_source': str,
    'down_after_misses': int,
    'probe_interval_ms': float,
    'offload_budget_mbps': float,
}


def node_section(params_file: str, node: str) -> dict:
    """The ``<node>:`` section of a ROS params file.

    rcl matches a key without a namespace (``edge:``) only to the node ``/edge``; in
    a namespace the section is passed again as a dict so it still applies.
    """
    data = yaml.safe_load(Path(params_file).read_text(encoding='utf-8')) or {}
    section: dict = {}
    for key in (node, f'/{node}'):
        section.update((data.get(key) or {}).get('ros__parameters') or {})
    return section


def edge_node(context: LaunchContext) -> list[Node]:
    def arg(name: str) -> str:
        return LaunchConfiguration(name).perform(context)

    namespace = arg('namespace').strip('/')
    params_file = arg('params_file')
    parameters: list = [params_file]
    if namespace:
        parameters.append(node_section(params_file, NODE))
    overrides = {name: kind(arg(name)) for name, kind in OVERRIDES.items() if arg(name)}
    if overrides:
        parameters.append(overrides)
    image = arg('image_topic')
    security_env, enclave_args = security_settings(
        arg('keystore'), arg('security_strategy'), arg('enclave')
    )
    return [
        Node(
            package=PACKAGE,
            executable='edge_node',
            name=NODE,
            namespace=namespace,
            parameters=parameters,
            remappings=[
                ('image', image),
                ('image/compressed', arg('compressed_topic') or f'{image}/compressed'),
                ('classification', arg('classification_topic')),
                ('annotated', arg('annotated_topic')),
                ('expert/requests', arg('requests_topic')),
                ('expert/responses', arg('responses_topic')),
            ],
            arguments=['--ros-args', '--log-level', arg('log_level'), *enclave_args],
            additional_env=security_env,
            output='screen',
            emulate_tty=True,
        )
    ]


def generate_launch_description() -> LaunchDescription:
    config = os.path.join(get_package_share_directory(PACKAGE), 'config')
    return LaunchDescription(
        [
            DeclareLaunchArgument(
                'params_file',
                default_value=os.path.join(config, 'edge.yaml'),
                description='ROS params YAML of the edge node (section "edge").',
            ),
            DeclareLaunchArgument(
                'library',
                default_value='',
                description='Model zoo manifest (library.yaml) or its folder; '
                'empty: the value in params_file.',
            ),
            DeclareLaunchArgument(
                'backend',
                default_value='',
                description='Inference runtime: auto, torch, torch_compile, onnxruntime or '
                'tensorrt; '
                "empty: the params file's (auto logs what it picked).",
            ),
            DeclareLaunchArgument(
                'precision',
                default_value='',
                description='Inference precision: auto, fp32, bf16 or fp16; '
                "empty: the params file's.",
            ),
            DeclareLaunchArgument(
                'device',
                default_value='',
                description="Torch device ('cpu', 'cuda'); empty: the value in params_file.",
            ),
            DeclareLaunchArgument(
                'tau',
                default_value='',
                description='Confidence threshold (frames below go to the expert); '
                'empty: the value in params_file.',
            ),
            DeclareLaunchArgument(
                'transport',
                default_value='',
                description='How frames (or patch mosaics) travel to the expert: raw or '
                "compressed (JPEG); empty: the params file's.",
            ),
            DeclareLaunchArgument(
                'offload_mode',
                default_value='',
                description='What an uncertain frame sends, at the expert input size: frame '
                "(all of it) or patches (those the edge attended to); empty: the params file's.",
            ),
            DeclareLaunchArgument(
                'keep_ratio',
                default_value='',
                description='Patch mode: fraction rho of the patches sent, in (0, 1]; '
                "empty: the params file's.",
            ),
            DeclareLaunchArgument(
                'attention_mass',
                default_value='',
                description='Patch mode: > 0 sends the fewest patches holding this share of '
                "the attention instead of keep_ratio; empty: the params file's.",
            ),
            DeclareLaunchArgument(
                'patch_selection',
                default_value='',
                description='Patch mode: attention, random or centre (the baselines); '
                "empty: the params file's.",
            ),
            DeclareLaunchArgument(
                'attention_source',
                default_value='',
                description='Patch mode: attention of the last block or rollout over all '
                "blocks; empty: the params file's.",
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
                'namespace',
                default_value='',
                description='Namespace of the node and its relative topics (e.g. robot1).',
            ),
            DeclareLaunchArgument(
                'image_topic',
                default_value='image',
                description='Camera sensor_msgs/Image topic the edge classifies.',
            ),
            DeclareLaunchArgument(
                'compressed_topic',
                default_value='',
                description='Camera sensor_msgs/CompressedImage topic; '
                'empty: <image_topic>/compressed (image_transport convention).',
            ),
            DeclareLaunchArgument(
                'classification_topic',
                default_value='classification',
                description='Output vision_msgs/Classification topic, one per frame.',
            ),
            DeclareLaunchArgument(
                'annotated_topic',
                default_value='annotated',
                description='Output annotated sensor_msgs/Image topic (for rviz).',
            ),
            DeclareLaunchArgument(
                'requests_topic',
                default_value='expert/requests',
                description='ExpertRequest topic; an absolute name lets several '
                'edges share one expert node.',
            ),
            DeclareLaunchArgument(
                'responses_topic',
                default_value='expert/responses',
                description='ExpertResponse topic (must match the expert node).',
            ),
            DeclareLaunchArgument(
                'keystore',
                default_value='',
                description='SROS2 keystore (scripts/create_security_keystore): run the node '
                'with DDS Security in its enclave; empty: security off.',
            ),
            DeclareLaunchArgument(
                'security_strategy',
                default_value='Enforce',
                description='With a keystore: Enforce refuses to start without the enclave, '
                'Permissive runs unsecured (ROS_SECURITY_STRATEGY).',
            ),
            DeclareLaunchArgument(
                'enclave',
                default_value='/ask_expert/edge',
                description='SROS2 enclave of the node in the keystore (--enclave).',
            ),
            DeclareLaunchArgument(
                'log_level',
                default_value='info',
                description='Log level: debug, info, warn, error or fatal.',
            ),
            OpaqueFunction(function=edge_node),
        ]
    )
