"""Read-only views of the store for the CLI: tasks, workflows, attempts,
dead letters, statistics and members. Output field names are camelCase."""

from __future__ import annotations

import sqlite3


def _attempt_view(row: sqlite3.Row) -> dict:
    return {
        "attempt": row["attempt"],
        "leaseEpoch": row["lease_epoch"],
        "nodeId": row["node_id"],
        "workerId": row["worker_id"],
        "spanId": row["span_id"],
        "startedAtMs": row["started_at_ms"],
        "endedAtMs": row["ended_at_ms"],
        "outcome": row["outcome"] or "RUNNING",
        "error": row["error"],
    }


def oldest_ready_at_ms(db: sqlite3.Connection, now_ms: int) -> int | None:
    """Return when the longest-waiting ready step became ready, or None.

    Queued steps count from when they were queued and retries from when
    they fell due; a retry still in its backoff, or a step waiting for its
    dependencies, is not waiting to run.
    """
    return db.execute(
        "SELECT MIN(CASE WHEN status = 'RETRYING' THEN next_retry_at_ms"
        "  ELSE COALESCE(ready_at_ms, created_at_ms) END) FROM steps"
        " WHERE (status = 'PENDING' AND is_enqueued = 1)"
        " OR (status = 'RETRYING' AND next_retry_at_ms <= ?)",
        (now_ms,),
    ).fetchone()[0]


def _in_dependency_order(
    steps: list[sqlite3.Row], depends_on: dict[str, list[str]]
) -> list[sqlite3.Row]:
    """Order steps so that each comes after its dependencies, by name within a level."""
    by_name = {step["name"]: step for step in steps}
    remaining = {
        step["name"]: set(depends_on.get(step["step_id"], [])) for step in steps
    }
    ordered = []
    while remaining:
        ready = sorted(name for name, deps in remaining.items() if not deps)
        if not ready:  # a cycle cannot be stored, but never loop forever
            ready = sorted(remaining)
        for name in ready:
            ordered.append(by_name[name])
            del remaining[name]
        for deps in remaining.values():
            deps.difference_update(ready)
    return ordered


