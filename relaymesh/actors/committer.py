"""The committer: persist the outcomes of workers in batched transactions.

Workers send outcomes on a channel; the committer takes whatever is waiting
(up to `max_batch`) and commits it in one hop through the executor, so a busy
node pays one transaction for many completions. After the commit it frees
each worker slot and stops renewing each lease, and wakes the scheduler if
the commit queued new work (unlocked successors).
"""

from __future__ import annotations

import logging
import sqlite3

import trio

from relaymesh.actors.lease import LeaseManager
from relaymesh.actors.signals import Nudge
from relaymesh.executor import Executor
from relaymesh.observability.logs import event
from relaymesh.runtime import Runtime
from relaymesh.store import StepOutcome

log = logging.getLogger("relaymesh.commit")

COMMIT_ATTEMPTS = 3
COMMIT_RETRY_DELAY_S = 1.0


async def committer_loop(
    outcomes: trio.MemoryReceiveChannel[StepOutcome],
    runtime: Runtime,
    executor: Executor,
    leases: LeaseManager,
    slots: trio.Semaphore,
    work_available: Nudge,
    max_batch: int = 64,
) -> None:
    async with outcomes:
        async for first in outcomes:
            batch = [first]
            while len(batch) < max_batch:
                try:
                    batch.append(outcomes.receive_nowait())
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
            await commit_batch(batch, runtime, executor)
            for outcome in batch:
                leases.unregister(outcome.step_id)
                slots.release()
            work_available.set()


async def commit_batch(
    batch: list[StepOutcome], runtime: Runtime, executor: Executor
) -> None:
    """Commit one batch; on a store error, log it and let the leases expire.

    A store error is retried a few times. If it persists, the outcomes are
    dropped from memory and their leases are no longer renewed, so the
    reclaimer (of this node or another) takes the steps back after the
    lease timeout and they run again: at-least-once holds.
    """
    for attempt in range(1, COMMIT_ATTEMPTS + 1):
        try:
            results = await executor.run(runtime.commit_outcomes, batch)
            break
        except sqlite3.Error:
            # The transaction rolled back as a whole, so trying it again is safe.
            if attempt == COMMIT_ATTEMPTS:
                log.exception(
                    "commit of %d outcomes failed %d times; their leases will expire"
                    " and the steps will be reclaimed",
                    len(batch),
                    attempt,
                )
                return
            log.warning("commit of %d outcomes failed; retrying", len(batch))
            await trio.sleep(COMMIT_RETRY_DELAY_S * attempt)
        except Exception:
            log.exception(
                "commit of %d outcomes failed; their leases will expire", len(batch)
            )
            return
    for outcome, result in zip(batch, results):
        level = logging.INFO if result.committed else logging.WARNING
        event(
            log,
            level,
            "step.committed" if result.committed else "step.refused",
            step_id=outcome.step_id,
            outcome=outcome.outcome,
            step_status=result.step_status,
            task_status=result.task_status,
            error=outcome.error or None,
            reason=result.message or None,
        )
