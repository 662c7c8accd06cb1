"""Maintenance: the periodic chores of a node.

Every `maintenanceIntervalMs`: dispatch the retries that are due and renew
this node's membership row. Every half `sweepGraceMs`: repair the bus where
it lags the store (see `Runtime.sweep`). Every hour, and once at start-up:
delete expired idempotency records. Each chore is one hop through the
executor, and a failing chore is logged and tried again next time instead of
stopping the node.
"""

from __future__ import annotations

import logging

import trio

from relaymesh.actors.signals import Nudge
from relaymesh.executor import Executor
from relaymesh.observability.logs import event
from relaymesh.runtime import Runtime

log = logging.getLogger("relaymesh.maintenance")

IDEMPOTENCY_CLEANUP_INTERVAL_S = 3600.0


async def maintenance_loop(
    runtime: Runtime, executor: Executor, node_id: str, work_available: Nudge
) -> None:
    """Run the chores forever; intervals are read from the live settings."""
    last_sweep = trio.current_time()
    next_cleanup = trio.current_time() + IDEMPOTENCY_CLEANUP_INTERVAL_S
    while True:
        await trio.sleep(runtime.settings.maintenance_interval_ms / 1000)
        now = trio.current_time()
        await _chore("retry dispatch", _dispatch(runtime, executor, work_available))
        await _chore(
            "node heartbeat",
            executor.run(runtime.store.heartbeat_node, node_id, runtime.clock_ms()),
        )
        if now - last_sweep >= runtime.settings.sweep_grace_ms / 2000:
            last_sweep = now
            await _chore("sweep", _sweep(runtime, executor, work_available))
        await _chore(
            "lease report",
            executor.run(runtime.write_hourly_lease_report, node_id),
        )
        if now >= next_cleanup:
            next_cleanup = now + IDEMPOTENCY_CLEANUP_INTERVAL_S
            await _chore("idempotency cleanup", _cleanup(runtime, executor))


async def _chore(name: str, work) -> None:
    try:
        await work
    except Exception:
        log.exception("maintenance chore %s failed; trying again next interval", name)


async def _dispatch(
    runtime: Runtime, executor: Executor, work_available: Nudge
) -> None:
    if await executor.run(runtime.dispatch_due_retries):
        work_available.set()


async def _sweep(runtime: Runtime, executor: Executor, work_available: Nudge) -> None:
    report = await executor.run(runtime.sweep)
    if report.messages_rewritten or report.files_returned_to_inbox:
        work_available.set()


async def _cleanup(runtime: Runtime, executor: Executor) -> None:
    deleted = await executor.run(runtime.cleanup_idempotency)
    if deleted:
        event(log, logging.INFO, "idempotency.expired", deleted=deleted)
