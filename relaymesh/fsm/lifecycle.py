"""The lifecycle of steps and tasks, declared as two state machines.

A step is one unit of work that a worker runs: a task submitted with `submit`
has one step, a workflow has one per node of its graph. Steps move between
states by named triggers (`claim`, `succeed`, `schedule_retry`, ...), and the
step table below lists, for each trigger, the states it may fire from and the
state it leads to. A task is not driven by triggers of its own. Its status is
derived from the statuses of its steps by `derive_task_state`, and the result
is checked against the task table by `check_task_change` before the store
writes it, so that an illegal change raises instead of being written.

Both tables are declared once, at import, as `transitions.Machine` objects
without a model. The machines serve as declarations to look transitions up,
not as holders of state: a step's state lives in its row in the store, and a
change is a conditional UPDATE fenced on the lease token and epoch. Attaching
a model per step would keep a second copy of state the database owns and
build an object on every claim. At import the machines' events are flattened
into dicts, so `step_target`, `step_sources` and `check_task_change` each cost
one or two dict lookups on the hot path. The Mermaid diagrams in
`docs/state-machines.md` are generated from the same machines by
`relaymesh/fsm/diagrams.py`.

FAILED, TIMEOUT and ABANDONED are names of the earlier implementation's status
enum, but neither a step nor a task is ever stored in them. Here they are
outcomes of one attempt (`AttemptOutcome`), and an outcome maps to a step
trigger: a failed, timed-out or abandoned attempt leads to `schedule_retry`
while attempts are left and to `dead_letter` after the last one.

Two fixes of the earlier implementation live in the derivation. There, every
step event wrote the task status unconditionally: a parallel branch that
finished after another branch was dead-lettered set the task back to RUNNING,
and a cancelled task whose running step later succeeded or failed became
SUCCESS or RETRYING. Here DEAD_LETTER and CANCELLED are sticky: once a task
is in one of them, only a replay (`replaying=True`) lets its status follow
the steps again.

The member state machine (ALIVE, SUSPECT, DEAD, LEFT) is a separate concept
and gets its own module in this package.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum
from typing import NamedTuple

from transitions import Machine

__all__ = [
    "STEP_MACHINE",
    "STEP_TABLE",
    "STEP_TRIGGERS",
    "TASK_MACHINE",
    "TASK_TABLE",
    "TERMINAL_TASK_STATES",
    "AttemptOutcome",
    "IllegalTransition",
    "StepState",
    "TaskState",
    "TransitionRow",
    "check_task_change",
    "derive_task_state",
    "step_sources",
    "step_target",
]


class StepState(StrEnum):
    """Status stored in a step's row. Each value equals its member name."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    RETRYING = "RETRYING"
    SUCCESS = "SUCCESS"
    DEAD_LETTER = "DEAD_LETTER"
    CANCELLED = "CANCELLED"


