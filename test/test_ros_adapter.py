"""The rclpy adapter (ask_expert_ros/ros/), launch files and rviz config.

Two tiers in one file:

* Always (no ROS needed): every ROS module and launch file compiles; every launch
  argument has a description; every ROS package they import is declared in
  package.xml; node topics are relative; the params YAMLs have the exact types the
  rclpy nodes declare; the rviz config shows the annotated topic.
* With rclpy and the built package (``colcon build`` then ``source
  install/setup.bash``): message conversions, and edge + expert nodes spun in this
  process with a tiny model zoo (conftest's ``zoo``): one Classification per frame
  with the camera's stamp, fallbacks without an expert, bad frames, parameter
  changes accepted and rejected, two edges sharing one expert.
"""

from __future__ import annotations

import ast
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import yaml
from catkin_pkg.package import parse_package

from ask_expert_ros import launch_common
from ask_expert_ros.core.errors import UnsupportedImageError
from ask_expert_ros.core.inference.engine import ResultSource
from ask_expert_ros.core.inference.image_codec import encode_compressed
from ask_expert_ros.core.nodes.messages import (
    ExpertReply,
    FinalResult,
    FrameFormat,
    Header,
    ImageData,
    OffloadRequest,
    Stamp,
    Status,
)
from ask_expert_ros.core.nodes.node_config import EDGE_PARAMS, EXPERT_PARAMS

ROOT = Path(__file__).resolve().parents[1]
ROS_MODULES = sorted((ROOT / 'ask_expert_ros' / 'ros').glob('*.py'))
LAUNCH_FILES = sorted((ROOT / 'launch').glob('*.launch.py'))
LAUNCH_COMMON = ROOT / 'ask_expert_ros' / 'launch_common.py'
RVIZ = ROOT / 'config' / 'ask_expert.rviz'
# Python modules that are not ROS packages -> their rosdep key in package.xml
PYTHON_DEPS = {'numpy': 'python3-numpy', 'yaml': 'python3-yaml', 'cv2': 'python3-opencv'}


def parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding='utf-8'), str(path))


