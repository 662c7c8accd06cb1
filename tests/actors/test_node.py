"""The node's actors together: leases renewed while a step runs, reclaim
after a crash, graceful stop, fairness, on a virtual clock."""

from __future__ import annotations

import trio

from relaymesh.actors.node import Node
from relaymesh.executor import InlineExecutor


async def wait_for(condition, timeout_s: float = 600.0, step_s: float = 0.1) -> None:
    with trio.fail_after(timeout_s):
        while not condition():
            await trio.sleep(step_s)


def step_row(runtime, task_id: str) -> dict:
    return runtime.store.task_view(task_id)["steps"][0]


async def test_long_step_is_never_reclaimed_while_heartbeating(
    autojump_clock, open_runtime, settings_file
):
    settings_file(leaseTimeoutMs=15000, leaseHeartbeatMs=2000)
    runtime_a, runtime_b = open_runtime(1), open_runtime(2)
    task = runtime_a.submit("sleep", "120")  # eight lease timeouts long
    node_a = Node(runtime_a, InlineExecutor(), "node-a", workers=1)
    node_b = Node(runtime_b, InlineExecutor(), "node-b", workers=1)
    async with trio.open_nursery() as nursery:
        await nursery.start(node_a.run, False)
        await wait_for(lambda: step_row(runtime_a, task.task_id)["status"] == "RUNNING")
        await nursery.start(node_b.run, False)
        await wait_for(
            lambda: runtime_a.store.task_view(task.task_id)["status"] == "SUCCESS"
        )
        node_a.stop()
        node_b.stop()

    step = step_row(runtime_a, task.task_id)
    assert [attempt["nodeId"] for attempt in step["attempts"]] == ["node-a"]
    assert runtime_a.store.lease_conflict_count() == 0
    assert open_runtime.sleeper.runs == 1


async def test_crashed_owner_step_is_reclaimed_after_lease_timeout(
    autojump_clock, open_runtime, settings_file
):
    settings_file(leaseTimeoutMs=15000, leaseHeartbeatMs=2000, baseBackoffMs=1000)
    runtime_a, runtime_b = open_runtime(1), open_runtime(2)
    task = runtime_a.submit("sleep", "30")
    node_a = Node(runtime_a, InlineExecutor(), "node-a", workers=1)
    node_b = Node(runtime_b, InlineExecutor(), "node-b", workers=1)
    async with trio.open_nursery() as nursery:
        crash_a = trio.CancelScope()
        nursery.start_soon(_run_in, crash_a, node_a)
        await wait_for(lambda: step_row(runtime_a, task.task_id)["status"] == "RUNNING")
        crashed_at = trio.current_time()
        crash_a.cancel()  # node A stops heartbeating, as if killed
        await nursery.start(node_b.run, False)
        await wait_for(
            lambda: runtime_b.store.task_view(task.task_id)["status"] == "SUCCESS"
        )
        finished_at = trio.current_time()
        node_b.stop()

    attempts = step_row(runtime_b, task.task_id)["attempts"]
    assert [(a["nodeId"], a["outcome"]) for a in attempts] == [
        ("node-a", "ABANDONED"),
        ("node-b", "SUCCESS"),
    ]
    # Reclaimed no sooner than one lease timeout after the last heartbeat.
    assert finished_at - crashed_at >= 15 - 2


async def _run_in(scope: trio.CancelScope, node: Node) -> None:
    with scope:
        await node.run(handle_signals=False)


