"""Diagrams and the state machine page, generated from the declared machines.

`docs/state-machines.md` is written by this module, never by hand:

    python -m relaymesh.fsm.diagrams > docs/state-machines.md

and a test compares the committed page with a fresh rendering, so the page
cannot drift from `relaymesh/fsm/lifecycle.py`. Edges, sources and targets
are read from the `transitions.Machine` objects themselves, not from a copy
of their tables, and the derivation examples are computed by calling
`derive_task_state`. Only the prose describing each state and outcome lives
here, and rendering fails with a clear error when a state or trigger has no
description.

Diagrams are Mermaid `stateDiagram-v2` text, which code hosts render inside
a fenced block, rather than images made by the Graphviz support of
`transitions` (its `GraphMachine`): text diagrams need no system package, and
a changed edge shows up as a readable line in a diff.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from enum import StrEnum

from transitions import Machine

from relaymesh.fsm.lifecycle import (
    STEP_MACHINE,
    STEP_TABLE,
    TASK_MACHINE,
    TASK_TABLE,
    AttemptOutcome,
    StepState,
    TaskState,
    TransitionRow,
    derive_task_state,
)

__all__ = ["mermaid_state_diagram", "render_state_machines_markdown"]

# Name -> (declared machine, the rows it was declared from, state enum). The
# member machine joins this registry when it is written.
_MACHINES: dict[str, tuple[Machine, tuple[TransitionRow, ...], type[StrEnum]]] = {
    "step": (STEP_MACHINE, STEP_TABLE, StepState),
    "task": (TASK_MACHINE, TASK_TABLE, TaskState),
}

# Every machine here starts in the same state: steps and tasks are created
# PENDING.
_INITIAL_STATE = "PENDING"

_S = StepState
_T = TaskState
_O = AttemptOutcome

_STEP_STATE_MEANINGS = {
    _S.PENDING: "Waiting for a worker to claim it. A workflow step whose "
    "dependencies have not all succeeded also waits here, without being queued.",
    _S.RUNNING: "Owned by one worker under a lease: an owner, a token and an "
    "epoch that goes up with every claim. The owner renews the lease on a "
    "heartbeat while the agent runs.",
    _S.RETRYING: "An attempt ended badly and attempts are left. The step waits "
    "for its backoff delay before it is queued again.",
    _S.SUCCESS: "The agent's result is stored. No trigger leaves this state.",
    _S.DEAD_LETTER: "The last allowed attempt ended badly. The step stays here "
    "until an operator replays its task.",
    _S.CANCELLED: "Its task was cancelled. The step stays here until the task "
    "is replayed.",
}

_OUTCOME_MEANINGS = {
    _O.SUCCESS: ("The agent finished and the owner stored its result.", "succeed"),
    _O.FAILED: (
        "The agent reported an error.",
        "schedule_retry, or dead_letter after the last attempt",
    ),
    _O.TIMEOUT: (
        "The agent ran longer than its timeout and was stopped.",
        "schedule_retry, or dead_letter after the last attempt",
    ),
    _O.ABANDONED: (
        (
            "The lease expired, or its owner was declared dead, before a result "
            "was stored. Another node reclaimed the step."
        ),
        "schedule_retry, or dead_letter after the last attempt",
    ),
    _O.RELEASED: (
        "The owner shut down gracefully and handed the unfinished step back.",
        "release",
    ),
    _O.CANCELLED: ("A hard cancel stopped the running attempt.", "cancel_hard"),
    _O.CONFLICT: (
        (
            "The owner's fenced write matched no row, because the step had been "
            "reclaimed by another owner or cancelled meanwhile. The result is "
            "discarded and recorded as a lease conflict."
        ),
        "none: the step belongs to whoever holds it now",
    ),
}

_TASK_STATE_MEANINGS = {
    _T.PENDING: "No step is running, waiting for a retry or finished yet.",
    _T.RUNNING: "A step is running, or some steps succeeded and others are "
    "still to run.",
    _T.RETRYING: "No step is running and at least one waits for a retry.",
    _T.SUCCESS: "Every step succeeded. Nothing changes a task after this.",
    _T.DEAD_LETTER: "A step used up all its attempts. The task stays "
    "dead-lettered whatever its other steps do, until an operator replays it.",
    _T.CANCELLED: "A user cancelled the task. It stays cancelled even if a step "
    "that was still running finishes, until an operator replays it.",
}

# (current task status, step statuses, replaying) for the examples table.
_DERIVATION_EXAMPLES: tuple[tuple[TaskState, tuple[StepState, ...], bool], ...] = (
    (_T.PENDING, (_S.PENDING,), False),
    (_T.PENDING, (_S.RUNNING,), False),
    (_T.RUNNING, (_S.SUCCESS, _S.PENDING), False),
    (_T.RUNNING, (_S.RETRYING, _S.PENDING), False),
    (_T.RETRYING, (_S.RUNNING, _S.RETRYING), False),
    (_T.RUNNING, (_S.SUCCESS, _S.SUCCESS), False),
    (_T.RUNNING, (_S.DEAD_LETTER, _S.RUNNING), False),
    (_T.DEAD_LETTER, (_S.DEAD_LETTER, _S.SUCCESS), False),
    (_T.CANCELLED, (_S.SUCCESS,), False),
    (_T.DEAD_LETTER, (_S.PENDING, _S.SUCCESS), True),
    (_T.CANCELLED, (_S.PENDING, _S.PENDING), True),
)

_INTRODUCTION = """\
# State machines

