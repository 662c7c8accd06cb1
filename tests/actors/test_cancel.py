"""Cancelling running work: no late result can flip a cancelled task."""

from __future__ import annotations

import trio

from relaymesh.actors.node import Node
from relaymesh.executor import InlineExecutor

from .test_node import wait_for


def step_status(runtime, task_id: str, name: str) -> str:
    steps = runtime.store.task_view(task_id)["steps"]
    return next(step["status"] for step in steps if step["name"] == name)


def workflow(tmp_path, text: str):
    path = tmp_path / "flow.json"
    path.write_text(text)
    return path


async def test_hard_cancel_stops_running_step(autojump_clock, open_runtime, tmp_path):
    runtime = open_runtime()
    flow = workflow(
        tmp_path,
        '{"steps": [{"id": "slow", "agent": "sleep", "input": "600"},'
        ' {"id": "after", "agent": "echo", "input": "x", "dependsOn": ["slow"]}]}',
    )
    task = runtime.submit_workflow(flow)
    node = Node(runtime, InlineExecutor(), "node-a", workers=1)
    async with trio.open_nursery() as nursery:
        await nursery.start(node.run, False)
        await wait_for(lambda: step_status(runtime, task.task_id, "slow") == "RUNNING")
        cancelled_at = trio.current_time()
        result = runtime.cancel(task.task_id, "hard", "test")
        assert result.cancelled
        assert result.still_running == []
        # The owner notices at its next heartbeat and stops the agent.
        await wait_for(lambda: not node.leases.running, timeout_s=30)
        stopped_after = trio.current_time() - cancelled_at
        node.stop()

    view = runtime.store.task_view(task.task_id)
    assert view["status"] == "CANCELLED"
    assert {step["status"] for step in view["steps"]} == {"CANCELLED"}
    slow = next(step for step in view["steps"] if step["name"] == "slow")
    assert slow["attempts"][0]["outcome"] == "CANCELLED"
    assert stopped_after <= runtime.settings.lease_heartbeat_ms / 1000 + 1
    assert runtime.store.lease_conflict_count() == 0


async def test_soft_cancel_lets_running_step_finish_but_task_stays_cancelled(
    autojump_clock, open_runtime, tmp_path
):
    runtime = open_runtime()
    flow = workflow(
        tmp_path,
        '{"steps": [{"id": "slow", "agent": "sleep", "input": "20"},'
        ' {"id": "after", "agent": "echo", "input": "x", "dependsOn": ["slow"]}]}',
    )
    task = runtime.submit_workflow(flow)
    node = Node(runtime, InlineExecutor(), "node-a", workers=1)
    async with trio.open_nursery() as nursery:
        await nursery.start(node.run, False)
        await wait_for(lambda: step_status(runtime, task.task_id, "slow") == "RUNNING")
        result = runtime.cancel(task.task_id, "soft", "test")
        assert result.still_running == ["slow"]
        await wait_for(lambda: not node.leases.running, timeout_s=60)
        await trio.sleep(5)
        node.stop()

    view = runtime.store.task_view(task.task_id)
    steps = {step["name"]: step for step in view["steps"]}
    assert view["status"] == "CANCELLED"
    assert steps["slow"]["status"] == "SUCCESS"  # it finished its work
    assert steps["after"]["status"] == "CANCELLED"  # and unlocked nothing
    assert steps["after"]["attempts"] == []
    assert runtime.store.lease_conflict_count() == 0


async def test_soft_cancelled_failing_step_is_not_retried(autojump_clock, open_runtime):
    runtime = open_runtime()
    task = runtime.submit("fail", "x")
    # Claim by hand, cancel softly, then commit the failure.
    from relaymesh.runtime import TierSelector
    from relaymesh.store import StepOutcome

    (assignment,) = runtime.claim_batch(TierSelector(100), 1, "node-a", "node-a/w0")
    runtime.cancel(task.task_id, "soft", "test")
    step = assignment.step
    (result,) = runtime.commit_outcomes(
        [
            StepOutcome(
                step.step_id, step.lease_token, step.lease_epoch, "FAILED", error="boom"
            )
        ]
    )
    assert result.step_status == "CANCELLED"
    assert runtime.store.task_view(task.task_id)["status"] == "CANCELLED"
    assert runtime.dispatch_due_retries() == 0


async def test_cancelled_queued_file_is_not_a_conflict(autojump_clock, open_runtime):
    runtime = open_runtime()
    task = runtime.submit("echo", "x")
    queued = runtime.bus.list_tier("normal")
    result = runtime.cancel(task.task_id, "soft", "test")
    assert result.cancelled
    assert runtime.bus.list_tier("normal") == []  # its inbox file was removed
    # A copy that escaped removal (a sweeper rewrite, say) is skipped quietly.
    from relaymesh.bus import write_atomically

    meta = runtime.layout.meta / queued[0].split("_", 1)[1]
    write_atomically(runtime.layout.inbox_tier("normal") / queued[0], meta.read_bytes())
    from relaymesh.runtime import TierSelector

    assert runtime.claim_batch(TierSelector(100), 1, "node-a", "node-a/w0") == []
    assert runtime.store.lease_conflict_count() == 0
    assert runtime.store.task_view(task.task_id)["status"] == "CANCELLED"


async def test_shutdown_does_not_requeue_soft_cancelled_step(
    autojump_clock, open_runtime, settings_file
):
    settings_file(gracefulTimeoutMs=0)
    runtime = open_runtime()
    task = runtime.submit("sleep", "60")
    node = Node(runtime, InlineExecutor(), "node-a", workers=1)
    async with trio.open_nursery() as nursery:
        await nursery.start(node.run, False)
        await wait_for(lambda: step_status(runtime, task.task_id, "main") == "RUNNING")
        runtime.cancel(task.task_id, "soft", "test")
        node.stop()

    view = runtime.store.task_view(task.task_id)
    assert view["status"] == "CANCELLED"
    assert view["steps"][0]["status"] == "CANCELLED"
    assert view["steps"][0]["attempts"][0]["outcome"] == "CANCELLED"
    assert runtime.bus.list_tier("normal") == []