def required_imports(tree: ast.Module) -> set[str]:
    """Top-level names imported outside ``try: ... except ImportError`` (optional ones)."""
    optional: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Try) and any(
            isinstance(h.type, ast.Name) and h.type.id in ('ImportError', 'ModuleNotFoundError')
            for h in node.handlers
        ):
            optional.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    names = set()
    for node in ast.walk(tree):
        if id(node) in optional:
            continue
        if isinstance(node, ast.Import):
            names.update(alias.name.split('.')[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split('.')[0])
    return names


def calls(tree: ast.Module, name: str) -> list[ast.Call]:
    return [
        n
        for n in ast.walk(tree)
        if isinstance(n, ast.Call)
        and (getattr(n.func, 'id', None) == name or getattr(n.func, 'attr', None) == name)
    ]


# ============================================================ always (no ROS needed)


def test_the_ros_files_exist() -> None:
    names = {p.name for p in ROS_MODULES} | {p.name for p in LAUNCH_FILES}
    assert {'conversions.py', 'edge_node.py', 'expert_node.py', '__init__.py'} <= names
    assert {
        'edge.launch.py',
        'expert.launch.py',
        'both.launch.py',
        'bag_replay.launch.py',
    } <= names


@pytest.mark.parametrize(
    'path',
    [*ROS_MODULES, *LAUNCH_FILES, LAUNCH_COMMON],
    ids=lambda p: p.relative_to(ROOT).as_posix(),
)
def test_compiles(path: Path) -> None:
    compile(path.read_text(encoding='utf-8'), str(path), 'exec')


def test_ros_package_init_imports_nothing() -> None:
    """``import ask_expert_ros.ros`` must work without ROS: its __init__ is a docstring."""
    tree = parse(ROOT / 'ask_expert_ros' / 'ros' / '__init__.py')
    assert len(tree.body) == 1 and isinstance(tree.body[0], ast.Expr)
    import ask_expert_ros.ros

    assert 'rclpy' in (ask_expert_ros.ros.__doc__ or '')


@pytest.mark.parametrize('path', LAUNCH_FILES, ids=lambda p: p.name)
def test_every_launch_argument_is_described(path: Path) -> None:
    tree = parse(path)
    declared = calls(tree, 'DeclareLaunchArgument')
    assert declared, f'{path.name} declares no arguments'
    for call in declared:
        name = call.args[0].value if call.args else '?'
        description = next((k.value for k in call.keywords if k.arg == 'description'), None)
        assert isinstance(description, ast.Constant), f'{path.name}: {name} has no description'
        assert len(description.value.strip()) > 10, f'{path.name}: {name}: too short'


@pytest.mark.parametrize('path', LAUNCH_FILES, ids=lambda p: p.name)
def test_launch_configurations_are_declared_and_typed(path: Path) -> None:
    """Every LaunchConfiguration('x') names an argument of the same file; -> annotated."""
    tree = parse(path)
    declared = {c.args[0].value for c in calls(tree, 'DeclareLaunchArgument')}
    used = {
        c.args[0].value
        for c in calls(tree, 'LaunchConfiguration')
        if c.args and isinstance(c.args[0], ast.Constant)
    }
    assert used <= declared, sorted(used - declared)
    generate = next(
        n
        for n in tree.body
        if isinstance(n, ast.FunctionDef) and n.name == 'generate_launch_description'
    )
    assert ast.unparse(generate.returns) == 'LaunchDescription'


def declared_arguments(path: Path) -> set[str]:
    """Names a launch file declares: its own DeclareLaunchArgument calls and those of the
    launch_common helpers it calls (from launch_common's tables: no ROS needed)."""
    tree = parse(path)
    names = {
        c.args[0].value
        for c in calls(tree, 'DeclareLaunchArgument')
        if isinstance(c.args[0], ast.Constant)
    }
    for call in calls(tree, 'parameter_arguments'):
        names.update(getattr(launch_common, call.args[0].id))
    for call in calls(tree, 'node_arguments'):
        names.update(launch_common.NODE_ARGUMENTS)
        names.update(launch_common.security_argument_names([call.args[0].value]))
    for call in calls(tree, 'security_arguments'):
        names.update(launch_common.security_argument_names(ast.literal_eval(call.args[0])))
    if calls(tree, 'params_file_arguments'):
        names.update(launch_common.PARAMS_FILE_ARGUMENTS)
    if calls(tree, 'autostart_argument'):
        names.add(launch_common.AUTOSTART_ARGUMENT)
    return names


@pytest.mark.parametrize('path', LAUNCH_FILES, ids=lambda p: p.name)
def test_every_launch_file_has_autostart(path: Path) -> None:
    """Lifecycle nodes: each launch file drives them to active unless autostart:=false."""
    assert launch_common.AUTOSTART_ARGUMENT in declared_arguments(path)


def test_launch_common_starts_lifecycle_nodes_configure_then_activate() -> None:
    """launch_node() makes a launch_ros LifecycleNode; autostart() emits configure, and
    activate only on configuring -> inactive (not after a deactivate by hand), once."""
    tree = parse(LAUNCH_COMMON)
    assert calls(tree, 'LifecycleNode') and not calls(tree, 'Node')
    (handler,) = calls(tree, 'OnStateTransition')
    keywords = {k.arg: k.value for k in handler.keywords}
    assert ast.literal_eval(keywords['start_state']) == 'configuring'
    assert ast.literal_eval(keywords['goal_state']) == 'inactive'
    assert ast.literal_eval(keywords['handle_once']) is True
    assert 'TRANSITION_ACTIVATE' in ast.unparse(keywords['entities'])
    transitions = sorted(ast.unparse(c.args[1]) for c in calls(tree, '_change_state'))
    assert transitions == ['Transition.TRANSITION_ACTIVATE', 'Transition.TRANSITION_CONFIGURE']


def test_included_launch_files_get_only_arguments_they_declare() -> None:
    """both.launch.py gives edge/expert.launch.py only what they declare, from arguments
    it declares; bag_replay.launch.py likewise to both.launch.py."""
    declared = {p.name: declared_arguments(p) for p in LAUNCH_FILES}
    both = (ROOT / 'launch' / 'both.launch.py').read_text()
    for node in ('edge', 'expert'):
        assert f"'{node}.launch.py'" in both and f"included_arguments('{node}')" in both
        given = launch_common.included_arguments(node)
        assert set(given) <= declared[f'{node}.launch.py'], (
            set(given) - declared[f'{node}.launch.py']
        )
        assert set(given.values()) <= declared['both.launch.py']
    forwarded = set(launch_common.FORWARDED_TO_BOTH)
    assert (
        forwarded <= declared['both.launch.py'] and forwarded <= declared['bag_replay.launch.py']
    )
    assert 'FORWARDED_TO_BOTH' in (ROOT / 'launch' / 'bag_replay.launch.py').read_text()
    assert {'library', 'namespace', 'edge_params_file', 'expert_params_file', 'tau'} <= forwarded


def test_ros_packages_are_declared_in_package_xml() -> None:
    package = parse_package(str(ROOT / 'package.xml'))
    declared = {
        d.name
        for d in package.build_depends
        + package.exec_depends
        + package.buildtool_depends
        + package.build_export_depends
    }
    missing = {}
    for path in [*ROS_MODULES, *LAUNCH_FILES, LAUNCH_COMMON]:
        for name in required_imports(parse(path)):
            if name in sys.stdlib_module_names or name in ('ask_expert_ros', '__future__'):
                continue
            if PYTHON_DEPS.get(name, name) not in declared:
                missing.setdefault(path.name, []).append(name)
    assert missing == {}


def test_optional_imports_are_recognised() -> None:
    tree = ast.parse(
        'import rclpy\ntry:\n    from cv_bridge import CvBridge\nexcept ImportError:\n    pass\n'
    )
    assert required_imports(tree) == {'rclpy'}


def test_bag_replay_runs_ros2_bag_play() -> None:
    text = (ROOT / 'launch' / 'bag_replay.launch.py').read_text()
    assert "'ros2', 'bag', 'play'" in text and '--remap' in text


@pytest.mark.parametrize('path', [p for p in ROS_MODULES if p.stem.endswith('_node')])
def test_node_topics_are_relative(path: Path) -> None:
    """Topic names inside nodes are relative (remapped at launch); /diagnostics is global."""
    tree = parse(path)
    endpoints = [
        *calls(tree, 'create_subscription'),
        *calls(tree, 'create_publisher'),
        *calls(tree, 'create_lifecycle_publisher'),
    ]
    assert endpoints, f'{path.name} creates no topics'
    for call in endpoints:
        topic = call.args[1].value
        assert not topic.startswith('/') or topic == '/diagnostics', topic


@pytest.mark.parametrize('name', ['edge_node', 'expert_node', 'wait_ready'])
def test_node_executables_are_installed(name: str) -> None:
    script = ROOT / 'scripts' / name
    assert script.stat().st_mode & 0o111, f'{script} is not executable'
    assert f'from ask_expert_ros.ros.{name} import main' in script.read_text()
    cmake = (ROOT / 'CMakeLists.txt').read_text()
    assert f'scripts/{name}' in cmake
    assert 'install(DIRECTORY launch DESTINATION share/${PROJECT_NAME})' in cmake
    module = parse(ROOT / 'ask_expert_ros' / 'ros' / f'{name}.py')
    assert any(isinstance(n, ast.FunctionDef) and n.name == 'main' for n in module.body)


@pytest.mark.parametrize(
    ('file', 'node', 'specs'),
    [('edge.yaml', 'edge', EDGE_PARAMS), ('expert.yaml', 'expert', EXPERT_PARAMS)],
)
def test_params_yaml_types_match_what_the_nodes_declare(file: str, node: str, specs) -> None:
    """rclpy refuses ``deadline_ms: 250`` for a double parameter; the YAML must say 250.0."""
    values = yaml.safe_load((ROOT / 'config' / file).read_text())[node]['ros__parameters']
    kinds = {s.name: type(s.default) for s in specs}
    assert set(values) <= set(kinds)
    wrong = {k: type(v).__name__ for k, v in values.items() if type(v) is not kinds[k]}
    assert wrong == {}


PATCH_ARGUMENTS = ('offload_mode', 'keep_ratio', 'attention_mass', 'patch_selection',
                   'attention_source')  # fmt: skip


def test_launch_overrides_are_node_parameters_of_the_same_type() -> None:
    """launch_common's PARAMETER_ARGUMENTS maps argument -> type of the node parameter it
    sets; the edge's are edge parameters, the expert's expert parameters, each declared
    by its launch file, and the patch offload ones are there."""
    table = launch_common.PARAMETER_ARGUMENTS
    for names, specs, file in (
        (launch_common.EDGE_ARGUMENTS, EDGE_PARAMS, 'edge.launch.py'),
        (launch_common.EXPERT_ARGUMENTS, EXPERT_PARAMS, 'expert.launch.py'),
    ):
        kinds = {s.name: type(s.default) for s in specs}
        assert {n: kinds[n] for n in names} == {n: table[n][0] for n in names}
        assert set(names) <= declared_arguments(ROOT / 'launch' / file)
    assert set(PATCH_ARGUMENTS) | {'transport'} <= set(launch_common.EDGE_ARGUMENTS)
    assert 'ragged' in launch_common.EXPERT_ARGUMENTS
    assert set(table) == set(launch_common.EDGE_ARGUMENTS) | set(launch_common.EXPERT_ARGUMENTS)


@pytest.mark.parametrize('file', ['both.launch.py', 'bag_replay.launch.py'])
def test_patch_offload_arguments_reach_the_nodes(file: str) -> None:
    """both.launch.py passes the patch arguments to edge.launch.py and ragged to
    expert.launch.py; bag_replay.launch.py forwards them all to both.launch.py."""
    assert set(PATCH_ARGUMENTS) | {'ragged', 'transport'} <= declared_arguments(
        ROOT / 'launch' / file
    )
    passed = (
        set(launch_common.included_arguments('edge'))
        | set(launch_common.included_arguments('expert'))
        if file == 'both.launch.py'
        else set(launch_common.FORWARDED_TO_BOTH)
    )
    assert set(PATCH_ARGUMENTS) | {'ragged', 'transport'} <= passed


def test_launch_common_describes_every_parameter_argument() -> None:
    """Every table entry has a description; both.launch.py's per-node names say whose."""
    for name in launch_common.BOTH_ARGUMENTS:
        assert len(launch_common.describe(name)) > 30, name
        assert launch_common.describe(name).endswith("empty: the params file's."), name
    assert launch_common.describe('edge_device').startswith("Edge node: torch device ('cpu'")
    assert launch_common.describe('tau').startswith('Confidence threshold')


def test_launch_common_node_section_reads_the_node_and_slash_node_keys(tmp_path: Path) -> None:
    params = tmp_path / 'p.yaml'
    params.write_text(
        'edge:\n  ros__parameters: {tau: 0.5, k: 2}\n'
        '/edge:\n  ros__parameters: {tau: 0.7}\n'
        'expert:\n  ros__parameters: {device: cuda}\n'
    )
    assert launch_common.node_section(str(params), 'edge') == {'tau': 0.7, 'k': 2}
    assert launch_common.node_section(str(params), 'recorder') == {}
    got = launch_common.node_parameters(
        {'params_file': str(params), 'namespace': '/r1', 'tau': '0.6', 'library': ''}.get,
        'edge',
        ('tau', 'library'),
    )
    assert got == [str(params), {'tau': 0.7, 'k': 2}, {'tau': 0.6}]


def test_rviz_config_shows_the_annotated_image() -> None:
    config = yaml.safe_load(RVIZ.read_text())
    displays = config['Visualization Manager']['Displays']
    images = [d for d in displays if d['Class'] == 'rviz_default_plugins/Image']
    assert images and images[0]['Enabled'] is True
    topic = images[0]['Topic']
    assert topic['Value'].endswith('/annotated')
    assert topic['Reliability Policy'] in ('Best Effort', 'Reliable')


# ============================================================ with rclpy


@pytest.fixture(scope='module')
def ros() -> SimpleNamespace:
    """rclpy, the message types and our adapter modules, or a skip saying what is missing."""
    rclpy = pytest.importorskip(
        'rclpy', reason='rclpy not importable: source a ROS 2 Humble/Jazzy setup.bash'
    )
    pytest.importorskip(
        'ask_expert_ros.msg',
        reason='ask_expert_ros.msg not generated: colcon build this package and source '
        'install/setup.bash',
    )
    from diagnostic_msgs.msg import DiagnosticArray
    from lifecycle_msgs.srv import GetState
    from rclpy.exceptions import ParameterException
    from rclpy.executors import MultiThreadedExecutor
    from rclpy.lifecycle import TransitionCallbackReturn
    from rclpy.parameter import Parameter
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CompressedImage, Image
    from vision_msgs.msg import Classification, LabelInfo

    from ask_expert_ros.msg import ExpertRequest, ExpertResponse
    from ask_expert_ros.ros import conversions, edge_node, expert_node

    return SimpleNamespace(
        rclpy=rclpy,
        MultiThreadedExecutor=MultiThreadedExecutor,
        TransitionCallbackReturn=TransitionCallbackReturn,
        Parameter=Parameter,
        ParameterException=ParameterException,
        QoSProfile=QoSProfile,
        ReliabilityPolicy=ReliabilityPolicy,
        DurabilityPolicy=DurabilityPolicy,
        Image=Image,
        CompressedImage=CompressedImage,
        Classification=Classification,
        LabelInfo=LabelInfo,
        DiagnosticArray=DiagnosticArray,
        GetState=GetState,
        ExpertRequest=ExpertRequest,
        ExpertResponse=ExpertResponse,
        conv=conversions,
        edge_node=edge_node,
        expert_node=expert_node,
    )


# ------------------------------------------------------------ conversions

_RGB = np.random.default_rng(1).integers(0, 256, size=(3, 5, 3), dtype=np.uint8)
_MONO = _RGB[..., 0]
_ALPHA = np.full((3, 5, 1), 77, np.uint8)


def _payload(encoding: str, bigendian: bool) -> tuple[np.ndarray, np.ndarray]:
    """(bytes as rows [H, row_bytes], expected decoded pixels) for ``encoding``."""
    if encoding in ('mono8', '8UC1'):
        return _MONO, _MONO
    if encoding in ('mono16', '16UC1'):
        wide = (_MONO.astype(np.uint16) << 8) | 0x5A  # low byte must be dropped
        rows = wide.astype('>u2' if bigendian else '<u2').view(np.uint8)
        return rows, _MONO
    if encoding == 'rgb8':
        return _RGB.reshape(3, -1), _RGB
    if encoding in ('bgr8', '8UC3'):
        return _RGB[..., ::-1].reshape(3, -1), _RGB
    if encoding == 'rgba8':
        return np.concatenate([_RGB, _ALPHA], axis=2).reshape(3, -1), _RGB
    return np.concatenate([_RGB[..., ::-1], _ALPHA], axis=2).reshape(3, -1), _RGB  # bgra8, 8UC4


ENCODINGS = [
    ('mono8', False),
    ('8UC1', False),
    ('mono16', False),
    ('mono16', True),
    ('16UC1', False),
    ('rgb8', False),
    ('bgr8', False),
    ('8UC3', False),
    ('rgba8', False),
    ('bgra8', False),
    ('8UC4', False),
]


@pytest.mark.ros
@pytest.mark.parametrize(('encoding', 'bigendian'), ENCODINGS, ids=lambda v: str(v))
def test_image_to_frame_every_encoding_with_row_padding(
    ros: SimpleNamespace, encoding: str, bigendian: bool
) -> None:
    """Rows padded with 3 junk bytes (step = row + 3); the junk never reaches the pixels."""
    rows, expected = _payload(encoding, bigendian)
    padded = np.concatenate([rows, np.full((rows.shape[0], 3), 255, np.uint8)], axis=1)
    msg = ros.Image(
        height=3,
        width=5,
        encoding=encoding,
        is_bigendian=int(bigendian),
        step=padded.shape[1],
        data=padded.tobytes(),
    )
    msg.header.stamp.sec, msg.header.frame_id = 12, 'cam'
    frame = ros.conv.image_to_frame(msg)
    np.testing.assert_array_equal(frame.pixels, expected)
    assert frame.header == Header(Stamp(12, 0), 'cam')
    assert frame.source.step == padded.shape[1] and bytes(frame.source.data) == padded.tobytes()


@pytest.mark.ros
@pytest.mark.parametrize(
    ('encoding', 'height', 'step', 'size'),
    [('bogus', 3, 15, 45), ('rgb8', 0, 15, 0), ('rgb8', 3, 10, 45), ('rgb8', 3, 15, 44)],
    ids=['unknown-encoding', 'empty', 'short-step', 'truncated'],
)
def test_bad_images_raise_unsupported(
    ros: SimpleNamespace, encoding: str, height: int, step: int, size: int
) -> None:
    msg = ros.Image(height=height, width=5, encoding=encoding, step=step, data=bytes(size))
    if encoding == 'bogus' and ros.conv._BRIDGE is not None:
        pytest.skip('cv_bridge installed: it decides about unknown encodings')
    with pytest.raises(UnsupportedImageError):
        ros.conv.image_to_frame(msg)


@pytest.mark.ros
@pytest.mark.parametrize('pixels', [_MONO, _RGB], ids=['mono', 'rgb'])
def test_frame_to_image_round_trip(ros: SimpleNamespace, pixels: np.ndarray) -> None:
    header = Header(Stamp(5, 6), 'cam')
    msg = ros.conv.frame_to_image(pixels, header)
    assert msg.encoding == ('mono8' if pixels.ndim == 2 else 'rgb8')
    frame = ros.conv.image_to_frame(msg)
    np.testing.assert_array_equal(frame.pixels, pixels)
    assert frame.header == header


@pytest.mark.ros
def test_compressed_to_frame(ros: SimpleNamespace) -> None:
    fmt, data = encode_compressed(_RGB, 'png')
    frame = ros.conv.compressed_to_frame(ros.CompressedImage(format=fmt, data=data))
    np.testing.assert_array_equal(frame.pixels, _RGB)
    assert frame.source.format == FrameFormat.COMPRESSED


def _request(image: ImageData) -> OffloadRequest:
    return OffloadRequest(
        header=Header(Stamp(3, 4), 'cam'),
        edge_id='e1',
        request_id=2**40,
        image=image,
        topk_classes=(4, 1),
        topk_scores=(0.5, 0.25),
        expert_key=(1, 3),
        partition='toy_s3',
        confidence=0.5,
        confidence_method='max_softmax',
        deadline=Stamp(9, 10),
        edge_preprocess_ms=1.5,
        edge_inference_ms=2.5,
    )


@pytest.mark.ros
@pytest.mark.parametrize(
    'image',
    [
        ImageData(FrameFormat.RAW, bytes(range(18)), 2, 3, 'rgb8', 9),
        ImageData(FrameFormat.COMPRESSED, b'\xff\xd8jpeg', encoding='rgb8; jpeg compressed bgr8'),
    ],
    ids=['raw', 'compressed'],
)
def test_request_round_trip(ros: SimpleNamespace, image: ImageData) -> None:
    """Floats are exact in float32 here (0.5, 0.25, 1.5, 2.5), so the trip is lossless."""
    request = _request(image)
    back = ros.conv.request_to_core(ros.conv.request_to_ros(request))
    assert bytes(back.image.data) == bytes(image.data)
    assert back.image.format == image.format and back.image.encoding == image.encoding
    assert (back.image.height, back.image.width, back.image.step) == (
        image.height,
        image.width,
        image.step,
    )
    assert replace(back, image=image) == request


@pytest.mark.ros
def test_request_with_unknown_frame_format_raises(ros: SimpleNamespace) -> None:
    msg = ros.conv.request_to_ros(_request(ImageData(FrameFormat.RAW, b'', 0, 0, 'rgb8', 0)))
    msg.frame_format = 7
    with pytest.raises(UnsupportedImageError):
        ros.conv.request_to_core(msg)


@pytest.mark.ros
def test_reply_round_trip_and_unknown_status(ros: SimpleNamespace) -> None:
    reply = ExpertReply(
        header=Header(Stamp(1, 2), 'cam'),
        edge_id='e1',
        request_id=7,
        status=Status.OK,
        label=3,
        label_name='d',
        score=0.75,
        expert_key=(2,),
        expert_name='expert_2',
        queue_ms=0.5,
        inference_ms=4.0,
        batch_size=3,
    )
    msg = ros.conv.reply_to_ros(reply)
    assert ros.conv.reply_to_core(msg) == reply
    msg.status = 200
    assert ros.conv.reply_to_core(msg).status == Status.MODEL_ERROR


@pytest.mark.ros
@pytest.mark.parametrize(
    ('source', 'score', 'expected'),
    [
        (ResultSource.EDGE, 0.9, [('c', 0.9)]),
        (ResultSource.EXPERT, 0.5, [('c', 0.5)]),
        (ResultSource.FALLBACK, float('nan'), [('c', 0.0)]),
        (ResultSource.INVALID, 0.0, []),
    ],
)
def test_result_to_classification(
    ros: SimpleNamespace, source: ResultSource, score: float, expected: list
) -> None:
    header = Header(Stamp(11, 12), 'cam')
    label = -1 if source == ResultSource.INVALID else 2
    msg = ros.conv.result_to_classification(
        FinalResult(header, label, 'c' if label >= 0 else '', score, source)
    )
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec, msg.header.frame_id) == (11, 12, 'cam')
    assert [(h.class_id, pytest.approx(h.score)) for h in msg.results] == expected


