"""Two node processes share one root and split a thousand tasks between them.

The nodes race for the same inbox files. The bus settles each race with an
atomic rename, and the store fences each claim. The checks are therefore
about duplicates and losses. Every task succeeds exactly once, no step has a
second successful attempt, no fenced write was rejected (apart from the
renewal race that `RootView.real_lease_conflicts` describes), and nothing is
left in the inbox or in processing/. Both nodes must have done part of the work,
otherwise the test would not have exercised any race at all.

The nodes start first and the tasks are submitted while they poll, so that
neither gets a head start on a full inbox.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from relaymesh.runtime import Runtime
from tests.integration.processes import (
    NodeSupervisor,
    RootView,
    by_node,
    write_settings,
)

pytestmark = pytest.mark.slow

TASKS = 1000


def test_two_nodes_run_each_task_once(
    root: Path, nodes: NodeSupervisor, view: RootView
) -> None:
    write_settings(root, pollIntervalMs=20, maintenanceIntervalMs=200)
    node_a = nodes.start("node-a", workers=4)
    node_b = nodes.start("node-b", workers=4)

    runtime = Runtime.open(root)
    try:
        inputs = {
            runtime.submit("echo", f"task {n}").task_id: f"task {n}"
            for n in range(TASKS)
        }
    finally:
        runtime.close()
    assert len(inputs) == TASKS, "every submit must create a new task"

    nodes.wait_until(
        lambda: (
            view.value("SELECT COUNT(*) FROM tasks WHERE status = 'SUCCESS'") == TASKS
        ),
        45,
        f"all {TASKS} tasks to succeed",
    )
    node_a.terminate()
    node_b.terminate()
    assert node_a.wait_exit(15) == 0, node_a.describe()
    assert node_b.wait_exit(15) == 0, node_b.describe()

    # Each task succeeded once, with its own input (no cross-wired results).
    tasks = view.rows("SELECT task_id, status, result_payload FROM tasks")
    assert len(tasks) == TASKS
    for task in tasks:
        assert task["status"] == "SUCCESS", task
        assert json.loads(task["result_payload"])["received"] == inputs[task["task_id"]]

    # One attempt per step, every one a success: nothing ran twice.
    attempts = view.attempts()
    assert len(attempts) == TASKS, f"{len(attempts) - TASKS} extra attempts"
    assert {attempt["outcome"] for attempt in attempts} == {"SUCCESS"}
    successes = view.store.successful_attempt_counts()
    assert len(successes) == TASKS
    assert [step for step, count in successes.items() if count != 1] == []
    assert view.lease_conflicts() == []

    # Both nodes worked; the split is printed for the test log.
    split = by_node(attempts)
    print(f"attempts per node: {split}")
    assert set(split) == {"node-a", "node-b"}, split

    # The bus agrees with the store: every message done, every file in done/.
    assert view.rows("SELECT state, COUNT(*) AS n FROM messages GROUP BY state") == [
        {"state": "DONE", "n": TASKS}
    ]
    assert view.inbox_files() == []
    assert view.processing_files() == []
    assert len(view.bus_files(view.layout.done)) == TASKS

    # A graceful stop marks each node LEFT.
    members = {member["nodeId"]: member["status"] for member in view.store.members()}
    assert members == {"node-a": "LEFT", "node-b": "LEFT"}


def test_renewal_racing_commit_records_no_conflict(
    root: Path, nodes: NodeSupervisor, view: RootView
) -> None:
    # Renewing every 20 ms while steps finish every few milliseconds makes
    # the race happen dozens of times in one run.
    write_settings(root, pollIntervalMs=20, leaseHeartbeatMs=20, leaseTimeoutMs=5000)
    runtime = Runtime.open(root)
    try:
        for n in range(300):
            runtime.submit("echo", f"task {n}")
    finally:
        runtime.close()
    node = nodes.start("node-a", workers=4)
    nodes.wait_until(
        lambda: (
            view.value("SELECT COUNT(*) FROM tasks WHERE status = 'SUCCESS'") == 300
        ),
        30,
        "all 300 tasks to succeed",
    )
    node.terminate()
    assert node.wait_exit(15) == 0, node.describe()

    steps = [row["step_id"] for row in view.rows("SELECT step_id FROM steps")]
    assert view.store.successful_attempt_counts() == {step_id: 1 for step_id in steps}
    assert view.lease_conflicts() == []
