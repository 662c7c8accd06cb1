"""Taking steps back from their owner: hand-back at shutdown and reclaim.

A node that stops gracefully releases its running steps, fenced like any
other write, so another node can take them at once. A step whose owner
stopped renewing its lease is reclaimed by whichever node observes the lease
expire; the reclaim is fenced on the epoch and on the heartbeat value the
reclaimer observed, so a renewal that lands in between wins. Both use the
helpers of `relaymesh/store/_leases.py` through the assembled `Store`.
"""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Iterable

from relaymesh.agents.policies import backoff_delay_ms
from relaymesh.fsm import AttemptOutcome, StepState, TaskState
from relaymesh.store._leases import PolicyLookup
from relaymesh.store.records import CommitResult, LeaseRef, RunningLease, StepOutcome


class ReclaimMixin:
    # Release at shutdown ---------------------------------------------------

    def release_leases(
        self, leases: Iterable[LeaseRef], now_ms: int
    ) -> list[CommitResult]:
        """Hand running steps back to the queue at once, for another node.

        A released step keeps its place in the queue: its new message has
        the creation time of the one it was claimed from. A step whose task
        was cancelled meanwhile is cancelled instead of queued again.
        """
        with self._tx() as db:
            return [self._release_one(db, lease, now_ms) for lease in leases]

    def _release_one(
        self, db: sqlite3.Connection, lease: LeaseRef, now_ms: int
    ) -> CommitResult:
        outcome = StepOutcome(
            lease.step_id, lease.lease_token, lease.lease_epoch, AttemptOutcome.RELEASED
        )
        task = db.execute(
            "SELECT t.task_id, t.status FROM steps AS s JOIN tasks AS t USING (task_id)"
            " WHERE s.step_id = ?",
            (lease.step_id,),
        ).fetchone()
        if task is not None and task["status"] == TaskState.CANCELLED:
            applied = self._fenced_update(
                db,
                outcome,
                "status = 'CANCELLED', lease_owner = NULL, lease_token = NULL,"
                " heartbeat_at_ms = NULL, updated_at_ms = ?",
                (now_ms,),
            )
            if not applied:
                return self._refuse(db, outcome, "release_conflict", now_ms)
            self._close_attempt(
                db,
                lease.step_id,
                lease.lease_epoch,
                AttemptOutcome.CANCELLED,
                "stopped at node shutdown; the task was cancelled",
                now_ms,
                message_state="CANCELLED",
            )
            return CommitResult(
                lease.step_id, True, StepState.CANCELLED, TaskState.CANCELLED, "dead"
            )

        applied = self._fenced_update(
            db,
            outcome,
            "status = 'PENDING', attempt = attempt - 1, lease_owner = NULL,"
            " lease_token = NULL, heartbeat_at_ms = NULL, is_enqueued = 1,"
            " ready_at_ms = ?, updated_at_ms = ?",
            (now_ms, now_ms),
        )
        if not applied:
            return self._refuse(db, outcome, "release_conflict", now_ms)
        self._end_attempt(
            db,
            lease.step_id,
            lease.lease_epoch,
            AttemptOutcome.RELEASED,
            "released at node shutdown",
            now_ms,
        )
        claimed_from = db.execute(
            "SELECT m.created_at_ms FROM step_attempts AS a JOIN messages AS m"
            " USING (msg_id) WHERE a.step_id = ? AND a.lease_epoch = ?",
            (lease.step_id, lease.lease_epoch),
        ).fetchone()
        self._settle_message(db, lease.step_id, lease.lease_epoch, "RELEASED", now_ms)
        step = db.execute(
            "SELECT * FROM steps WHERE step_id = ?", (lease.step_id,)
        ).fetchone()
        queued_at = claimed_from["created_at_ms"] if claimed_from else now_ms
        envelope = self._new_message(db, step, queued_at, step["attempt"] + 1)
        status = self._refresh_task(db, step["task_id"], now_ms)
        return CommitResult(
            lease.step_id, True, StepState.PENDING, status, "dead", [envelope]
        )

    # Reclaims --------------------------------------------------------------

    def running_leases(self, exclude_owner: str | None = None) -> list[RunningLease]:
        with self._read() as db:
            rows = db.execute(
                "SELECT step_id, task_id, lease_owner, lease_epoch, heartbeat_at_ms"
                " FROM steps WHERE status = 'RUNNING'"
                " AND (? IS NULL OR lease_owner IS NOT ?)",
                (exclude_owner, exclude_owner),
            ).fetchall()
        return [RunningLease(**dict(row)) for row in rows]

    def reclaim_leases(
        self,
        leases: Iterable[RunningLease],
        reason: str,
        now_ms: int,
        policy_for: PolicyLookup,
        rng: random.Random,
    ) -> list[CommitResult]:
        """Take back steps whose lease expired, fenced on the epoch and the
        heartbeat value the caller observed, and retry or dead-letter them."""
        results = []
        with self._tx() as db:
            for lease in leases:
                results.append(
                    self._reclaim_one(db, lease, reason, now_ms, policy_for, rng)
                )
        return results

    def _reclaim_one(
        self,
        db: sqlite3.Connection,
        lease: RunningLease,
        reason: str,
        now_ms: int,
        policy_for: PolicyLookup,
        rng: random.Random,
    ) -> CommitResult:
        step = db.execute(
            "SELECT task_id, name, agent_id, attempt FROM steps WHERE step_id = ?"
            " AND status = 'RUNNING' AND lease_epoch = ? AND heartbeat_at_ms IS ?",
            (lease.step_id, lease.lease_epoch, lease.heartbeat_at_ms),
        ).fetchone()
        if step is None:
            self._record_conflict(
                db,
                "reclaim_conflict",
                lease.step_id,
                now_ms,
                worker_id=lease.lease_owner,
                expected_status=StepState.RUNNING,
                expected_owner=lease.lease_owner,
                expected_epoch=lease.lease_epoch,
            )
            return CommitResult(
                lease.step_id, False, None, None, "dead", message="moved on"
            )

        policy = policy_for(step["agent_id"])
        error = f"{reason} (owner {lease.lease_owner}, lease epoch {lease.lease_epoch})"
        cancelled = self._task_cancelled(db, step["task_id"])
        dead = step["attempt"] >= policy.max_attempts
        if cancelled:
            db.execute(
                "UPDATE steps SET status = 'CANCELLED', last_error = ?, lease_owner = NULL,"
                " lease_token = NULL, heartbeat_at_ms = NULL, updated_at_ms = ?"
                " WHERE step_id = ? AND lease_epoch = ?",
                (error, now_ms, lease.step_id, lease.lease_epoch),
            )
        elif dead:
            db.execute(
                "UPDATE steps SET status = 'DEAD_LETTER', last_error = ?, lease_owner = NULL,"
                " lease_token = NULL, heartbeat_at_ms = NULL, updated_at_ms = ?"
                " WHERE step_id = ? AND lease_epoch = ?",
                (error, now_ms, lease.step_id, lease.lease_epoch),
            )
        else:
            retry_at = now_ms + backoff_delay_ms(policy, step["attempt"], rng)
            db.execute(
                "UPDATE steps SET status = 'RETRYING', last_error = ?, lease_owner = NULL,"
                " lease_token = NULL, heartbeat_at_ms = NULL, next_retry_at_ms = ?,"
                " is_enqueued = 0, updated_at_ms = ? WHERE step_id = ? AND lease_epoch = ?",
                (error, retry_at, now_ms, lease.step_id, lease.lease_epoch),
            )
        self._close_attempt(
            db,
            lease.step_id,
            lease.lease_epoch,
            AttemptOutcome.ABANDONED,
            error,
            now_ms,
            message_state="DEAD" if dead or cancelled else "FAILED",
        )
        self._bump_counter(db, "leases_reclaimed_total", now_ms)
        if cancelled:
            return CommitResult(
                lease.step_id, True, StepState.CANCELLED, TaskState.CANCELLED, "dead"
            )
        if dead:
            return self._dead_letter_followups(db, lease.step_id, step, error, now_ms)
        status = self._refresh_task(db, step["task_id"], now_ms, last_error=error)
        self._bump_counter(db, "retries_scheduled_total", now_ms)
        return CommitResult(
            lease.step_id,
            True,
            StepState.RETRYING,
            status,
            "retry",
            next_retry_at_ms=retry_at,
        )