class QueriesMixin:
    def task_view(self, task_id: str) -> dict | None:
        """Return the task, each step with its dependencies, and every attempt."""
        with self._read() as db:
            task = db.execute(
                "SELECT * FROM tasks WHERE task_id = ?", (task_id,)
            ).fetchone()
            if task is None:
                return None
            steps = db.execute(
                "SELECT * FROM steps WHERE task_id = ? ORDER BY created_at_ms, name",
                (task_id,),
            ).fetchall()
            dependencies = db.execute(
                "SELECT d.step_id, dep.name FROM step_dependencies AS d"
                " JOIN steps AS dep ON dep.step_id = d.depends_on_step_id"
                " WHERE d.task_id = ? ORDER BY dep.name",
                (task_id,),
            ).fetchall()
            attempts = db.execute(
                "SELECT * FROM step_attempts WHERE task_id = ?"
                " ORDER BY started_at_ms, lease_epoch",
                (task_id,),
            ).fetchall()
        depends_on: dict[str, list[str]] = {}
        for row in dependencies:
            depends_on.setdefault(row["step_id"], []).append(row["name"])
        steps = _in_dependency_order(steps, depends_on)
        attempts_of: dict[str, list[dict]] = {}
        for row in attempts:
            attempts_of.setdefault(row["step_id"], []).append(_attempt_view(row))
        return {
            "taskId": task["task_id"],
            "kind": task["kind"],
            "status": task["status"],
            "idempotencyKey": task["idempotency_key"],
            "traceId": task["trace_id"],
            "resultPayload": task["result_payload"],
            "lastError": task["last_error"],
            "createdAtMs": task["created_at_ms"],
            "updatedAtMs": task["updated_at_ms"],
            "finishedAtMs": task["finished_at_ms"],
            "steps": [
                {
                    "stepId": step["step_id"],
                    "name": step["name"],
                    "agentId": step["agent_id"],
                    "status": step["status"],
                    "priority": step["priority"],
                    "attempt": step["attempt"],
                    "enqueued": bool(step["is_enqueued"]),
                    "blockedBy": step["blocked_by"],
                    "dependsOn": depends_on.get(step["step_id"], []),
                    "leaseOwner": step["lease_owner"],
                    "leaseEpoch": step["lease_epoch"],
                    "nextRetryAtMs": step["next_retry_at_ms"],
                    "lastError": step["last_error"],
                    "resultPayload": step["result_payload"],
                    "spanId": step["span_id"],
                    "parentSpanId": step["parent_span_id"],
                    "createdAtMs": step["created_at_ms"],
                    "updatedAtMs": step["updated_at_ms"],
                    "attempts": attempts_of.get(step["step_id"], []),
                }
                for step in steps
            ],
        }

    def messages_of(self, task_id: str) -> list[dict]:
        with self._read() as db:
            rows = db.execute(
                "SELECT m.*, s.name AS step_name FROM messages AS m"
                " JOIN steps AS s USING (step_id) WHERE m.task_id = ?"
                " ORDER BY m.created_at_ms, m.msg_id",
                (task_id,),
            ).fetchall()
        return [
            {
                "msgId": row["msg_id"],
                "stepId": row["step_id"],
                "stepName": row["step_name"],
                "toAgent": row["to_agent"],
                "priority": row["priority"],
                "state": row["state"],
                "attempt": row["attempt"],
                "fileName": row["file_name"],
                "createdAtMs": row["created_at_ms"],
                "updatedAtMs": row["updated_at_ms"],
            }
            for row in rows
        ]

    def payload_path_of(self, step_id: str) -> str | None:
        with self._read() as db:
            row = db.execute(
                "SELECT payload_path FROM steps WHERE step_id = ?", (step_id,)
            ).fetchone()
        return row[0] if row else None

    def list_tasks(self, status: str | None, limit: int, offset: int) -> list[dict]:
        with self._read() as db:
            rows = db.execute(
                "SELECT task_id, kind, status, trace_id, last_error, created_at_ms,"
                " updated_at_ms FROM tasks WHERE (? IS NULL OR status = ?)"
                " ORDER BY updated_at_ms DESC, task_id LIMIT ? OFFSET ?",
                (status, status, limit, offset),
            ).fetchall()
        return [
            {
                "taskId": row["task_id"],
                "kind": row["kind"],
                "status": row["status"],
                "traceId": row["trace_id"],
                "lastError": row["last_error"],
                "createdAtMs": row["created_at_ms"],
                "updatedAtMs": row["updated_at_ms"],
            }
            for row in rows
        ]

    def dead_letters(self, limit: int) -> list[dict]:
        """Dead-lettered steps with the attempts that led there."""
        with self._read() as db:
            steps = db.execute(
                "SELECT s.*, t.trace_id FROM steps AS s JOIN tasks AS t USING (task_id)"
                " WHERE s.status = 'DEAD_LETTER' ORDER BY s.updated_at_ms, s.step_id"
                " LIMIT ?",
                (limit,),
            ).fetchall()
            result = []
            for step in steps:
                attempts = db.execute(
                    "SELECT * FROM step_attempts WHERE step_id = ? ORDER BY lease_epoch",
                    (step["step_id"],),
                ).fetchall()
                result.append(
                    {
                        "taskId": step["task_id"],
                        "stepId": step["step_id"],
                        "name": step["name"],
                        "agentId": step["agent_id"],
                        "priority": step["priority"],
                        "traceId": step["trace_id"],
                        "attempt": step["attempt"],
                        "lastError": step["last_error"],
                        "payloadPath": step["payload_path"],
                        "deadLetteredAtMs": step["updated_at_ms"],
                        "attempts": [_attempt_view(row) for row in attempts],
                    }
                )
        return result

    def counters(self) -> dict[tuple[str, str], float]:
        with self._read() as db:
            rows = db.execute(
                "SELECT name, labels, value FROM durable_counters"
            ).fetchall()
        return {(row["name"], row["labels"]): row["value"] for row in rows}

    def status_counts(self) -> dict[str, dict[str, int]]:
        with self._read() as db:
            tasks = db.execute(
                "SELECT status, COUNT(*) FROM tasks GROUP BY status"
            ).fetchall()
            steps = db.execute(
                "SELECT status, COUNT(*) FROM steps GROUP BY status"
            ).fetchall()
            messages = db.execute(
                "SELECT state, COUNT(*) FROM messages GROUP BY state"
            ).fetchall()
            blocked = db.execute(
                "SELECT COUNT(*) FROM steps WHERE blocked_by IS NOT NULL"
            ).fetchone()[0]
        return {
            "taskStatus": {row[0]: row[1] for row in tasks},
            "stepStatus": {row[0]: row[1] for row in steps},
            "messageState": {row[0]: row[1] for row in messages},
            "blockedSteps": blocked,
        }

    def queue_lag_ms(self, now_ms: int) -> int:
        """Age of the oldest step that is ready to run but not running.

        Only queued steps and retries that are due count, a retry from the
        time it became due. A step whose dependencies have not finished, or
        can never finish, is not lag.
        """
        with self._read() as db:
            oldest = oldest_ready_at_ms(db, now_ms)
        return 0 if oldest is None else max(0, now_ms - oldest)

    def members(self) -> list[dict]:
        with self._read() as db:
            rows = db.execute("SELECT * FROM mesh_nodes ORDER BY node_id").fetchall()
        return [
            {
                "nodeId": row["node_id"],
                "status": row["status"],
                "incarnation": row["incarnation"],
                "address": row["address"],
                "pid": row["pid"],
                "lastHeartbeatMs": row["last_heartbeat_ms"],
                "startedAtMs": row["started_at_ms"],
                "updatedAtMs": row["updated_at_ms"],
                "statusChangedAtMs": row["status_changed_at_ms"],
            }
            for row in rows
        ]

    def lease_conflict_count(self) -> int:
        with self._read() as db:
            return db.execute("SELECT COUNT(*) FROM lease_conflicts").fetchone()[0]

    def successful_attempt_counts(self) -> dict[str, int]:
        """Successful attempts per step; more than one means a double execution."""
        with self._read() as db:
            rows = db.execute(
                "SELECT step_id, COUNT(*) FROM step_attempts WHERE outcome = 'SUCCESS'"
                " GROUP BY step_id"
            ).fetchall()
        return {row[0]: row[1] for row in rows}