@pytest.mark.ros
def test_label_info_and_diagnostics(ros: SimpleNamespace) -> None:
    from ask_expert_ros.core.nodes.diagnostics import Level, StatusRecord

    header = ros.conv.header_to_ros(Header(Stamp(1, 0)))
    info = ros.conv.label_info(('a', 'b'), header, 0.7)
    assert [(c.class_id, c.class_name) for c in info.class_map] == [(0, 'a'), (1, 'b')]
    assert info.threshold == pytest.approx(0.7)
    record = StatusRecord('n', Level.WARN, 'm', 'host', {'frames': 3, 'frames_per_s': 1.5})
    array = ros.conv.diagnostics_to_ros([record], header)
    status = array.status[0]
    assert status.level == b'\x01' and status.hardware_id == 'host'
    assert [(v.key, v.value) for v in status.values] == [
        ('frames', '3'),
        ('frames_per_s', '1.500'),
    ]


@pytest.mark.ros
def test_parameter_descriptors(ros: SimpleNamespace) -> None:
    by_name = {s.name: ros.conv.parameter_descriptor(s) for s in EDGE_PARAMS}
    tau = by_name['tau']
    assert tau.description and not tau.read_only
    spec = next(s for s in EDGE_PARAMS if s.name == 'tau')  # [0, 16]: min_entropy is in bits
    assert (tau.floating_point_range[0].from_value, tau.floating_point_range[0].to_value) == (
        spec.low,
        spec.high,
    )
    assert (by_name['k'].integer_range[0].from_value, by_name['k'].integer_range[0].to_value) == (
        1,
        16,
    )
    assert by_name['library'].read_only and by_name['image_qos_depth'].read_only
    assert 'margin' in by_name['confidence'].additional_constraints


