"""``ros2 run ask_expert_ros wait_ready /edge=/image /expert=/expert/requests``.

Waits until each named node subscribes to its topic, then exits 0 (1 on timeout).
``bag_replay.launch.py`` starts ``ros2 bag play`` only after it, so no frame of the bag
is played to nodes still loading and warming up their models. Both are lifecycle nodes
and subscribe to their input only while active (the edge to ``image``, the expert to
``expert/requests``), after configure loaded and warmed up their models, so a
subscription is the readiness signal, whoever drives the lifecycle; the recorder node
subscribes to the same topics, hence the node names. A fixed delay was not enough:
with ten DeiT-4H experts on a 2-core machine the expert took 17 s longer than the edge
to come up, and the whole 18 s bag was played before it answered once.
"""

from __future__ import annotations

import argparse
import time

import rclpy
from rclpy.node import Node

_POLL_S = 0.1


def _subscribed(node: Node, fqn: str, topic: str) -> bool:
    for info in node.get_subscriptions_info_by_topic(topic):
        namespace = info.node_namespace.rstrip('/')
        if f'{namespace}/{info.node_name}' == fqn:
            return True
    return False


def main(args: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[2])
    parser.add_argument(
        'pairs', nargs='+', metavar='NODE=TOPIC', help='fully qualified node and topic names'
    )
    parser.add_argument('--timeout', type=float, default=600.0, help='seconds (default 600)')
    parsed, ros_args = parser.parse_known_args(args)
    wanted = []
    for pair in parsed.pairs:
        fqn, sep, topic = pair.partition('=')
        if not sep or not fqn.startswith('/') or not topic.startswith('/'):
            parser.error(f'expected /node=/topic (absolute names), got {pair!r}')
        wanted.append((fqn, topic))
    rclpy.init(args=ros_args)
    node = rclpy.create_node('wait_ready')
    log = node.get_logger()
    deadline = time.monotonic() + parsed.timeout
    try:
        while True:
            missing = [(n, t) for n, t in wanted if not _subscribed(node, n, t)]
            if not missing:
                log.info('ready: ' + ', '.join(f'{n} on {t}' for n, t in wanted))
                return 0
            if time.monotonic() > deadline:
                log.error(
                    f'not ready after {parsed.timeout:.0f} s: '
                    + ', '.join(f'{n} has not subscribed to {t}' for n, t in missing)
                )
                return 1
            time.sleep(_POLL_S)
    except KeyboardInterrupt:
        return 130
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
