"""One worker round: the node's parts run once, for `worker --once` and scripts.

A round does the maintenance a node would do (dispatch due retries, repair
the bus, reclaim leases that expired), claims one message, runs it under a
renewed lease, and commits the outcome. It shares every piece with the node
(claim, lease manager, execution, commit) so the two cannot drift apart.

A one-shot process has watched no lease change over time, so it judges
expiry by the wall clock alone: a lease whose last heartbeat is older than
`leaseTimeoutMs`. On one host every process reads the same clock, which
makes this safe there; nodes on other hosts use the monotonic judgement of
`relaymesh/actors/reclaimer.py`.
"""

from __future__ import annotations

import signal

import trio

from relaymesh.actors.lease import LeaseManager
from relaymesh.actors.worker import execute_step
from relaymesh.executor import Executor
from relaymesh.runtime import Runtime, TierSelector

__all__ = ["run_round"]


async def reclaim_by_wall_clock(
    runtime: Runtime, executor: Executor, node_id: str
) -> int:
    settings = runtime.settings
    leases = await executor.run(runtime.store.running_leases, node_id)
    cutoff = runtime.clock_ms() - settings.lease_timeout_ms
    expired = [lease for lease in leases if (lease.heartbeat_at_ms or 0) <= cutoff][
        : settings.retry_dispatch_limit
    ]
    if not expired:
        return 0
    results = await executor.run(runtime.reclaim_leases, expired, "lease expired")
    return sum(1 for result in results if result.committed)


async def run_round(
    runtime: Runtime,
    executor: Executor,
    node_id: str,
    worker_id: str,
    selector: TierSelector | None = None,
    stop: trio.Event | None = None,
) -> dict:
    """Run one round and return a summary of what it did."""
    settings = runtime.settings
    retried = await executor.run(runtime.dispatch_due_retries)
    await executor.run(runtime.sweep)
    reclaimed = await reclaim_by_wall_clock(runtime, executor, node_id)
    selector = selector or TierSelector(settings.max_consecutive_high)
    claimed = await executor.run(runtime.claim_batch, selector, 1, node_id, worker_id)
    summary = {
        "processed": False,
        "retriesDispatched": retried,
        "leasesReclaimed": reclaimed,
        "taskId": None,
        "stepId": None,
        "outcome": None,
        "stepStatus": None,
        "taskStatus": None,
        "message": "no queued messages",
    }
    if not claimed:
        return summary

    assignment = claimed[0]
    leases = LeaseManager(runtime, executor, node_id)
    running = leases.register(assignment.step)
    outcome = None
    async with trio.open_nursery() as nursery:
        nursery.start_soon(leases.run)
        nursery.start_soon(
            _release_on_signal,
            leases,
            settings.graceful_timeout_ms,
            stop if stop is not None else trio.Event(),
        )
        outcome = await execute_step(
            assignment, running, runtime.agents, worker_id, settings.payload_max_bytes
        )
        if outcome is not None:
            leases.mark_finished(assignment.step.step_id)
        nursery.cancel_scope.cancel()

    summary.update(
        processed=True,
        taskId=assignment.step.task_id,
        stepId=assignment.step.step_id,
    )
    if outcome is None:
        summary.update(
            outcome="RELEASED", message="handed back to the queue at shutdown"
        )
        return summary
    result = (await executor.run(runtime.commit_outcomes, [outcome]))[0]
    summary.update(
        outcome=outcome.outcome,
        stepStatus=result.step_status,
        taskStatus=result.task_status,
        message=outcome.error or result.message or "step committed",
    )
    return summary


async def _release_on_signal(
    leases: LeaseManager, graceful_timeout_ms: int, stop: trio.Event
) -> None:
    """On SIGINT/SIGTERM, give the step the graceful window, then hand it back."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            stop.set()
            await trio.sleep(graceful_timeout_ms / 1000)
            await leases.release_all()
            return
