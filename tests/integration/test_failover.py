"""Lease expiry between real processes: a dead owner loses its step, a live
one keeps it, and a stalled one that comes back cannot overwrite the result.

Each test runs a slow script step on node A with a 3 s lease renewed every
500 ms, while a second node watches the lease from its own process.

- A is killed with SIGKILL (no handback, no last write), so the only way the
  step can finish is the second node judging the lease expired and
  reclaiming it.
- A stays healthy for four lease timeouts, and the second node must leave
  the step alone, because a renewed lease is not reclaimed however long the
  step runs.
- A is frozen with SIGSTOP until the second node has reclaimed and finished
  the step, then resumed. Its late writes carry the old lease epoch, so the
  store must reject and record them and keep the second node's result.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from relaymesh.runtime import Runtime, wall_clock_ms
from tests.integration.processes import (
    NodeSupervisor,
    RootView,
    pick,
    write_settings,
)

pytestmark = pytest.mark.slow

LEASE_TIMEOUT_MS = 3000
LEASE_HEARTBEAT_MS = 500


def short_lease_settings(root: Path) -> None:
    write_settings(
        root,
        leaseTimeoutMs=LEASE_TIMEOUT_MS,
        leaseHeartbeatMs=LEASE_HEARTBEAT_MS,
        pollIntervalMs=50,
        maintenanceIntervalMs=200,
        sweepGraceMs=1000,
        baseBackoffMs=100,
        maxBackoffMs=500,
        retryJitterMaxMs=0,
    )


def submit(root: Path, agent_id: str) -> str:
    runtime = Runtime.open(root)
    try:
        return runtime.submit(agent_id, "payload").task_id
    finally:
        runtime.close()


def wait_running_on(nodes: NodeSupervisor, view: RootView, owner: str) -> dict:
    def running() -> dict | None:
        steps = view.rows("SELECT * FROM steps WHERE status = 'RUNNING'")
        return steps[0] if steps and steps[0]["lease_owner"] == owner else None

    return nodes.wait_until(running, 15, f"the step to be RUNNING on {owner}")


def test_killed_owner_loses_step_after_timeout(
    root: Path, nodes: NodeSupervisor, view: RootView
) -> None:
    short_lease_settings(root)
    # Attempt 1 would take 30 s; the retry on the other node takes 0.2 s.
    agent = nodes.install_agent("slow", sleep_s=30, retry_sleep_s=0.2)
    node_a = nodes.start("node-a")
    task_id = submit(root, "slow")
    step = wait_running_on(nodes, view, "node-a")
    nodes.wait_until(
        lambda: agent.records("start"), 10, "the script to start on node-a"
    )
    node_b = nodes.start("node-b")

    node_a.kill()
    killed_at_ms = wall_clock_ms()
    killed_at = time.monotonic()
    nodes.wait_until(
        lambda: view.task_status(task_id) == "SUCCESS", 20, "node-b to finish the task"
    )
    recovery_s = time.monotonic() - killed_at
    print(f"recovered {recovery_s:.2f} s after the kill")

    first, second = view.attempts(step["step_id"])
    columns = ("node_id", "attempt", "outcome")
    assert pick(first, *columns) == ("node-a", 1, "ABANDONED"), first
    assert pick(second, *columns) == ("node-b", 2, "SUCCESS"), second
    assert "lease expired" in first["error"], first
    # The last renewal came at most one heartbeat before the kill, so the
    # reclaim cannot have come sooner than this after it.
    earliest_ms = LEASE_TIMEOUT_MS - LEASE_HEARTBEAT_MS
    assert first["ended_at_ms"] - killed_at_ms >= earliest_ms - 100, (
        f"reclaimed {first['ended_at_ms'] - killed_at_ms} ms after the kill,"
        f" before the lease could have expired"
    )
    assert second["started_at_ms"] >= first["ended_at_ms"]
    assert view.store.successful_attempt_counts() == {step["step_id"]: 1}
    assert view.lease_conflicts() == []
    assert view.counter("leases_reclaimed_total") == 1

    # The script ran twice: cut short on node-a, to the end on node-b.
    runs = [(r.event, r.node, r.attempt) for r in agent.records()]
    assert ("start", "node-a", 1) in runs, runs
    assert ("end", "node-a", 1) not in runs, runs
    assert runs.count(("end", "node-b", 2)) == 1, runs

    # node-b's sweep clears what node-a left in processing/.
    nodes.wait_until(
        lambda: not view.processing_files(), 10, "processing/ to be swept empty"
    )
    assert view.inbox_files() == []
    node_b.terminate()
    assert node_b.wait_exit(15) == 0, node_b.describe()


def test_healthy_owner_keeps_long_step(
    root: Path, nodes: NodeSupervisor, view: RootView
) -> None:
    short_lease_settings(root)
    step_s = 12
    agent = nodes.install_agent("slow", sleep_s=step_s)
    node_a = nodes.start("node-a")
    task_id = submit(root, "slow")
    step = wait_running_on(nodes, view, "node-a")
    node_c = nodes.start("node-c")
    watching_since = time.monotonic()

    heartbeats = {step["heartbeat_at_ms"]}

    def finished() -> bool:
        current = view.step(step["step_id"])
        if current["status"] == "RUNNING":
            heartbeats.add(current["heartbeat_at_ms"])
        return view.task_status(task_id) == "SUCCESS"

    nodes.wait_until(finished, step_s + 15, "node-a to finish")
    watched_s = time.monotonic() - watching_since
    # node-c watched the running lease for several lease timeouts.
    assert watched_s * 1000 > 2 * LEASE_TIMEOUT_MS, f"node-c watched only {watched_s} s"
    assert node_a.running
    assert node_c.running

    attempts = view.attempts(step["step_id"])
    assert [(a["node_id"], a["attempt"], a["outcome"]) for a in attempts] == [
        ("node-a", 1, "SUCCESS")
    ]
    assert view.counter("leases_reclaimed_total") == 0
    assert view.lease_conflicts() == []
    runs = [(r.event, r.node) for r in agent.records()]
    assert runs == [("start", "node-a"), ("end", "node-a")], runs
    # node-a renewed the lease all along, which is what kept it.
    expected_renewals = step_s * 1000 // LEASE_HEARTBEAT_MS
    assert len(heartbeats) >= expected_renewals // 2, sorted(heartbeats)

    for node in (node_a, node_c):
        node.terminate()
    for node in (node_a, node_c):
        assert node.wait_exit(15) == 0, node.describe()


def test_stalled_owner_cannot_overwrite_reclaimed_step(
    root: Path, nodes: NodeSupervisor, view: RootView
) -> None:
    short_lease_settings(root)
    # The script ends while node-a is frozen, so node-a wakes up with a
    # finished attempt to commit (unless it notices the lost lease first).
    agent = nodes.install_agent("slow", sleep_s=1.5, retry_sleep_s=0.2)
    node_a = nodes.start("node-a")
    task_id = submit(root, "slow")
    step = wait_running_on(nodes, view, "node-a")
    nodes.wait_until(
        lambda: agent.records("start"), 10, "the script to start on node-a"
    )

    os.kill(node_a.pid, signal.SIGSTOP)
    try:
        node_b = nodes.start("node-b")
        nodes.wait_until(
            lambda: view.task_status(task_id) == "SUCCESS", 20, "node-b to take over"
        )
    finally:
        os.kill(node_a.pid, signal.SIGCONT)
    result = view.step(step["step_id"])["result_payload"]

    # Awake again, node-a renews or commits under its old lease: rejected.
    def stale_writes() -> list[dict]:
        return [
            row for row in view.lease_conflicts() if row["expected_lease_epoch"] == 1
        ]

    nodes.wait_until(stale_writes, 10, "node-a's stale write to be rejected")
    # Whichever came first, the attempt ends in a commit that is refused.
    nodes.wait_until(
        lambda: "step.refused" in node_a.log(), 10, "node-a to drop the step"
    )
    print("rejected:", [row["event_type"] for row in view.lease_conflicts()])
    for conflict in view.lease_conflicts():
        assert conflict["event_type"] in (
            "heartbeat_conflict",
            "success_commit_conflict",
        ), conflict
        assert pick(conflict, "expected_lease_epoch", "actual_lease_epoch") == (1, 2)
        assert conflict["actual_status"] == "SUCCESS", conflict

    # The store kept node-b's result and attempt history.
    current = view.step(step["step_id"])
    assert current["status"] == "SUCCESS"
    assert current["result_payload"] == result
    assert '"node": "node-b"' in result, result
    columns = ("node_id", "attempt", "outcome")
    attempts = [pick(row, *columns) for row in view.attempts(step["step_id"])]
    assert attempts == [("node-a", 1, "ABANDONED"), ("node-b", 2, "SUCCESS")]
    assert view.store.successful_attempt_counts() == {step["step_id"]: 1}
    assert view.task_status(task_id) == "SUCCESS"

    for node in (node_a, node_b):
        node.terminate()
    for node in (node_a, node_b):
        assert node.wait_exit(15) == 0, node.describe()


def test_reclaim_stops_script_left_by_killed_node(
    root: Path, nodes: NodeSupervisor, view: RootView, tmp_path: Path
) -> None:
    """A script keeps running after its node is SIGKILLed (it has its own
    session); the reclaim must stop it so that two copies never overlap."""
    short_lease_settings(root)
    pid_file = tmp_path / "script.pids"
    script = (
        "import os, sys, time;"
        f" open({str(pid_file)!r}, 'a').write(str(os.getpid()) + chr(10));"
        " time.sleep(60 if os.environ['RELAYMESH_ATTEMPT'] == '1' else 0.1);"
        " print('done')"
    )
    (root / "agents" / "scripts.json").write_text(
        json.dumps(
            {
                "agents": [
                    {
                        "id": "stubborn",
                        "command": [sys.executable, "-c", script],
                        "timeoutMs": 120_000,
                    }
                ]
            }
        )
    )
    node_a = nodes.start("node-a")
    task_id = submit(root, "stubborn")
    wait_running_on(nodes, view, "node-a")
    nodes.wait_until(lambda: pid_file.exists(), 10, "the script to start on node-a")
    orphan = int(pid_file.read_text().split()[0])
    node_b = nodes.start("node-b")

    node_a.kill()
    try:
        nodes.wait_until(
            lambda: view.task_status(task_id) == "SUCCESS",
            20,
            "node-b to finish the task",
        )
        nodes.wait_until(
            lambda: not _alive(orphan), 5, "the orphaned script to be stopped"
        )
    finally:
        if _alive(orphan):
            os.kill(orphan, signal.SIGKILL)
    assert node_b.running


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split()[2] != "Z"
    except FileNotFoundError:
        return False
