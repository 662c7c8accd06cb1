"""Maintenance and operator writes: retry dispatch, replay, purge, TTL
cleanup, the outbox sweep, and the node's own membership row."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field

from relaymesh.bus import Envelope
from relaymesh.fsm import StepState, TaskState
from relaymesh.store._base import DryRun

REPLAYABLE_TASK_STATES = (TaskState.DEAD_LETTER, TaskState.CANCELLED)
REPLAYABLE_STEP_STATES = (StepState.DEAD_LETTER, StepState.CANCELLED)

DAY_MS = 86_400_000


@dataclass
class ReplayResult:
    task_id: str
    replayed: bool
    message: str
    steps: list[str] = field(default_factory=list)
    envelopes: list[Envelope] = field(default_factory=list)


@dataclass
class PurgeResult:
    tasks: int = 0
    idempotency_rows: int = 0
    payload_paths: list[str] = field(default_factory=list)
    msg_ids: list[str] = field(default_factory=list)


class OperationsMixin:
    # Retry dispatch ------------------------------------------------------

    def dispatch_due_retries(self, now_ms: int, limit: int) -> list[Envelope]:
        """Queue again, in one transaction, the retrying steps whose time came."""
        with self._tx() as db:
            due = db.execute(
                "SELECT * FROM steps WHERE status = 'RETRYING' AND next_retry_at_ms <= ?"
                " ORDER BY next_retry_at_ms LIMIT ?",
                (now_ms, limit),
            ).fetchall()
            envelopes = []
            for step in due:
                updated = db.execute(
                    "UPDATE steps SET status = 'PENDING', next_retry_at_ms = NULL,"
                    " is_enqueued = 1, ready_at_ms = ?, updated_at_ms = ?"
                    " WHERE step_id = ? AND status = 'RETRYING'",
                    (now_ms, now_ms, step["step_id"]),
                )
                if updated.rowcount:
                    envelopes.append(
                        self._new_message(db, step, now_ms, step["attempt"] + 1)
                    )
                    self._refresh_task(db, step["task_id"], now_ms)
            return envelopes

    # Replay --------------------------------------------------------------

    def replay_task(
        self, task_id: str, now_ms: int, dry_run: bool = False
    ) -> ReplayResult:
        """Run a dead-lettered or cancelled task again from its failed steps.

        Every dead-lettered or cancelled step goes back to PENDING with a fresh
        attempt budget, the steps blocked behind them are unblocked, and the
        steps whose dependencies all succeeded are queued. Steps that already
        succeeded keep their results.
        """
        try:
            with self._tx() as db:
                result = self._replay_in(db, task_id, now_ms)
                if dry_run:
                    raise DryRun()
        except DryRun:
            result.envelopes = []
        return result

    def _replay_in(
        self, db: sqlite3.Connection, task_id: str, now_ms: int
    ) -> ReplayResult:
        task = db.execute(
            "SELECT status FROM tasks WHERE task_id = ?", (task_id,)
        ).fetchone()
        if task is None:
            return ReplayResult(task_id, False, "task not found")
        if task["status"] not in REPLAYABLE_TASK_STATES:
            return ReplayResult(
                task_id,
                False,
                f"task is {task['status']}; only DEAD_LETTER or CANCELLED tasks can be replayed",
            )
        placeholders = ", ".join("?" for _ in REPLAYABLE_STEP_STATES)
        steps = db.execute(
            f"SELECT step_id, name FROM steps WHERE task_id = ?"
            f" AND status IN ({placeholders}) ORDER BY name",
            (task_id, *REPLAYABLE_STEP_STATES),
        ).fetchall()
        if not steps:
            # A soft-cancelled task whose running steps all finished: there is
            # nothing left to run, and its results stand as they are.
            return ReplayResult(
                task_id,
                False,
                f"task is {task['status']} but has no dead-lettered or cancelled"
                " steps to run again",
            )
        db.execute(
            f"UPDATE steps SET status = 'PENDING', attempt = 0, is_enqueued = 0,"
            f" next_retry_at_ms = NULL, lease_owner = NULL, lease_token = NULL,"
            f" heartbeat_at_ms = NULL, blocked_by = NULL, updated_at_ms = ?"
            f" WHERE task_id = ? AND status IN ({placeholders})",
            (now_ms, task_id, *REPLAYABLE_STEP_STATES),
        )
        db.execute(
            "UPDATE steps SET blocked_by = NULL, updated_at_ms = ?"
            " WHERE task_id = ? AND blocked_by IS NOT NULL",
            (now_ms, task_id),
        )
        self._refresh_task(db, task_id, now_ms, replaying=True)
        envelopes = self._dispatch_ready_steps(db, task_id, now_ms)
        self._bump_counter(db, "tasks_replayed_total", now_ms)
        return ReplayResult(
            task_id,
            True,
            "replayed",
            steps=[row["name"] for row in steps],
            envelopes=envelopes,
        )

    def tasks_with_status(self, status: str, limit: int) -> list[str]:
        with self._read() as db:
            rows = db.execute(
                "SELECT task_id FROM tasks WHERE status = ?"
                " ORDER BY updated_at_ms DESC, task_id LIMIT ?",
                (status, limit),
            ).fetchall()
        return [row["task_id"] for row in rows]

    # Retention -----------------------------------------------------------

    def cleanup_idempotency(self, now_ms: int, ttl_ms: int) -> int:
        """Delete idempotency records of finished tasks older than the TTL."""
        with self._tx() as db:
            deleted = db.execute(
                "DELETE FROM idempotency WHERE processed_at_ms IS NOT NULL"
                " AND processed_at_ms < ?",
                (now_ms - ttl_ms,),
            ).rowcount
        return deleted

    def purge(
        self,
        now_ms: int,
        done_retention_ms: int,
        dead_retention_ms: int,
        idempotency_ttl_ms: int,
        dry_run: bool = False,
    ) -> PurgeResult:
        """Delete finished tasks past their retention, with everything they own."""
        result = PurgeResult()
        try:
            with self._tx() as db:
                rows = db.execute(
                    "SELECT task_id FROM tasks WHERE"
                    " (status = 'SUCCESS' AND finished_at_ms < ?)"
                    " OR (status IN ('DEAD_LETTER', 'CANCELLED') AND finished_at_ms < ?)",
                    (now_ms - done_retention_ms, now_ms - dead_retention_ms),
                ).fetchall()
                for row in rows:
                    paths = db.execute(
                        "SELECT payload_path FROM steps WHERE task_id = ?",
                        (row["task_id"],),
                    ).fetchall()
                    result.payload_paths.extend(path["payload_path"] for path in paths)
                    messages = db.execute(
                        "SELECT msg_id FROM messages WHERE task_id = ?",
                        (row["task_id"],),
                    ).fetchall()
                    result.msg_ids.extend(message["msg_id"] for message in messages)
                    db.execute("DELETE FROM tasks WHERE task_id = ?", (row["task_id"],))
                    db.execute(
                        "DELETE FROM step_attempts WHERE task_id = ?", (row["task_id"],)
                    )
                    result.idempotency_rows += db.execute(
                        "DELETE FROM idempotency WHERE result_ref = ?",
                        (row["task_id"],),
                    ).rowcount
                result.tasks = len(rows)
                result.idempotency_rows += db.execute(
                    "DELETE FROM idempotency WHERE processed_at_ms IS NOT NULL"
                    " AND processed_at_ms < ?",
                    (now_ms - idempotency_ttl_ms,),
                ).rowcount
                if dry_run:
                    raise DryRun()
        except DryRun:
            pass
        return result

    # Outbox and processing sweeps -------------------------------------------

    def queued_messages_older_than(
        self, cutoff_ms: int, limit: int, after: tuple[int, str] = (-1, "")
    ) -> list[Envelope]:
        """Queued messages created at or before `cutoff_ms`, in pages.

        Pass the (created_at_ms, msg_id) of the last message of a page as
        `after` to get the next page.
        """
        with self._read() as db:
            rows = db.execute(
                "SELECT * FROM messages WHERE state = 'QUEUED' AND created_at_ms <= ?"
                " AND (created_at_ms, msg_id) > (?, ?)"
                " ORDER BY created_at_ms, msg_id LIMIT ?",
                (cutoff_ms, after[0], after[1], limit),
            ).fetchall()
        return [_envelope_from_row(row) for row in rows]

    def message_states(self, msg_ids: list[str]) -> dict[str, sqlite3.Row]:
        """State, step and priority of each known message id."""
        found = {}
        with self._read() as db:
            for start in range(0, len(msg_ids), 500):
                chunk = msg_ids[start : start + 500]
                marks = ", ".join("?" for _ in chunk)
                for row in db.execute(
                    f"SELECT * FROM messages WHERE msg_id IN ({marks})", chunk
                ):
                    found[row["msg_id"]] = row
        return found

    # The node's own membership row -----------------------------------------

    def register_node(self, node_id: str, pid: int, address: str, now_ms: int) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO mesh_nodes(node_id, status, incarnation, address, pid,"
                " last_heartbeat_ms, started_at_ms, updated_at_ms, status_changed_at_ms)"
                " VALUES (?, 'ALIVE', 0, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT(node_id) DO UPDATE SET status = 'ALIVE',"
                " incarnation = incarnation + 1, address = excluded.address,"
                " pid = excluded.pid, last_heartbeat_ms = excluded.last_heartbeat_ms,"
                " started_at_ms = excluded.started_at_ms,"
                " updated_at_ms = excluded.updated_at_ms,"
                " status_changed_at_ms = CASE WHEN status = 'ALIVE'"
                "   THEN status_changed_at_ms ELSE excluded.status_changed_at_ms END",
                (node_id, address, pid, now_ms, now_ms, now_ms, now_ms),
            )

    def heartbeat_node(self, node_id: str, now_ms: int) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE mesh_nodes SET last_heartbeat_ms = ?, updated_at_ms = ?"
                " WHERE node_id = ?",
                (now_ms, now_ms, node_id),
            )

    def mark_node_left(self, node_id: str, now_ms: int) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE mesh_nodes SET status = 'LEFT', updated_at_ms = ?,"
                " status_changed_at_ms = ? WHERE node_id = ?",
                (now_ms, now_ms, node_id),
            )

    def node_row(self, node_id: str) -> dict | None:
        with self._read() as db:
            row = db.execute(
                "SELECT * FROM mesh_nodes WHERE node_id = ?", (node_id,)
            ).fetchone()
        return dict(row) if row else None


def _envelope_from_row(row: sqlite3.Row) -> Envelope:
    return Envelope(
        msg_id=row["msg_id"],
        task_id=row["task_id"],
        step_id=row["step_id"],
        to_agent=row["to_agent"],
        priority=row["priority"].lower(),
        created_at_ms=row["created_at_ms"],
        payload_path=row["payload_path"],
        attempt=row["attempt"],
        from_agent=row["from_agent"],
    )
