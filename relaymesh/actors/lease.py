"""The lease manager: renew the leases of running steps on a heartbeat.

While a step runs, its node renews the lease every `leaseHeartbeatMs` by
writing `heartbeat_at_ms`, fenced on the lease token and epoch. All running
leases of the node are renewed in one transaction per beat. A renewal that
matches no row means the lease was lost (reclaimed by another node after a
stall, or the task was cancelled); the step's cancel scope is then cancelled
at once, so its agent stops instead of finishing work whose result would be
refused anyway.

Other nodes judge expiry by watching `heartbeat_at_ms` stop changing (see
`relaymesh/actors/reclaimer.py`), so a healthy step that runs far longer than
`leaseTimeoutMs` is never reclaimed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import trio

from relaymesh.executor import Executor
from relaymesh.observability.logs import event
from relaymesh.runtime import Runtime
from relaymesh.store import ClaimedStep, LeaseRef

log = logging.getLogger("relaymesh.lease")


@dataclass
class RunningStep:
    lease: LeaseRef
    scope: trio.CancelScope
    file_path: Path
    lost: bool = False
    released: bool = False
    finished: bool = False  # the outcome is on its way to the committer
    cancel_reason: str = ""


class LeaseManager:
    def __init__(
        self, runtime: Runtime, executor: Executor, owner: str | None = None
    ) -> None:
        self.runtime = runtime
        self.executor = executor
        self.owner = owner
        self.running: dict[str, RunningStep] = {}
        self._heartbeats_stopped = False
        self.heartbeats = 0

    def register(self, step: ClaimedStep) -> RunningStep:
        """Start renewing the step's lease; its agent will run in `scope`."""
        lease = LeaseRef(step.step_id, step.lease_token, step.lease_epoch)
        running = RunningStep(lease, trio.CancelScope(), step.file_path)
        self.running[step.step_id] = running
        return running

    def mark_finished(self, step_id: str) -> None:
        running = self.running.get(step_id)
        if running is not None:
            running.finished = True

    def unregister(self, step_id: str) -> None:
        self.running.pop(step_id, None)

    async def renew_once(self) -> list[LeaseRef]:
        """Renew every registered lease in one hop; cancel the lost ones."""
        # A finished step's outcome may be committed while this renewal runs;
        # renewing it then would look like a lost lease.
        leases = [entry.lease for entry in self.running.values() if not entry.finished]
        if not leases:
            return []
        lost = await self.executor.run(self.runtime.renew_leases, leases, self.owner)
        self.heartbeats += 1
        for lease in lost:
            running = self.running.get(lease.step_id)
            if running is None or running.lease != lease or running.finished:
                continue  # finished and committed while the renewal ran
            running.lost = True
            running.cancel_reason = (
                "lease lost: another node or an operator took the step"
            )
            running.scope.cancel()
            event(
                log,
                logging.WARNING,
                "lease.lost",
                step_id=lease.step_id,
                epoch=lease.lease_epoch,
            )
        return lost

    async def run(self) -> None:
        """Renew every `leaseHeartbeatMs` (read live) until `release_all`."""
        while not self._heartbeats_stopped:
            await trio.sleep(self.runtime.settings.lease_heartbeat_ms / 1000)
            if self._heartbeats_stopped:
                break
            try:
                await self.renew_once()
            except Exception:
                # The store is busy or failing: try again on the next beat.
                # The leases stay valid until leaseTimeoutMs after the last
                # renewal that did land.
                log.exception("lease renewal failed; trying again next heartbeat")

    async def release_all(self) -> int:
        """Stop heartbeats, hand every running step back, cancel its agent."""
        self._heartbeats_stopped = True
        running = [entry for entry in self.running.values() if not entry.finished]
        if not running:
            return 0
        for entry in running:
            entry.released = True
            entry.cancel_reason = "node shutting down"
            entry.scope.cancel()
        leases = [entry.lease for entry in running]
        files = {entry.lease.step_id: entry.file_path for entry in running}
        results = await self.executor.run(self.runtime.release_leases, leases, files)
        released = sum(1 for result in results if result.committed)
        event(
            log,
            logging.INFO,
            "lease.released",
            steps=released,
            refused=len(results) - released,
        )
        return released
