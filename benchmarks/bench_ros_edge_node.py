"""The rclpy edge node as a robot runs it: frames/s it sustains, frames it drops, latency.

Starts ``ros2 run ask_expert_ros edge_node`` (a separate process, real ROS 2), publishes
``--frames`` camera frames (``rgb8``, ``--size``²) at each of ``--rates`` Hz, and counts
the ``Classification`` results: how many came back, how many per second between the
first and the last, and the latency from publishing a frame to its result. A frame the
node never saw (the camera subscription's keep-last history overflowed while the node
was busy) has no result: that is the drop a camera topic is meant to have under
overload, and it is reported as ``dropped``. Every frame is answered on the edge
(``tau 0``, ``offload false``): this measures the edge node, not the expert.

Needs a sourced ROS 2 (Humble/Jazzy) environment with this package built::

    source install/setup.bash
    python benchmarks/bench_ros_edge_node.py --rates 30,60,300 --out bench_ros_edge.json

Without ``--library``, a DeiT-3H with random weights (100 classes, ``--size`` input) is
written to a temporary model zoo first: speed does not depend on the weights.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import numpy as np


def make_zoo(directory: Path, variant: str, size: int) -> Path:
    """A library with one random-weight edge model (and the expert the manifest needs)."""
    import torch

    from ask_expert_ros.bench import speed
    from ask_expert_ros.core.inference.library import write_manifest
    from ask_expert_ros.core.inference.models import create_model, save_model

    config = speed.SpeedConfig(img_size=size)
    scheme = speed.bench_scheme(config.num_classes)
    torch.manual_seed(0)
    model_config = speed.model_config(variant, scheme, config)
    edge = save_model(create_model(model_config), model_config, directory / 'edge.safetensors')
    return write_manifest(directory, scheme, 2, dict.fromkeys(scheme.expert_keys(2), edge), edge)


def run_rate(args: argparse.Namespace, library: Path, rate: float) -> dict:
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image
    from vision_msgs.msg import Classification

    namespace = f'/bench_{uuid.uuid4().hex[:8]}'
    params = ['library:=' + str(library), 'tau:=0.0', 'offload:=false', 'edge_id:=bench']
    params += [f'{k}:={v}' for k, v in (('backend', args.backend), ('precision', args.precision))]
    command = [
        'ros2',
        'run',
        'ask_expert_ros',
        'edge_node',
        '--ros-args',
        '-r',
        f'__ns:={namespace}',
    ]
    for p in params:
        command += ['-p', p]
    node_process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )
    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node('bench_camera', namespace=namespace, context=context)
    reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    camera = node.create_publisher(Image, 'image', reliable)
    sent_at: dict[int, float] = {}
    answered: dict[int, float] = {}

    def on_result(msg: Classification) -> None:
        answered.setdefault(msg.header.stamp.sec, time.monotonic())

    results_qos = QoSProfile(depth=args.frames, reliability=ReliabilityPolicy.RELIABLE)
    node.create_subscription(Classification, 'classification', on_result, results_qos)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    try:
        deadline = time.monotonic() + args.start_timeout
        while camera.get_subscription_count() == 0 or node.count_publishers('classification') == 0:
            if node_process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f'the edge node did not come up: {node_process.stderr.read()}')
            time.sleep(0.1)
        time.sleep(1.0)  # past start-up
        rng = np.random.default_rng(0)
        size = args.size
        payloads = [rng.integers(0, 256, (size, size, 3), np.uint8).tobytes() for _ in range(8)]
        start = time.monotonic()
        for i in range(args.frames):
            msg = Image(
                height=size, width=size, encoding='rgb8', step=3 * size, data=payloads[i % 8]
            )
            msg.header.stamp.sec = i  # the frame's number: results are matched by stamp
            sent_at[i] = time.monotonic()
            camera.publish(msg)
            time.sleep(max(0.0, start + (i + 1) / rate - time.monotonic()))
        quiet_until = time.monotonic() + args.drain_s
        while time.monotonic() < quiet_until and len(answered) < args.frames:
            time.sleep(0.05)
    finally:
        os.killpg(node_process.pid, signal.SIGINT)
        node_process.wait(30)
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown(context=context)
    done = sorted(answered.values())
    latency = np.array([(answered[i] - sent_at[i]) * 1e3 for i in answered])
    return {
        'rate_hz': rate,
        'frames': args.frames,
        'results': len(answered),
        'dropped': args.frames - len(answered),
        'results_per_s': (len(done) - 1) / (done[-1] - done[0]) if len(done) > 1 else None,
        'latency_ms_p50': float(np.percentile(latency, 50)) if len(latency) else None,
        'latency_ms_p95': float(np.percentile(latency, 95)) if len(latency) else None,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--rates', default='30,60,300', help='camera rates, Hz, comma-separated')
    parser.add_argument('--frames', type=int, default=400, help='frames per rate')
    parser.add_argument('--size', type=int, default=224, help='frame and model input size')
    parser.add_argument('--variant', default='deit_3h', help='edge model of the made-up zoo')
    parser.add_argument('--library', type=Path, help='an existing zoo instead (library.yaml)')
    parser.add_argument('--backend', default='auto')
    parser.add_argument('--precision', default='auto')
    parser.add_argument('--drain-s', type=float, default=3.0, help='wait for late results')
    parser.add_argument('--start-timeout', type=float, default=120.0)
    parser.add_argument('--out', type=Path, help='write the rows as JSON here')
    args = parser.parse_args()
    try:
        import rclpy  # noqa: F401
    except ImportError:
        print('rclpy not importable: source a ROS 2 setup.bash first', file=sys.stderr)
        return 2
    rows = []
    with tempfile.TemporaryDirectory(prefix='ask_expert_bench_ros_') as tmp:
        library = args.library or make_zoo(Path(tmp), args.variant, args.size)
        for rate in (float(r) for r in args.rates.split(',')):
            row = run_rate(args, library, rate)
            rows.append(row)
            print(
                f'{rate:6.0f} Hz: {row["results"]}/{row["frames"]} answered '
                f'({row["dropped"]} dropped), {row["results_per_s"] or 0:.1f} results/s, '
                f'latency p50 {row["latency_ms_p50"] or 0:.1f} ms, '
                f'p95 {row["latency_ms_p95"] or 0:.1f} ms'
            )
    if args.out:
        args.out.write_text(
            json.dumps(
                {'args': vars(args) | {'out': str(args.out)}, 'rows': rows}, indent=2, default=str
            )
        )
    return 0


if __name__ == '__main__':
    sys.exit(main())
