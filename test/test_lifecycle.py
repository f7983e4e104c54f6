"""The lifecycle state machine both adapters share (core/nodes/lifecycle.py), without ROS."""

from __future__ import annotations

import threading

import pytest

from ask_expert_ros.core.errors import ModelConfigError
from ask_expert_ros.core.nodes.lifecycle import (
    TRANSITIONS,
    IllegalTransitionError,
    Lifecycle,
    State,
    Transition,
)

C, A, D, U, S = (
    Transition.CONFIGURE,
    Transition.ACTIVATE,
    Transition.DEACTIVATE,
    Transition.CLEANUP,
    Transition.SHUTDOWN,
)


def nothing() -> None:
    pass


def walk(lifecycle: Lifecycle, *transitions: Transition) -> None:
    for transition in transitions:
        assert lifecycle.run(transition, nothing)


@pytest.mark.parametrize(
    ('path', 'end'),
    [
        ((), State.UNCONFIGURED),
        ((C,), State.INACTIVE),
        ((C, A), State.ACTIVE),
        ((C, A, D), State.INACTIVE),
        ((C, A, D, A), State.ACTIVE),
        ((C, A, D, U), State.UNCONFIGURED),
        ((C, A, D, U, C, A), State.ACTIVE),
        ((S,), State.FINALIZED),
        ((C, S), State.FINALIZED),
        ((C, A, S), State.FINALIZED),
    ],
)
def test_legal_paths_end_where_ros_does(path: tuple[Transition, ...], end: State) -> None:
    lifecycle = Lifecycle('edge')
    walk(lifecycle, *path)
    assert lifecycle.state is end and lifecycle.state.primary


@pytest.mark.parametrize(
    ('path', 'illegal'),
    [
        ((), A),  # activate before configure: no models yet
        ((), D),
        ((), U),
        ((C,), C),  # configured twice
        ((C,), D),
        ((C, A), C),
        ((C, A), A),
        ((C, A), U),  # cleanup while active: deactivate first
        ((S,), C),  # finalized is the end
        ((S,), S),
    ],
)
def test_illegal_transitions_raise_and_change_nothing(
    path: tuple[Transition, ...], illegal: Transition
) -> None:
    lifecycle = Lifecycle('edge')
    walk(lifecycle, *path)
    before = lifecycle.state
    called = []
    with pytest.raises(IllegalTransitionError, match=f'cannot {illegal.value} while'):
        lifecycle.run(illegal, lambda: called.append(1))
    assert lifecycle.state is before and not called


def test_every_primary_state_but_finalized_can_shut_down() -> None:
    """Exactly the ROS table: 4 transitions plus shutdown from the 3 live states."""
    assert len(TRANSITIONS) == 7
    for state in (State.UNCONFIGURED, State.INACTIVE, State.ACTIVE):
        assert (state, S) in TRANSITIONS
    assert not any(state is State.FINALIZED for state, _ in TRANSITIONS)


@pytest.mark.parametrize(
    ('path', 'failing', 'back_to'),
    [
        ((), C, State.UNCONFIGURED),
        ((C,), A, State.INACTIVE),
        ((C, A), D, State.ACTIVE),
        ((C,), U, State.INACTIVE),
        ((C, A), S, State.FINALIZED),  # shutdown ends the node either way
    ],
)
def test_an_expected_failure_goes_back_and_says_why(
    path: tuple[Transition, ...], failing: Transition, back_to: State
) -> None:
    told: list[tuple] = []
    lifecycle = Lifecycle('edge', on_change=lambda *change: told.append(change))
    walk(lifecycle, *path)

    def bad() -> None:
        raise ModelConfigError('no library.yaml in /nowhere')

    assert lifecycle.run(failing, bad) is False
    assert lifecycle.state is back_to
    assert lifecycle.last_error == 'no library.yaml in /nowhere'
    node, transition, _, after, seconds, error = told[-1]
    assert (node, transition, after, error) == ('edge', failing, back_to, lifecycle.last_error)
    assert seconds >= 0
    if back_to is not State.FINALIZED:  # still alive: it can go on
        assert lifecycle.run(Transition.SHUTDOWN, nothing)


def test_an_unexpected_error_propagates_after_the_state_is_restored() -> None:
    lifecycle = Lifecycle('expert')

    def bug() -> None:
        raise KeyError('oops')

    with pytest.raises(KeyError):
        lifecycle.run(C, bug)
    assert lifecycle.state is State.UNCONFIGURED and 'KeyError' in lifecycle.last_error


def test_the_transition_state_is_visible_during_the_work_and_blocks_others() -> None:
    """While configure runs, the state reads 'configuring' and a second request is refused."""
    lifecycle = Lifecycle('expert')
    inside = threading.Event()
    release = threading.Event()

    def slow() -> None:
        inside.set()
        release.wait(10)

    thread = threading.Thread(target=lifecycle.run, args=(C, slow))
    thread.start()
    try:
        assert inside.wait(10)
        assert lifecycle.state is State.CONFIGURING and not lifecycle.state.primary
        assert lifecycle.allowed() == ()
        with pytest.raises(IllegalTransitionError, match='while configuring'):
            lifecycle.run(S, nothing)
    finally:
        release.set()
        thread.join(10)
    assert lifecycle.state is State.INACTIVE
    assert lifecycle.allowed() == (A, U, S)


def test_changes_are_logged_by_default(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level('INFO', logger='ask_expert_ros.core.nodes.lifecycle')
    lifecycle = Lifecycle('edge')
    walk(lifecycle, C, A)
    assert 'edge: configure: unconfigured -> inactive' in caplog.text
    assert 'edge: activate: inactive -> active' in caplog.text


@pytest.mark.parametrize(('ok', 'end'), [(True, State.UNCONFIGURED), (False, State.FINALIZED)])
def test_recover_after_an_error_ends_where_ros_errorprocessing_does(ok: bool, end: State) -> None:
    lifecycle = Lifecycle('edge')
    walk(lifecycle, C, A)
    lifecycle.recover(ok)
    assert lifecycle.state is end
