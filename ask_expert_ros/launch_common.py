"""What the launch files share (as ``nav2_common`` is for Nav2), installed with the package.

``launch/edge.launch.py`` and ``launch/expert.launch.py`` start one node each;
``both.launch.py`` includes the two and ``bag_replay.launch.py`` includes ``both``. They
declare the same arguments -- those named after a node parameter (``library``, ``tau``,
the patch offload ones ...), the params file, namespace, log level and SROS2 settings --
and build their node the same way; all of that lives here, once.

The tables (:data:`PARAMETER_ARGUMENTS` and friends) import without ROS, for the tests;
the functions that build launch actions need ``launch`` and ``launch_ros`` (a ROS 2
install), which ``ros2 launch`` always has. The nodes are lifecycle nodes: by default
(``autostart:=true``) the launch files configure and then activate them through
lifecycle events; ``autostart:=false`` leaves them unconfigured for a lifecycle manager.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from ask_expert_ros.ros.security import security_settings

try:
    from launch.action import Action
    from launch.actions import (
        DeclareLaunchArgument,
        EmitEvent,
        GroupAction,
        IncludeLaunchDescription,
        RegisterEventHandler,
    )
    from launch.events import matches_action
    from launch.launch_context import LaunchContext
    from launch.launch_description_sources import PythonLaunchDescriptionSource
    from launch.substitutions import LaunchConfiguration
    from launch_ros.actions import LifecycleNode
    from launch_ros.event_handlers import OnStateTransition
    from launch_ros.events.lifecycle import ChangeState
    from lifecycle_msgs.msg import Transition
except ImportError:  # no ROS 2 here: the tables still import (tests, docs)
    pass

PACKAGE = 'ask_expert_ros'
_FILES = "empty: the params file's."

# launch argument named after a node parameter -> (the parameter's type, what it does);
# empty (the default) leaves the params file's value
PARAMETER_ARGUMENTS: dict[str, tuple[type, str]] = {
    'library': (str, 'Model zoo manifest (library.yaml) or its folder;'),
    'device': (str, "Torch device ('cpu', 'cuda', 'cuda:1');"),
    'backend': (
        str,
        'Inference runtime: auto, torch, torch_compile, onnxruntime or tensorrt (auto logs '
        'what it picked);',
    ),
    'precision': (str, 'Inference precision: auto, fp32, bf16 or fp16;'),
    'tau': (float, 'Confidence threshold (frames below go to the expert);'),
    'transport': (
        str,
        'How frames (or patch mosaics) travel to the expert: raw or compressed (JPEG);',
    ),
    'offload_mode': (
        str,
        'What an uncertain frame sends, at the expert input size: frame (all of it) or '
        'patches (those the edge attended to);',
    ),
    'keep_ratio': (float, 'Patch mode: fraction rho of the patches sent, in (0, 1];'),
    'attention_mass': (
        float,
        'Patch mode: > 0 sends the fewest patches holding this share of the attention '
        'instead of keep_ratio;',
    ),
    'patch_selection': (str, 'Patch mode: attention, random or centre (the baselines);'),
    'attention_source': (
        str,
        'Patch mode: attention of the last block or rollout over all blocks;',
    ),
    'down_after_misses': (
        int,
        'Expert misses in a row after which the edge answers uncertain frames itself at '
        'once and only probes (0: never);',
    ),
    'probe_interval_ms': (
        float,
        'While the expert is down, one frame per this long goes as a probe, milliseconds;',
    ),
    'offload_budget_mbps': (
        float,
        'Offload bandwidth budget, Mbit/s: > 0 moves tau online to stay under it, 0 off;',
    ),
    'ragged': (
        str,
        'Patch requests with different patch counts in one micro-batch: pad (one call, '
        'attention mask) or group (a call per count);',
    ),
    'max_queue_per_edge': (
        int,
        'Requests of one edge that may wait; more are answered OVERLOADED at once;',
    ),
    'max_queued': (
        int,
        'Requests that may wait in the expert in all; beyond it the edge with the most '
        'waiting is shed first;',
    ),
    'max_rate_per_edge': (
        float,
        'Requests/s one edge may send to the expert; more are answered OVERLOADED on '
        'arrival; 0 no quota;',
    ),
    'max_resident': (
        int,
        'Experts kept loaded (with serving ray: per replica), least recently used out; 0 all;',
    ),
    'serving': (
        str,
        'Where the experts run: local (in the node) or ray (a Ray Serve application the '
        'node fronts);',
    ),
    'ray_address': (
        str,
        "serving ray: the Ray cluster to join ('auto', 'head-host:6379', 'ray://...');",
    ),
    'ray_app': (str, 'serving ray: the Serve application of the library (shared by fronts);'),
    'ray_replicas': (int, 'serving ray: replicas of the library, 0 autoscale;'),
    'ray_replica_cpus': (float, 'serving ray: CPUs per replica (fractions allowed);'),
    'ray_replica_gpus': (float, 'serving ray: GPUs per replica (0 without GPUs);'),
}
EDGE_ONLY = ('tau', 'transport', 'offload_mode', 'keep_ratio', 'attention_mass',
             'patch_selection', 'attention_source', 'down_after_misses', 'probe_interval_ms',
             'offload_budget_mbps')  # fmt: skip
EXPERT_ONLY = ('ragged', 'max_queue_per_edge', 'max_queued', 'max_rate_per_edge',
               'max_resident', 'serving', 'ray_address', 'ray_app', 'ray_replicas',
               'ray_replica_cpus', 'ray_replica_gpus')  # fmt: skip
PER_NODE = ('device', 'backend', 'precision')  # both.launch.py: edge_device, expert_device ...
EDGE_ARGUMENTS = ('library', *PER_NODE, *EDGE_ONLY)
EXPERT_ARGUMENTS = ('library', *PER_NODE, *EXPERT_ONLY)
# both.launch.py's names for them: shared ones as they are, PER_NODE ones per node
BOTH_ARGUMENTS = (
    'library',
    *(f'{node}_{name}' for node in ('edge', 'expert') for name in PER_NODE),
    *EDGE_ONLY,
    *EXPERT_ONLY,
)
ENCLAVES = {'edge': '/ask_expert/edge', 'expert': '/ask_expert/expert'}
# the other arguments of edge.launch.py / expert.launch.py (node_arguments)
AUTOSTART_ARGUMENT = 'autostart'  # autostart_argument(); every launch file declares it
NODE_ARGUMENTS = ('params_file', 'namespace', 'log_level', AUTOSTART_ARGUMENT)
PARAMS_FILE_ARGUMENTS = tuple(f'{node}_params_file' for node in ENCLAVES)


def security_argument_names(nodes: Iterable[str]) -> tuple[str, ...]:
    """``keystore``, ``security_strategy`` and the enclave argument of each node:
    ``enclave`` for a launch file of one node, ``<node>_enclave`` for several."""
    nodes = tuple(nodes)
    enclaves = ['enclave'] if len(nodes) == 1 else [f'{node}_enclave' for node in nodes]
    return ('keystore', 'security_strategy', *enclaves)


# what bag_replay.launch.py forwards to both.launch.py, under the same names
FORWARDED_TO_BOTH = (
    'namespace',
    AUTOSTART_ARGUMENT,
    *PARAMS_FILE_ARGUMENTS,
    *BOTH_ARGUMENTS,
    *security_argument_names(ENCLAVES),
)


def included_arguments(node: str) -> dict[str, str]:
    """What both.launch.py gives ``<node>.launch.py``: {its argument: ours}."""
    shared = (
        'library',
        'namespace',
        'log_level',
        AUTOSTART_ARGUMENT,
        'keystore',
        'security_strategy',
    )
    return (
        {name: name for name in shared}
        | {'params_file': f'{node}_params_file', 'enclave': f'{node}_enclave'}
        | {name: f'{node}_{name}' for name in PER_NODE}
        | {name: name for name in (EDGE_ONLY if node == 'edge' else EXPERT_ONLY)}
    )


def _parameter_of(argument: str) -> tuple[str, str]:
    """(node or '', parameter) of a launch argument: ``edge_device`` -> ('edge', 'device')."""
    node, _, rest = argument.partition('_')
    if node in ENCLAVES and rest in PER_NODE:
        return node, rest
    return '', argument


def describe(argument: str) -> str:
    """The description of a parameter argument (``tau``, ``edge_device`` ...)."""
    node, name = _parameter_of(argument)
    text = f'{PARAMETER_ARGUMENTS[name][1]} {_FILES}'
    return f'{node.capitalize()} node: {text[0].lower()}{text[1:]}' if node else text


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


def node_parameters(
    arg: Callable[[str], str], node: str, names: Iterable[str]
) -> list[str | dict[str, Any]]:
    """``parameters=`` of a node: its params file, its section again in a namespace, and
    the parameter arguments given (converted to the parameter's type)."""
    params_file = arg('params_file')
    parameters: list[str | dict[str, Any]] = [params_file]
    if arg('namespace').strip('/'):
        parameters.append(node_section(params_file, node))
    overrides = {n: PARAMETER_ARGUMENTS[n][0](arg(n)) for n in names if arg(n)}
    if overrides:
        parameters.append(overrides)
    return parameters


# ------------------------------------------------- builders (need a ROS 2 install)


def parameter_arguments(names: Iterable[str]) -> list[DeclareLaunchArgument]:
    """Launch arguments named after node parameters, empty by default (the file's value)."""
    return [DeclareLaunchArgument(n, default_value='', description=describe(n)) for n in names]


def security_arguments(nodes: Iterable[str]) -> list[DeclareLaunchArgument]:
    """``keystore``, ``security_strategy`` and the enclave of each node in ``nodes``
    (``enclave`` for one node, ``<node>_enclave`` for several)."""
    nodes = tuple(nodes)
    enclaves = [
        DeclareLaunchArgument(
            name,
            default_value=ENCLAVES[node],
            description=f'SROS2 enclave of the {node} node in the keystore (--enclave).',
        )
        for node, name in zip(nodes, security_argument_names(nodes)[2:], strict=True)
    ]
    return [
        DeclareLaunchArgument(
            'keystore',
            default_value='',
            description='SROS2 keystore (scripts/create_security_keystore): run the nodes '
            'with DDS Security in their enclaves; empty: security off.',
        ),
        DeclareLaunchArgument(
            'security_strategy',
            default_value='Enforce',
            description='With a keystore: Enforce refuses to start without the enclave, '
            'Permissive runs unsecured (ROS_SECURITY_STRATEGY).',
        ),
        *enclaves,
    ]


def node_arguments(node: str, share: str) -> list[DeclareLaunchArgument]:
    """``params_file``, ``namespace``, ``log_level`` and the security arguments of one node."""
    return [
        DeclareLaunchArgument(
            'params_file',
            default_value=os.path.join(share, 'config', f'{node}.yaml'),
            description=f'ROS params YAML of the {node} node (section "{node}").',
        ),
        DeclareLaunchArgument(
            'namespace',
            default_value='',
            description='Namespace of the node and its relative topics (e.g. robot1).',
        ),
        *security_arguments([node]),
        DeclareLaunchArgument(
            'log_level',
            default_value='info',
            description='Log level: debug, info, warn, error or fatal.',
        ),
        autostart_argument(),
    ]


def autostart_argument() -> DeclareLaunchArgument:
    """``autostart``: drive the lifecycle nodes to active, or leave them unconfigured."""
    return DeclareLaunchArgument(
        AUTOSTART_ARGUMENT,
        default_value='true',
        description='true: configure, then activate the lifecycle node(s) once up; false: '
        'leave them unconfigured for a lifecycle manager (ros2 lifecycle set).',
    )


def params_file_arguments(share: str) -> list[DeclareLaunchArgument]:
    """``edge_params_file`` and ``expert_params_file`` (launch files that start both)."""
    return [
        DeclareLaunchArgument(
            name,
            default_value=os.path.join(share, 'config', f'{node}.yaml'),
            description=f'ROS params YAML of the {node} node.',
        )
        for node, name in zip(ENCLAVES, PARAMS_FILE_ARGUMENTS, strict=True)
    ]


def launch_node(
    context: LaunchContext,
    node: str,
    names: Iterable[str],
    remappings: Mapping[str, str],
) -> list[Action]:
    """The ``<node>_node`` executable named ``node``, a lifecycle node, from the arguments
    of :func:`node_arguments` and the parameter arguments ``names``; with ``autostart``
    true, the events that bring it to active (:func:`autostart`)."""

    def arg(name: str) -> str:
        return LaunchConfiguration(name).perform(context)

    security_env, enclave_args = security_settings(
        arg('keystore'), arg('security_strategy'), arg('enclave')
    )
    action = LifecycleNode(
        package=PACKAGE,
        executable=f'{node}_node',
        name=node,
        namespace=arg('namespace').strip('/'),
        parameters=node_parameters(arg, node, names),
        remappings=list(remappings.items()),
        arguments=['--ros-args', '--log-level', arg('log_level'), *enclave_args],
        additional_env=security_env,
        output='screen',
        emulate_tty=True,
        # after Ctrl-C a node answers what is in flight, finalizes, and then Python's
        # teardown (torch, rclpy) takes about 4 s more on a 2-core machine: launch's
        # default 5 s before SIGTERM was too close under load
        sigterm_timeout='15',
    )
    return [action, *(autostart(action) if is_true(arg(AUTOSTART_ARGUMENT)) else [])]


def is_true(text: str) -> bool:
    """A launch argument's boolean: true, 1 or yes (any case)."""
    return text.strip().lower() in ('true', '1', 'yes')


def autostart(node: LifecycleNode) -> list[Action]:
    """Configure ``node`` now (the request waits for its service), and activate it once
    configure has succeeded (ros2/demos' lifecycle launch pattern, without a manager).

    The activate handler fires once, on ``configuring -> inactive`` only: a later
    deactivate by hand (``active -> inactive``) is not undone, and a failed configure
    leaves the node unconfigured and alive, its reason in its log.
    """
    activate = RegisterEventHandler(
        OnStateTransition(
            target_lifecycle_node=node,
            start_state='configuring',
            goal_state='inactive',
            entities=[_change_state(node, Transition.TRANSITION_ACTIVATE)],
            handle_once=True,
        )
    )
    return [activate, _change_state(node, Transition.TRANSITION_CONFIGURE)]


def _change_state(node: LifecycleNode, transition_id: int) -> EmitEvent:
    return EmitEvent(
        event=ChangeState(lifecycle_node_matcher=matches_action(node), transition_id=transition_id)
    )


def include(share: str, name: str, arguments: Mapping[str, str]) -> GroupAction:
    """``launch/<name>`` with its arguments set from ours (``{theirs: ours}``), scoped so
    its settings stay inside."""
    source = PythonLaunchDescriptionSource(os.path.join(share, 'launch', name))
    values = {k: LaunchConfiguration(v) for k, v in arguments.items()}
    return GroupAction(
        [IncludeLaunchDescription(source, launch_arguments=values.items())], scoped=True
    )
