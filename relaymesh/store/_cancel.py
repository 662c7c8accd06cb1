"""Cancelling a task, soft or hard.

Soft cancel stops everything that has not started: pending and retrying
steps become CANCELLED and their queued messages are cancelled. Steps that
are running finish, but the task stays CANCELLED whatever they return: a
success unlocks no successor, and a failure is not retried.

Hard cancel also cancels running steps: their lease is cleared in the same
transaction, so the owner's next heartbeat finds the lease gone and cancels
the step's scope (killing a script's process group), and any late result is
refused by the fence. Neither counts as a lease conflict: the step was
cancelled, not raced for.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field

from relaymesh.fsm import (
    TERMINAL_TASK_STATES,
    AttemptOutcome,
    TaskState,
    check_task_change,
)

CANCEL_MODES = ("soft", "hard")


@dataclass
class CancelResult:
    task_id: str
    cancelled: bool
    mode: str
    message: str
    step_rows: int = 0
    message_rows: int = 0
    still_running: list[str] = field(default_factory=list)
    queued_files: list[tuple[str, str]] = field(
        default_factory=list
    )  # (priority, name)
    trace_id: str | None = None


class CancelMixin:
    def cancel_task(
        self, task_id: str, mode: str, reason: str, now_ms: int
    ) -> CancelResult:
        if mode not in CANCEL_MODES:
            raise ValueError(f"cancel mode must be soft or hard, not {mode!r}")
        with self._tx() as db:
            return self._cancel_in(db, task_id, mode, reason, now_ms)

    def _cancel_in(
        self, db: sqlite3.Connection, task_id: str, mode: str, reason: str, now_ms: int
    ) -> CancelResult:
        task = db.execute(
            "SELECT status, idempotency_key, trace_id FROM tasks WHERE task_id = ?",
            (task_id,),
        ).fetchone()
        if task is None:
            return CancelResult(task_id, False, mode, "task not found")
        if task["status"] in TERMINAL_TASK_STATES:
            return CancelResult(
                task_id,
                False,
                mode,
                f"task is already {task['status']}; only unfinished tasks can be cancelled",
            )
        check_task_change(TaskState(task["status"]), TaskState.CANCELLED)

        states = (
            ("PENDING", "RETRYING", "RUNNING")
            if mode == "hard"
            else ("PENDING", "RETRYING")
        )
        marks = ", ".join("?" for _ in states)
        if mode == "hard":
            db.execute(
                "UPDATE step_attempts SET ended_at_ms = ?, outcome = ?, error = ?"
                " WHERE task_id = ? AND outcome IS NULL",
                (
                    now_ms,
                    AttemptOutcome.CANCELLED,
                    f"cancelled (hard): {reason}",
                    task_id,
                ),
            )
        step_rows = db.execute(
            f"UPDATE steps SET status = 'CANCELLED', lease_owner = NULL,"
            f" lease_token = NULL, heartbeat_at_ms = NULL, next_retry_at_ms = NULL,"
            f" last_error = ?, updated_at_ms = ?"
            f" WHERE task_id = ? AND status IN ({marks})",
            (f"cancelled ({mode}): {reason}", now_ms, task_id, *states),
        ).rowcount
        message_states = ("QUEUED", "PROCESSING") if mode == "hard" else ("QUEUED",)
        marks = ", ".join("?" for _ in message_states)
        queued = db.execute(
            "SELECT priority, file_name FROM messages WHERE task_id = ? AND state = 'QUEUED'",
            (task_id,),
        ).fetchall()
        message_rows = db.execute(
            f"UPDATE messages SET state = 'CANCELLED', updated_at_ms = ?"
            f" WHERE task_id = ? AND state IN ({marks})",
            (now_ms, task_id, *message_states),
        ).rowcount
        running = db.execute(
            "SELECT name FROM steps WHERE task_id = ? AND status = 'RUNNING' ORDER BY name",
            (task_id,),
        ).fetchall()
        db.execute(
            "UPDATE tasks SET status = 'CANCELLED', last_error = ?, finished_at_ms = ?,"
            " updated_at_ms = ? WHERE task_id = ?",
            (f"cancelled ({mode}): {reason}", now_ms, now_ms, task_id),
        )
        self._update_idempotency(
            db, task["idempotency_key"], task_id, TaskState.CANCELLED, None, now_ms
        )
        self._bump_counter(db, "tasks_cancelled_total", now_ms, labels=mode)
        return CancelResult(
            task_id,
            True,
            mode,
            "cancelled",
            step_rows=step_rows,
            message_rows=message_rows,
            still_running=[row["name"] for row in running],
            queued_files=[
                (row["priority"].lower(), row["file_name"]) for row in queued
            ],
            trace_id=task["trace_id"],
        )
