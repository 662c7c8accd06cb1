"""Tests of the step and task state machines and of task status derivation.

The expected tables are written out here on purpose, independently of the
declarations in relaymesh/fsm/lifecycle.py, so that any change to a declared
transition has to be made twice and shows up in review.
"""

from __future__ import annotations

import itertools

import pytest
import transitions

import relaymesh.fsm
from relaymesh.fsm import (
    STEP_TRIGGERS,
    TERMINAL_TASK_STATES,
    AttemptOutcome,
    IllegalTransition,
    StepState,
    TaskState,
    check_task_change,
    derive_task_state,
    lifecycle,
    step_sources,
    step_target,
)

S = StepState
T = TaskState

# trigger -> (sources in declaration order, target)
EXPECTED_STEP_TRANSITIONS: dict[str, tuple[tuple[StepState, ...], StepState]] = {
    "claim": ((S.PENDING,), S.RUNNING),
    "heartbeat": ((S.RUNNING,), S.RUNNING),
    "succeed": ((S.RUNNING,), S.SUCCESS),
    "schedule_retry": ((S.RUNNING,), S.RETRYING),
    "dead_letter": ((S.RUNNING,), S.DEAD_LETTER),
    "release": ((S.RUNNING,), S.PENDING),
    "dispatch_retry": ((S.RETRYING,), S.PENDING),
    "cancel_soft": ((S.PENDING, S.RETRYING), S.CANCELLED),
    "cancel_hard": ((S.PENDING, S.RETRYING, S.RUNNING), S.CANCELLED),
    "replay": ((S.DEAD_LETTER, S.CANCELLED), S.PENDING),
}

EXPECTED_TASK_CHANGES: frozenset[tuple[TaskState, TaskState]] = frozenset(
    {
        (T.PENDING, T.RUNNING),
        (T.PENDING, T.CANCELLED),
        (T.PENDING, T.DEAD_LETTER),
        (T.RUNNING, T.RETRYING),
        (T.RETRYING, T.RUNNING),
        (T.RUNNING, T.PENDING),
        (T.RETRYING, T.PENDING),
        (T.RUNNING, T.SUCCESS),
        (T.RUNNING, T.DEAD_LETTER),
        (T.RETRYING, T.DEAD_LETTER),
        (T.RUNNING, T.CANCELLED),
        (T.RETRYING, T.CANCELLED),
        (T.DEAD_LETTER, T.PENDING),
        (T.DEAD_LETTER, T.RUNNING),
        (T.DEAD_LETTER, T.RETRYING),
        (T.CANCELLED, T.PENDING),
        (T.CANCELLED, T.RUNNING),
    }
    | {(state, state) for state in TaskState}
)

STEP_PAIRS = list(itertools.product(EXPECTED_STEP_TRANSITIONS, StepState))
TASK_PAIRS = list(itertools.product(TaskState, TaskState))


def test_fsm_all_is_pinned():
    assert relaymesh.fsm.__all__ == [
        "STEP_TRIGGERS",
        "TERMINAL_TASK_STATES",
        "AttemptOutcome",
        "IllegalTransition",
        "StepState",
        "TaskState",
        "check_task_change",
        "derive_task_state",
        "step_sources",
        "step_target",
    ]
    for name in relaymesh.fsm.__all__:
        assert hasattr(relaymesh.fsm, name), name


def test_step_states_are_stored_statuses_only():
    assert [state.value for state in StepState] == [
        "PENDING",
        "RUNNING",
        "RETRYING",
        "SUCCESS",
        "DEAD_LETTER",
        "CANCELLED",
    ]
    for state in StepState:
        assert state.value == state.name


def test_task_states_are_stored_statuses_only():
    assert [state.value for state in TaskState] == [
        "PENDING",
        "RUNNING",
        "RETRYING",
        "SUCCESS",
        "DEAD_LETTER",
        "CANCELLED",
    ]
    for state in TaskState:
        assert state.value == state.name


def test_attempt_outcomes():
    assert [outcome.value for outcome in AttemptOutcome] == [
        "SUCCESS",
        "FAILED",
        "TIMEOUT",
        "ABANDONED",
        "RELEASED",
        "CANCELLED",
        "CONFLICT",
    ]
    for outcome in AttemptOutcome:
        assert outcome.value == outcome.name


def test_illegal_transition_is_runtime_error():
    assert issubclass(IllegalTransition, RuntimeError)


