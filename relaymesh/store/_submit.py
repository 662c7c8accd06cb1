"""Submitting tasks and workflows, with idempotency keys."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from relaymesh.bus import Envelope
from relaymesh.store.records import SubmitResult


@dataclass(frozen=True)
class PreparedStep:
    step_id: str
    name: str
    agent_id: str
    priority: str  # "HIGH", "NORMAL" or "LOW"
    payload_path: str
    depends_on: tuple[str, ...]  # step ids


@dataclass(frozen=True)
class PreparedTask:
    task_id: str
    kind: str  # "single" or "workflow"
    idempotency_key: str
    trace_id: str
    steps: tuple[PreparedStep, ...]


class SubmitMixin:
    def find_idempotent(
        self, key: str, now_ms: int, ttl_ms: int
    ) -> SubmitResult | None:
        """Return the live task recorded under `key`, or None if there is none."""
        with self._read() as db:
            return self._lookup_key(db, key, now_ms, ttl_ms)

    def _lookup_key(
        self, db: sqlite3.Connection, key: str, now_ms: int, ttl_ms: int
    ) -> SubmitResult | None:
        row = db.execute(
            "SELECT i.processed_at_ms, t.task_id, t.status, t.result_payload, t.trace_id"
            " FROM idempotency AS i LEFT JOIN tasks AS t ON t.task_id = i.result_ref"
            " WHERE i.idempotency_key = ?",
            (key,),
        ).fetchone()
        if row is None or row["task_id"] is None:
            return None
        processed = row["processed_at_ms"]
        if processed is not None and processed < now_ms - ttl_ms:
            return None  # expired: the key may be used again
        return SubmitResult(
            task_id=row["task_id"],
            deduplicated=True,
            status=row["status"],
            result=row["result_payload"],
            trace_id=row["trace_id"],
        )

    def insert_task(self, task: PreparedTask, now_ms: int, ttl_ms: int) -> SubmitResult:
        """Store a new task and enqueue its ready steps, unless the key is live.

        A record under the same key that expired (or whose task was purged) is
        replaced, so the key can be used again after the TTL.
        """
        with self._tx() as db:
            existing = self._lookup_key(db, task.idempotency_key, now_ms, ttl_ms)
            if existing is not None:
                return existing
            db.execute(
                "DELETE FROM idempotency WHERE idempotency_key = ?",
                (task.idempotency_key,),
            )
            db.execute(
                "INSERT INTO tasks(task_id, kind, status, idempotency_key, trace_id,"
                " created_at_ms, updated_at_ms) VALUES (?, ?, 'PENDING', ?, ?, ?, ?)",
                (
                    task.task_id,
                    task.kind,
                    task.idempotency_key,
                    task.trace_id,
                    now_ms,
                    now_ms,
                ),
            )
            for step in task.steps:
                db.execute(
                    "INSERT INTO steps(step_id, task_id, name, agent_id, priority,"
                    " payload_path, status, created_at_ms, updated_at_ms)"
                    " VALUES (?, ?, ?, ?, ?, ?, 'PENDING', ?, ?)",
                    (
                        step.step_id,
                        task.task_id,
                        step.name,
                        step.agent_id,
                        step.priority,
                        step.payload_path,
                        now_ms,
                        now_ms,
                    ),
                )
            for step in task.steps:
                for dependency in step.depends_on:
                    db.execute(
                        "INSERT INTO step_dependencies(task_id, step_id,"
                        " depends_on_step_id, created_at_ms) VALUES (?, ?, ?, ?)",
                        (task.task_id, step.step_id, dependency, now_ms),
                    )
            db.execute(
                "INSERT INTO idempotency(idempotency_key, status, result_ref,"
                " created_at_ms, updated_at_ms) VALUES (?, 'PENDING', ?, ?, ?)",
                (task.idempotency_key, task.task_id, now_ms, now_ms),
            )
            envelopes: list[Envelope] = self._dispatch_ready_steps(
                db, task.task_id, now_ms
            )
            self._bump_counter(db, "tasks_submitted_total", now_ms, labels=task.kind)
        return SubmitResult(
            task_id=task.task_id,
            deduplicated=False,
            status="PENDING",
            result=None,
            envelopes=tuple(envelopes),
            trace_id=task.trace_id,
        )
