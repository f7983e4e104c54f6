"""The core never imports ROS or DDS, its rooms import one way, and the package imports on
a machine without rclpy."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import ask_expert_ros
from ask_expert_ros.core._moved import MOVED

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
    'ray',  # serving engines live in ask_expert_ros.serving, resolved by name
    'ask_expert_ros.serving',
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
        'from ask_expert_ros.core import demo\n'
        'from ask_expert_ros.core.inference import engine, library, routing\n'
        "assert 'rclpy' not in sys.modules\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == 'ok'


# the core's rooms, lowest first: a file may import its own room and the rooms before it
ROOMS = ('inference', 'planning', 'nodes', 'evaluation', 'training')
BASE = ('errors', 'data', '_moved')  # under every room
TOP = ('demo',)  # above every room


def rank(module: str) -> int:
    """Where a module of the core stands: 0 base, 1.. the rooms in order, then the top."""
    part = module.removeprefix('ask_expert_ros.core.').split('.')[0]
    if part in BASE:
        return 0
    if part in ROOMS:
        return 1 + ROOMS.index(part)
    assert part in TOP, f'{module} is in no room of the core: add it to ROOMS, BASE or TOP'
    return len(ROOMS) + 1


def core_files() -> list[tuple[str, Path]]:
    """(dotted module, path) of every file of the core but its face."""
    out = []
    for path in sorted(CORE.rglob('*.py')):
        rel = path.relative_to(CORE.parent.parent).with_suffix('')
        parts = list(rel.parts)
        if parts[-1] == '__init__':
            parts.pop()
        if parts != ['ask_expert_ros', 'core']:
            out.append(('.'.join(parts), path))
    return out


def test_rooms_import_downwards_only() -> None:
    """inference imports no other room; planning only inference; nodes no evaluation or
    training; evaluation no training; training anything below it; demo anything."""
    offenders = {}
    for module, path in core_files():
        upward = sorted(
            m
            for m in imported_modules(path)
            if m.startswith('ask_expert_ros.core.') and rank(m) > rank(module)
        )
        if upward:
            offenders[module] = upward
    assert offenders == {}


def test_core_modules_do_not_import_the_face() -> None:
    """Inside the core a name comes from the module that defines it, not from the
    ``ask_expert_ros.core`` face (which imports the rooms: a cycle waiting to happen)."""
    offenders = [
        module for module, path in core_files() if 'ask_expert_ros.core' in imported_modules(path)
    ]
    assert offenders == []


def test_rooms_have_a_face_that_says_what_they_own_and_may_import() -> None:
    for room in ROOMS:
        doc = ast.get_docstring(ast.parse((CORE / room / '__init__.py').read_text()))
        assert doc and 'May import' in doc, room


def test_no_code_uses_the_old_module_paths() -> None:
    """Only the table in core/_moved.py names the paths from before the rooms."""
    old = {f'ask_expert_ros.core.{name}' for name in MOVED}
    roots = [CORE.parent, Path(__file__).parent]
    offenders = {}
    for root in roots:
        for path in sorted(root.rglob('*.py')):
            used = sorted(imported_modules(path) & old)
            used += sorted(
                f'ask_expert_ros.core.{alias.name}'
                for node in ast.walk(ast.parse(path.read_text()))
                if isinstance(node, ast.ImportFrom) and node.module == 'ask_expert_ros.core'
                for alias in node.names
                if alias.name in MOVED
            )
            if used:
                offenders[path.name] = used
    assert offenders == {}


def test_old_module_paths_still_import_with_a_warning() -> None:
    """Every path of the table gives the module at its new home and warns (one process:
    the first import of the core costs seconds)."""
    code = (
        'import importlib, warnings\n'
        'from ask_expert_ros.core._moved import MOVED\n'
        'warnings.simplefilter("always")\n'
        'for old, new in sorted(MOVED.items()):\n'
        '    with warnings.catch_warnings(record=True) as caught:\n'
        '        module = importlib.import_module("ask_expert_ros.core." + old)\n'
        '    assert module is importlib.import_module("ask_expert_ros.core." + new), old\n'
        '    assert any(w.category is DeprecationWarning for w in caught), old\n'
        "print('ok', len(MOVED))\n"
    )
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=False)
    assert out.stdout.strip() == f'ok {len(MOVED)}', out.stderr