def test_step_triggers_in_declaration_order():
    assert STEP_TRIGGERS == tuple(EXPECTED_STEP_TRANSITIONS)


def test_terminal_task_states():
    assert TERMINAL_TASK_STATES == {T.SUCCESS, T.DEAD_LETTER, T.CANCELLED}


@pytest.mark.parametrize(("trigger", "state"), STEP_PAIRS)
def test_step_target_every_pair(trigger, state):
    sources, target = EXPECTED_STEP_TRANSITIONS[trigger]
    if state in sources:
        assert step_target(trigger, state) is target
        assert step_target(trigger, state.value) is target
        return

    with pytest.raises(IllegalTransition) as raised:
        step_target(trigger, state)
    message = str(raised.value)
    assert f"cannot {trigger} a step in state {state}" in message
    assert f"(allowed from: {', '.join(sources)})" in message
    assert raised.value.machine == "step"
    assert raised.value.event == trigger
    assert raised.value.state == state
    assert raised.value.allowed == sources


def test_step_target_message_names_event_and_state():
    with pytest.raises(IllegalTransition) as raised:
        step_target("succeed", "CANCELLED")
    assert str(raised.value) == (
        "cannot succeed a step in state CANCELLED (allowed from: RUNNING)"
    )


def test_step_target_unknown_trigger_lists_known():
    with pytest.raises(IllegalTransition) as raised:
        step_target("finish", S.RUNNING)
    message = str(raised.value)
    assert "unknown step trigger 'finish'" in message
    for trigger in EXPECTED_STEP_TRANSITIONS:
        assert trigger in message


@pytest.mark.parametrize("outcome", ["FAILED", "TIMEOUT", "ABANDONED"])
def test_step_target_rejects_outcome_as_state(outcome):
    with pytest.raises(IllegalTransition) as raised:
        step_target("succeed", outcome)
    message = str(raised.value)
    assert f"unknown step state '{outcome}'" in message
    assert "attempt outcome" in message


def test_step_target_rejects_unknown_state():
    with pytest.raises(IllegalTransition) as raised:
        step_target("claim", "QUEUED")
    message = str(raised.value)
    assert "unknown step state 'QUEUED'" in message
    assert "known: PENDING, RUNNING, RETRYING, SUCCESS, DEAD_LETTER, CANCELLED" in (
        message
    )


@pytest.mark.parametrize("trigger", list(EXPECTED_STEP_TRANSITIONS))
def test_step_sources_per_trigger(trigger):
    sources, _ = EXPECTED_STEP_TRANSITIONS[trigger]
    assert step_sources(trigger) == sources


def test_step_sources_unknown_trigger():
    with pytest.raises(IllegalTransition, match="unknown step trigger 'nap'"):
        step_sources("nap")


@pytest.mark.parametrize(("source", "dest"), TASK_PAIRS)
def test_check_task_change_every_pair(source, dest):
    if (source, dest) in EXPECTED_TASK_CHANGES:
        assert check_task_change(source, dest) is None
        assert check_task_change(source.value, dest.value) is None
        return

    with pytest.raises(IllegalTransition) as raised:
        check_task_change(source, dest)
    assert f"cannot change a task from {source} to {dest}" in str(raised.value)
    assert raised.value.machine == "task"
    assert raised.value.state == source
    assert raised.value.event == dest
    expected_allowed = tuple(
        state for state in TaskState if (source, state) in EXPECTED_TASK_CHANGES
    )
    assert raised.value.allowed == expected_allowed


def test_check_task_change_success_is_terminal():
    with pytest.raises(IllegalTransition) as raised:
        check_task_change(T.SUCCESS, T.RUNNING)
    assert str(raised.value) == (
        "cannot change a task from SUCCESS to RUNNING (SUCCESS is terminal)"
    )


def test_check_task_change_lists_allowed_targets():
    with pytest.raises(IllegalTransition) as raised:
        check_task_change(T.DEAD_LETTER, T.SUCCESS)
    assert str(raised.value) == (
        "cannot change a task from DEAD_LETTER to SUCCESS "
        "(allowed from DEAD_LETTER: PENDING, RUNNING, RETRYING, DEAD_LETTER)"
    )


@pytest.mark.parametrize(
    ("source", "dest", "bad"),
    [("TIMEOUT", "RUNNING", "TIMEOUT"), ("RUNNING", "FAILED", "FAILED")],
)
def test_check_task_change_rejects_unknown_states(source, dest, bad):
    with pytest.raises(IllegalTransition) as raised:
        check_task_change(source, dest)
    message = str(raised.value)
    assert f"unknown task state '{bad}'" in message
    assert "attempt outcome" in message


