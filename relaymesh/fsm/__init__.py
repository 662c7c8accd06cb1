"""Explicit state machines of RelayMesh, declared once with `transitions`.

Every change of a stored status goes through these declarations, so that an
illegal change raises instead of corrupting a row:

- `relaymesh/fsm/lifecycle.py`: step states and their triggers, attempt
  outcomes, task states and how a task's status is derived from its steps.
- `relaymesh/fsm/diagrams.py`: Mermaid diagrams and `docs/state-machines.md`,
  generated from the same declarations (`python -m relaymesh.fsm.diagrams`).

The member state machine of the gossip layer (ALIVE, SUSPECT, DEAD, LEFT)
will get a module of its own here. It shares nothing with the lifecycle of
work except the library used to declare it.

The diagram generator is not imported here: it is a documentation tool, and
importing it from the package would make `python -m` warn about a module
that is already loaded.
"""

from relaymesh.fsm.lifecycle import (
    STEP_TRIGGERS,
    TERMINAL_TASK_STATES,
    AttemptOutcome,
    IllegalTransition,
    StepState,
    TaskState,
    check_task_change,
    derive_task_state,
    step_sources,
    step_target,
)

__all__ = [
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
