"""The reclaimer: take back steps whose owner stopped renewing the lease.

Expiry is judged on this node's monotonic clock, not by comparing wall
clocks: the reclaimer remembers, per running step, the (epoch, heartbeat)
pair it last saw and when it first saw it. A lease whose pair has not changed
for `leaseTimeoutMs` of local monotonic time is expired, whatever the wall
clocks of the two nodes say, so a clock jump on either side cannot make a
healthy owner lose its step.

Wall time is the fallback for a reclaimer that has no history yet (it just
started, or the whole root restarted after a crash): a lease whose last
heartbeat is older than `leaseTimeoutMs` by the wall clock is expired once
the reclaimer has also watched it stay unchanged for two heartbeat periods.
That wait is what protects a healthy owner from a wall clock that jumped
forward on the reclaimer's host.

Every reclaim is fenced on the epoch and the heartbeat value observed, so a
renewal that lands between the observation and the reclaim wins.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import trio

from relaymesh.executor import Executor
from relaymesh.runtime import Runtime
from relaymesh.store import RunningLease

log = logging.getLogger("relaymesh.reclaim")


@dataclass
class Observation:
    epoch: int
    heartbeat_at_ms: int | None
    first_seen_s: float  # monotonic seconds


class ExpiryJudge:
    """Decides which observed leases are expired; pure, for testing."""

    def __init__(self, lease_timeout_ms: int, heartbeat_ms: int) -> None:
        self.observations: dict[str, Observation] = {}
        self.retime(lease_timeout_ms, heartbeat_ms)

    def retime(self, lease_timeout_ms: int, heartbeat_ms: int) -> None:
        """Apply new timings (a settings reload); observations are kept."""
        self.lease_timeout_s = lease_timeout_ms / 1000
        self.lease_timeout_ms = lease_timeout_ms
        self.confirm_s = 2 * heartbeat_ms / 1000

    def expired(
        self, leases: list[RunningLease], now_s: float, wall_now_ms: int
    ) -> list[RunningLease]:
        seen = set()
        expired = []
        for lease in leases:
            seen.add(lease.step_id)
            previous = self.observations.get(lease.step_id)
            if (
                previous is None
                or previous.epoch != lease.lease_epoch
                or previous.heartbeat_at_ms != lease.heartbeat_at_ms
            ):
                self.observations[lease.step_id] = Observation(
                    lease.lease_epoch, lease.heartbeat_at_ms, now_s
                )
                continue
            unchanged_s = now_s - previous.first_seen_s
            wall_age_ms = wall_now_ms - (lease.heartbeat_at_ms or 0)
            if unchanged_s >= self.lease_timeout_s or (
                wall_age_ms >= self.lease_timeout_ms and unchanged_s >= self.confirm_s
            ):
                expired.append(lease)
        for step_id in list(self.observations):
            if step_id not in seen:
                del self.observations[step_id]
        return expired


async def reclaimer_loop(
    runtime: Runtime,
    executor: Executor,
    node_id: str,
    wall_clock_ms: Callable[[], int],
    live_step_ids: Callable[[], set[str]],
) -> None:
    """Reclaim expired leases every heartbeat period.

    Every lease is watched except those this node is renewing right now
    (`live_step_ids`). A lease of this node that it no longer renews (its
    commit failed, or a claim went wrong after the store had recorded it) is
    an orphan like any other and is reclaimed once it expires, so a single
    node on a root cannot strand a step.
    """
    judge = ExpiryJudge(
        runtime.settings.lease_timeout_ms, runtime.settings.lease_heartbeat_ms
    )
    while True:
        settings = runtime.settings
        await trio.sleep(settings.lease_heartbeat_ms / 1000)
        judge.retime(settings.lease_timeout_ms, settings.lease_heartbeat_ms)
        try:
            leases = await executor.run(runtime.store.running_leases)
            live = live_step_ids()
            watched = [
                lease
                for lease in leases
                if not (lease.lease_owner == node_id and lease.step_id in live)
            ]
            expired = judge.expired(watched, trio.current_time(), wall_clock_ms())
            if expired:
                batch = expired[: settings.retry_dispatch_limit]
                await executor.run(runtime.reclaim_leases, batch, "lease expired")
                for lease in batch:
                    judge.observations.pop(lease.step_id, None)
        except Exception:
            log.exception("reclaim pass failed; trying again next interval")