<!-- Generated by `python -m relaymesh.fsm.diagrams > docs/state-machines.md`
from relaymesh/fsm/lifecycle.py. Edit the code, then regenerate this page. -->

RelayMesh tracks work at two levels. A **task** is what you submit: one
agent call with `relaymesh submit`, or a workflow of dependent calls with
`relaymesh submit-workflow`. A **step** is one agent call inside a task, so a
task has one step or, for a workflow, one per node of the graph. Workers run
steps; a task's status follows from the statuses of its steps.

Both lifecycles are declared once in `relaymesh/fsm/lifecycle.py`, and every
status change goes through that declaration: a change that the tables below
do not list is rejected with an error, and the row is left as it was. The
diagrams and tables on this page are generated from the same declaration.
"""

_STEPS_PROSE = """\
A step moves between states by named triggers. The triggers that the step's
owner fires are fenced. The store applies such a change only if the step
still has the lease token and epoch that the owner got when it claimed the
step, so a worker that lost its lease cannot overwrite the next owner's work.

Delivery is at least once. A step whose worker died is reclaimed and run
again, so an agent may see the same step twice.
"""

_OUTCOMES_PROSE = """\
An **attempt** is one run of a step by one owner. How it ended is its
outcome. An outcome is never stored as a status: each one leads to a step
trigger, and the trigger decides the new status.
"""

_TASKS_PROSE = """\
A task is not moved by triggers of its own. After each step change,
RelayMesh derives the task's status from its current status and the statuses
of all its steps, checks the change against the task transition table, and
writes it. The trigger names in that table only label its edges.
"""

_DERIVATION_PROSE = """\
The first rule that matches decides:

1. A task that is DEAD_LETTER or CANCELLED keeps that status, whatever its
   steps do, unless the change is part of a replay. A parallel branch that
   succeeds after another branch was dead-lettered does not bring the task
   back to RUNNING, and a step that finishes after its task was cancelled
   does not make the task succeed or retry.
2. SUCCESS when every step succeeded.
3. DEAD_LETTER when any step is dead-lettered.
4. CANCELLED when any step is cancelled. Steps are only cancelled together
   with their task.
5. RUNNING when any step is running; otherwise RETRYING when any step waits
   for a retry.
6. RUNNING when any step succeeded: the workflow is between two steps.
7. PENDING otherwise.

A replay moves the task's dead-lettered or cancelled steps back to PENDING,
then derives the task's status with rule 1 switched off. A replayed workflow
whose other branches already succeeded is therefore RUNNING at once.

