"""The expert node (on the near-edge accelerator, e.g. a Jetson AGX Orin).

    ros2 launch ask_expert_ros expert.launch.py library:=/path/to/zoo/library.yaml device:=cuda

Parameters come from ``params_file`` (``config/expert.yaml`` by default); ``library``,
``device``, ``backend``, ``precision``, ``ragged`` and the queue bounds
``max_queue_per_edge`` / ``max_queued`` (fairness among edges) override it when given. Topic names
inside the node are relative (``expert/requests``, ``expert/responses``) and remapped
here.
"""

from __future__ import annotations

from ament_index_python.packages import get_package_share_directory
from launch.action import Action
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.launch_context import LaunchContext
from launch.launch_description import LaunchDescription
from launch.substitutions import LaunchConfiguration

from ask_expert_ros.launch_common import (
    EXPERT_ARGUMENTS,
    PACKAGE,
    launch_node,
    node_arguments,
    parameter_arguments,
)


def expert_node(context: LaunchContext) -> list[Action]:
    def arg(name: str) -> str:
        return LaunchConfiguration(name).perform(context)

    remappings = {
        'expert/requests': arg('requests_topic'),
        'expert/responses': arg('responses_topic'),
    }
    return launch_node(context, 'expert', EXPERT_ARGUMENTS, remappings)


def generate_launch_description() -> LaunchDescription:
    share = get_package_share_directory(PACKAGE)
    return LaunchDescription(
        [
            *node_arguments('expert', share),
            *parameter_arguments(EXPERT_ARGUMENTS),
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
            OpaqueFunction(function=expert_node),
        ]
    )