# ------------------------------------------------------------ nodes in this process


class Graph:
    """One rclpy context with our nodes and a probe node, spun on a background thread."""

    def __init__(self, ros: SimpleNamespace, zoo: Path) -> None:
        self.ros = ros
        self.zoo = zoo
        self.namespace = f'/t{uuid.uuid4().hex[:10]}'
        self.context = ros.rclpy.Context()
        ros.rclpy.init(context=self.context)
        self.executor = ros.MultiThreadedExecutor(num_threads=4, context=self.context)
        self.nodes: list[Any] = []
        self.probe = ros.rclpy.create_node('probe', namespace=self.namespace, context=self.context)
        self.executor.add_node(self.probe)
        self._thread = threading.Thread(target=self.executor.spin, daemon=True)
        self._thread.start()

    def _parameters(self, values: dict[str, Any]) -> list:
        return [self.ros.Parameter(k, value=v) for k, v in values.items()]

    def expert(self, namespace: str | None = None, start: bool = True, **values: Any) -> Any:
        """An expert node; ``start``: configured and activated (else unconfigured)."""
        values = {'library': str(self.zoo), 'diagnostics_period_s': 0.2} | values
        node = self.ros.expert_node.ExpertNode(
            context=self.context,
            namespace=namespace or self.namespace,
            parameter_overrides=self._parameters(values),
        )
        return self._add(node, start)

    def edge(
        self,
        namespace: str | None = None,
        cli_args: list[str] | None = None,
        start: bool = True,
        **values: Any,
    ) -> Any:
        """An edge node; ``start``: configured and activated (else unconfigured)."""
        values = {
            'library': str(self.zoo),
            'edge_id': f'edge-{uuid.uuid4().hex[:6]}',
            'image_qos_reliability': 'reliable',  # no drops when the test floods frames
            'image_qos_depth': 100,
            'diagnostics_period_s': 0.2,
        } | values
        node = self.ros.edge_node.EdgeNode(
            context=self.context,
            namespace=namespace or self.namespace,
            parameter_overrides=self._parameters(values),
            cli_args=cli_args,
        )
        return self._add(node, start)

    def _add(self, node: Any, start: bool) -> Any:
        self.nodes.append(node)
        self.executor.add_node(node)
        if start:
            assert node.start(), node.lifecycle.last_error
        return node

    def rcl_state(self, node: Any) -> str:
        """The node's state as ``ros2 lifecycle get`` asks for it (its get_state service)."""
        client = self.probe.create_client(
            self.ros.GetState, f'{node.get_fully_qualified_name()}/get_state'
        )
        try:
            assert client.wait_for_service(timeout_sec=30)
            future = client.call_async(self.ros.GetState.Request())
            wait_for(future.done, what='get_state')
            return future.result().current_state.label
        finally:
            self.probe.destroy_client(client)

    def collect(self, msg_type: type, topic: str, qos: Any = 10) -> list:
        received: list = []
        lock = threading.Lock()

        def keep(msg: Any) -> None:
            with lock:
                received.append(msg)

        self.probe.create_subscription(msg_type, topic, keep, qos)
        return received

    def publisher(self, msg_type: type, topic: str) -> Any:
        qos = self.ros.QoSProfile(depth=100, reliability=self.ros.ReliabilityPolicy.RELIABLE)
        return self.probe.create_publisher(msg_type, topic, qos)

    def close(self) -> None:
        self.executor.shutdown()
        for node in self.nodes:
            node.destroy_node()
        self.probe.destroy_node()
        self.ros.rclpy.try_shutdown(context=self.context)
        self._thread.join(timeout=10)


