"""Lease conflicts and the ownership timeline, for operators.

A lease conflict is a fenced write that matched no row: the writer's token
or epoch was no longer the step's. The row keeps what the writer expected
and what the step actually held at that moment, which is usually enough to
tell a slow owner from a split brain.
"""

from __future__ import annotations

import sqlite3
from collections import Counter

HOUR_MS = 3_600_000


def _conflict_view(row: sqlite3.Row) -> dict:
    return {
        "id": row["id"],
        "eventType": row["event_type"],
        "taskId": row["task_id"],
        "stepId": row["step_id"],
        "workerId": row["worker_id"],
        "expectedStatus": row["expected_status"],
        "expectedLeaseOwner": row["expected_lease_owner"],
        "expectedLeaseToken": row["expected_lease_token"],
        "expectedLeaseEpoch": row["expected_lease_epoch"],
        "actualStatus": row["actual_status"],
        "actualLeaseOwner": row["actual_lease_owner"],
        "actualLeaseToken": row["actual_lease_token"],
        "actualLeaseEpoch": row["actual_lease_epoch"],
        "occurredAtMs": row["occurred_at_ms"],
    }


class ConflictsMixin:
    def lease_conflicts(self, since_ms: int, limit: int) -> list[dict]:
        with self._read() as db:
            rows = db.execute(
                "SELECT * FROM lease_conflicts WHERE occurred_at_ms >= ?"
                " ORDER BY occurred_at_ms DESC, id DESC LIMIT ?",
                (since_ms, limit),
            ).fetchall()
        return [_conflict_view(row) for row in rows]

    def lease_report(self, now_ms: int, hours: int, limit: int) -> dict:
        """Aggregate the conflicts of the last `hours` hours (snake_case keys)."""
        rows = self.lease_conflicts(now_ms - hours * HOUR_MS, limit)
        by_type = Counter(row["eventType"] for row in rows)
        by_step = Counter(row["stepId"] for row in rows)
        by_worker = Counter(row["workerId"] or "_unknown" for row in rows)
        return {
            "generated_at_ms": now_ms,
            "window_hours": hours,
            "rows": len(rows),
            "by_event_type": dict(sorted(by_type.items())),
            "top_steps": dict(by_step.most_common(10)),
            "top_workers": dict(by_worker.most_common(10)),
            "sample": rows[:20],
        }

    def claim_report_slot(
        self, kind: str, bucket: str, node_id: str, now_ms: int
    ) -> bool:
        """True for exactly one caller per (kind, bucket) across all processes."""
        with self._tx() as db:
            inserted = db.execute(
                "INSERT OR IGNORE INTO report_runs(kind, bucket, node_id, created_at_ms)"
                " VALUES (?, ?, ?, ?)",
                (kind, bucket, node_id, now_ms),
            ).rowcount
        return inserted == 1

    def ownership_events(self, since_ms: int, limit: int) -> list[dict]:
        """Claims, hand-backs, reclaims and conflicts, newest first."""
        with self._read() as db:
            claims = db.execute(
                "SELECT * FROM step_attempts WHERE started_at_ms >= ?"
                " ORDER BY started_at_ms DESC LIMIT ?",
                (since_ms, limit),
            ).fetchall()
            endings = db.execute(
                "SELECT * FROM step_attempts WHERE ended_at_ms >= ?"
                " AND outcome IN ('ABANDONED', 'RELEASED', 'CANCELLED', 'CONFLICT')"
                " ORDER BY ended_at_ms DESC LIMIT ?",
                (since_ms, limit),
            ).fetchall()
        events = [
            {
                "source": "attempts",
                "action": "claimed",
                "nodeId": row["node_id"],
                "taskId": row["task_id"],
                "stepId": row["step_id"],
                "leaseEpoch": row["lease_epoch"],
                "occurredAtMs": row["started_at_ms"],
                "details": {"attempt": row["attempt"], "workerId": row["worker_id"]},
            }
            for row in claims
        ]
        events += [
            {
                "source": "attempts",
                "action": {
                    "ABANDONED": "reclaimed",
                    "RELEASED": "released",
                    "CANCELLED": "cancelled",
                    "CONFLICT": "refused",
                }[row["outcome"]],
                "nodeId": row["node_id"],
                "taskId": row["task_id"],
                "stepId": row["step_id"],
                "leaseEpoch": row["lease_epoch"],
                "occurredAtMs": row["ended_at_ms"],
                "details": {"attempt": row["attempt"], "error": row["error"]},
            }
            for row in endings
        ]
        for conflict in self.lease_conflicts(since_ms, limit):
            events.append(
                {
                    "source": "lease_conflicts",
                    "action": conflict["eventType"],
                    "nodeId": conflict["workerId"],
                    "taskId": conflict["taskId"],
                    "stepId": conflict["stepId"],
                    "leaseEpoch": conflict["expectedLeaseEpoch"],
                    "occurredAtMs": conflict["occurredAtMs"],
                    "details": {
                        "expectedStatus": conflict["expectedStatus"],
                        "expectedLeaseEpoch": conflict["expectedLeaseEpoch"],
                        "actualStatus": conflict["actualStatus"],
                        "actualLeaseOwner": conflict["actualLeaseOwner"],
                        "actualLeaseEpoch": conflict["actualLeaseEpoch"],
                    },
                }
            )
        events.sort(key=lambda item: item["occurredAtMs"], reverse=True)
        return events[:limit]

    def purge_conflicts(
        self, before_ms: int, now_ms: int, dry_run: bool = False
    ) -> int:
        """Delete conflict rows and settings history older than `before_ms`.

        Report claims are kept for two days whatever the retention, so a
        short retention never makes a node write the current hour again.
        Returns the number of conflict rows deleted (or that would be).
        """
        with self._read() as db:
            count = db.execute(
                "SELECT COUNT(*) FROM lease_conflicts WHERE occurred_at_ms < ?",
                (before_ms,),
            ).fetchone()[0]
        if dry_run:
            return count
        claims_before = min(before_ms, now_ms - 2 * 24 * HOUR_MS)
        with self._tx() as db:
            db.execute(
                "DELETE FROM lease_conflicts WHERE occurred_at_ms < ?", (before_ms,)
            )
            db.execute(
                "DELETE FROM settings_history WHERE loaded_at_ms < ?", (before_ms,)
            )
            db.execute(
                "DELETE FROM report_runs WHERE created_at_ms < ?", (claims_before,)
            )
        return count