These examples are computed by the code that RelayMesh runs:
"""

_LEGACY_PROSE = """\
The status enum of the earlier RelayMesh implementation also had FAILED,
TIMEOUT and ABANDONED. RelayMesh never stores them, on tasks or on steps:
they describe how an attempt ended (see the attempt outcomes above), and the
step goes straight on to RETRYING or DEAD_LETTER.
"""

_TASK_TABLE_NOTE = """\
Writing a task with the status it already has is always allowed. SUCCESS is
terminal, and DEAD_LETTER and CANCELLED are left only by a replay.
"""


def _machine_entry(
    machine_name: str,
) -> tuple[Machine, tuple[TransitionRow, ...], type[StrEnum]]:
    try:
        return _MACHINES[machine_name]
    except KeyError:
        known = ", ".join(_MACHINES)
        raise ValueError(
            f"unknown state machine {machine_name!r} (known: {known})"
        ) from None


def _edges(machine: Machine) -> Iterator[tuple[str, str | None, str]]:
    """Yield (source, dest, trigger) in declaration order; None is internal."""
    for trigger, event in machine.events.items():
        for source, transitions in event.transitions.items():
            for transition in transitions:
                yield source, transition.dest, trigger


def mermaid_state_diagram(machine_name: str) -> str:
    """Render the named machine ("step" or "task") as a Mermaid diagram.

    Each edge is labelled with the triggers that take it; an internal
    transition is drawn as a loop on its state. States that no trigger
    leaves are drawn as final.
    """
    machine, _, states = _machine_entry(machine_name)

    labels: dict[tuple[str, str], list[str]] = {}
    for source, dest, trigger in _edges(machine):
        labels.setdefault((source, dest or source), []).append(trigger)

    lines = ["stateDiagram-v2", f"    [*] --> {_INITIAL_STATE}"]
    for (source, dest), triggers in labels.items():
        lines.append(f"    {source} --> {dest} : {', '.join(triggers)}")

    sources = {source for source, _ in labels}
    for state in states:
        if state.name not in sources:
            lines.append(f"    {state.name} --> [*]")
    return "\n".join(lines) + "\n"


def _markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = [
        "| " + " | ".join(headers) + " |",
        "|" + "---|" * len(headers),
    ]
    lines.extend("| " + " | ".join(row) + " |" for row in rows)
    return "\n".join(lines) + "\n"


def _described(meanings: dict, members: type[StrEnum], kind: str) -> list:
    """Return the descriptions of all members, failing on a missing one."""
    missing = [member.name for member in members if member not in meanings]
    if missing:
        raise KeyError(
            f"no description of {kind} {', '.join(missing)} in "
            "relaymesh/fsm/diagrams.py; add one before regenerating the docs"
        )
    return [meanings[member] for member in members]


def _transition_table(machine_name: str) -> str:
    """Tabulate a machine's edges, one row per trigger and target."""
    machine, table, _ = _machine_entry(machine_name)
    reasons = {(row.trigger, row.dest): row.reason for row in table}

    grouped: dict[tuple[str, str | None], list[str]] = {}
    for source, dest, trigger in _edges(machine):
        grouped.setdefault((trigger, dest), []).append(source)

    rows = []
    for (trigger, dest), sources in grouped.items():
        target = f"{sources[0]} (unchanged)" if dest is None else dest
        rows.append(
            [f"`{trigger}`", ", ".join(sources), target, reasons[trigger, dest]]
        )
    return _markdown_table(["trigger", "from", "to", "when"], rows)


def _derivation_examples() -> str:
    rows = []
    for current, steps, replaying in _DERIVATION_EXAMPLES:
        derived = derive_task_state(current, steps, replaying=replaying)
        rows.append([current, ", ".join(steps), "yes" if replaying else "no", derived])
    return _markdown_table(
        ["task status", "step statuses", "replay", "derived status"], rows
    )


def _mermaid_block(machine_name: str) -> str:
    return "```mermaid\n" + mermaid_state_diagram(machine_name) + "```\n"


def render_state_machines_markdown() -> str:
    """Render the whole of `docs/state-machines.md`."""
    step_states = _described(_STEP_STATE_MEANINGS, StepState, "step state")
    outcomes = _described(_OUTCOME_MEANINGS, AttemptOutcome, "attempt outcome")
    task_states = _described(_TASK_STATE_MEANINGS, TaskState, "task state")

    sections = [
        _INTRODUCTION,
        "## Step states\n",
        _STEPS_PROSE,
        _markdown_table(
            ["state", "meaning"],
            [[state, text] for state, text in zip(StepState, step_states)],
        ),
        "## Attempt outcomes\n",
        _OUTCOMES_PROSE,
        _markdown_table(
            ["outcome", "meaning", "step trigger that follows"],
            [[o, text, then] for o, (text, then) in zip(AttemptOutcome, outcomes)],
        ),
        "## Task states\n",
        _TASKS_PROSE,
        _markdown_table(
            ["state", "meaning"],
            [[state, text] for state, text in zip(TaskState, task_states)],
        ),
        "## How a task's status follows its steps\n",
        _DERIVATION_PROSE,
        _derivation_examples(),
        "## FAILED, TIMEOUT and ABANDONED\n",
        _LEGACY_PROSE,
        "## Step transitions\n",
        _mermaid_block("step"),
        _transition_table("step"),
        "## Task transitions\n",
        _mermaid_block("task"),
        _transition_table("task"),
        _TASK_TABLE_NOTE,
    ]
    return "\n".join(sections)


def main() -> None:
    sys.stdout.write(render_state_machines_markdown())


if __name__ == "__main__":
    main()