def wait_for(condition: Callable[[], bool], timeout_s: float = 30.0, what: str = '') -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f'timed out after {timeout_s} s waiting for {what or condition}')
        time.sleep(0.01)


@pytest.fixture
def graph(ros: SimpleNamespace, zoo: Path) -> Iterator[Graph]:
    g = Graph(ros, zoo)
    try:
        yield g
    finally:
        g.close()


def image_msg(ros: SimpleNamespace, i: int, encoding: str = 'mono8') -> Any:
    """Frame ``i``: 8x8 mono, stamp (100 + i, 1000 * i), frame_id 'cam'."""
    pixels = np.random.default_rng(i).integers(0, 256, size=(8, 8), dtype=np.uint8)
    msg = ros.Image(height=8, width=8, encoding=encoding, step=8, data=pixels.tobytes())
    msg.header.stamp.sec, msg.header.stamp.nanosec = 100 + i, 1000 * i
    msg.header.frame_id = 'cam'
    return msg


def stamps(messages: list) -> list[tuple[int, int]]:
    return sorted((m.header.stamp.sec, m.header.stamp.nanosec) for m in messages)


def stream(graph: Graph, edge: Any, n: int, expect_expert: bool) -> list:
    """Publish ``n`` frames into ``edge``; wait until all ``n`` results arrived."""
    # depth n: the edge may answer a whole backlog as one batch, in one burst
    results = graph.collect(
        graph.ros.Classification, f'{edge.get_namespace()}/classification', max(n, 10)
    )
    images = graph.publisher(graph.ros.Image, f'{edge.get_namespace()}/image')
    wait_for(lambda: images.get_subscription_count() > 0, what='edge subscribed to image')
    wait_for(
        lambda: edge._results.get_subscription_count() > 0, what='probe subscribed to results'
    )
    if expect_expert:
        wait_for(lambda: edge._requests.get_subscription_count() > 0, what='expert matched')
    for i in range(n):
        images.publish(image_msg(graph.ros, i))
    wait_for(lambda: len(results) >= n and edge.logic.counters.results >= n, what='n results')
    wait_for(lambda: edge.logic.pending_count == 0, what='nothing pending')
    return results


