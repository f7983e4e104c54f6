"""Serialise/deserialise sensor_msgs/Image: naive cyclonedds vs ask_expert_ros.dds vs rosbags.

Three implementations of the same CDR bytes, timed side by side in one run:

* ``naive``: a plain cyclonedds ``IdlStruct`` with ``data: sequence[uint8]`` (cyclonedds'
  generic serialiser packs one int at a time and deserialises into a list);
* ``ours``: :class:`ask_expert_ros.dds.msgs.Image` (numpy in, ``bytes`` out), which
  delegates to rosbags: the conversion to and from rosbags' message objects and the copy
  into ``bytes`` (serialised payload; ``data`` after deserialising) are its overhead;
* ``rosbags``: ``Typestore.serialize_cdr``/``deserialize_cdr`` (numpy in, a memoryview of
  the payload out; a numpy view into a copy of the ``bytes`` payload out).

All three are checked to produce identical bytes first. Times are the best of
``--repeat`` runs, per message, in microseconds.

    python benchmarks/bench_dds_serialization.py --out bench_dds.json

No ``from __future__ import annotations`` here: cyclonedds resolves string annotations as
module paths and cannot resolve ``t.uint32``.
"""

import argparse
import json
import os
import platform
import sys
import timeit
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path

import numpy as np
from cyclonedds.idl import IdlStruct
from cyclonedds.idl import annotations as idl
from cyclonedds.idl import types as t
from rosbags.typesys import Stores, get_typestore

from ask_expert_ros.dds.msgs import Header, Image, Time

SHAPES = ((224, 224, 3), (480, 640, 3))


@dataclass
@idl.final
class NaiveImage(IdlStruct, typename='bench::msg::dds_::NaiveImage_'):
    """sensor_msgs/Image as cyclonedds' documentation would write it."""

    header: Header = field(default_factory=Header)
    height: t.uint32 = 0
    width: t.uint32 = 0
    encoding: str = ''
    is_bigendian: t.uint8 = 0
    step: t.uint32 = 0
    data: t.sequence[t.uint8] = field(default_factory=list)


def best_us(fn: Callable[[], object], repeat: int, min_time: float) -> float:
    """Best time per call over ``repeat`` runs of at least ``min_time`` seconds each."""
    number, elapsed = 1, 0.0
    while True:  # calibrate: enough calls for one run to take min_time
        elapsed = timeit.timeit(fn, number=number)
        if elapsed >= min_time:
            break
        number *= 2 if elapsed == 0 else max(2, min(10, int(min_time / elapsed) + 1))
    runs = [elapsed, *timeit.repeat(fn, number=number, repeat=max(repeat - 1, 0))]
    return min(runs) / number * 1e6


def bench_shape(shape: tuple[int, int, int], repeat: int, min_time: float) -> list[dict]:
    height, width, channels = shape
    pixels = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    header = Header(Time(1_700_000_000, 5), 'camera_optical_frame')
    step = width * channels
    store = get_typestore(Stores.ROS2_JAZZY)
    ros_image = store.types['sensor_msgs/msg/Image']
    ros_header = store.types['std_msgs/msg/Header']
    ros_time = store.types['builtin_interfaces/msg/Time']

    naive = NaiveImage(header, height, width, 'rgb8', 0, step, pixels.tobytes())
    ours = Image(header, height, width, 'rgb8', 0, step, pixels)
    theirs = ros_image(
        ros_header(ros_time(1_700_000_000, 5), 'camera_optical_frame'),
        height, width, 'rgb8', 0, step, pixels.reshape(-1),
    )  # fmt: skip

    payloads = {
        'naive': naive.serialize(),
        'ours': ours.serialize(),
        'rosbags': bytes(store.serialize_cdr(theirs, 'sensor_msgs/msg/Image')),
    }
    if len(set(payloads.values())) != 1:
        sys.exit(f'{shape}: the three implementations disagree on the CDR bytes')
    payload = payloads['ours']
    if Image.deserialize(payload).data != pixels.tobytes():
        sys.exit(f'{shape}: ours does not round-trip')

    cases = {
        'naive': (naive.serialize, lambda: NaiveImage.deserialize(payload)),
        'ours': (ours.serialize, lambda: Image.deserialize(payload)),
        'rosbags': (
            lambda: store.serialize_cdr(theirs, 'sensor_msgs/msg/Image'),
            lambda: store.deserialize_cdr(payload, 'sensor_msgs/msg/Image'),
        ),
    }
    rows = []
    for impl, (ser, de) in cases.items():
        rows.append(
            {
                'shape': list(shape),
                'bytes': len(payload),
                'impl': impl,
                'serialize_us': best_us(ser, repeat, min_time),
                'deserialize_us': best_us(de, repeat, min_time),
            }
        )
    return rows


def ratios(rows: list[dict]) -> dict[str, dict[str, float]]:
    """Per shape: ours / rosbags and naive / ours, for serialise and deserialise."""
    out = {}
    for shape in {tuple(r['shape']) for r in rows}:
        by = {r['impl']: r for r in rows if tuple(r['shape']) == shape}
        key = 'x'.join(map(str, shape))
        out[key] = {
            f'{op}_{name}': by[a][f'{op}_us'] / by[b][f'{op}_us']
            for op in ('serialize', 'deserialize')
            for name, a, b in (('ours_over_rosbags', 'ours', 'rosbags'),
                               ('naive_over_ours', 'naive', 'ours'))
        }  # fmt: skip
    return out


def table(rows: list[dict], rat: dict[str, dict[str, float]]) -> str:
    lines = [f'{"shape":>11} {"impl":>8} {"serialize µs":>13} {"deserialize µs":>15}']
    for r in rows:
        shape = 'x'.join(map(str, r['shape']))
        lines.append(
            f'{shape:>11} {r["impl"]:>8} {r["serialize_us"]:13.1f} {r["deserialize_us"]:15.1f}'
        )
    lines.append('')
    lines.append(f'{"shape":>11} {"ratio":>18} {"serialize":>10} {"deserialize":>12}')
    for shape, rs in sorted(rat.items()):
        for name in ('ours_over_rosbags', 'naive_over_ours'):
            ser, de = rs[f'serialize_{name}'], rs[f'deserialize_{name}']
            lines.append(f'{shape:>11} {name:>18} {ser:10.2f} {de:12.2f}')
    return '\n'.join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--repeat', type=int, default=5, help='timed runs per case (best kept)')
    parser.add_argument(
        '--min-time', type=float, default=0.2, help='seconds each timed run lasts at least'
    )
    parser.add_argument('--out', type=Path, help='also write the results as JSON here')
    args = parser.parse_args(argv)

    rows = [row for shape in SHAPES for row in bench_shape(shape, args.repeat, args.min_time)]
    rat = ratios(rows)
    print(table(rows, rat))
    if args.out:
        meta = {
            'python': platform.python_version(),
            'machine': platform.machine(),
            'processor': platform.processor(),
            'cpus': os.cpu_count(),
            **{pkg: version(pkg) for pkg in ('cyclonedds', 'rosbags', 'numpy')},
            'repeat': args.repeat,
            'min_time_s': args.min_time,
        }
        args.out.write_text(json.dumps({'meta': meta, 'results': rows, 'ratios': rat}, indent=2))
    return 0


if __name__ == '__main__':
    sys.exit(main())
