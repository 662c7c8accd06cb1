"""The scheduler: claim work from the inbox tiers and hand it to workers.

It claims only as many messages as there are free worker slots (at most
`claimBatchSize` per hop), so a node never holds a lease it cannot start on,
and other nodes on the root can take the rest. Tier order is the 8:3:1 cycle
with the anti-starvation guard of `TierSelector`.
"""

from __future__ import annotations

import logging

import trio

from relaymesh.actors.lease import LeaseManager, RunningStep
from relaymesh.actors.signals import Nudge
from relaymesh.executor import Executor
from relaymesh.runtime import Assignment, Runtime, TierSelector

log = logging.getLogger("relaymesh.scheduler")


async def scheduler_loop(
    runtime: Runtime,
    executor: Executor,
    node_id: str,
    selector: TierSelector,
    assignments: trio.MemorySendChannel[tuple[Assignment, RunningStep]],
    leases: LeaseManager,
    slots: trio.Semaphore,
    work_available: Nudge,
    stop_claiming: trio.Event,
) -> None:
    async with assignments:
        while not stop_claiming.is_set():
            await slots.acquire()
            if stop_claiming.is_set():
                slots.release()
                break
            wanted = 1
            while wanted < runtime.settings.claim_batch_size and slots.value > 0:
                slots.acquire_nowait()
                wanted += 1
            try:
                claimed = await executor.run(
                    runtime.claim_batch, selector, wanted, node_id, node_id
                )
            except Exception:
                log.exception("claim failed; trying again after the poll interval")
                claimed = []
            for _ in range(wanted - len(claimed)):
                slots.release()
            # Register before handing over, so that a shutdown that starts
            # now still sees these leases and hands them back.
            handover = [(item, leases.register(item.step)) for item in claimed]
            for item in handover:
                await assignments.send(item)
            if not claimed:
                await work_available.wait(runtime.settings.poll_interval_ms / 1000)