@pytest.mark.ros
@pytest.mark.parametrize('transport', ['raw', 'compressed'])
def test_every_frame_gets_one_expert_result_with_its_stamp(graph: Graph, transport: str) -> None:
    """tau = 1.5 > any confidence: all 12 frames go to the expert, which answers each."""
    graph.expert()
    edge = graph.edge(tau=1.5, transport=transport)
    results = stream(graph, edge, 12, expect_expert=True)
    assert len(results) == 12
    assert stamps(results) == [(100 + i, 1000 * i) for i in range(12)]
    assert all(r.header.frame_id == 'cam' and len(r.results) == 1 for r in results)
    names = set(edge.logic.class_names)
    assert {r.results[0].class_id for r in results} <= names
    counters = edge.logic.counters
    assert (counters.frames, counters.offloaded, counters.expert) == (12, 12, 12)


@pytest.mark.ros
def test_confident_frames_stay_on_the_edge(graph: Graph) -> None:
    """tau = 0 never offloads: 5 edge answers, no request sent (no expert running)."""
    edge = graph.edge(tau=0.0)
    results = stream(graph, edge, 5, expect_expert=False)
    assert len(results) == 5 and edge.logic.counters.accepted == 5
    assert edge.logic.counters.offloaded == 0


@pytest.mark.ros
def test_the_edge_model_runs_on_one_thread_in_batches(graph: Graph) -> None:
    """Camera callbacks run on any executor thread; the model only on 'edge-inference'.

    30 frames flooded in: every one answered once, some in batches of more than one
    (the worker takes everything queued), on that one thread.
    """
    edge = graph.edge(tau=0.0)
    backend = edge.logic.stage.backend
    run_tensor = backend.run_tensor
    calls: list[tuple[str, int]] = []

    def recording(x: Any) -> Any:
        calls.append((threading.current_thread().name, len(x)))
        time.sleep(0.01)  # a slower model: frames queue up behind it
        return run_tensor(x)

    backend.run_tensor = recording
    results = stream(graph, edge, 30, expect_expert=False)
    assert stamps(results) == [(100 + i, 1000 * i) for i in range(30)]
    assert {name for name, _ in calls} == {'edge-inference'}
    assert sum(n for _, n in calls) == 30
    assert max(n for _, n in calls) > 1


@pytest.mark.ros
def test_without_an_expert_every_frame_falls_back_at_once(graph: Graph) -> None:
    edge = graph.edge(tau=1.5, deadline_ms=60000.0)  # a deadline that would fail the test
    results = stream(graph, edge, 6, expect_expert=False)
    assert len(results) == 6 and stamps(results) == [(100 + i, 1000 * i) for i in range(6)]
    counters = edge.logic.counters
    # at once: each send fails (unavailable) until down_after_misses of them mark the
    # expert down, then frames fall back without sending, bar a probe now and then;
    # where that split falls depends on timing, the sum does not
    assert counters.fallback_unavailable >= edge.logic.params.down_after_misses
    assert counters.fallback_unavailable + counters.fallback_down == 6
    assert counters.fallback_deadline == 0
    assert all(len(r.results) == 1 for r in results)  # the edge Top-1 stands


@pytest.mark.ros
def test_a_slow_expert_is_replaced_by_the_fallback_at_the_deadline(graph: Graph) -> None:
    """The expert waits 10 s to fill a batch of 8; 3 frames with a 300 ms deadline fall back.

    Each result is due 300 ms after its frame; allowing 5 s for a loaded CI machine
    still tells a deadline fallback apart from the expert's answer (10 s).
    """
    graph.expert(max_wait_ms=10000.0, max_batch=8, preload=False)
    edge = graph.edge(tau=1.5, deadline_ms=300.0)
    start = time.monotonic()
    results = stream(graph, edge, 3, expect_expert=True)
    assert time.monotonic() - start < 5.0
    assert len(results) == 3 and edge.logic.counters.fallback_deadline == 3
    assert all(len(r.results) == 1 for r in results)  # the edge Top-1 stands


