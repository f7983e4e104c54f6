"""The expert node (on the near-edge accelerator, e.g. a Jetson AGX Orin).

    ros2 launch ask_expert_ros expert.launch.py library:=/path/to/zoo/library.yaml device:=cuda

Parameters come from ``params_file`` (``config/expert.yaml`` by default); ``library``,
``device``, ``backend``, ``precision``, ``ragged`` and the queue bounds
``max_queue_per_edge`` / ``max_queued`` (fairness among edges) override it when given. Topic names
inside the node are relative (``expert/requests``, ``expert/responses``) and remapped
here.
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
NODE = 'expert'
# launch arguments for the integer node parameters of the same name (empty: the file's)
TYPED_OVERRIDES = {'max_queue_per_edge': int, 'max_queued': int}


def node_section(params_file: str, node: str) -> dict:
    """The ``<node>:`` section of a ROS params file.

    rcl matches a key without a namespace (``expert:``) only to the node ``/expert``;
    in a namespace the section is passed again as a dict so it still applies.
    """
    data = yaml.safe_load(Path(params_file).read_text(encoding='utf-8')) or {}
    section: dict = {}
    for key in (node, f'/{node}'):
        section.update((data.get(key) or {}).get('ros__parameters') or {})
    return section


def expert_node(context: LaunchContext) -> list[Node]:
    def arg(name: str) -> str:
        return LaunchConfiguration(name).perform(context)

    namespace = arg('namespace').strip('/')
    params_file = arg('params_file')
    parameters: list = [params_file]
    if namespace:
        parameters.append(node_section(params_file, NODE))
    names = ('library', 'device', 'backend', 'precision', 'ragged')
    overrides: dict = {k: arg(k) for k in names if arg(k)}
    overrides |= {k: kind(arg(k)) for k, kind in TYPED_OVERRIDES.items() if arg(k)}
    if overrides:
        parameters.append(overrides)
    security_env, enclave_args = security_settings(
        arg('keystore'), arg('security_strategy'), arg('enclave')
    )
    return [
        Node(
            package=PACKAGE,
            executable='expert_node',
            name=NODE,
            namespace=namespace,
            parameters=parameters,
            remappings=[
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
                default_value=os.path.join(config, 'expert.yaml'),
                description='ROS params YAML of the expert node (section "expert").',
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
                description="Torch device ('cpu', 'cuda', 'cuda:1'); "
                'empty: the value in params_file.',
            ),
            DeclareLaunchArgument(
                'ragged',
                default_value='',
                description='Patch requests with different patch counts in one micro-batch: '
                'pad (one call, attention mask) or group (a call per count); empty: the '
                "params file's.",
            ),
            DeclareLaunchArgument(
                'max_queue_per_edge',
                default_value='',
                description='Requests of one edge that may wait; more are answered '
                "OVERLOADED at once; empty: the params file's.",
            ),
            DeclareLaunchArgument(
                'max_queued',
                default_value='',
                description='Requests that may wait in all; beyond it the edge with the most '
                "waiting is shed first; empty: the params file's.",
            ),
            DeclareLaunchArgument(
                'namespace',
                default_value='',
                description='Namespace of the node and its relative topics.',
            ),
            DeclareLaunchArgument(
                'requests_topic',
                default_value='expert/requests',
                description='ExpertRequest topic; an absolute name (e.g. /expert/requests) '
                'serves edges in any namespace.',
            ),
            DeclareLaunchArgument(
                'responses_topic',
                default_value='expert/responses',
                description='ExpertResponse topic (edges keep only replies with their edge_id).',
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
                default_value='/ask_expert/expert',
                description='SROS2 enclave of the node in the keystore (--enclave).',
            ),
            DeclareLaunchArgument(
                'log_level',
                default_value='info',
                description='Log level: debug, info, warn, error or fatal.',
            ),
            OpaqueFunction(function=expert_node),
        ]
    )
