"""The ``main()`` every rclpy node of this package shares (ros2/demos' talker idiom).

Init, construct (a bad configuration exits 1 with one logged line), spin a
multi-threaded executor, catch Ctrl-C and external shutdown, destroy the node,
``try_shutdown()``. The message and parameter conversions stay in :mod:`.conversions`.
"""

from __future__ import annotations

import signal
from collections.abc import Callable

import rclpy
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node

from ask_expert_ros.core.errors import AskExpertError


def run_node(node_class: Callable[[], Node], name: str, args: list[str] | None = None) -> int:
    """The ``main()`` of both nodes: init, construct (bad config: exit 1), spin, clean up."""
    rclpy.init(args=args)
    try:
        node = node_class()
    except (ParameterException, ValueError, AskExpertError, OSError) as exc:
        rclpy.logging.get_logger(name).error(f'cannot start: {exc}')
        rclpy.try_shutdown()
        return 1
    executor = MultiThreadedExecutor(num_threads=3)
    executor.add_node(node)
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        # Ctrl-C in a terminal reaches this process twice (the terminal's and the one
        # ros2 launch forwards): the second must not cut the clean-up short.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
    return 0
