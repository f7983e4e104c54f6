"""The ``main()`` every rclpy node of this package shares (ros2/demos' talker idiom).

Init, construct (a parameter of the wrong type or out of range exits 1 with one logged
line), spin a multi-threaded executor, and on Ctrl-C, SIGTERM or external shutdown:
finalize a lifecycle node while the executor still spins (deactivate answers what is
in flight: the expert's replies still arrive), destroy the node, ``try_shutdown()``.
The message and parameter conversions stay in :mod:`.conversions`.

A lifecycle node starts unconfigured, for a lifecycle manager or the launch files'
lifecycle events; with the parameter ``autostart:=true`` (``ros2 run ... --ros-args -p
autostart:=true``) it is configured and activated here, and a failed configure exits 1.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from typing import Any

import rclpy
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node

from ask_expert_ros.core.errors import AskExpertError
from ask_expert_ros.ros.managed import AUTOSTART, ManagedNode

try:  # rclpy's own SIGINT handler shuts the context down at once: no clean deactivate
    from rclpy.signals import SignalHandlerOptions

    _INIT: dict[str, Any] = {'signal_handler_options': SignalHandlerOptions.NO}
except ImportError:  # an rclpy without the option: its handler stays
    _INIT = {}


def run_node(node_class: Callable[[], Node], name: str, args: list[str] | None = None) -> int:
    """The ``main()`` of every node: init, construct (bad parameters: exit 1), spin, clean up."""
    rclpy.init(args=args, **_INIT)
    try:
        node = node_class()
    except (ParameterException, ValueError, AskExpertError, OSError) as exc:
        rclpy.logging.get_logger(name).error(f'cannot start: {exc}')
        rclpy.try_shutdown()
        return 1
    managed = node if isinstance(node, ManagedNode) else None
    if managed is not None and managed.get_parameter(AUTOSTART).value and not managed.start():
        managed.shut_down()
        managed.destroy_node()
        rclpy.try_shutdown()
        return 1
    executor = MultiThreadedExecutor(num_threads=3)
    executor.add_node(node)
    finishing = threading.Lock()

    def finish() -> None:
        """Finalize while the executor spins, then end the spin."""
        if managed is not None:
            managed.shut_down()
        rclpy.try_shutdown()

    def on_signal(*_: Any) -> None:
        # Ctrl-C in a terminal reaches this process twice (the terminal's and the one
        # ros2 launch forwards): the second must not start a second clean-up
        if finishing.acquire(blocking=False):
            threading.Thread(target=finish, name='shutdown').start()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)
    try:
        # spin_once with a timeout, not spin(): an unconfigured node has nothing that wakes
        # the executor's wait, and Python runs a signal handler only between waits (seen:
        # an unconfigured node ignored SIGTERM for 30 s on Humble and Jazzy)
        while rclpy.ok():
            executor.spin_once(timeout_sec=0.5)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if managed is not None and finishing.acquire(blocking=False):
            managed.shut_down()  # spin ended otherwise: finalize without replies
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
    return 0
