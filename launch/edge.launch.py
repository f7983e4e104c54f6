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

from ament_index_python.packages import get_package_share_directory
from launch.action import Action
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.launch_context import LaunchContext
from launch.launch_description import LaunchDescription
from launch.substitutions import LaunchConfiguration

from ask_expert_ros.launch_common import (
    EDGE_ARGUMENTS,
    PACKAGE,
    launch_node,
    node_arguments,
    parameter_arguments,
)


def edge_node(context: LaunchContext) -> list[Action]:
    def arg(name: str) -> str:
        return LaunchConfiguration(name).perform(context)

    image = arg('image_topic')
    remappings = {
        'image': image,
        'image/compressed': arg('compressed_topic') or f'{image}/compressed',
        'classification': arg('classification_topic'),
        'annotated': arg('annotated_topic'),
        'expert/requests': arg('requests_topic'),
        'expert/responses': arg('responses_topic'),
    }
    return launch_node(context, 'edge', EDGE_ARGUMENTS, remappings)


def generate_launch_description() -> LaunchDescription:
    share = get_package_share_directory(PACKAGE)
    return LaunchDescription(
        [
            *node_arguments('edge', share),
            *parameter_arguments(EDGE_ARGUMENTS),
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
            OpaqueFunction(function=edge_node),
        ]
    )
