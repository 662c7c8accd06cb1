"""Claims, lease renewal and completions: the fenced writes of an owner.

A step's owner is the triple (lease_owner, lease_token, lease_epoch). A claim
sets all three and bumps the epoch; every later write that changes the step's
state, owner or result carries the token and epoch it was given, in the
WHERE clause of a single UPDATE. If the row moved on (reclaimed, cancelled,
claimed again), the UPDATE matches nothing, and the write is refused and
recorded in `lease_conflicts` instead of being applied or retried.

Each method takes a batch and runs it in one transaction, so a node pays one
commit for many claims or completions.
"""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Callable, Iterable

from relaymesh.agents.policies import RetryPolicy, backoff_delay_ms
from relaymesh.bus import ClaimedFile, msg_id_from_file_name
from relaymesh.fsm import AttemptOutcome, StepState, TaskState
from relaymesh.store.records import (
    ClaimedStep,
    ClaimRejection,
    CommitResult,
    LeaseRef,
    StepOutcome,
)

PolicyLookup = Callable[[str], RetryPolicy]

# Outcomes that are failures of the agent and count against the retry budget.
FAILED_OUTCOMES = {AttemptOutcome.FAILED, AttemptOutcome.TIMEOUT}


class LeaseMixin:
    # Claims --------------------------------------------------------------

    def claim_files(
        self,
        files: Iterable[ClaimedFile],
        owner: str,
        worker_id: str,
        now_ms: int,
    ) -> tuple[list[ClaimedStep], list[ClaimRejection]]:
        """Turn claimed bus files into leases, in one transaction."""
        claimed: list[ClaimedStep] = []
        rejected: list[ClaimRejection] = []
        with self._tx() as db:
            for file in files:
                if file.envelope is None:
                    rejected.append(
                        ClaimRejection(
                            file.path,
                            msg_id_from_file_name(file.path.name),
                            "malformed",
                        )
                    )
                    continue
                result = self._claim_one(db, file, owner, worker_id, now_ms)
                if isinstance(result, ClaimedStep):
                    claimed.append(result)
                else:
                    rejected.append(result)
        return claimed, rejected

    def _claim_one(
        self,
        db: sqlite3.Connection,
        file: ClaimedFile,
        owner: str,
        worker_id: str,
        now_ms: int,
    ) -> ClaimedStep | ClaimRejection:
        envelope = file.envelope
        message = db.execute(
            "SELECT state, step_id FROM messages WHERE msg_id = ?", (envelope.msg_id,)
        ).fetchone()
        if message is None or message["step_id"] != envelope.step_id:
            return ClaimRejection(file.path, envelope.msg_id, "unknown")
        if message["state"] != "QUEUED":
            # A copy written twice by the sweeper, or a cancelled step: not a race.
            return ClaimRejection(file.path, envelope.msg_id, "stale")

        token = self.ids.new("lease")
        span_id = self.ids.span_id()
        updated = db.execute(
            "UPDATE steps SET status = 'RUNNING', lease_owner = ?, lease_token = ?,"
            " lease_epoch = lease_epoch + 1, attempt = attempt + 1,"
            " heartbeat_at_ms = ?, span_id = ?, updated_at_ms = ?"
            " WHERE step_id = ? AND status = 'PENDING'",
            (owner, token, now_ms, span_id, now_ms, envelope.step_id),
        )
        if updated.rowcount == 0:
            self._record_conflict(
                db,
                "claim_conflict",
                envelope.step_id,
                now_ms,
                worker_id=owner,
                expected_status=StepState.PENDING,
                expected_owner=owner,
                expected_token=token,
            )
            db.execute(
                "UPDATE messages SET state = 'DEAD', updated_at_ms = ? WHERE msg_id = ?",
                (now_ms, envelope.msg_id),
            )
            return ClaimRejection(file.path, envelope.msg_id, "conflict")

        db.execute(
            "UPDATE messages SET state = 'PROCESSING', updated_at_ms = ? WHERE msg_id = ?",
            (now_ms, envelope.msg_id),
        )
        step = db.execute(
            "SELECT s.*, t.trace_id FROM steps AS s JOIN tasks AS t USING (task_id)"
            " WHERE s.step_id = ?",
            (envelope.step_id,),
        ).fetchone()
        db.execute(
            "INSERT INTO step_attempts(step_id, lease_epoch, task_id, attempt, node_id,"
            " worker_id, span_id, msg_id, started_at_ms)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                step["step_id"],
                step["lease_epoch"],
                step["task_id"],
                step["attempt"],
                owner,
                worker_id,
                span_id,
                envelope.msg_id,
                now_ms,
            ),
        )
        dependencies = db.execute(
            "SELECT dep.name, dep.result_payload FROM step_dependencies AS d"
            " JOIN steps AS dep ON dep.step_id = d.depends_on_step_id"
            " WHERE d.step_id = ? ORDER BY dep.name",
            (step["step_id"],),
        ).fetchall()
        self._refresh_task(db, step["task_id"], now_ms)
        return ClaimedStep(
            task_id=step["task_id"],
            step_id=step["step_id"],
            step_name=step["name"],
            agent_id=step["agent_id"],
            priority=step["priority"].lower(),
            attempt=step["attempt"],
            lease_owner=owner,
            lease_token=token,
            lease_epoch=step["lease_epoch"],
            trace_id=step["trace_id"],
            span_id=span_id,
            parent_span_id=step["parent_span_id"],
            payload_path=step["payload_path"],
            dependency_outputs={
                row["name"]: row["result_payload"] or "" for row in dependencies
            },
            file_path=file.path,
            msg_id=envelope.msg_id,
        )

    # Heartbeats ----------------------------------------------------------

    def renew_leases(
        self, leases: Iterable[LeaseRef], now_ms: int, owner: str | None = None
    ) -> list[LeaseRef]:
        """Renew every lease in one transaction; return the ones that were lost."""
        lost = []
        with self._tx() as db:
            for lease in leases:
                updated = db.execute(
                    "UPDATE steps SET heartbeat_at_ms = ? WHERE step_id = ?"
                    " AND status = 'RUNNING' AND lease_token = ? AND lease_epoch = ?",
                    (now_ms, lease.step_id, lease.lease_token, lease.lease_epoch),
                )
                if updated.rowcount == 0:
                    if self._attempt_committed(db, lease):
                        continue  # its own outcome was committed first: not lost
                    self._record_conflict(
                        db,
                        "heartbeat_conflict",
                        lease.step_id,
                        now_ms,
                        worker_id=owner,
                        expected_owner=owner,
                        expected_status=StepState.RUNNING,
                        expected_token=lease.lease_token,
                        expected_epoch=lease.lease_epoch,
                    )
                    lost.append(lease)
        return lost

    def _attempt_committed(self, db: sqlite3.Connection, lease: LeaseRef) -> bool:
        """True if the attempt under this lease ended with its own outcome."""
        row = db.execute(
            "SELECT outcome FROM step_attempts WHERE step_id = ? AND lease_epoch = ?",
            (lease.step_id, lease.lease_epoch),
        ).fetchone()
        return row is not None and row["outcome"] in (
            AttemptOutcome.SUCCESS,
            AttemptOutcome.FAILED,
            AttemptOutcome.TIMEOUT,
        )

    # Completions ---------------------------------------------------------

    def complete_steps(
        self,
        outcomes: Iterable[StepOutcome],
        now_ms: int,
        policy_for: PolicyLookup,
        rng: random.Random,
    ) -> list[CommitResult]:
        """Persist the outcomes of many attempts in one transaction, fenced."""
        with self._tx() as db:
            return [
                self._complete_one(db, outcome, now_ms, policy_for, rng)
                for outcome in outcomes
            ]

    def _complete_one(
        self,
        db: sqlite3.Connection,
        outcome: StepOutcome,
        now_ms: int,
        policy_for: PolicyLookup,
        rng: random.Random,
    ) -> CommitResult:
        kind = AttemptOutcome(outcome.outcome)
        if kind == AttemptOutcome.SUCCESS:
            return self._commit_success(db, outcome, now_ms)
        if kind in FAILED_OUTCOMES:
            return self._commit_failure(db, outcome, now_ms, policy_for, rng)
        # Lease lost or attempt cancelled: the step belongs to someone else
        # now, so only the attempt's own history row is written.
        self._close_attempt(
            db,
            outcome.step_id,
            outcome.lease_epoch,
            kind,
            outcome.error,
            now_ms,
            outcome.worker_id,
            message_state="DEAD",
        )
        return CommitResult(outcome.step_id, False, None, None, "dead", message=kind)

    def _fenced_update(
        self, db: sqlite3.Connection, outcome: StepOutcome, sql_set: str, values: tuple
    ) -> bool:
        updated = db.execute(
            f"UPDATE steps SET {sql_set} WHERE step_id = ? AND status = 'RUNNING'"
            " AND lease_token = ? AND lease_epoch = ?",
            (*values, outcome.step_id, outcome.lease_token, outcome.lease_epoch),
        )
        return updated.rowcount == 1

    def _refuse(
        self, db: sqlite3.Connection, outcome: StepOutcome, event_type: str, now_ms: int
    ) -> CommitResult:
        conflict = self._record_conflict(
            db,
            event_type,
            outcome.step_id,
            now_ms,
            worker_id=outcome.worker_id or None,
            expected_status=StepState.RUNNING,
            expected_token=outcome.lease_token,
            expected_epoch=outcome.lease_epoch,
        )
        self._close_attempt(
            db,
            outcome.step_id,
            outcome.lease_epoch,
            AttemptOutcome.CONFLICT,
            f"result refused: lease lost ({outcome.outcome.lower()} not recorded)",
            now_ms,
            outcome.worker_id,
            message_state="DEAD",
        )
        if not conflict:
            return CommitResult(
                outcome.step_id, False, None, None, "dead", message="step was cancelled"
            )
        return CommitResult(
            outcome.step_id,
            False,
            None,
            None,
            "dead",
            message="lease lost before commit",
            conflict=True,
        )

    def _commit_success(
        self, db: sqlite3.Connection, outcome: StepOutcome, now_ms: int
    ) -> CommitResult:
        applied = self._fenced_update(
            db,
            outcome,
            "status = 'SUCCESS', result_payload = ?, last_error = NULL,"
            " lease_owner = NULL, lease_token = NULL, heartbeat_at_ms = NULL,"
            " next_retry_at_ms = NULL, updated_at_ms = ?",
            (outcome.output, now_ms),
        )
        if not applied:
            return self._refuse(db, outcome, "success_commit_conflict", now_ms)
        self._close_attempt(
            db,
            outcome.step_id,
            outcome.lease_epoch,
            AttemptOutcome.SUCCESS,
            None,
            now_ms,
            outcome.worker_id,
            message_state="DONE",
        )
        step = db.execute(
            "SELECT task_id, span_id FROM steps WHERE step_id = ?", (outcome.step_id,)
        ).fetchone()
        task_status = db.execute(
            "SELECT status FROM tasks WHERE task_id = ?", (step["task_id"],)
        ).fetchone()["status"]
        envelopes = []
        # A dead-lettered or cancelled task starts no new steps; replay does.
        if task_status not in (TaskState.DEAD_LETTER, TaskState.CANCELLED):
            envelopes = self._dispatch_ready_steps(
                db,
                step["task_id"],
                now_ms,
                parent_span_id=step["span_id"],
                after_step_id=outcome.step_id,
            )
        new_status = self._refresh_task(db, step["task_id"], now_ms)
        self._bump_counter(db, "steps_succeeded_total", now_ms)
        return CommitResult(
            outcome.step_id, True, StepState.SUCCESS, new_status, "done", envelopes
        )

    def _commit_failure(
        self,
        db: sqlite3.Connection,
        outcome: StepOutcome,
        now_ms: int,
        policy_for: PolicyLookup,
        rng: random.Random,
    ) -> CommitResult:
        step = db.execute(
            "SELECT task_id, name, agent_id, attempt FROM steps WHERE step_id = ?",
            (outcome.step_id,),
        ).fetchone()
        if step is None:
            return self._refuse(db, outcome, "failure_commit_conflict", now_ms)
        policy = policy_for(step["agent_id"])
        error = outcome.error or outcome.outcome.lower()
        if self._task_cancelled(db, step["task_id"]):
            return self._cancel_finished_step(db, outcome, step, error, now_ms)
        if step["attempt"] >= policy.max_attempts:
            applied = self._fenced_update(
                db,
                outcome,
                "status = 'DEAD_LETTER', last_error = ?, lease_owner = NULL,"
                " lease_token = NULL, heartbeat_at_ms = NULL, next_retry_at_ms = NULL,"
                " updated_at_ms = ?",
                (error, now_ms),
            )
            if not applied:
                return self._refuse(db, outcome, "failure_commit_conflict", now_ms)
            return self._after_dead_letter(db, outcome, step, error, now_ms)

        delay = backoff_delay_ms(policy, step["attempt"], rng)
        retry_at = now_ms + delay
        applied = self._fenced_update(
            db,
            outcome,
            "status = 'RETRYING', last_error = ?, lease_owner = NULL,"
            " lease_token = NULL, heartbeat_at_ms = NULL, next_retry_at_ms = ?,"
            " is_enqueued = 0, updated_at_ms = ?",
            (error, retry_at, now_ms),
        )
        if not applied:
            return self._refuse(db, outcome, "failure_commit_conflict", now_ms)
        self._close_attempt(
            db,
            outcome.step_id,
            outcome.lease_epoch,
            AttemptOutcome(outcome.outcome),
            error,
            now_ms,
            outcome.worker_id,
            message_state="FAILED",
        )
        new_status = self._refresh_task(db, step["task_id"], now_ms, last_error=error)
        self._bump_counter(db, "retries_scheduled_total", now_ms)
        return CommitResult(
            outcome.step_id,
            True,
            StepState.RETRYING,
            new_status,
            "retry",
            next_retry_at_ms=retry_at,
        )

    def _task_cancelled(self, db: sqlite3.Connection, task_id: str) -> bool:
        row = db.execute(
            "SELECT status FROM tasks WHERE task_id = ?", (task_id,)
        ).fetchone()
        return row is not None and row["status"] == TaskState.CANCELLED

    def _cancel_finished_step(
        self,
        db: sqlite3.Connection,
        outcome: StepOutcome,
        step: sqlite3.Row,
        error: str,
        now_ms: int,
    ) -> CommitResult:
        """Cancel a failed step of a soft-cancelled task instead of retrying it."""
        applied = self._fenced_update(
            db,
            outcome,
            "status = 'CANCELLED', last_error = ?, lease_owner = NULL,"
            " lease_token = NULL, heartbeat_at_ms = NULL, updated_at_ms = ?",
            (f"failed after the task was cancelled: {error}", now_ms),
        )
        if not applied:
            return self._refuse(db, outcome, "failure_commit_conflict", now_ms)
        self._close_attempt(
            db,
            outcome.step_id,
            outcome.lease_epoch,
            AttemptOutcome(outcome.outcome),
            error,
            now_ms,
            outcome.worker_id,
            message_state="DEAD",
        )
        return CommitResult(
            outcome.step_id, True, StepState.CANCELLED, TaskState.CANCELLED, "dead"
        )

    def _after_dead_letter(
        self,
        db: sqlite3.Connection,
        outcome: StepOutcome,
        step: sqlite3.Row,
        error: str,
        now_ms: int,
    ) -> CommitResult:
        self._close_attempt(
            db,
            outcome.step_id,
            outcome.lease_epoch,
            AttemptOutcome(outcome.outcome),
            error,
            now_ms,
            outcome.worker_id,
            message_state="DEAD",
        )
        return self._dead_letter_followups(db, outcome.step_id, step, error, now_ms)

    def _dead_letter_followups(
        self,
        db: sqlite3.Connection,
        step_id: str,
        step: sqlite3.Row,
        error: str,
        now_ms: int,
    ) -> CommitResult:
        """Block the dead step's dependants and dead-letter its task."""
        self._block_dependants(db, step_id, step["name"], now_ms)
        task_error = f"step '{step['name']}' dead-lettered after attempt {step['attempt']}: {error}"
        new_status = self._refresh_task(
            db, step["task_id"], now_ms, last_error=task_error
        )
        self._bump_counter(db, "dead_lettered_total", now_ms)
        return CommitResult(step_id, True, StepState.DEAD_LETTER, new_status, "dead")

    def _end_attempt(
        self,
        db: sqlite3.Connection,
        step_id: str,
        lease_epoch: int,
        outcome: str,
        error: str | None,
        now_ms: int,
        worker_id: str | None = None,
    ) -> None:
        """Close the attempt's history row; `worker_id` names who ran it.

        A node claims for its scheduler before it has chosen the worker
        that runs the step, so the worker is recorded when its outcome comes in.
        """
        db.execute(
            "UPDATE step_attempts SET ended_at_ms = ?, outcome = ?, error = ?,"
            " worker_id = COALESCE(?, worker_id)"
            " WHERE step_id = ? AND lease_epoch = ? AND outcome IS NULL",
            (now_ms, str(outcome), error, worker_id or None, step_id, lease_epoch),
        )

    def _close_attempt(
        self,
        db: sqlite3.Connection,
        step_id: str,
        lease_epoch: int,
        outcome: str,
        error: str | None,
        now_ms: int,
        worker_id: str | None = None,
        *,
        message_state: str,
    ) -> None:
        """End the attempt's history row and settle the message it ran from."""
        self._end_attempt(db, step_id, lease_epoch, outcome, error, now_ms, worker_id)
        self._settle_message(db, step_id, lease_epoch, message_state, now_ms)

    def _settle_message(
        self,
        db: sqlite3.Connection,
        step_id: str,
        lease_epoch: int,
        state: str,
        now_ms: int,
    ) -> None:
        """Close the message that the attempt with `lease_epoch` was claimed from."""
        db.execute(
            "UPDATE messages SET state = ?, updated_at_ms = ?"
            " WHERE state = 'PROCESSING' AND msg_id = (SELECT msg_id FROM step_attempts"
            "   WHERE step_id = ? AND lease_epoch = ?)",
            (state, now_ms, step_id, lease_epoch),
        )
