"""One front of the fleet's expert library, on one accelerator box (issue 21).

The topology: one Ray cluster over the accelerator boxes holds the library as one Ray
Serve application (replicas on every box's accelerators, experts loaded on demand);
each box runs one expert node as the front of its group of robots. The robots of group
``box`` send to ``/<box>/expert/requests`` and read ``/<box>/expert/responses`` (their
edge.launch.py's ``requests_topic`` / ``responses_topic``), so each request reaches one
front: DDS gives a sample to every subscriber, and two fronts on one topic would both
answer it. Any front's calls run on any box's replicas (the router prefers replicas
holding the key), so a hot key's load spreads over the cluster, and a front that dies
only costs its own group the expert until it is back (its robots fall back to their
edge answers meanwhile).

    # the head box (its front deploys the application)
    ray start --head --num-gpus=1
    ros2 launch ask_expert_ros fleet.launch.py box:=box1 library:=/srv/zoo/library.yaml \\
        ray_replica_gpus:=1 device:=cuda ray_replicas:=2
    # every other box (joins the cluster; its front attaches to the running application)
    ray start --address=box1:6379 --num-gpus=1
    ros2 launch ask_expert_ros fleet.launch.py box:=box2 library:=/srv/zoo/library.yaml \\
        params_file:=/srv/expert_attach.yaml   # its expert section: ray_deploy: false

``serving`` defaults to ``ray`` and ``ray_address`` to ``auto`` here (the cluster this
box joined with ``ray start``), the node's namespace to ``box``. The library path must be
the same on every box (a shared or synced directory).
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
    launch_node,
    node_arguments,
    parameter_arguments,
)


def fleet_front(context: LaunchContext) -> list[Action]:
    box = LaunchConfiguration('box').perform(context).strip('/')
    if not box:
        raise ValueError('fleet.launch.py: give box:=<name> (the robot group this front serves)')
    # a front of the cluster's application unless told otherwise
    defaults = {'serving': 'ray', 'ray_address': 'auto', 'namespace': box}
    for name, value in defaults.items():
        if not LaunchConfiguration(name).perform(context):
            context.launch_configurations[name] = value
    remappings = {
        'expert/requests': f'/{box}/expert/requests',
        'expert/responses': f'/{box}/expert/responses',
    }
    return launch_node(context, 'expert', EXPERT_ARGUMENTS, remappings)


def generate_launch_description() -> LaunchDescription:
    share = get_package_share_directory('ask_expert_ros')
    return LaunchDescription(
        [
            *node_arguments('expert', share),
            *parameter_arguments(EXPERT_ARGUMENTS),
            DeclareLaunchArgument(
                'box',
                default_value='',
                description='Name of this accelerator box and of the robot group it fronts: '
                'the node serves /<box>/expert/requests and answers on '
                '/<box>/expert/responses.',
            ),
            OpaqueFunction(function=fleet_front),
        ]
    )