@pytest.mark.ros
def test_bad_frames_get_an_empty_result_and_the_node_serves_on(graph: Graph) -> None:
    edge = graph.edge(tau=0.0)
    ns = edge.get_namespace()
    results = graph.collect(graph.ros.Classification, f'{ns}/classification')
    images = graph.publisher(graph.ros.Image, f'{ns}/image')
    compressed = graph.publisher(graph.ros.CompressedImage, f'{ns}/image/compressed')
    wait_for(lambda: images.get_subscription_count() and compressed.get_subscription_count())
    wait_for(lambda: edge._results.get_subscription_count() > 0)
    bad = image_msg(graph.ros, 0)
    bad.data = bytes(10)  # truncated: 8 rows of step 8 need 64 bytes
    images.publish(bad)
    corrupt = graph.ros.CompressedImage(format='jpeg', data=b'not a jpeg')
    corrupt.header.stamp.sec = 7
    compressed.publish(corrupt)
    images.publish(image_msg(graph.ros, 1))
    fmt, data = encode_compressed(_RGB, 'jpeg')
    good = graph.ros.CompressedImage(format=fmt, data=data)
    good.header.stamp.sec = 8
    compressed.publish(good)
    wait_for(lambda: len(results) >= 4, what='4 results')
    by_sec = {r.header.stamp.sec: r for r in results}
    assert by_sec[100].results == [] and by_sec[7].results == []  # INVALID: no hypothesis
    assert len(by_sec[101].results) == 1 and len(by_sec[8].results) == 1
    assert edge.logic.counters.bad_input == 2 and edge.logic.counters.accepted == 2


@pytest.mark.ros
def test_annotated_image_and_label_info(graph: Graph) -> None:
    edge = graph.edge(tau=0.0)
    ns = edge.get_namespace()
    annotated = graph.collect(graph.ros.Image, f'{ns}/annotated')
    latched = graph.ros.QoSProfile(depth=1)
    latched.durability = graph.ros.DurabilityPolicy.TRANSIENT_LOCAL
    labels = graph.collect(graph.ros.LabelInfo, f'{ns}/label_info', latched)
    wait_for(lambda: edge._annotated.get_subscription_count() > 0)
    stream(graph, edge, 2, expect_expert=False)
    wait_for(lambda: len(annotated) >= 2, what='annotated images')
    assert stamps(annotated) == [(100, 0), (101, 1000)]
    assert annotated[0].encoding == 'rgb8' and annotated[0].height == 320  # 8x8 enlarged
    wait_for(lambda: labels, what='label_info (transient local, sent before we subscribed)')
    assert [c.class_name for c in labels[0].class_map] == list(edge.logic.class_names)


@pytest.mark.ros
def test_tau_set_live_and_bad_values_rejected(graph: Graph) -> None:
    Parameter = graph.ros.Parameter
    edge = graph.edge(tau=0.8)
    ok = edge.set_parameters([Parameter('tau', value=0.5)])[0]
    assert ok.successful and edge.logic.params.routing.tau == 0.5
    assert edge.logic.stage.routing.tau == 0.5  # the router reads the new value
    for bad in (
        Parameter('tau', value=-3.0),  # below the declared range
        Parameter('k', value=0),
        Parameter('confidence', value='bogus'),  # not one of the choices
        Parameter('library', value='/elsewhere'),  # read-only
        Parameter('tau', value='high'),  # wrong type
    ):
        result = edge.set_parameters([bad])[0]
        assert not result.successful and result.reason, bad.name
    assert edge.logic.params.routing.tau == 0.5 and edge.logic.params.routing.k == 2
    both = edge.set_parameters_atomically(
        [Parameter('tau', value=0.3), Parameter('confidence', value='margin')]
    )
    assert both.successful
    assert (edge.logic.params.routing.tau, edge.logic.params.routing.confidence) == (0.3, 'margin')


@pytest.mark.ros
def test_expert_parameters(graph: Graph) -> None:
    Parameter = graph.ros.Parameter
    expert = graph.expert(preload=False)
    assert expert.set_parameters([Parameter('max_batch', value=2)])[0].successful
    assert expert.logic.params.max_batch == 2
    assert not expert.set_parameters([Parameter('max_batch', value=0)])[0].successful
    assert not expert.set_parameters([Parameter('device', value='cuda')])[0].successful
    assert expert.logic.params.max_batch == 2


@pytest.mark.ros
def test_bad_configuration_fails_configure_and_the_node_stays_up(
    ros: SimpleNamespace, graph: Graph
) -> None:
    """No library, a library that is not there: configure returns FAILURE with the reason
    logged, the node is back to unconfigured and still answers its lifecycle services.
    A parameter out of its declared range is refused when the node is made."""
    failure = ros.TransitionCallbackReturn.FAILURE
    edge = graph.edge(library='', start=False)
    assert edge.trigger_configure() == failure
    assert 'library' in edge.lifecycle.last_error
    expert = graph.expert(library=str(graph.zoo.parent / 'nowhere'), start=False)
    assert expert.trigger_configure() == failure
    assert 'nowhere' in expert.lifecycle.last_error
    for node in (edge, expert):
        assert graph.rcl_state(node) == 'unconfigured' == node.lifecycle.state.value
    with pytest.raises(ros.ParameterException):
        graph.edge(tau=-1.0, start=False)


@pytest.mark.ros
def test_an_illegal_transition_request_is_refused_and_the_node_lives_on(graph: Graph) -> None:
    """``activate`` while unconfigured, over the change_state service as ``ros2 lifecycle
    set`` sends it: rclpy raised out of its callback and the node died (seen on Jazzy);
    now the answer is success false, the state is unchanged and configure still works."""
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState

    edge = graph.edge(start=False)
    client = graph.probe.create_client(
        ChangeState, f'{edge.get_fully_qualified_name()}/change_state'
    )
    try:
        assert client.wait_for_service(timeout_sec=30)
        answers = []
        for transition in (Transition.TRANSITION_ACTIVATE, Transition.TRANSITION_CONFIGURE):
            request = ChangeState.Request()
            request.transition.id = transition
            future = client.call_async(request)
            wait_for(future.done, what='change_state')
            answers.append(future.result().success)
    finally:
        graph.probe.destroy_client(client)
    assert answers == [False, True]
    assert graph.rcl_state(edge) == 'inactive'


