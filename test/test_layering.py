"""The core never imports ROS or DDS; the package imports on a machine without rclpy."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import ask_expert_ros

CORE = Path(ask_expert_ros.__file__).parent / 'core'
FORBIDDEN = (
    'rclpy',
    'cyclonedds',
    'rosbags',
    'cv_bridge',
    'launch',
    'launch_ros',
    'ask_expert_ros.cli',
    'ask_expert_ros.runtime',  # runtime imports the core; the core gets a BackendFactory
    'ask_expert_ros.dds',
    'ask_expert_ros.ros',
    'onnxruntime',
    'tensorrt',
)


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_core_imports_point_downwards() -> None:
    files = sorted(CORE.rglob('*.py'))
    assert len(files) >= 8
    offenders = {}
    for path in files:
        bad = {
            m
            for m in imported_modules(path)
            if m.split('.')[0] in FORBIDDEN
            or m.endswith('_msgs')
            or '_msgs.' in m
            or m in FORBIDDEN
            or any(m.startswith(f + '.') for f in FORBIDDEN)
        }
        if bad:
            offenders[path.name] = sorted(bad)
    assert offenders == {}


def test_forbidden_import_would_be_caught(tmp_path: Path) -> None:
    probe = tmp_path / 'probe.py'
    probe.write_text('import rclpy\nfrom sensor_msgs.msg import Image\n')
    assert imported_modules(probe) == {'rclpy', 'sensor_msgs.msg'}


def test_import_without_rclpy() -> None:
    """Block rclpy and every *_msgs package, then import the package and its core."""
    code = (
        'import sys\n'
        'class Block:\n'
        '    def find_spec(self, name, path=None, target=None):\n'
        "        if name.split('.')[0] in ('rclpy', 'cyclonedds') or "
        "name.split('.')[0].endswith('_msgs'):\n"
        "            raise ImportError('blocked ' + name)\n"
        'sys.meta_path.insert(0, Block())\n'
        'import ask_expert_ros, ask_expert_ros.cli\n'
        'from ask_expert_ros.core import demo, engine, library, routing\n'
        "assert 'rclpy' not in sys.modules\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == 'ok'
