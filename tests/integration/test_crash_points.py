"""Processes that die between two writes, and the recovery that follows.

Every operation commits to the store first and moves bus files after, so a
crash in between leaves the bus behind the store, never ahead of it (see
`relaymesh/bus.py`). The crash points of `relaymesh/faults.py` stop a real
process exactly there, with the exit status of a SIGKILL:

| point | left behind | repaired by |
|---|---|---|
| submit.after_commit | a QUEUED message with no inbox file | any node's sweep, after sweepGraceMs |
| claim.after_rename | a file in processing/<node>, its message still QUEUED | the same node id at start, or any node after sweepGraceMs |
| commit.after_commit | a committed SUCCESS whose file is still in processing/ | the same node id at start (the file goes to done/) |
| release.after_commit | a released step whose new message has no file, and the old file | any node's sweep |

Each test checks the state the crash left (so that the crash point really
fired where it claims to), then the recovery, and that no step's agent ran
again after its result was committed. Tests that must show recovery "at
start-up" keep the default 30 s sweepGraceMs, so that the periodic sweep
cannot be what repaired the root within the test's deadline.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from relaymesh.runtime import Runtime
from tests.integration.processes import (
    CRASH_EXIT_STATUS,
    NodeProcess,
    NodeSupervisor,
    RootView,
    pick,
    write_settings,
)

pytestmark = pytest.mark.slow

FAST_SWEEP = {"sweepGraceMs": 1000, "maintenanceIntervalMs": 100, "pollIntervalMs": 50}
# Recovery must not wait for the periodic sweep (default sweepGraceMs 30 s).
NO_PERIODIC_SWEEP = {"maintenanceIntervalMs": 100, "pollIntervalMs": 50}


def crash_env(point: str) -> dict[str, str]:
    return {"RELAYMESH_CRASH_AT": point}


def submit_all(root: Path, agent_id: str, count: int) -> list[str]:
    runtime = Runtime.open(root)
    try:
        return [runtime.submit(agent_id, f"input {n}").task_id for n in range(count)]
    finally:
        runtime.close()


def wait_all_succeeded(nodes: NodeSupervisor, view: RootView, timeout_s: float) -> None:
    nodes.wait_until(
        lambda: view.value("SELECT COUNT(*) FROM tasks WHERE status != 'SUCCESS'") == 0,
        timeout_s,
        "every task to succeed",
    )


def crash_node(nodes: NodeSupervisor, node_id: str, point: str, workers: int) -> None:
    node = nodes.start(
        node_id, env=crash_env(point), wait_started=False, workers=workers
    )
    status = node.wait_exit(20)
    assert status == CRASH_EXIT_STATUS, (
        f"expected a crash at {point}\n{node.describe()}"
    )


def stop(node: NodeProcess) -> None:
    node.terminate()
    assert node.wait_exit(15) == 0, node.describe()


def test_submit_crash_repaired_by_sweep(
    root: Path, nodes: NodeSupervisor, view: RootView
) -> None:
    write_settings(root, **FAST_SWEEP)
    result = nodes.run_cli(
        "submit", "--agent", "echo", "--input", "hello",
        env=crash_env("submit.after_commit"),
    )  # fmt: skip
    assert result.returncode == CRASH_EXIT_STATUS, result
    assert result.stdout == "", "the command must die before it reports the task"

    # The task was committed, but the bus never heard of it.
    (task,) = view.rows("SELECT task_id, status FROM tasks")
    assert task["status"] == "PENDING"
    assert [m["state"] for m in view.rows("SELECT state FROM messages")] == ["QUEUED"]
    assert view.inbox_files() == []
    assert view.bus_files(view.layout.meta) == []
    committed_at = time.monotonic()

    node = nodes.start("node-a")
    nodes.wait_until(
        lambda: view.task_status(task["task_id"]) == "SUCCESS", 15, "the task to run"
    )
    assert time.monotonic() - committed_at >= 1.0, "repaired before sweepGraceMs"
    assert "sweep.message_rewritten" in node.log()
    step = view.only_step()
    assert [(a["node_id"], a["outcome"]) for a in view.attempts()] == [
        ("node-a", "SUCCESS")
    ]
    assert view.store.successful_attempt_counts() == {step["step_id"]: 1}
    assert view.lease_conflicts() == []
    assert view.inbox_files() == []
    assert view.processing_files() == []
    stop(node)


def test_claim_crash_recovered_at_restart(
    root: Path, nodes: NodeSupervisor, view: RootView
) -> None:
    write_settings(root, **NO_PERIODIC_SWEEP)
    (task_id,) = submit_all(root, "echo", 1)
    crash_node(nodes, "node-a", "claim.after_rename", workers=1)

    # The file moved, but the claim was never committed.
    assert len(view.processing_files("node-a")) == 1
    assert view.inbox_files() == []
    step = view.only_step()
    assert pick(step, "status", "attempt", "lease_owner") == ("PENDING", 0, None)
    assert [m["state"] for m in view.rows("SELECT state FROM messages")] == ["QUEUED"]
    assert view.attempts() == []

    started = time.monotonic()
    node = nodes.start("node-a", workers=1)
    nodes.wait_until(
        lambda: view.task_status(task_id) == "SUCCESS", 10, "the task to run"
    )
    print(f"recovered {time.monotonic() - started:.2f} s after the restart")
    assert "sweep.repaired" in node.log()
    assert [(a["node_id"], a["attempt"], a["outcome"]) for a in view.attempts()] == [
        ("node-a", 1, "SUCCESS")
    ]
    assert view.lease_conflicts() == []
    assert view.processing_files() == []
    assert view.inbox_files() == []
    stop(node)


def test_claim_crash_recovered_by_other_node(
    root: Path, nodes: NodeSupervisor, view: RootView
) -> None:
    write_settings(root, **FAST_SWEEP)
    (task_id,) = submit_all(root, "echo", 1)
    crash_node(nodes, "node-a", "claim.after_rename", workers=1)
    (orphan,) = view.processing_files("node-a")
    claimed_at_ms = orphan.stat().st_mtime * 1000

    node = nodes.start("node-b", workers=1)
    nodes.wait_until(
        lambda: view.task_status(task_id) == "SUCCESS", 10, "the task to run"
    )
    (attempt,) = view.attempts()
    assert (attempt["node_id"], attempt["outcome"]) == ("node-b", "SUCCESS")
    # The file was left alone until it was older than sweepGraceMs.
    assert attempt["started_at_ms"] >= claimed_at_ms + 1000 - 50, attempt
    assert view.lease_conflicts() == []
    assert view.processing_files() == []
    assert view.inbox_files() == []
    stop(node)


def test_commit_crash_cleaned_without_rerun(
    root: Path, nodes: NodeSupervisor, view: RootView
) -> None:
    write_settings(root, **NO_PERIODIC_SWEEP)
    agent = nodes.install_agent("record", sleep_s=0)
    task_ids = submit_all(root, "record", 3)
    crash_node(nodes, "node-a", "commit.after_commit", workers=1)

    # One result is committed, but its file never left processing/.
    (done,) = view.rows("SELECT * FROM steps WHERE status = 'SUCCESS'")
    assert view.task_status(done["task_id"]) == "SUCCESS"
    assert [a["outcome"] for a in view.attempts(done["step_id"])] == ["SUCCESS"]
    (leftover,) = view.processing_files("node-a")
    done_message = view.rows(
        "SELECT state FROM messages WHERE file_name = ?", leftover.name
    )
    assert done_message == [{"state": "DONE"}]
    assert view.bus_files(view.layout.done) == []

    node = nodes.start("node-a", workers=1)
    wait_all_succeeded(nodes, view, 15)
    nodes.wait_until(lambda: not view.processing_files(), 10, "processing/ to empty")
    assert leftover.name in [path.name for path in view.bus_files(view.layout.done)]

    # Every step's agent ran once, the committed one included.
    starts = [record.step_id for record in agent.records("start")]
    steps = [row["step_id"] for row in view.rows("SELECT step_id FROM steps")]
    assert sorted(starts) == sorted(steps), f"agent runs per step: {starts}"
    assert view.store.successful_attempt_counts() == {step: 1 for step in steps}
    assert len(view.attempts()) == len(task_ids)
    assert view.lease_conflicts() == []
    stop(node)


def crash_during_release(root: Path, nodes: NodeSupervisor, view: RootView) -> str:
    """Crash a stopping node between the release commit and its file moves."""
    write_settings(root, gracefulTimeoutMs=0, **FAST_SWEEP)
    nodes.install_agent("slow", sleep_s=30, retry_sleep_s=30)
    (task_id,) = submit_all(root, "slow", 1)
    node = nodes.start("node-a", workers=1, env=crash_env("release.after_commit"))
    nodes.wait_until(
        lambda: view.only_step()["status"] == "RUNNING", 10, "the step to start"
    )
    node.terminate()
    status = node.wait_exit(15)
    assert status == CRASH_EXIT_STATUS, node.describe()

    # The handback is committed, but its new message has no file yet.
    step = view.only_step()
    assert (step["status"], step["lease_owner"]) == ("PENDING", None)
    assert [a["outcome"] for a in view.attempts()] == ["RELEASED"]
    states = sorted(m["state"] for m in view.rows("SELECT state FROM messages"))
    assert states == ["QUEUED", "RELEASED"]
    assert view.inbox_files() == []
    assert len(view.processing_files("node-a")) == 1
    return task_id


def test_release_crash_repaired_by_other_node(
    root: Path, nodes: NodeSupervisor, view: RootView
) -> None:
    task_id = crash_during_release(root, nodes, view)
    node = nodes.start("node-b", workers=1, env={"RELAYMESH_TEST_SLEEP_S": "0"})
    nodes.wait_until(
        lambda: view.task_status(task_id) == "SUCCESS", 15, "the task to run"
    )
    outcomes = [(a["node_id"], a["outcome"]) for a in view.attempts()]
    assert outcomes == [("node-a", "RELEASED"), ("node-b", "SUCCESS")]
    assert view.lease_conflicts() == []
    nodes.wait_until(lambda: not view.processing_files(), 10, "processing/ to empty")
    assert view.inbox_files() == []
    stop(node)


def test_release_crash_leaves_dead_empty(
    root: Path, nodes: NodeSupervisor, view: RootView
) -> None:
    task_id = crash_during_release(root, nodes, view)
    node = nodes.start("node-b", workers=1, env={"RELAYMESH_TEST_SLEEP_S": "0"})
    nodes.wait_until(
        lambda: view.task_status(task_id) == "SUCCESS", 15, "the task to run"
    )
    nodes.wait_until(lambda: not view.processing_files(), 10, "processing/ to empty")
    assert view.rows("SELECT * FROM steps WHERE status = 'DEAD_LETTER'") == []
    assert view.bus_files(view.layout.dead) == []
    stop(node)
