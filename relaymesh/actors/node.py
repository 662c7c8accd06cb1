"""The node: one process running every actor in one trio nursery.

    scheduler --assignments--> workers (N) --outcomes--> committer
        ^                         |                          |
        |                    lease manager <--- unregister --+
        +------ work available (nudge) <-- committer, maintenance
    reclaimer, maintenance: periodic, on their own

Start-up recovers what a previous run of the same node id left behind
(files in its processing folder, leases it still owned), then starts the
actors. SIGINT or SIGTERM starts a graceful stop: claim nothing more, let
running steps finish within `gracefulTimeoutMs`, hand the rest back to the
queue so another node can take them at once, mark the node LEFT, exit.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
from dataclasses import dataclass, field

import trio

from relaymesh.actors.committer import committer_loop
from relaymesh.actors.lease import LeaseManager, RunningStep
from relaymesh.actors.maintenance import maintenance_loop
from relaymesh.actors.reclaimer import reclaimer_loop
from relaymesh.actors.scheduler import scheduler_loop
from relaymesh.actors.settings_watcher import (
    record_startup_settings,
    settings_watcher_loop,
)
from relaymesh.actors.signals import Nudge
from relaymesh.actors.worker import worker_loop
from relaymesh.errors import ConflictError
from relaymesh.executor import Executor
from relaymesh.observability.logs import event
from relaymesh.observability.metrics import serve_metrics
from relaymesh.runtime import Assignment, Runtime, TierSelector
from relaymesh.store import StepOutcome

__all__ = ["Node", "NodeStatistics"]

log = logging.getLogger("relaymesh.node")


@dataclass(frozen=True)
class NodeStatistics:
    node_id: str
    workers: int
    running_steps: int
    heartbeats: int
    forced_low_claims: int


@dataclass
class Node:
    runtime: Runtime
    executor: Executor
    node_id: str
    workers: int = 4
    address: str = ""
    settings_reload_ms: int = 10_000
    metrics_address: tuple[str, int] | None = None  # (host, port) to serve /metrics
    # Signals that arrived before `run` could receive them (see cli/run.py).
    early_signals: list[int] = field(default_factory=list)
    selector: TierSelector = field(init=False)
    leases: LeaseManager = field(init=False)
    stop_claiming: trio.Event = field(init=False, default_factory=trio.Event)
    work_available: Nudge = field(init=False, default_factory=Nudge)
    _stopped: trio.Event = field(init=False, default_factory=trio.Event)

    def __post_init__(self) -> None:
        self.runtime.actor = f"node:{self.node_id}"
        self.selector = TierSelector(self.runtime.settings.max_consecutive_high)
        self.leases = LeaseManager(self.runtime, self.executor, self.node_id)
        self.slots = trio.Semaphore(self.workers)

    def statistics(self) -> NodeStatistics:
        return NodeStatistics(
            node_id=self.node_id,
            workers=self.workers,
            running_steps=len(self.leases.running),
            heartbeats=self.leases.heartbeats,
            forced_low_claims=self.selector.forced_low_claims,
        )

    async def run(
        self,
        handle_signals: bool = True,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Run until `stop()` (or a signal) and the graceful shutdown finish.

        The signal receiver is open from before start-up until `run` returns,
        so a SIGTERM at any moment, or a second one during the shutdown,
        starts (or continues) the graceful stop instead of killing the node.
        """
        with contextlib.ExitStack() as stack:
            signals = (
                stack.enter_context(
                    trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM)
                )
                if handle_signals
                else None
            )
            await self._start_up()
            if self.early_signals:
                self.stop()
            try:
                async with trio.open_nursery() as outer:
                    if signals is not None:
                        outer.start_soon(self._watch_signals, signals)
                    await self._run_actors(task_status)
                    outer.cancel_scope.cancel()
            finally:
                with trio.CancelScope(shield=True):
                    await self.executor.run(
                        self.runtime.store.mark_node_left,
                        self.node_id,
                        self.runtime.clock_ms(),
                    )
                event(log, logging.INFO, "node.stopped", node_id=self.node_id)
                self._stopped.set()

    async def _run_actors(self, task_status: trio.TaskStatus[None]) -> None:
        async with trio.open_nursery() as nursery:
            assignments_send, assignments_receive = trio.open_memory_channel[
                tuple[Assignment, RunningStep]
            ](0)
            outcomes_send, outcomes_receive = trio.open_memory_channel[StepOutcome](
                self.workers
            )
            # The committer and the lease manager must outlive the workers, so
            # they run in an inner nursery that is cancelled last.
            async with trio.open_nursery() as service:
                service.start_soon(
                    committer_loop,
                    outcomes_receive,
                    self.runtime,
                    self.executor,
                    self.leases,
                    self.slots,
                    self.work_available,
                )
                service.start_soon(self.leases.run)
                service.start_soon(
                    reclaimer_loop,
                    self.runtime,
                    self.executor,
                    self.node_id,
                    self.runtime.clock_ms,
                    lambda: set(self.leases.running),
                )
                service.start_soon(
                    maintenance_loop,
                    self.runtime,
                    self.executor,
                    self.node_id,
                    self.work_available,
                )
                if self.metrics_address is not None:
                    host, port = self.metrics_address
                    self.metrics_port = await service.start(
                        serve_metrics, self.runtime, host, port, self.executor
                    )
                await service.start(
                    settings_watcher_loop,
                    self.runtime,
                    self.executor,
                    self.node_id,
                    self.settings_reload_ms,
                )
                async with trio.open_nursery() as work:
                    async with outcomes_send:
                        for index in range(self.workers):
                            work.start_soon(
                                worker_loop,
                                f"{self.node_id}/w{index}",
                                assignments_receive.clone(),
                                outcomes_send.clone(),
                                self.runtime,
                                self.leases,
                                self.slots,
                            )
                    assignments_receive.close()
                    work.start_soon(
                        scheduler_loop,
                        self.runtime,
                        self.executor,
                        self.node_id,
                        self.selector,
                        assignments_send,
                        self.leases,
                        self.slots,
                        self.work_available,
                        self.stop_claiming,
                    )
                    event(
                        log,
                        logging.INFO,
                        "node.started",
                        node_id=self.node_id,
                        workers=self.workers,
                        root=self.runtime.layout.root,
                        pid=os.getpid(),
                    )
                    task_status.started()
                    await self.stop_claiming.wait()
                    self.work_available.set()
                    await self._drain(work)
                # Workers are done: commit what they sent, then stop the services.
                await self._wait_for_commits()
                service.cancel_scope.cancel()
            nursery.cancel_scope.cancel()

    def stop(self) -> None:
        """Begin a graceful stop; `run()` returns when it is complete."""
        if not self.stop_claiming.is_set():
            event(
                log,
                logging.INFO,
                "node.stopping",
                node_id=self.node_id,
                running=len(self.leases.running),
            )
            self.stop_claiming.set()

    async def _drain(self, work: trio.Nursery) -> None:
        grace_s = self.runtime.settings.graceful_timeout_ms / 1000
        with trio.move_on_after(grace_s):
            while self.leases.running:
                await trio.sleep(0.05)
        released = await self.leases.release_all()
        if released:
            event(
                log,
                logging.INFO,
                "node.handed_back",
                node_id=self.node_id,
                steps=released,
            )
        work.cancel_scope.cancel()

    async def _wait_for_commits(self) -> None:
        with trio.move_on_after(10):
            while any(entry.finished for entry in self.leases.running.values()):
                await trio.sleep(0.01)

    async def _watch_signals(self, signals) -> None:
        async for signum in signals:
            event(log, logging.INFO, "node.signal", signal=signal.Signals(signum).name)
            self.stop()

    async def _start_up(self) -> None:
        """Register the node and recover what its previous run left behind."""
        runtime = self.runtime
        existing = await self.executor.run(runtime.store.node_row, self.node_id)
        if existing and _still_running(existing, runtime):
            raise ConflictError(
                f"node id {self.node_id!r} is already running as pid {existing['pid']}"
                f" on this root; choose another --node-id or stop that process"
            )
        await self.executor.run(
            runtime.store.register_node,
            self.node_id,
            os.getpid(),
            self.address,
            runtime.clock_ms(),
        )
        # Leases this node id still holds belong to a previous run that died;
        # nothing renews them, so take them back now instead of waiting for
        # another node to watch them expire. Then its processing folder can
        # be settled, since every message in it is in a final state.
        own = [
            lease
            for lease in await self.executor.run(runtime.store.running_leases)
            if lease.lease_owner == self.node_id
        ]
        if own:
            await self.executor.run(runtime.reclaim_leases, own, "owner restarted")
        try:
            await self.executor.run(runtime.sweep, self.node_id)
        except Exception:  # a broken bus entry must not keep the node down
            log.exception("start-up sweep failed; the periodic sweep tries again")
        await self.executor.run(runtime.cleanup_idempotency)
        await record_startup_settings(runtime, self.executor, self.node_id)


def _still_running(row: dict, runtime: Runtime) -> bool:
    """True if the row belongs to a live process that is heartbeating."""
    if row["status"] != "ALIVE" or not row.get("pid") or row["pid"] == os.getpid():
        return False
    fresh = (
        runtime.clock_ms() - row["last_heartbeat_ms"]
        < runtime.settings.lease_timeout_ms
    )
    try:
        os.kill(row["pid"], 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return fresh
    return fresh