@pytest.mark.ros
def test_lifecycle_nodes_subscribe_only_when_active(graph: Graph) -> None:
    """Unconfigured and inactive nodes have no input subscription (wait_ready's signal);
    activate adds it, deactivate removes it; get_state agrees at every step."""
    edge, expert = graph.edge(tau=0.0, start=False), graph.expert(start=False)
    ns = graph.namespace

    def inputs() -> tuple[int, int]:
        probe = graph.probe
        return probe.count_subscribers(f'{ns}/image'), probe.count_subscribers(
            f'{ns}/expert/requests'
        )

    assert inputs() == (0, 0) and edge.get_parameter('tau').value == 0.0
    for node in (edge, expert):
        assert node.trigger_configure() == graph.ros.TransitionCallbackReturn.SUCCESS
        assert graph.rcl_state(node) == 'inactive'
    assert inputs() == (0, 0) and edge.logic.class_names
    for node in (edge, expert):
        node.trigger_activate()
        assert graph.rcl_state(node) == 'active'
    wait_for(lambda: inputs() == (1, 1), what='input subscriptions')
    assert len(stream(graph, edge, 3, expect_expert=False)) == 3
    for node in (edge, expert):
        node.trigger_deactivate()
        assert graph.rcl_state(node) == 'inactive'
    wait_for(lambda: inputs() == (0, 0), what='no input subscriptions')
    for node in (edge, expert):
        node.trigger_cleanup()
        assert graph.rcl_state(node) == 'unconfigured' and node._logic is None


@pytest.mark.ros
def test_deactivate_with_frames_in_flight_answers_every_frame_once(graph: Graph) -> None:
    """12 frames into a slow edge model (50 ms a batch), every one offloaded (tau 1.5) to
    an expert that would wait 10 s to fill its batch; the deadline (20 s) is far off.

    Deactivating the edge stops the camera, runs the frames still queued, and waits for
    the answers to the requests out; deactivating the expert then answers its queue at
    once. Every frame the edge took gets exactly one result, from the expert (no
    fallback), before the edge's deactivate returns; then it takes no more frames.
    """
    expert = graph.expert(max_wait_ms=10000.0, max_batch=64, preload=False)
    edge = graph.edge(tau=1.5, deadline_ms=20000.0)
    backend = edge.logic.stage.backend
    run_tensor = backend.run_tensor

    def slow(x: Any) -> Any:
        time.sleep(0.05)
        return run_tensor(x)

    backend.run_tensor = slow
    ns = graph.namespace
    results = graph.collect(graph.ros.Classification, f'{ns}/classification', 100)
    images = graph.publisher(graph.ros.Image, f'{ns}/image')
    wait_for(lambda: images.get_subscription_count() > 0, what='edge subscribed to image')
    wait_for(lambda: edge._results.get_subscription_count() > 0, what='probe subscribed')
    wait_for(lambda: edge._requests.get_subscription_count() > 0, what='expert matched')
    for i in range(12):
        images.publish(image_msg(graph.ros, i))
    wait_for(lambda: edge.logic.counters.frames >= 1, what='the first frame taken')
    in_flight = 12 - edge.logic.counters.results
    done: list = []
    deactivating = threading.Thread(target=lambda: done.append(edge.trigger_deactivate()))
    deactivating.start()
    logic = edge.logic

    def handed_over() -> bool:
        inference = any(t.name == 'edge-inference' for t in threading.enumerate())
        return not inference and logic.pending_count == expert.logic.queued > 0

    wait_for(handed_over, what='the edge ran its queue, its requests queued at the expert')
    expert.trigger_deactivate()
    deactivating.join(timeout=30)
    assert done == [graph.ros.TransitionCallbackReturn.SUCCESS] and in_flight > 0
    assert graph.rcl_state(edge) == 'inactive'
    counters = logic.counters
    wait_for(lambda: len(results) >= counters.frames, what='every result delivered')
    assert logic.pending_count == 0 and counters.frames == counters.results == len(results)
    assert counters.expert == counters.offloaded == counters.frames
    assert len(set(stamps(results))) == len(results)  # each frame once
    assert stamps(results) == [(100 + i, 1000 * i) for i in range(counters.frames)]
    wait_for(lambda: images.get_subscription_count() == 0, what='the camera unsubscribed')


@pytest.mark.ros
def test_malformed_request_is_answered(graph: Graph) -> None:
    expert = graph.expert(preload=False)
    ns = expert.get_namespace()
    responses = graph.collect(
        graph.ros.ExpertResponse,
        f'{ns}/expert/responses',
        graph.ros.QoSProfile(depth=10, reliability=graph.ros.ReliabilityPolicy.RELIABLE),
    )
    requests = graph.publisher(graph.ros.ExpertRequest, f'{ns}/expert/requests')
    wait_for(lambda: requests.get_subscription_count() > 0)
    wait_for(lambda: expert._responses.get_subscription_count() > 0)
    msg = graph.ros.ExpertRequest(edge_id='e9', request_id=4, frame_format=9)
    requests.publish(msg)
    wait_for(lambda: responses, what='a response')
    assert responses[0].status == graph.ros.ExpertResponse.STATUS_BAD_REQUEST
    assert (responses[0].edge_id, responses[0].request_id) == ('e9', 4)
    assert 'frame_format' in responses[0].error


@pytest.mark.ros
def test_two_edges_share_one_expert(graph: Graph) -> None:
    """Edges in namespaces a and b remap to the expert's absolute topics; each gets its own."""
    expert = graph.expert()
    shared = [
        '--ros-args',
        '-r',
        f'expert/requests:={expert.get_namespace()}/expert/requests',
        '-r',
        f'expert/responses:={expert.get_namespace()}/expert/responses',
    ]
    edges = [
        graph.edge(namespace=f'{graph.namespace}/{name}', cli_args=shared, tau=1.5)
        for name in ('a', 'b')
    ]
    results = [stream(graph, edge, 4, expect_expert=True) for edge in edges]
    for edge, got in zip(edges, results, strict=True):
        assert len(got) == 4 and edge.logic.counters.expert == 4
    # each edge also sees the other's 4 replies on the shared topic, and drops them
    wait_for(lambda: sum(e.logic.counters.foreign_replies for e in edges) == 8, what='foreign')
    assert expert.logic.counters.answered == 8


@pytest.mark.ros
def test_diagnostics_are_published(graph: Graph) -> None:
    edge = graph.edge(tau=0.0)
    mine = f'ask_expert: edge {edge.logic.params.edge_id}'
    arrays = graph.collect(graph.ros.DiagnosticArray, '/diagnostics')
    wait_for(lambda: any(s.name == mine for a in list(arrays) for s in a.status))
    status = next(s for a in list(arrays) for s in a.status if s.name == mine)
    keys = {v.key for v in status.values}
    assert {'frames', 'offloaded', 'expert', 'fallback_deadline', 'bad_input', 'pending'} <= keys
