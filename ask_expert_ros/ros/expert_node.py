"""The expert node (``ros2 run ask_expert_ros expert_node``): one ExpertResponse per request.

Topics (relative; remap them at launch):

* in  ``expert/requests`` (ExpertRequest, reliable): frames the edges were unsure about;
* out ``expert/responses`` (ExpertResponse, reliable): the refined label, or the reason
  there is none, carrying the request's header, ``edge_id`` and ``request_id``;
* out ``/diagnostics`` (diagnostic_msgs/DiagnosticArray) every ``diagnostics_period_s``.

Validation, the per-key queues and micro-batching are
:class:`~ask_expert_ros.core.nodes.expert_logic.ExpertLogic`'s. The request callback converts
and queues (a request that cannot be served is answered at once); a worker thread runs
each key's micro-batch when it is full or its oldest request has waited ``max_wait_ms``
(:meth:`~ask_expert_ros.core.nodes.expert_logic.ExpertLogic.next_due_ns`), so inference never
blocks the reception of requests.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.parameter import Parameter
from std_msgs.msg import Header as HeaderMsg

from ask_expert_ros.core.errors import UnsupportedImageError, format_key
from ask_expert_ros.core.inference.backends import release_openmp_threads
from ask_expert_ros.core.nodes.diagnostics import HealthMonitor
from ask_expert_ros.core.nodes.expert_logic import ExpertLogic
from ask_expert_ros.core.nodes.lifecycle import IllegalTransitionError
from ask_expert_ros.core.nodes.messages import ExpertReply
from ask_expert_ros.core.nodes.node_config import (
    EXPERT_PARAMS,
    build_expert_logic,
    expert_params,
    resolve,
)
from ask_expert_ros.core.nodes.remote_expert import RemoteExpertLogic
from ask_expert_ros.msg import ExpertRequest, ExpertResponse
from ask_expert_ros.ros import conversions as conv
from ask_expert_ros.ros.managed import ManagedNode
from ask_expert_ros.ros.node_main import run_node

NODE_NAME = 'expert'
# The worker wakes at least this often with nothing queued, to notice shutdown.
_IDLE_WAKE_S = 0.2
_THROTTLE_S = 5.0


class ExpertNode(ManagedNode):
    """The expert node, a lifecycle node. Keyword arguments go to
    :class:`rclpy.lifecycle.LifecycleNode`.

    * configure: read and check the parameters, load the experts (all of them, warmed
      up, with ``preload``), create the responses (lifecycle) publisher; an expert that
      does not load fails it with the reason;
    * activate: start the batch worker, then subscribe to ``expert/requests``;
    * deactivate: unsubscribe, stop the worker after its batch, and answer every request
      still queued (their partial micro-batches run now);
    * cleanup: drop the publisher and the experts.

    Raises:
        ParameterException: A parameter override of the wrong type or out of range.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **kwargs)
        self.declare(EXPERT_PARAMS)
        conv.add_parameter_callbacks(self, self._check_parameters, self._apply_parameters)
        self._requests_group = MutuallyExclusiveCallbackGroup()
        self._logic: ExpertLogic | None = None
        self._values: dict[str, Any] = {}
        self._diagnostics_timer: Any = None
        self._requests: Any = None
        self._worker: threading.Thread | None = None
        self._arrived = threading.Event()
        self._stop = threading.Event()
        # a request callback holds it while it queues; deactivate takes it to know none
        # is half-way when it stops taking requests
        self._intake = threading.Lock()
        self._taking = False

    @property
    def logic(self) -> ExpertLogic:
        """The expert logic (configured nodes only)."""
        if self._logic is None:
            raise IllegalTransitionError(
                f'expert is {self.lifecycle.state.value}: no experts loaded'
            )
        return self._logic

    # ------------------------------------------------------------ lifecycle

    def _configure(self) -> None:
        values = conv.parameter_values(self, EXPERT_PARAMS)
        logic = build_expert_logic(values)
        library = logic.stage.library
        if isinstance(logic, RemoteExpertLogic):
            # the engine's answers arrive on its thread: wake the worker to publish them
            logic.on_ready(self._arrived.set)
            self.get_logger().info(f'expert node is the front of {logic.service.describe()}')
        else:
            runs_on = sorted({str(library.backend(k).describe()) for k in library.loaded_keys})
            self.get_logger().info(
                f'experts run on backend={values["backend"]} '
                f'precision={values["precision"]}: {"; ".join(runs_on) or "(lazy)"}'
            )
        missing = library.missing_keys()
        if missing:
            self.get_logger().warning(
                f'no expert for {len(missing)} keys the edges may send: '
                f'{", ".join(format_key(k) for k in missing)}; they are answered UNKNOWN_KEY'
            )
        self._responses = self.create_lifecycle_publisher(
            ExpertResponse, 'expert/responses', conv.reliable_qos(values['response_qos_depth'])
        )
        self._diagnostics = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        self._monitor = HealthMonitor('ask_expert: expert', socket.gethostname())
        self._diagnostics_timer = self.create_timer(
            values['diagnostics_period_s'], self._on_diagnostics_timer
        )
        self._logic, self._values = logic, values
        # the experts were warmed up on this thread; the worker runs them: without this,
        # this thread's idle OpenMP pool makes the worker's every op twice as slow on CPU
        release_openmp_threads()
        self.get_logger().info(
            f'expert: scheme {library.scheme.name!r}, {len(library.keys)} experts, '
            f'device {library.device}, max_batch={logic.params.max_batch}'
        )

    def _activate(self) -> None:
        self._stop.clear()
        self._worker = threading.Thread(target=self._run_batches, name='expert-batches')
        self._worker.start()
        with self._intake:
            self._taking = True
        self._requests = self.create_subscription(
            ExpertRequest,
            'expert/requests',
            self._on_request,
            conv.reliable_qos(self._values['request_qos_depth']),
            callback_group=self._requests_group,
        )

    def _deactivate(self) -> None:
        self._stop_taking()
        self._stop_worker()  # it finishes the batch it is running
        logic = self.logic
        while logic.queued:
            replies = logic.poll(flush=True)
            for reply in replies:
                self._publish(reply)
            if not replies:  # in flight in a serving engine: its answer or expiry comes
                due = logic.next_due_ns()
                logic.wait(0.05 if due is None else (due - time.monotonic_ns()) / 1e9)

    def _cleanup(self) -> None:
        if self._diagnostics_timer is not None:
            self.destroy_lifecycle_publisher(self._responses)
            self.destroy_timer(self._diagnostics_timer)
            self.destroy_publisher(self._diagnostics)
            self._diagnostics_timer = None
        if self._logic is not None:
            self._logic.close()
        self._logic = None  # the experts go with it
        self._values = {}

    def _release(self) -> None:
        self._stop_taking()
        self._stop_worker()
        self._cleanup()

    def _stop_taking(self) -> None:
        if self._requests is not None:
            self.destroy_subscription(self._requests)
            self._requests = None
        with self._intake:  # a request callback half-way queues its request first
            self._taking = False

    def _stop_worker(self) -> None:
        self._stop.set()
        self._arrived.set()
        if self._worker is not None and self._worker.is_alive():
            self._worker.join()
        self._worker = None

    # ------------------------------------------------------------ callbacks

    def _on_request(self, msg: ExpertRequest) -> None:
        with self._intake:
            if not self._taking:
                return  # deactivating: this request is not taken; its edge falls back
            try:
                reply = self.logic.submit(conv.request_to_core(msg))
            except (UnsupportedImageError, ValueError) as exc:
                self.get_logger().warning(
                    f'malformed request from {msg.edge_id!r}: {exc}',
                    throttle_duration_sec=_THROTTLE_S,
                )
                reply = self.logic.reject(
                    conv.header_to_core(msg.header), msg.edge_id, msg.request_id, str(exc)
                )
        if reply is not None:
            self._publish(reply)
        else:
            self._arrived.set()

    def _on_diagnostics_timer(self) -> None:
        logic = self._logic
        if logic is None:  # cleaned up meanwhile
            return
        settings = logic.queue_status() | {'lifecycle': self.lifecycle.state.value}
        record = self._monitor.update(logic.counters.as_dict(), time.monotonic(), settings)
        header = HeaderMsg(stamp=self.get_clock().now().to_msg())
        self._diagnostics.publish(conv.diagnostics_to_ros([record], header))

    def _current_values(self) -> dict[str, Any]:
        """The parameters in use: as configured, or (unconfigured) as declared."""
        if self._values:
            return self._values
        return resolve(
            EXPERT_PARAMS, {s.name: self.get_parameter(s.name).value for s in EXPERT_PARAMS}
        )

    def _check_parameters(self, parameters: list[Parameter]) -> SetParametersResult:
        """On-set: validate the whole change; nothing changes yet (rclpy may still refuse)."""
        try:
            expert_params(conv.updated_values(EXPERT_PARAMS, self._current_values(), parameters))
        except ValueError as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        return SetParametersResult(successful=True)

    def _apply_parameters(self, parameters: list[Parameter]) -> None:
        """Post-set: the change is accepted; swap the typed settings in one assignment.
        Unconfigured, there is nothing to apply it to: configure reads the parameters."""
        if self._logic is None:
            return
        values = conv.updated_values(EXPERT_PARAMS, self._values, parameters)
        self.logic.params = expert_params(values)
        self._values = values
        self._arrived.set()  # a smaller max_batch or max_wait_ms may make a batch due now

    # ------------------------------------------------------------ worker

    def _run_batches(self) -> None:
        """Run due micro-batches; sleep until the next is due or a request arrives."""
        while not self._stop.is_set():
            try:
                for reply in self.logic.poll(max_batches=1):  # publish before the next
                    self._publish(reply)
            except RuntimeError as exc:
                if not self.context.ok():
                    return  # shutting down: the publisher is gone
                # e.g. CUDA out of memory: this batch's edges fall back at their
                # deadline; the node keeps serving the next batches
                self.get_logger().error(
                    f'expert batch failed: {exc}', throttle_duration_sec=_THROTTLE_S
                )
            due = self.logic.next_due_ns()
            timeout = _IDLE_WAKE_S if due is None else (due - time.monotonic_ns()) / 1e9
            if timeout > 0:
                self._arrived.wait(min(timeout, _IDLE_WAKE_S))
            self._arrived.clear()  # next_due_ns() is read again before the next wait

    def _publish(self, reply: ExpertReply) -> None:
        self._responses.publish(conv.reply_to_ros(reply))


def main(args: list[str] | None = None) -> int:
    return run_node(ExpertNode, NODE_NAME, args)
