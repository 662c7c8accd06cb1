"""SIGTERM on a busy node: finish what fits in the grace period, hand back
the rest at once.

A node that stops gracefully claims nothing more and gives its running steps
`gracefulTimeoutMs` to finish. A step that finishes in time is committed
before the process exits. A step that does not is stopped and released:
its attempt is closed as RELEASED and the step is queued again, so another
node can start it immediately instead of waiting for the lease to expire.
The lease timeout here is 60 s, far beyond the test's deadlines, so a
prompt takeover can only come from the release.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from relaymesh.runtime import Runtime
from tests.integration.processes import (
    NodeSupervisor,
    RootView,
    pick,
    write_settings,
)

pytestmark = pytest.mark.slow

LONG_LEASE = {
    "leaseTimeoutMs": 60_000,
    "leaseHeartbeatMs": 500,
    # Membership timeouts may not be shorter than the lease timeout.
    "suspectAfterMs": 60_000,
    "deadAfterMs": 60_000,
    "pollIntervalMs": 50,
    "maintenanceIntervalMs": 200,
}


def submit(root: Path, agent_id: str) -> str:
    runtime = Runtime.open(root)
    try:
        return runtime.submit(agent_id, "payload").task_id
    finally:
        runtime.close()


def test_long_step_released_to_next_node(
    root: Path, nodes: NodeSupervisor, view: RootView
) -> None:
    write_settings(root, gracefulTimeoutMs=1000, **LONG_LEASE)
    agent = nodes.install_agent("slow", sleep_s=20)
    node_a = nodes.start("node-a")
    task_id = submit(root, "slow")
    nodes.wait_until(
        lambda: agent.records("start"), 15, "the script to start on node-a"
    )

    node_a.terminate()
    signalled = time.monotonic()
    assert node_a.wait_exit(10) == 0, node_a.describe()
    stop_s = time.monotonic() - signalled
    print(f"node-a stopped {stop_s:.2f} s after SIGTERM")
    # One second of grace, at most one more for the script to die.
    assert stop_s < 4, node_a.describe()

    # Handed back: queued again, the attempt closed as RELEASED.
    step = view.only_step()
    assert pick(step, "status", "lease_owner", "is_enqueued") == ("PENDING", None, 1)
    (released,) = view.attempts()
    assert (released["node_id"], released["outcome"]) == ("node-a", "RELEASED")
    assert len(view.inbox_files()) == 1
    assert view.processing_files() == []
    assert view.task_status(task_id) != "SUCCESS"
    runs = [(r.event, r.node) for r in agent.records()]
    assert runs == [("start", "node-a"), ("terminated", "node-a")], runs
    members = {m["nodeId"]: m["status"] for m in view.store.members()}
    assert members["node-a"] == "LEFT"

    # node-b runs the script briefly and must start it well before any
    # lease timeout could have freed the step.
    node_b = nodes.start("node-b", env={"RELAYMESH_TEST_SLEEP_S": "0.2"})
    ready = time.monotonic()
    nodes.wait_until(
        lambda: view.task_status(task_id) == "SUCCESS", 10, "node-b to finish"
    )
    print(f"node-b finished {time.monotonic() - ready:.2f} s after it started")
    first, second = view.attempts()
    assert (first["node_id"], first["outcome"]) == ("node-a", "RELEASED")
    assert (second["node_id"], second["outcome"]) == ("node-b", "SUCCESS")
    takeover_ms = second["started_at_ms"] - released["ended_at_ms"]
    assert takeover_ms < 60_000 // 4, f"took over {takeover_ms} ms after the release"
    # A handback is not a failure: the step's retry budget is untouched.
    assert view.only_step()["attempt"] == 1
    assert view.counter("leases_reclaimed_total") == 0
    assert view.lease_conflicts() == []
    assert view.store.successful_attempt_counts() == {step["step_id"]: 1}
    node_b.terminate()
    assert node_b.wait_exit(15) == 0, node_b.describe()


def test_short_step_commits_before_exit(
    root: Path, nodes: NodeSupervisor, view: RootView
) -> None:
    write_settings(root, gracefulTimeoutMs=5000, **LONG_LEASE)
    agent = nodes.install_agent("short", sleep_s=1)
    node = nodes.start("node-a")
    task_id = submit(root, "short")
    nodes.wait_until(lambda: agent.records("start"), 15, "the script to start")

    node.terminate()
    signalled = time.monotonic()
    assert node.wait_exit(10) == 0, node.describe()
    stop_s = time.monotonic() - signalled
    print(f"node-a stopped {stop_s:.2f} s after SIGTERM")
    # It waited for the step (about 1 s), not for the whole grace period.
    assert stop_s < 4, node.describe()

    assert view.task_status(task_id) == "SUCCESS"
    step = view.only_step()
    assert [(a["node_id"], a["outcome"]) for a in view.attempts()] == [
        ("node-a", "SUCCESS")
    ]
    assert view.store.successful_attempt_counts() == {step["step_id"]: 1}
    assert [(r.event, r.node) for r in agent.records()] == [
        ("start", "node-a"),
        ("end", "node-a"),
    ]
    assert view.lease_conflicts() == []
    assert view.inbox_files() == []
    assert view.processing_files() == []
    assert len(view.bus_files(view.layout.done)) == 1
