"""Operator commands of a runtime: cancel, replay, purge, export, reports,
health and statistics.

`OperatorMixin` is part of `relaymesh.runtime.Runtime`; it is a module of
its own because these commands are what an operator runs by hand, while
`relaymesh/runtime.py` contains what nodes and workers run in their loops.
Each method is blocking, like the rest of the runtime.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path

from relaymesh.bus import write_atomically
from relaymesh.errors import NotFoundError
from relaymesh.observability.logs import event
from relaymesh.store import CancelResult
from relaymesh.store._operations import DAY_MS, PurgeResult, ReplayResult

log = logging.getLogger("relaymesh.runtime")


def unlink_all(paths: list[Path]) -> None:
    for path in paths:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


class OperatorMixin:
    def cancel(self, task_id: str, mode: str, reason: str) -> CancelResult:
        """Cancel a task and delete its queued bus files (best effort)."""
        result = self.store.cancel_task(task_id, mode, reason, self.clock_ms())
        for priority, name in result.queued_files:
            unlink_all([self.layout.inbox_tier(priority) / name])
        if result.cancelled:
            event(
                log,
                logging.INFO,
                "task.cancelled",
                task_id=task_id,
                mode=mode,
                steps=result.step_rows,
                still_running=len(result.still_running),
            )
        if not result.cancelled:
            return result
        self.record(
            "task.cancel",
            f"task/{task_id}",
            "cancelled",
            task_id=task_id,
            trace_id=result.trace_id,
            details={
                "mode": mode,
                "reason": reason,
                "step_rows": result.step_rows,
                "message_rows": result.message_rows,
                "still_running": result.still_running,
            },
        )
        return result

    def replay(self, task_id: str, dry_run: bool = False) -> ReplayResult:
        result = self.store.replay_task(task_id, self.clock_ms(), dry_run=dry_run)
        self.bus.enqueue_many(result.envelopes)
        if result.replayed and not dry_run:
            self.record(
                "dead.replay",
                f"task/{task_id}",
                "replayed",
                task_id=task_id,
                details={"steps": result.steps},
            )
        return result

    def replay_batch(
        self, status: str, limit: int, dry_run: bool = False
    ) -> list[ReplayResult]:
        return [
            self.replay(task_id, dry_run=dry_run)
            for task_id in self.store.tasks_with_status(status, limit)
        ]

    def purge(
        self,
        done_retention_days: float,
        dead_retention_days: float,
        idempotency_ttl_days: float,
        dry_run: bool = False,
        conflict_retention_days: float = 30,
    ) -> dict:
        """Delete finished tasks, old bus files and old conflict rows."""
        now = self.clock_ms()
        conflicts = self.store.purge_conflicts(
            now - int(conflict_retention_days * DAY_MS), now, dry_run=dry_run
        )
        result: PurgeResult = self.store.purge(
            now,
            int(done_retention_days * DAY_MS),
            int(dead_retention_days * DAY_MS),
            int(idempotency_ttl_days * DAY_MS),
            dry_run=dry_run,
        )
        files = self._old_bus_files(now, done_retention_days, dead_retention_days)
        meta_files = [
            self.layout.meta / f"{msg_id}.meta.json" for msg_id in result.msg_ids
        ]
        old_files = files["done"] + files["dead"] + files["retry"]
        reports = self._old_reports(now, conflict_retention_days)
        deleted = (
            result.tasks
            + result.idempotency_rows
            + conflicts
            + len(old_files)
            + len(reports)
        )
        if not dry_run:
            unlink_all([Path(path) for path in result.payload_paths])
            unlink_all(meta_files)
            unlink_all(old_files)
            unlink_all(reports)
        if deleted and not dry_run:
            self.record(
                "storage.purge",
                "runtime/storage",
                "ok",
                details={
                    "tasks": result.tasks,
                    "idempotency_rows": result.idempotency_rows,
                    "lease_conflict_rows": conflicts,
                    "bus_files": len(old_files),
                    "done_retention_days": done_retention_days,
                    "dead_retention_days": dead_retention_days,
                },
            )
        return {
            "dryRun": dry_run,
            "tasksPurged": result.tasks,
            "payloadFilesPurged": len(result.payload_paths),
            "metaFilesPurged": len(meta_files),
            "idempotencyRowsPurged": result.idempotency_rows,
            "doneFilesPurged": len(files["done"]),
            "deadFilesPurged": len(files["dead"]),
            "retryFilesPurged": len(files["retry"]),
            "leaseConflictRowsPurged": conflicts,
            "reportFilesPurged": len(reports),
        }

    def _old_bus_files(
        self, now_ms: int, done_days: float, dead_days: float
    ) -> dict[str, list[Path]]:
        def older(folder: Path, days: float) -> list[Path]:
            limit = (now_ms - days * DAY_MS) / 1000
            if not folder.exists():
                return []
            return [
                path
                for path in folder.rglob("*.meta.json")
                if path.stat().st_mtime < limit
            ]

        return {
            "done": older(self.layout.done, done_days),
            "dead": older(self.layout.dead, dead_days),
            "retry": older(self.layout.retry, dead_days),
        }

    def _old_reports(self, now_ms: int, days: float) -> list[Path]:
        limit = (now_ms - days * DAY_MS) / 1000
        return [
            path
            for path in self.layout.reports.glob("lease-conflicts-*.json")
            if path.stat().st_mtime < limit
        ]

    def export_task(self, task_id: str) -> dict:
        """Build a self-contained JSON snapshot of a task (format relaymesh.task-export.v1)."""
        view = self.store.task_view(task_id)
        if view is None:
            raise NotFoundError(f"task {task_id!r} not found")
        payloads = {}
        for step in view["steps"]:
            path = Path(self.store.payload_path_of(step["stepId"]) or "")
            try:
                payloads[step["name"]] = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                payloads[step["name"]] = None
        audit_rows = (
            [
                json.loads(line)
                for line in self.audit.query(task_id=task_id, limit=100_000)
            ]
            if self.audit is not None
            else []
        )
        audit_rows.reverse()  # oldest first, like the rest of the document
        document = {
            "format": "relaymesh.task-export.v1",
            "exportedAtMs": self.clock_ms(),
            "task": view,
            "messages": self.store.messages_of(task_id),
            "payloads": payloads,
            "auditEvents": audit_rows,
        }
        self.record(
            "task.export",
            f"task/{task_id}",
            "ok",
            task_id=task_id,
            trace_id=view["traceId"],
            details={"steps": len(view["steps"]), "audit_events": len(audit_rows)},
        )
        return document

    def write_lease_report(self, path: Path, hours: int, limit: int) -> dict:
        """Write the conflict aggregate of the last `hours` hours to `path`."""
        now = self.clock_ms()
        report = self.store.lease_report(now, hours, limit)
        report["generated_at"] = time.strftime(
            "%Y-%m-%dT%H:%M:%SZ", time.gmtime(now / 1000)
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, (json.dumps(report, indent=2) + "\n").encode("utf-8"))
        return report

    def write_hourly_lease_report(self, node_id: str) -> Path | None:
        """Write this hour's report unless another process of the root did.

        The hour is claimed with a row in `report_runs`, so a root gets one
        report per UTC hour however many nodes run on it.
        """
        now = self.clock_ms()
        bucket = time.strftime("%Y%m%d%H", time.gmtime(now / 1000))
        if not self.store.claim_report_slot("lease-conflicts", bucket, node_id, now):
            return None
        path = self.layout.reports / f"lease-conflicts-{bucket}.json"
        report = self.write_lease_report(path, 24, 5000)
        event(log, logging.INFO, "lease_report.written", path=path, rows=report["rows"])
        return path

    def health(self, node_id: str | None = None) -> dict:
        """Check whether this root (and node) is fit to work, check by check."""
        now = self.clock_ms()
        checks: dict[str, dict] = {}
        try:
            self.store.counters()
            checks["store"] = {"ok": True}
        except Exception as error:  # any failure to read means unhealthy
            checks["store"] = {"ok": False, "error": str(error)}

        checks["configuration"] = {
            "ok": not self.configuration_errors,
            "errors": self.configuration_errors,
        }

        missing = [
            str(folder) for folder in self.layout.folders() if not folder.is_dir()
        ]
        checks["folders"] = {"ok": not missing, "missing": missing}

        free = shutil.disk_usage(self.layout.root).free
        minimum = self.settings.min_free_disk_bytes
        checks["disk"] = {
            "ok": minimum == 0 or free >= minimum,
            "freeBytes": free,
            "minFreeBytes": minimum,
        }

        if node_id is not None:
            row = self.store.node_row(node_id)
            age = None if row is None else now - row["last_heartbeat_ms"]
            checks["member"] = {
                "ok": row is not None
                and row["status"] == "ALIVE"
                and age < self.settings.lease_timeout_ms,
                "nodeId": node_id,
                "status": row["status"] if row else "UNKNOWN",
                "heartbeatAgeMs": age,
            }

        lag = self.store.queue_lag_ms(now) if checks["store"]["ok"] else None
        target = self.settings.slo_queue_lag_target_ms
        checks["queueLag"] = {
            "ok": lag is not None and lag <= target,
            "lagMs": lag,
            "targetMs": target,
        }
        return {
            "ok": all(check["ok"] for check in checks.values()),
            "checks": checks,
            "checkedAtMs": now,
        }

    def stats(self) -> dict:
        counts = self.store.status_counts()
        depths = self.bus.depths()
        counters = self.store.counters()

        def total(name: str) -> int:
            return int(
                sum(value for (key, _), value in counters.items() if key == name)
            )

        return {
            **counts,
            "inboxHigh": depths["high"],
            "inboxNormal": depths["normal"],
            "inboxLow": depths["low"],
            "processingMetaFiles": depths["processing"],
            "deadMetaFiles": depths["dead"],
            "retryMetaFiles": depths["retry"],
            "queueLagMs": self.store.queue_lag_ms(self.clock_ms()),
            "retriesScheduledTotal": total("retries_scheduled_total"),
            "deadLetteredTotal": total("dead_lettered_total"),
            "leasesReclaimedTotal": total("leases_reclaimed_total"),
            "leaseConflictTotal": total("lease_conflicts_total"),
            "lowStarvationCount": total("low_starvation_count"),
        }