async def test_graceful_stop_hands_running_step_back(
    autojump_clock, open_runtime, settings_file
):
    settings_file(
        leaseTimeoutMs=60000,
        leaseHeartbeatMs=2000,
        gracefulTimeoutMs=1000,
        suspectAfterMs=120000,
        deadAfterMs=240000,
    )
    runtime_a, runtime_b = open_runtime(1), open_runtime(2)
    task = runtime_a.submit("sleep", "30")
    node_a = Node(runtime_a, InlineExecutor(), "node-a", workers=1)
    async with trio.open_nursery() as nursery:
        await nursery.start(node_a.run, False)
        await wait_for(lambda: step_row(runtime_a, task.task_id)["status"] == "RUNNING")
        stopped_at = trio.current_time()
        node_a.stop()
    assert trio.current_time() - stopped_at < 5

    step = step_row(runtime_a, task.task_id)
    assert step["status"] == "PENDING"
    assert step["attempts"][0]["outcome"] == "RELEASED"
    assert runtime_a.store.members()[0]["status"] == "LEFT"

    node_b = Node(runtime_b, InlineExecutor(), "node-b", workers=1)
    async with trio.open_nursery() as nursery:
        await nursery.start(node_b.run, False)
        await wait_for(
            lambda: runtime_b.store.task_view(task.task_id)["status"] == "SUCCESS"
        )
        picked_up_after = trio.current_time() - stopped_at
        node_b.stop()
    # Taken at once: long before the 60 s lease timeout would have expired.
    assert picked_up_after < 40


async def test_graceful_stop_lets_short_step_finish(
    autojump_clock, open_runtime, settings_file
):
    settings_file(gracefulTimeoutMs=5000)
    runtime = open_runtime()
    task = runtime.submit("sleep", "2")
    node = Node(runtime, InlineExecutor(), "node-a", workers=1)
    async with trio.open_nursery() as nursery:
        await nursery.start(node.run, False)
        await wait_for(lambda: step_row(runtime, task.task_id)["status"] == "RUNNING")
        node.stop()
    assert runtime.store.task_view(task.task_id)["status"] == "SUCCESS"


async def test_workers_run_steps_concurrently(autojump_clock, open_runtime):
    runtime = open_runtime()
    tasks = [runtime.submit("sleep", "10", idempotency_key=f"k{i}") for i in range(4)]
    node = Node(runtime, InlineExecutor(), "node-a", workers=4)
    async with trio.open_nursery() as nursery:
        await nursery.start(node.run, False)
        started = trio.current_time()
        await wait_for(
            lambda: all(
                runtime.store.task_view(t.task_id)["status"] == "SUCCESS" for t in tasks
            )
        )
        elapsed = trio.current_time() - started
        node.stop()
    assert elapsed < 15  # four 10 s steps in parallel, not 40 s in a row


async def test_workflow_runs_in_dependency_order(
    autojump_clock, open_runtime, tmp_path
):
    runtime = open_runtime()
    flow = tmp_path / "flow.json"
    flow.write_text(
        '{"steps": ['
        '{"id": "a", "agent": "echo", "input": "A"},'
        '{"id": "b", "agent": "echo", "input": "B", "dependsOn": ["a"]},'
        '{"id": "c", "agent": "echo", "input": "C", "dependsOn": ["a"]},'
        '{"id": "d", "agent": "echo", "input": "D", "dependsOn": ["b", "c"]}]}'
    )
    task = runtime.submit_workflow(flow)
    node = Node(runtime, InlineExecutor(), "node-a", workers=2)
    async with trio.open_nursery() as nursery:
        await nursery.start(node.run, False)
        await wait_for(
            lambda: runtime.store.task_view(task.task_id)["status"] == "SUCCESS"
        )
        node.stop()

    steps = {s["name"]: s for s in runtime.store.task_view(task.task_id)["steps"]}
    start = {name: s["attempts"][0]["startedAtMs"] for name, s in steps.items()}
    end = {name: s["attempts"][0]["endedAtMs"] for name, s in steps.items()}
    assert end["a"] <= start["b"] and end["a"] <= start["c"]
    assert max(end["b"], end["c"]) <= start["d"]
    # The span of the dependency that unlocked a step is its parent span.
    assert steps["b"]["parentSpanId"] == steps["a"]["spanId"]
    assert steps["d"]["parentSpanId"] in (steps["b"]["spanId"], steps["c"]["spanId"])


async def test_second_node_with_same_id_is_refused(autojump_clock, open_runtime):
    import os

    import pytest

    from relaymesh.errors import ConflictError

    runtime = open_runtime()
    runtime.store.register_node("node-a", os.getppid(), "", runtime.clock_ms())
    node = Node(runtime, InlineExecutor(), "node-a", workers=1)
    with pytest.raises(ConflictError, match="already running"):
        await node.run(handle_signals=False)
