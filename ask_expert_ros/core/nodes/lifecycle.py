"""The managed-node lifecycle both adapters follow (ROS 2's ``node_lifecycle`` design).

Primary states ``unconfigured -> inactive -> active``, and ``finalized`` at the end;
each transition passes through its transition state (``configuring``, ``activating``
...) while the node does the work:

========== ============ =============== ============ ============
transition from         while           success      failure
========== ============ =============== ============ ============
configure  unconfigured configuring     inactive     unconfigured
activate   inactive     activating      active       inactive
deactivate active       deactivating    inactive     active
cleanup    inactive     cleaningup      unconfigured inactive
shutdown   any primary  shuttingdown    finalized    finalized
========== ============ =============== ============ ============

What the nodes do in each: configure reads and checks the parameters, loads the
models and warms them up (so a bad library fails here, with the reason, and the
node stays up, unconfigured); activate subscribes to the input and starts the
workers; deactivate stops taking input and answers everything in flight before it
returns (every frame gets exactly one result); cleanup releases the models; shutdown
does whatever of deactivate and cleanup the state it starts from needs.

The rclpy nodes are ``rclpy.lifecycle`` nodes, whose state machine is rcl's; they
mirror it in a :class:`Lifecycle` for their diagnostics and logs. The Cyclone DDS
nodes (``ask-expert edge|expert``) have no rcl: :class:`Lifecycle` is their state
machine, and the same order is kept (models warm before the input reader exists).
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from ask_expert_ros.core.errors import AskExpertError

logger = logging.getLogger(__name__)


class State(enum.Enum):
    """Lifecycle states, named as ``ros2 lifecycle get`` prints them."""

    UNCONFIGURED = 'unconfigured'
    INACTIVE = 'inactive'
    ACTIVE = 'active'
    FINALIZED = 'finalized'
    CONFIGURING = 'configuring'
    CLEANING_UP = 'cleaningup'
    ACTIVATING = 'activating'
    DEACTIVATING = 'deactivating'
    SHUTTING_DOWN = 'shuttingdown'

    @property
    def primary(self) -> bool:
        """A state the node rests in (not one it passes through during a transition)."""
        return self in _PRIMARY


_PRIMARY = frozenset({State.UNCONFIGURED, State.INACTIVE, State.ACTIVE, State.FINALIZED})


class Transition(enum.Enum):
    """Lifecycle transitions, named as ``ros2 lifecycle set`` takes them."""

    CONFIGURE = 'configure'
    ACTIVATE = 'activate'
    DEACTIVATE = 'deactivate'
    CLEANUP = 'cleanup'
    SHUTDOWN = 'shutdown'


@dataclass(frozen=True)
class Step:
    """Where a transition goes: the state it passes through, and where it ends."""

    during: State
    success: State
    failure: State


_SHUTDOWN = Step(State.SHUTTING_DOWN, State.FINALIZED, State.FINALIZED)
TRANSITIONS: dict[tuple[State, Transition], Step] = {
    (State.UNCONFIGURED, Transition.CONFIGURE): Step(
        State.CONFIGURING, State.INACTIVE, State.UNCONFIGURED
    ),
    (State.INACTIVE, Transition.ACTIVATE): Step(State.ACTIVATING, State.ACTIVE, State.INACTIVE),
    (State.ACTIVE, Transition.DEACTIVATE): Step(State.DEACTIVATING, State.INACTIVE, State.ACTIVE),
    (State.INACTIVE, Transition.CLEANUP): Step(
        State.CLEANING_UP, State.UNCONFIGURED, State.INACTIVE
    ),
    (State.UNCONFIGURED, Transition.SHUTDOWN): _SHUTDOWN,
    (State.INACTIVE, Transition.SHUTDOWN): _SHUTDOWN,
    (State.ACTIVE, Transition.SHUTDOWN): _SHUTDOWN,
}
"""(from, transition) -> its :class:`Step`; anything else is illegal."""

# what a transition's work may raise and still leave the node running (the rest are bugs)
EXPECTED_FAILURES: tuple[type[Exception], ...] = (ValueError, OSError, AskExpertError)


class IllegalTransitionError(AskExpertError, RuntimeError):
    """A transition asked for in a state that has none of that name (e.g. activate while
    unconfigured, or anything while another transition runs)."""


class TransitionFailedError(AskExpertError):
    """A node that cannot go on without the transition that failed (a process with no
    lifecycle manager to retry it) raises this, with the reason."""


# (node, transition, from, to, seconds it took, why it failed or '')
ChangeListener = Callable[[str, Transition, State, State, float, str], None]


def log_change(
    node: str, transition: Transition, before: State, after: State, seconds: float, error: str
) -> None:
    """The default :data:`ChangeListener`: one log line per transition."""
    if error:
        logger.error(
            '%s: %s failed after %.2f s, back to %s: %s',
            node,
            transition.value,
            seconds,
            after.value,
            error,
        )
    else:
        logger.info(
            '%s: %s: %s -> %s (%.2f s)', node, transition.value, before.value, after.value, seconds
        )


class Lifecycle:
    """The state of one node and the rules for changing it; thread-safe.

    Args:
        node: The node's name, for the log.
        on_change: Told of every finished transition (default: :func:`log_change`).
    """

    def __init__(self, node: str, on_change: ChangeListener | None = None) -> None:
        self.node = node
        self._on_change = on_change or log_change
        self._state = State.UNCONFIGURED
        self._lock = threading.Lock()
        self.last_error = ''

    @property
    def state(self) -> State:
        with self._lock:
            return self._state

    def allowed(self) -> tuple[Transition, ...]:
        """The transitions the current state has."""
        state = self.state
        return tuple(t for t in Transition if (state, t) in TRANSITIONS)

    def run(self, transition: Transition, work: Callable[[], None]) -> bool:
        """Take ``transition``: enter its transition state, do ``work``, end in the next state.

        Returns:
            True if ``work`` returned; False if it raised one of
            :data:`EXPECTED_FAILURES` (the node is back where it was, or finalized for
            shutdown; the reason is in :attr:`last_error` and was told to ``on_change``).

        Raises:
            IllegalTransitionError: The current state has no such transition (the state
                is unchanged, ``work`` not called).
            Exception: Whatever else ``work`` raised, after the state was set as for a
                failure.
        """
        with self._lock:
            before = self._state
            step = TRANSITIONS.get((before, transition))
            if step is None:
                allowed = [t.value for t in Transition if (before, t) in TRANSITIONS]
                raise IllegalTransitionError(
                    f'{self.node}: cannot {transition.value} while {before.value}'
                    + (f' (allowed: {", ".join(allowed)})' if allowed else '')
                )
            self._state = step.during
        start = time.monotonic()
        error = ''
        try:
            work()
        except EXPECTED_FAILURES as exc:
            error = str(exc) or type(exc).__name__
        except Exception as exc:
            self._finish(transition, before, step.failure, start, f'{type(exc).__name__}: {exc}')
            raise
        after = step.failure if error else step.success
        self._finish(transition, before, after, start, error)
        return not error

    def recover(self, ok: bool) -> None:
        """After an unexpected error in a transition (ROS's ``errorprocessing``): the node
        cleaned up (``ok``: back to unconfigured) or could not (finalized)."""
        with self._lock:
            before = self._state
            self._state = State.UNCONFIGURED if ok else State.FINALIZED
            after = self._state
        log = logger.info if ok else logger.error
        log('%s: error processed: %s -> %s', self.node, before.value, after.value)

    def _finish(
        self, transition: Transition, before: State, after: State, start: float, error: str
    ) -> None:
        with self._lock:
            self._state = after
            self.last_error = error
        self._on_change(self.node, transition, before, after, time.monotonic() - start, error)