def test_machines_declared_without_model():
    assert lifecycle.STEP_MACHINE.models == []
    assert lifecycle.TASK_MACHINE.models == []
    # auto_transitions would add a to_<state> trigger from every state.
    assert not any(name.startswith("to_") for name in lifecycle.STEP_MACHINE.events)
    assert not any(name.startswith("to_") for name in lifecycle.TASK_MACHINE.events)


def test_heartbeat_is_internal_transition():
    (transition,) = lifecycle.STEP_MACHINE.get_transitions("heartbeat")
    assert transition.source == "RUNNING"
    assert transition.dest is None


def test_lookups_build_no_machine(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("a Machine was built on the lookup path")

    monkeypatch.setattr(transitions.Machine, "__init__", fail)
    monkeypatch.setattr(transitions.core.Machine, "__init__", fail)
    assert step_target("claim", "PENDING") is S.RUNNING
    assert step_sources("cancel_hard") == (S.PENDING, S.RETRYING, S.RUNNING)
    check_task_change("RUNNING", "SUCCESS")
    assert derive_task_state("RUNNING", ["SUCCESS"]) is T.SUCCESS


def test_step_table_matches_declared_machine():
    for trigger, (sources, target) in EXPECTED_STEP_TRANSITIONS.items():
        declared = lifecycle.STEP_MACHINE.get_transitions(trigger)
        assert [transition.source for transition in declared] == list(sources)
        for transition in declared:
            assert (transition.dest or transition.source) == target


# (current task status, step statuses, replaying, expected derived status)
DERIVATION_CASES = [
    pytest.param(T.PENDING, [S.PENDING], False, T.PENDING, id="new task"),
    pytest.param(T.PENDING, [S.RUNNING], False, T.RUNNING, id="claimed"),
    pytest.param(T.RUNNING, [S.SUCCESS], False, T.SUCCESS, id="single step done"),
    pytest.param(
        T.RUNNING, [S.SUCCESS, S.PENDING], False, T.RUNNING, id="between steps"
    ),
    pytest.param(T.RUNNING, [S.RETRYING], False, T.RETRYING, id="waits for retry"),
    pytest.param(
        T.RETRYING, [S.RETRYING, S.RUNNING], False, T.RUNNING, id="running wins"
    ),
    pytest.param(T.RETRYING, [S.PENDING], False, T.PENDING, id="retry dispatched"),
    pytest.param(
        T.RETRYING,
        [S.SUCCESS, S.PENDING],
        False,
        T.RUNNING,
        id="retry dispatched after a step succeeded",
    ),
    pytest.param(T.RUNNING, [S.PENDING], False, T.PENDING, id="released"),
    pytest.param(
        T.RUNNING,
        [S.DEAD_LETTER, S.RUNNING],
        False,
        T.DEAD_LETTER,
        id="dead letter wins over a running branch",
    ),
    pytest.param(
        T.PENDING,
        [S.DEAD_LETTER],
        False,
        T.DEAD_LETTER,
        id="reclaim dead-letters a task still pending",
    ),
    pytest.param(
        T.DEAD_LETTER,
        [S.SUCCESS, S.DEAD_LETTER, S.SUCCESS],
        False,
        T.DEAD_LETTER,
        id="dead-lettered workflow stays when a parallel branch succeeds",
    ),
    pytest.param(
        T.DEAD_LETTER,
        [S.SUCCESS, S.SUCCESS],
        False,
        T.DEAD_LETTER,
        id="dead letter sticky without replay",
    ),
    pytest.param(
        T.CANCELLED,
        [S.SUCCESS],
        False,
        T.CANCELLED,
        id="cancelled stays when a running step succeeds",
    ),
    pytest.param(
        T.CANCELLED,
        [S.RETRYING],
        False,
        T.CANCELLED,
        id="cancelled stays when a running step fails",
    ),
    pytest.param(
        T.RUNNING,
        [S.CANCELLED, S.RUNNING],
        False,
        T.CANCELLED,
        id="cancelled step means cancelled task",
    ),
    pytest.param(
        T.DEAD_LETTER,
        [S.SUCCESS, S.PENDING],
        True,
        T.RUNNING,
        id="replay of workflow with succeeded branch",
    ),
    pytest.param(
        T.DEAD_LETTER, [S.PENDING], True, T.PENDING, id="replay of single step"
    ),
    pytest.param(
        T.DEAD_LETTER,
        [S.PENDING, S.RETRYING],
        True,
        T.RETRYING,
        id="replay while another branch waits for retry",
    ),
    pytest.param(
        T.CANCELLED,
        [S.PENDING, S.RUNNING],
        True,
        T.RUNNING,
        id="replay of cancelled task with a step still running",
    ),
    pytest.param(
        T.DEAD_LETTER,
        [S.DEAD_LETTER, S.PENDING],
        True,
        T.DEAD_LETTER,
        id="replay leaving a dead-lettered step",
    ),
    pytest.param(
        T.RUNNING, [S.RUNNING], True, T.RUNNING, id="replay flag ignored when live"
    ),
]


@pytest.mark.parametrize(
    ("current", "steps", "replaying", "expected"), DERIVATION_CASES
)
def test_derive_task_state(current, steps, replaying, expected):
    derived = derive_task_state(current, steps, replaying=replaying)
    assert derived is expected
    # Every case above is a realistic change, so the table must allow it.
    check_task_change(current, derived)


def test_derive_task_state_accepts_strings():
    derived = derive_task_state("RUNNING", iter(["SUCCESS", "PENDING"]))
    assert derived is T.RUNNING


def test_derive_task_state_rejects_no_steps():
    with pytest.raises(ValueError, match="at least one step"):
        derive_task_state(T.PENDING, [])


def test_derive_task_state_rejects_unknown_step_state():
    with pytest.raises(ValueError) as raised:
        derive_task_state(T.RUNNING, [S.RUNNING, "ABANDONED"])
    message = str(raised.value)
    assert "unknown step state 'ABANDONED'" in message
    assert "attempt outcome" in message


def test_derive_task_state_rejects_unknown_task_state():
    with pytest.raises(ValueError, match="unknown task state 'DONE'"):
        derive_task_state("DONE", [S.SUCCESS])


def _apply(steps: dict[str, StepState], name: str, trigger: str) -> None:
    steps[name] = step_target(trigger, steps[name])


def _advance_task(task: TaskState, steps, *, replaying=False) -> TaskState:
    derived = derive_task_state(task, steps.values(), replaying=replaying)
    check_task_change(task, derived)
    return derived


def test_parallel_workflow_dead_letter_then_replay():
    # Workflow a -> (b, c): b runs out of attempts while c is still running.
    steps = {"a": S.PENDING, "b": S.PENDING, "c": S.PENDING}
    task = T.PENDING

    _apply(steps, "a", "claim")
    task = _advance_task(task, steps)
    assert task is T.RUNNING
    _apply(steps, "a", "succeed")
    task = _advance_task(task, steps)
    assert task is T.RUNNING

    _apply(steps, "b", "claim")
    _apply(steps, "c", "claim")
    _apply(steps, "b", "dead_letter")
    task = _advance_task(task, steps)
    assert task is T.DEAD_LETTER

    _apply(steps, "c", "succeed")
    task = _advance_task(task, steps)
    assert task is T.DEAD_LETTER

    _apply(steps, "b", "replay")
    task = _advance_task(task, steps, replaying=True)
    assert task is T.RUNNING
    _apply(steps, "b", "claim")
    _apply(steps, "b", "succeed")
    task = _advance_task(task, steps)
    assert task is T.SUCCESS


def test_soft_cancel_does_not_let_running_step_finish_task():
    steps = {"a": S.RUNNING, "b": S.PENDING}
    task = T.RUNNING

    _apply(steps, "b", "cancel_soft")
    check_task_change(task, T.CANCELLED)
    task = T.CANCELLED

    _apply(steps, "a", "succeed")
    task = _advance_task(task, steps)
    assert task is T.CANCELLED

    with pytest.raises(IllegalTransition):
        _apply(steps, "a", "cancel_soft")


def test_retry_cycle_single_step():
    steps = {"a": S.PENDING}
    task = T.PENDING
    expected = [
        ("claim", T.RUNNING),
        ("heartbeat", T.RUNNING),
        ("schedule_retry", T.RETRYING),
        ("dispatch_retry", T.PENDING),
        ("claim", T.RUNNING),
        ("release", T.PENDING),
        ("claim", T.RUNNING),
        ("succeed", T.SUCCESS),
    ]
    for trigger, task_after in expected:
        _apply(steps, "a", trigger)
        task = _advance_task(task, steps)
        assert task is task_after, trigger
