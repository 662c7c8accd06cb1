"""Tests of the generated state machine diagrams and docs/state-machines.md."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from relaymesh.fsm import StepState, TaskState, diagrams, lifecycle
from relaymesh.fsm.diagrams import (
    mermaid_state_diagram,
    render_state_machines_markdown,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCS_PAGE = REPO_ROOT / "docs" / "state-machines.md"
REGENERATE = "python -m relaymesh.fsm.diagrams > docs/state-machines.md"


def test_docs_page_is_up_to_date():
    committed = DOCS_PAGE.read_text(encoding="utf-8")
    assert committed == render_state_machines_markdown(), (
        f"{DOCS_PAGE.relative_to(REPO_ROOT)} is stale; regenerate it with "
        f"`{REGENERATE}`"
    )


def test_module_entry_point_prints_page():
    completed = subprocess.run(
        [sys.executable, "-W", "error", "-m", "relaymesh.fsm.diagrams"],
        capture_output=True,
        text=True,
        timeout=60,
        start_new_session=True,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stderr == ""
    assert completed.stdout == render_state_machines_markdown()


@pytest.mark.parametrize(
    ("name", "machine"),
    [("step", lifecycle.STEP_MACHINE), ("task", lifecycle.TASK_MACHINE)],
)
def test_diagram_draws_every_declared_edge(name, machine):
    lines = mermaid_state_diagram(name).splitlines()
    assert lines[0] == "stateDiagram-v2"
    assert "    [*] --> PENDING" in lines

    edges = {}
    for line in lines[1:]:
        arrow, _, label = line.strip().partition(" : ")
        edges[arrow] = label.split(", ") if label else []

    for trigger in machine.events:
        for transition in machine.get_transitions(trigger):
            dest = transition.dest or transition.source
            arrow = f"{transition.source} --> {dest}"
            assert arrow in edges, arrow
            assert trigger in edges[arrow], arrow


def test_step_diagram_edges():
    text = mermaid_state_diagram("step")
    for line in [
        "PENDING --> RUNNING : claim",
        "RUNNING --> RUNNING : heartbeat",
        "RUNNING --> SUCCESS : succeed",
        "RUNNING --> RETRYING : schedule_retry",
        "RUNNING --> DEAD_LETTER : dead_letter",
        "RUNNING --> PENDING : release",
        "RETRYING --> PENDING : dispatch_retry",
        "PENDING --> CANCELLED : cancel_soft, cancel_hard",
        "RETRYING --> CANCELLED : cancel_soft, cancel_hard",
        "RUNNING --> CANCELLED : cancel_hard",
        "DEAD_LETTER --> PENDING : replay",
        "CANCELLED --> PENDING : replay",
        "SUCCESS --> [*]",
    ]:
        assert f"    {line}\n" in text, line


def test_only_success_is_drawn_final():
    for name in ["step", "task"]:
        finals = [
            line.split(" --> ")[0].strip()
            for line in mermaid_state_diagram(name).splitlines()
            if line.endswith("--> [*]")
        ]
        assert finals == ["SUCCESS"], name


def test_unknown_machine_name():
    with pytest.raises(ValueError) as raised:
        mermaid_state_diagram("member")
    message = str(raised.value)
    assert "unknown state machine 'member'" in message
    assert "known: step, task" in message


def test_page_has_both_diagrams_and_tables():
    page = render_state_machines_markdown()
    assert page.count("```mermaid\nstateDiagram-v2\n") == 2
    assert "| trigger | from | to | when |" in page
    for state in [*StepState, *TaskState]:
        assert f"| {state} |" in page
    for trigger in lifecycle.STEP_TRIGGERS:
        assert f"| `{trigger}` |" in page


def test_page_explains_unstored_statuses():
    page = render_state_machines_markdown()
    assert "## FAILED, TIMEOUT and ABANDONED" in page
    for outcome in ["FAILED", "TIMEOUT", "ABANDONED", "RELEASED", "CONFLICT"]:
        assert f"| {outcome} |" in page


def test_missing_description_fails_render(monkeypatch):
    meanings = dict(diagrams._STEP_STATE_MEANINGS)
    del meanings[StepState.RETRYING]
    monkeypatch.setattr(diagrams, "_STEP_STATE_MEANINGS", meanings)
    with pytest.raises(KeyError, match="step state RETRYING"):
        render_state_machines_markdown()
