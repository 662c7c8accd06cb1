"""Shared machinery of the store: the connection, transactions, and the
helpers that several operations run inside their transaction (deriving a
task's status, dispatching ready steps, recording a lease conflict).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from relaymesh.bus import Envelope
from relaymesh.fsm import (
    TERMINAL_TASK_STATES,
    StepState,
    TaskState,
    check_task_change,
    derive_task_state,
)
from relaymesh.store.connection import immediate, open_connection
from relaymesh.store.records import IdGenerator
from relaymesh.store.schema import SCHEMA_VERSION, STATEMENTS


class DryRun(Exception):
    """Raised inside a transaction to roll it back after computing its result."""


class StoreBase:
    def __init__(self, database: Path, ids: IdGenerator | None = None) -> None:
        self.database = database
        self.ids = ids or IdGenerator()
        self._connection = open_connection(database)
        self._lock = threading.RLock()

    def close(self) -> None:
        with self._lock:
            self._connection.close()

    def initialize(self) -> None:
        """Create missing tables and indexes; safe to run on every start."""
        with self._tx() as db:
            for statement in STATEMENTS:
                db.execute(statement)
            db.execute(
                "INSERT OR IGNORE INTO schema_info(key, value) VALUES ('version', ?)",
                (str(SCHEMA_VERSION),),
            )

    def add_counter(
        self, name: str, amount: float, now_ms: int, labels: str = ""
    ) -> None:
        with self._tx() as db:
            self._bump_counter(db, name, now_ms, amount, labels)

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock, immediate(self._connection) as db:
            yield db

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            yield self._connection

    # Helpers run inside a transaction ------------------------------------

    def _bump_counter(
        self,
        db: sqlite3.Connection,
        name: str,
        now_ms: int,
        amount: float = 1,
        labels: str = "",
    ) -> None:
        db.execute(
            "INSERT INTO durable_counters(name, labels, value, updated_at_ms)"
            " VALUES (?, ?, ?, ?)"
            " ON CONFLICT(name, labels) DO UPDATE SET"
            " value = value + excluded.value, updated_at_ms = excluded.updated_at_ms",
            (name, labels, amount, now_ms),
        )

    def _record_conflict(
        self,
        db: sqlite3.Connection,
        event_type: str,
        step_id: str,
        now_ms: int,
        *,
        worker_id: str | None = None,
        expected_status: str | None = None,
        expected_owner: str | None = None,
        expected_token: str | None = None,
        expected_epoch: int | None = None,
    ) -> bool:
        """Record a rejected fenced write; return False if it was no conflict.

        A write rejected because an operator cancelled the step is not a race
        between owners, so it is not recorded.
        """
        row = db.execute(
            "SELECT task_id, status, lease_owner, lease_token, lease_epoch"
            " FROM steps WHERE step_id = ?",
            (step_id,),
        ).fetchone()
        actual = dict(row) if row else {}
        if actual.get("status") == "CANCELLED":
            return False
        db.execute(
            "INSERT INTO lease_conflicts(event_type, task_id, step_id, worker_id,"
            " expected_status, expected_lease_owner, expected_lease_token,"
            " expected_lease_epoch, actual_status, actual_lease_owner,"
            " actual_lease_token, actual_lease_epoch, occurred_at_ms)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                event_type,
                actual.get("task_id"),
                step_id,
                worker_id,
                expected_status,
                expected_owner,
                expected_token,
                expected_epoch,
                actual.get("status"),
                actual.get("lease_owner"),
                actual.get("lease_token"),
                actual.get("lease_epoch"),
                now_ms,
            ),
        )
        self._bump_counter(db, "lease_conflicts_total", now_ms, labels=event_type)
        return True

    def _new_message(
        self,
        db: sqlite3.Connection,
        step: sqlite3.Row,
        now_ms: int,
        attempt: int,
    ) -> Envelope:
        envelope = Envelope(
            msg_id=self.ids.new("msg"),
            task_id=step["task_id"],
            step_id=step["step_id"],
            to_agent=step["agent_id"],
            priority=step["priority"].lower(),
            created_at_ms=now_ms,
            payload_path=step["payload_path"],
            attempt=attempt,
        )
        db.execute(
            "INSERT INTO messages(msg_id, task_id, step_id, to_agent, priority, state,"
            " attempt, file_name, payload_path, created_at_ms, updated_at_ms)"
            " VALUES (?, ?, ?, ?, ?, 'QUEUED', ?, ?, ?, ?, ?)",
            (
                envelope.msg_id,
                envelope.task_id,
                envelope.step_id,
                envelope.to_agent,
                step["priority"],
                attempt,
                envelope.file_name,
                envelope.payload_path,
                now_ms,
                now_ms,
            ),
        )
        return envelope

    def _dispatch_ready_steps(
        self,
        db: sqlite3.Connection,
        task_id: str,
        now_ms: int,
        parent_span_id: str | None = None,
        after_step_id: str | None = None,
    ) -> list[Envelope]:
        """Enqueue every step of the task whose dependencies all succeeded.

        With `after_step_id`, only that step's direct dependants are looked
        at: a success can unlock nothing else, and a workflow of thousands
        of steps would otherwise be scanned on every commit.
        """
        unlocked = (
            "SELECT * FROM steps AS s WHERE s.status = 'PENDING'"
            " AND s.is_enqueued = 0 AND s.blocked_by IS NULL"
            " AND NOT EXISTS (SELECT 1 FROM step_dependencies AS d"
            "   JOIN steps AS dep ON dep.step_id = d.depends_on_step_id"
            "   WHERE d.step_id = s.step_id AND dep.status != 'SUCCESS')"
        )
        if after_step_id is None:
            ready = db.execute(
                unlocked + " AND s.task_id = ? ORDER BY s.step_id", (task_id,)
            ).fetchall()
        else:
            ready = db.execute(
                unlocked + " AND s.step_id IN (SELECT step_id FROM step_dependencies"
                " WHERE depends_on_step_id = ?) ORDER BY s.step_id",
                (after_step_id,),
            ).fetchall()
        envelopes = []
        for step in ready:
            db.execute(
                "UPDATE steps SET is_enqueued = 1, ready_at_ms = ?, updated_at_ms = ?,"
                " parent_span_id = COALESCE(?, parent_span_id)"
                " WHERE step_id = ? AND is_enqueued = 0",
                (now_ms, now_ms, parent_span_id, step["step_id"]),
            )
            envelopes.append(self._new_message(db, step, now_ms, step["attempt"] + 1))
        return envelopes

    def _block_dependants(
        self, db: sqlite3.Connection, step_id: str, step_name: str, now_ms: int
    ) -> int:
        """Mark every step downstream of a dead-lettered one as unreachable."""
        frontier = [step_id]
        blocked = 0
        while frontier:
            current = frontier.pop()
            dependants = db.execute(
                "SELECT s.step_id FROM step_dependencies AS d"
                " JOIN steps AS s ON s.step_id = d.step_id"
                " WHERE d.depends_on_step_id = ? AND s.status = 'PENDING'"
                " AND s.is_enqueued = 0 AND s.blocked_by IS NULL",
                (current,),
            ).fetchall()
            for row in dependants:
                db.execute(
                    "UPDATE steps SET blocked_by = ?, updated_at_ms = ? WHERE step_id = ?",
                    (step_name, now_ms, row["step_id"]),
                )
                blocked += 1
                frontier.append(row["step_id"])
        return blocked

    def _refresh_task(
        self,
        db: sqlite3.Connection,
        task_id: str,
        now_ms: int,
        *,
        last_error: str | None = None,
        replaying: bool = False,
    ) -> str:
        """Derive the task's status from its steps and store it; return it."""
        task = db.execute(
            "SELECT status, kind, idempotency_key FROM tasks WHERE task_id = ?",
            (task_id,),
        ).fetchone()
        # The distinct states are enough to derive the task's; the index on
        # (task_id, status) keeps this cheap for a workflow of many steps.
        states = db.execute(
            "SELECT DISTINCT status FROM steps WHERE task_id = ?", (task_id,)
        ).fetchall()
        current = TaskState(task["status"])
        new = derive_task_state(
            current, [StepState(row["status"]) for row in states], replaying=replaying
        )
        if new == current and (last_error is None or current in TERMINAL_TASK_STATES):
            return new  # a finished task keeps the error and time it finished with
        check_task_change(current, new)

        result = None
        if new == TaskState.SUCCESS:
            steps = db.execute(
                "SELECT name, result_payload FROM steps WHERE task_id = ? ORDER BY name",
                (task_id,),
            ).fetchall()
            if task["kind"] == "single":
                result = steps[0]["result_payload"]
            else:
                result = json.dumps(
                    {row["name"]: row["result_payload"] for row in steps},
                    sort_keys=True,
                    ensure_ascii=False,
                )
        finished = now_ms if new in TERMINAL_TASK_STATES else None
        error = last_error if new != TaskState.SUCCESS else None
        if replaying:
            db.execute(
                "UPDATE tasks SET status = ?, result_payload = NULL, last_error = NULL,"
                " finished_at_ms = NULL, updated_at_ms = ? WHERE task_id = ?",
                (new, now_ms, task_id),
            )
        else:
            db.execute(
                "UPDATE tasks SET status = ?, result_payload = ?,"
                " last_error = CASE WHEN ? = 'SUCCESS' THEN NULL"
                "   ELSE COALESCE(?, last_error) END,"
                " finished_at_ms = ?, updated_at_ms = ? WHERE task_id = ?",
                (new, result, new, error, finished, now_ms, task_id),
            )
        self._update_idempotency(
            db, task["idempotency_key"], task_id, new, result, now_ms
        )
        return new

    def _update_idempotency(
        self,
        db: sqlite3.Connection,
        key: str,
        task_id: str,
        status: str,
        result: str | None,
        now_ms: int,
    ) -> None:
        processed = now_ms if status in TERMINAL_TASK_STATES else None
        digest = (
            hashlib.sha256(result.encode()).hexdigest() if result is not None else None
        )
        db.execute(
            "UPDATE idempotency SET status = ?, result_hash = ?,"
            " result_hash_algo = CASE WHEN ? IS NULL THEN NULL ELSE 'sha256' END,"
            " processed_at_ms = ?, updated_at_ms = ?"
            " WHERE idempotency_key = ? AND result_ref = ?",
            (status, digest, digest, processed, now_ms, key, task_id),
        )
