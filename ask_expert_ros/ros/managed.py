"""What the edge and expert lifecycle nodes share: rclpy's callbacks mapped to our work.

rcl's state machine decides which transitions are legal (``ros2 lifecycle set``, the
launch files' lifecycle events, a lifecycle manager); :class:`ManagedNode` runs the
node's work for each inside the core's :class:`~ask_expert_ros.core.nodes.lifecycle.Lifecycle`,
which mirrors the state for the diagnostics and logs every transition the same way
the Cyclone DDS nodes do. A transition whose work raises an expected error (a bad
parameter, a library that does not load) returns FAILURE with the reason logged: the
node stays where it was, alive. A request for a transition the current state does not
have (``activate`` while unconfigured) is answered ``success: false`` with a warning:
rclpy itself raises out of its service callback there, which ended the node (seen on
Jazzy). Lifecycle publishers are enabled before the input subscriptions exist and
disabled only after deactivate answered what was in flight.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from rcl_interfaces.msg import ParameterDescriptor
from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn

from ask_expert_ros.core.nodes.lifecycle import Lifecycle, State, Transition
from ask_expert_ros.core.nodes.node_config import ParamSpec
from ask_expert_ros.ros import conversions as conv

AUTOSTART = 'autostart'


class ManagedNode(LifecycleNode):
    """A lifecycle node whose subclass supplies ``_configure``, ``_activate``,
    ``_deactivate`` and ``_cleanup``. Keyword arguments go to
    :class:`rclpy.lifecycle.LifecycleNode`.

    Declares ``autostart`` (bool, default false): :func:`~ask_expert_ros.ros.node_main.run_node`
    configures and activates the node at once, for ``ros2 run`` without a lifecycle manager.
    """

    def __init__(self, node_name: str, **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        self.lifecycle = Lifecycle(node_name, on_change=self._log_change)
        self._guard_change_state()
        self.declare_parameter(
            AUTOSTART,
            False,
            ParameterDescriptor(
                description='Configure and activate at start, without a lifecycle manager '
                '(the launch files drive the lifecycle themselves).',
                read_only=True,
            ),
        )

    def _guard_change_state(self) -> None:
        """Answer an illegal transition request with ``success: false`` instead of
        letting rclpy's ``RCLError`` ("Transition is not registered") end the node."""
        service = getattr(self, '_service_change_state', None)
        if service is None:  # no communication interface
            return
        inner = service.callback

        def guarded(request: Any, response: Any) -> Any:
            try:
                return inner(request, response)
            except _rclpy.RCLError as exc:
                state = self._state_machine.current_state[1]
                self.get_logger().warning(
                    f'lifecycle: transition {request.transition.id} '
                    f'{request.transition.label!r} refused in state {state!r}: '
                    f'{str(exc).split(",")[0]}'
                )
                response.success = False
                return response

        service.callback = guarded

    def declare(self, specs: Sequence[ParamSpec]) -> None:
        """Declare the node's parameters; if one is refused, the half-made node (its
        lifecycle services exist already) is destroyed before the error goes on."""
        try:
            conv.declare_parameters(self, specs)
        except Exception:
            self.destroy_node()
            raise

    # ------------------------------------------------------------ rclpy callbacks

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        return self._run(Transition.CONFIGURE, self._configure)

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        def work() -> None:
            super(ManagedNode, self).on_activate(state)  # lifecycle publishers on first
            self._activate()

        return self._run(Transition.ACTIVATE, work)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        def work() -> None:
            self._deactivate()  # answers what is in flight, publishers still on
            super(ManagedNode, self).on_deactivate(state)

        return self._run(Transition.DEACTIVATE, work)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        return self._run(Transition.CLEANUP, self._cleanup)

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        was = State(state.label)  # rcl's word for where the node was

        def work() -> None:
            if was is State.ACTIVE:
                self._deactivate()
                super(ManagedNode, self).on_deactivate(state)
            if was in (State.ACTIVE, State.INACTIVE):
                self._cleanup()

        return self._run(Transition.SHUTDOWN, work)

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        """An unexpected error in a transition: release everything, back to unconfigured."""
        self.get_logger().error(f'error in a transition from {state.label}: cleaning up')
        try:
            self._release()
        except Exception as exc:  # nothing left to do but end the node
            self.get_logger().error(f'cleanup after the error failed: {exc}')
            self.lifecycle.recover(ok=False)
            return TransitionCallbackReturn.FAILURE
        self.lifecycle.recover(ok=True)
        return TransitionCallbackReturn.SUCCESS

    # ------------------------------------------------------------ helpers

    def shut_down(self) -> None:
        """Finalize from whatever state the node is in (the end of ``main()``)."""
        if self.lifecycle.state.primary and self.lifecycle.state is not State.FINALIZED:
            self.trigger_shutdown()

    def destroy_node(self) -> None:
        """Stop the node's threads if it was not finalized (an executor already gone:
        nothing is answered any more), then destroy it."""
        if self.lifecycle.state not in (State.UNCONFIGURED, State.FINALIZED):
            self._release()
        super().destroy_node()

    def start(self) -> bool:
        """Configure and activate (``autostart``); False, the reason logged, if either failed."""
        return (
            self.trigger_configure() == TransitionCallbackReturn.SUCCESS
            and self.trigger_activate() == TransitionCallbackReturn.SUCCESS
        )

    def _run(self, transition: Transition, work: Callable[[], None]) -> TransitionCallbackReturn:
        if self.lifecycle.run(transition, work):
            return TransitionCallbackReturn.SUCCESS
        return TransitionCallbackReturn.FAILURE

    def _log_change(
        self,
        node: str,
        transition: Transition,
        before: State,
        after: State,
        seconds: float,
        error: str,
    ) -> None:
        if error:
            self.get_logger().error(
                f'{transition.value} failed after {seconds:.2f} s, back to {after.value}: {error}'
            )
        else:
            self.get_logger().info(
                f'{transition.value}: {before.value} -> {after.value} ({seconds:.2f} s)'
            )

    # ------------------------------------------------------------ the node's work

    def _configure(self) -> None:
        raise NotImplementedError

    def _activate(self) -> None:
        raise NotImplementedError

    def _deactivate(self) -> None:
        raise NotImplementedError

    def _cleanup(self) -> None:
        raise NotImplementedError

    def _release(self) -> None:
        """Whatever state the node is in: stop its threads, drop its entities and models."""
        raise NotImplementedError