class TaskState(StrEnum):
    """Status stored in a task's row, derived from its steps' statuses."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    RETRYING = "RETRYING"
    SUCCESS = "SUCCESS"
    DEAD_LETTER = "DEAD_LETTER"
    CANCELLED = "CANCELLED"


class AttemptOutcome(StrEnum):
    """The result of one attempt at running a step, never stored as a status."""

    SUCCESS = "SUCCESS"
    FAILED = "FAILED"
    TIMEOUT = "TIMEOUT"
    # The lease expired, or its owner was declared dead, before a result was
    # stored.
    ABANDONED = "ABANDONED"
    # The worker handed the step back during a graceful shutdown.
    RELEASED = "RELEASED"
    CANCELLED = "CANCELLED"
    # The fenced write of the result matched no row because another owner
    # owns the step now, so this attempt's result is discarded.
    CONFLICT = "CONFLICT"


class IllegalTransition(RuntimeError):
    """A state change that the declared machines do not allow.

    `machine` is "step" or "task". `event` is the trigger name for a step and
    the requested target state for a task. `state` is the current state as
    given, and `allowed` lists what the machine would accept instead.
    """

    def __init__(
        self,
        message: str,
        *,
        machine: str,
        event: str,
        state: str,
        allowed: tuple[str, ...],
    ) -> None:
        super().__init__(message)
        self.machine = machine
        self.event = event
        self.state = state
        self.allowed = allowed


class TransitionRow(NamedTuple):
    """One row of a transition table: `trigger` fires from any of `sources`.

    A `dest` of None declares an internal transition: the status stays as it
    is, and only other columns of the stored row change (a heartbeat renews
    the lease).
    """

    trigger: str
    sources: tuple[str, ...]
    dest: str | None
    reason: str


_S = StepState
_T = TaskState

# fmt: off
STEP_TABLE: tuple[TransitionRow, ...] = (
    TransitionRow("claim", (_S.PENDING,), _S.RUNNING,
                  "a worker took the step; the lease epoch goes up by one"),
    TransitionRow("heartbeat", (_S.RUNNING,), None,
                  "the owner renewed its lease; the status stays RUNNING"),
    TransitionRow("succeed", (_S.RUNNING,), _S.SUCCESS,
                  "the owner stored the agent's result under its lease"),
    TransitionRow("schedule_retry", (_S.RUNNING,), _S.RETRYING,
                  "an attempt failed, timed out or was abandoned, and attempts "
                  "are left; the retry waits for its backoff"),
    TransitionRow("dead_letter", (_S.RUNNING,), _S.DEAD_LETTER,
                  "an attempt failed, timed out or was abandoned, and it was "
                  "the last one allowed"),
    TransitionRow("release", (_S.RUNNING,), _S.PENDING,
                  "the owner shut down gracefully and handed the step back "
                  "before running it to the end"),
    TransitionRow("dispatch_retry", (_S.RETRYING,), _S.PENDING,
                  "the backoff elapsed and the step was queued again"),
    TransitionRow("cancel_soft", (_S.PENDING, _S.RETRYING), _S.CANCELLED,
                  "soft cancel: steps not running now never run again"),
    TransitionRow("cancel_hard", (_S.PENDING, _S.RETRYING, _S.RUNNING),
                  _S.CANCELLED,
                  "hard cancel: a running step is also stopped"),
    TransitionRow("replay", (_S.DEAD_LETTER, _S.CANCELLED), _S.PENDING,
                  "an operator replayed the dead-lettered or cancelled task"),
)

TASK_TABLE: tuple[TransitionRow, ...] = (
    TransitionRow("start", (_T.PENDING, _T.RETRYING), _T.RUNNING,
                  "a step was claimed, or some steps finished and others remain"),
    TransitionRow("await_retry", (_T.RUNNING,), _T.RETRYING,
                  "a step waits for its retry and no step is running"),
    TransitionRow("requeue", (_T.RUNNING, _T.RETRYING), _T.PENDING,
                  "a step was released or its retry dispatched, and no step "
                  "has finished yet"),
    TransitionRow("succeed", (_T.RUNNING,), _T.SUCCESS,
                  "the last step succeeded"),
    TransitionRow("dead_letter", (_T.PENDING, _T.RUNNING, _T.RETRYING),
                  _T.DEAD_LETTER,
                  "a step ran out of attempts; a reclaim can find the task "
                  "row still PENDING"),
    TransitionRow("cancel", (_T.PENDING, _T.RUNNING, _T.RETRYING), _T.CANCELLED,
                  "a user cancelled the task"),
    TransitionRow("replay", (_T.DEAD_LETTER, _T.CANCELLED), _T.PENDING,
                  "a replay put the task's steps back to PENDING"),
    TransitionRow("replay", (_T.DEAD_LETTER, _T.CANCELLED), _T.RUNNING,
                  "a replay while other steps of the task are done or running"),
    TransitionRow("replay", (_T.DEAD_LETTER,), _T.RETRYING,
                  "a replay while another step of the task waits for a retry"),
)
# fmt: on

TERMINAL_TASK_STATES: frozenset[TaskState] = frozenset(
    {TaskState.SUCCESS, TaskState.DEAD_LETTER, TaskState.CANCELLED}
)

# States a task keeps whatever its steps do, until a replay.
_STICKY_TASK_STATES = frozenset({TaskState.DEAD_LETTER, TaskState.CANCELLED})


def _declare(name: str, states: type[StrEnum], table: tuple) -> Machine:
    rows = [
        {"trigger": row.trigger, "source": list(row.sources), "dest": row.dest}
        for row in table
    ]
    return Machine(
        model=None,
        states=list(states),
        initial=None,
        transitions=rows,
        # Without this every state would get a to_<state> trigger from any
        # state, which is exactly the kind of change the tables forbid.
        auto_transitions=False,
        name=name,
    )


STEP_MACHINE: Machine = _declare("step", StepState, STEP_TABLE)
TASK_MACHINE: Machine = _declare("task", TaskState, TASK_TABLE)

STEP_TRIGGERS: tuple[str, ...] = tuple(STEP_MACHINE.events)


def _index_step_machine(
    machine: Machine,
) -> tuple[dict[tuple[str, str], StepState], dict[str, tuple[StepState, ...]]]:
    """Flatten the step machine into (trigger, source) -> target and sources."""
    targets: dict[tuple[str, str], StepState] = {}
    sources: dict[str, tuple[StepState, ...]] = {}
    for trigger, event in machine.events.items():
        for source_name, transitions in event.transitions.items():
            # A step trigger must be deterministic: a second row for the same
            # source would make the target depend on the library's order.
            if len(transitions) != 1:
                raise ValueError(
                    f"step trigger {trigger!r} declares {len(transitions)} "
                    f"targets from state {source_name}; declare exactly one"
                )
            source = StepState(source_name)
            dest_name = transitions[0].dest
            targets[trigger, source] = (
                source if dest_name is None else StepState(dest_name)
            )
        sources[trigger] = tuple(StepState(name) for name in event.transitions)
    return targets, sources


def _index_task_machine(machine: Machine) -> dict[TaskState, frozenset[TaskState]]:
    """Flatten the task machine into source -> allowed targets, itself included."""
    allowed: dict[TaskState, set[TaskState]] = {state: {state} for state in TaskState}
    for event in machine.events.values():
        for source_name, transitions in event.transitions.items():
            for transition in transitions:
                allowed[TaskState(source_name)].add(TaskState(transition.dest))
    return {source: frozenset(targets) for source, targets in allowed.items()}


_STEP_TARGETS, _STEP_SOURCES = _index_step_machine(STEP_MACHINE)
_TASK_ALLOWED = _index_task_machine(TASK_MACHINE)


def _names(values: Iterable[str]) -> str:
    return ", ".join(str(value) for value in values)


def _unknown_state_hint(value: object, kind: str, known: type[StrEnum]) -> str:
    message = f"unknown {kind} state {value!r} (known: {_names(known)})"
    if value in ("FAILED", "TIMEOUT", "ABANDONED"):
        message += f"; {value} is an attempt outcome, never a stored status"
    return message


def step_target(trigger: str, source: StepState | str) -> StepState:
    """Return the state that `trigger` moves a step in state `source` to.

    Raises `IllegalTransition` when the trigger is unknown, the state is
    unknown, or the trigger may not fire from that state.
    """
    target = _STEP_TARGETS.get((trigger, source))
    if target is not None:
        return target

    # Slow path: work out which of the three reasons applies.
    allowed = step_sources(trigger)
    if source not in StepState.__members__:
        message = f"cannot {trigger} a step: " + _unknown_state_hint(
            source, "step", StepState
        )
    else:
        message = (
            f"cannot {trigger} a step in state {source} "
            f"(allowed from: {_names(allowed)})"
        )
    raise IllegalTransition(
        message, machine="step", event=trigger, state=str(source), allowed=allowed
    )


def step_sources(trigger: str) -> tuple[StepState, ...]:
    """Return the states `trigger` may fire from, in declaration order.

    Meant for the `WHERE status IN (...)` clause of a conditional update.
    Raises `IllegalTransition` for an unknown trigger.
    """
    sources = _STEP_SOURCES.get(trigger)
    if sources is None:
        raise IllegalTransition(
            f"unknown step trigger {trigger!r} (known: {_names(STEP_TRIGGERS)})",
            machine="step",
            event=str(trigger),
            state="",
            allowed=STEP_TRIGGERS,
        )
    return sources


def check_task_change(source: TaskState | str, dest: TaskState | str) -> None:
    """Raise `IllegalTransition` unless a task may go from `source` to `dest`.

    Writing a task with the status it already has is always allowed.
    """
    allowed = _TASK_ALLOWED.get(source)
    if allowed is not None and dest in allowed:
        return

    if allowed is None:
        message = "cannot change a task: " + _unknown_state_hint(
            source, "task", TaskState
        )
        allowed = frozenset()
    elif dest not in TaskState.__members__:
        message = f"cannot change a task from {source}: " + _unknown_state_hint(
            dest, "task", TaskState
        )
    elif allowed == {source}:
        message = f"cannot change a task from {source} to {dest} ({source} is terminal)"
    else:
        ordered = [state for state in TaskState if state in allowed]
        message = (
            f"cannot change a task from {source} to {dest} "
            f"(allowed from {source}: {_names(ordered)})"
        )
    raise IllegalTransition(
        message,
        machine="task",
        event=str(dest),
        state=str(source),
        allowed=tuple(state for state in TaskState if state in allowed),
    )


def _parse_state(value: object, kind: str, states: type[StrEnum]) -> StrEnum:
    try:
        return states(value)
    except ValueError:
        raise ValueError(_unknown_state_hint(value, kind, states)) from None


def derive_task_state(
    current: TaskState | str,
    step_states: Iterable[StepState | str],
    *,
    replaying: bool = False,
) -> TaskState:
    """Compute a task's status from its current status and its steps' statuses.

    The first rule that matches decides:

    1. DEAD_LETTER and CANCELLED tasks keep their status, unless `replaying`
       is true, in which case the remaining rules apply as for any task.
    2. SUCCESS when every step succeeded.
    3. DEAD_LETTER when any step is dead-lettered.
    4. CANCELLED when any step is cancelled (steps are only cancelled together
       with their task, so a cancelled step means a cancelled task).
    5. RUNNING when any step is running, else RETRYING when any step waits
       for a retry.
    6. RUNNING when any step succeeded: the workflow is between steps.
    7. PENDING otherwise.

    The function only computes; pass the result to `check_task_change`
    before writing it. Raises ValueError for an unknown state name or an
    empty list of steps.
    """
    current = _parse_state(current, "task", TaskState)
    present = {_parse_state(state, "step", StepState) for state in step_states}
    if not present:
        raise ValueError(
            f"cannot derive the state of a {current} task from no steps: "
            "every task has at least one step"
        )

    if current in _STICKY_TASK_STATES and not replaying:
        return current
    if present == {StepState.SUCCESS}:
        return TaskState.SUCCESS
    if StepState.DEAD_LETTER in present:
        return TaskState.DEAD_LETTER
    if StepState.CANCELLED in present:
        return TaskState.CANCELLED
    if StepState.RUNNING in present:
        return TaskState.RUNNING
    if StepState.RETRYING in present:
        return TaskState.RETRYING
    if StepState.SUCCESS in present:
        return TaskState.RUNNING
    return TaskState.PENDING
