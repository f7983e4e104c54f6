"""ROS 2 package skeleton: package.xml, messages, CMake install rules, pip metadata."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from catkin_pkg.package import parse_package
from rosbags.typesys import Stores, get_types_from_msg, get_typestore

ROOT = Path(__file__).resolve().parents[1]
MESSAGES = sorted((ROOT / 'msg').glob('*.msg'))


def test_package_xml_is_valid_format3_ament_cmake() -> None:
    package = parse_package(str(ROOT / 'package.xml'))
    package.validate()
    assert package.package_format == 3 and package.name == 'ask_expert_ros'
    assert package.get_build_type() == 'ament_cmake'
    deps = {
        d.name for d in package.build_depends + package.exec_depends + package.buildtool_depends
    }
    assert {
        'rclpy',
        'sensor_msgs',
        'std_msgs',
        'vision_msgs',
        'builtin_interfaces',
        'rosidl_default_generators',
        'rosidl_default_runtime',
    } <= deps
    assert 'rosidl_interface_packages' in [g.name for g in package.member_of_groups]


def test_versions_agree() -> None:
    import ask_expert_ros

    xml_version = parse_package(str(ROOT / 'package.xml')).version
    setup_version = re.search(r"version='([^']+)'", (ROOT / 'setup.py').read_text()).group(1)
    assert xml_version == setup_version == ask_expert_ros.__version__


@pytest.mark.parametrize('path', MESSAGES, ids=lambda p: p.name)
def test_message_parses_and_every_field_is_documented(path: Path) -> None:
    """rosbags parses it as ROS 2 would; every field sits in a block that opens with a comment."""
    text = path.read_text()
    name = f'ask_expert_ros/msg/{path.stem}'
    store = get_typestore(Stores.ROS2_JAZZY)
    store.register(get_types_from_msg(text, name))
    assert name in store.types
    documented, fields = False, 0
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped:
            documented = False  # a blank line ends a comment's block
        elif stripped.startswith('#'):
            documented = True
        else:
            fields += 1
            assert documented, f'{name}: field without a comment: {stripped}'
    assert fields >= 10


def test_messages_are_listed_in_cmake() -> None:
    cmake = (ROOT / 'CMakeLists.txt').read_text()
    assert len(MESSAGES) >= 2
    for path in MESSAGES:
        assert f'msg/{path.name}' in cmake
    # the rosidl/ament_python collision (ros2/rosidl_python#131) is avoided on purpose
    code = '\n'.join(ln for ln in cmake.splitlines() if not ln.lstrip().startswith('#'))
    assert 'ament_python_install_package' not in code
    assert 'rosidl_generate_interfaces(${PROJECT_NAME}' in code
    assert code.index('rosidl_generate_interfaces') < code.index(
        'install(DIRECTORY ${PROJECT_NAME}/'
    )


def test_no_msg_folder_inside_python_package() -> None:
    """rosidl generates ask_expert_ros.msg at build time; a source folder would collide."""
    assert not (ROOT / 'ask_expert_ros' / 'msg').exists()


def test_every_installed_program_exists() -> None:
    cmake = (ROOT / 'CMakeLists.txt').read_text()
    for match in re.finditer(r'install\(PROGRAMS ([^)]*?) DESTINATION', cmake):
        for program in match.group(1).split():
            assert (ROOT / program).is_file(), program
