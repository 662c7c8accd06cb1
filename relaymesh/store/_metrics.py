"""The read behind a metrics scrape: one consistent snapshot of the store.

A scrape reads a dozen aggregates (counters, status counts, queue ages,
duration distributions). Read one by one in autocommit mode, they could
straddle a commit and disagree: a step counted both as queued and as
running, a task counted as submitted but missing from every status. So
`metrics_snapshot` runs every query inside one deferred read transaction,
on a connection opened for that snapshot alone. In WAL mode such a
transaction reads the database as it was at its first read and never
blocks a writer, and the store's shared connection stays free for the
node's claims and commits while the scrape runs.

The method only reads. It knows what to aggregate (which rows, which
window, how many recent attempts) but nothing about metric names, types or
units beyond milliseconds: turning the snapshot into Prometheus families is
the job of `relaymesh/observability/metrics.py`.

Duration distributions are bucketed in SQL rather than returned row by
row, so a scrape of a busy root moves a few dozen rows, not one per attempt
of the last hour. Tasks are filtered through their `updated_at_ms` index.

The index on `step_attempts(ended_at_ms)` bounds the window and the
recent-attempt sample to the rows they return, so a scrape does not slow
down as attempts accumulate.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import pairwise

from relaymesh.fsm import AttemptOutcome
from relaymesh.store._queries import oldest_ready_at_ms
from relaymesh.store.connection import open_connection

__all__ = ["TIMED_OUTCOMES", "DurationCounts", "MetricsMixin", "MetricsSnapshot"]

# Attempts whose end time is when the agent stopped running. An ABANDONED
# attempt ends when a reclaimer noticed the lost lease, a RELEASED one when
# its node shut down and a CANCELLED one when an operator cancelled it, so
# their durations would measure those events rather than the agent.
TIMED_OUTCOMES = (
    AttemptOutcome.SUCCESS,
    AttemptOutcome.FAILED,
    AttemptOutcome.TIMEOUT,
    AttemptOutcome.CONFLICT,
)


@dataclass(frozen=True)
class DurationCounts:
    """Durations sorted into buckets by upper bound, in milliseconds.

    `bucket_counts[i]` counts the durations `d` with
    `bounds[i - 1] < d <= bounds[i]`, where `bounds` are the bucket bounds
    of the snapshot. The last entry counts those above every bound, so the
    tuple is one longer than the bounds. Counts are not cumulative.
    """

    bucket_counts: tuple[int, ...]
    sum_ms: int

    @property
    def count(self) -> int:
        return sum(self.bucket_counts)


@dataclass(frozen=True)
class MetricsSnapshot:
    """Aggregates of one read transaction, taken at `taken_at_ms`."""

    taken_at_ms: int
    window_ms: int
    bucket_bounds_ms: tuple[int, ...]
    # (name, label value) -> value, straight from durable_counters.
    counters: Mapping[tuple[str, str], float]
    task_status: Mapping[str, int]
    step_status: Mapping[str, int]
    message_state: Mapping[str, int]
    member_status: Mapping[str, int]
    # Steps queued on the bus and not yet claimed, by lower-case priority.
    ready_steps_by_priority: Mapping[str, int]
    running_steps: int
    queue_lag_ms: int
    oldest_queued_message_age_ms: int
    # Tasks now DEAD_LETTER whose last change falls inside the window.
    tasks_dead_lettered_in_window: int
    # Run time of the most recently ended timed attempts, newest first.
    recent_attempt_durations_ms: tuple[int, ...]
    # Run time of timed attempts that ended inside the window, by agent id.
    attempt_durations_by_agent: Mapping[str, DurationCounts]
    # Creation to finish of tasks that finished inside the window.
    task_latencies: DurationCounts


def _check_arguments(
    window_ms: int, bucket_bounds_ms: Sequence[int], recent_attempts: int
) -> None:
    if window_ms <= 0:
        raise ValueError(f"window_ms must be positive, got {window_ms}")
    if recent_attempts < 1:
        raise ValueError(f"recent_attempts must be at least 1, got {recent_attempts}")
    bounds = list(bucket_bounds_ms)
    if not bounds or bounds[0] <= 0 or any(b <= a for a, b in pairwise(bounds)):
        raise ValueError(
            f"bucket_bounds_ms must be positive and strictly increasing, got {bounds}"
        )


def _bucket_expression(expression: str, bound_count: int) -> str:
    """Return SQL giving the index of the first bucket whose bound is >= value."""
    cases = " ".join(f"WHEN {expression} <= ? THEN {i}" for i in range(bound_count))
    return f"CASE {cases} ELSE {bound_count} END"


def _durations(
    db: sqlite3.Connection,
    rows_sql: str,
    params: Sequence[object],
    bounds_ms: Sequence[int],
) -> dict[str, DurationCounts]:
    """Bucket the (label, duration_ms) rows of `rows_sql` per label."""
    bucket = _bucket_expression("duration_ms", len(bounds_ms))
    rows = db.execute(
        f"SELECT label, {bucket} AS bucket, COUNT(*), SUM(duration_ms)"
        f" FROM ({rows_sql}) GROUP BY label, bucket",
        (*bounds_ms, *params),
    ).fetchall()
    counts: dict[str, list[int]] = {}
    sums: dict[str, int] = {}
    for label, index, count, total in rows:
        counts.setdefault(label, [0] * (len(bounds_ms) + 1))[index] += count
        sums[label] = sums.get(label, 0) + total
    return {
        label: DurationCounts(tuple(values), sums[label])
        for label, values in counts.items()
    }


def _group_counts(db: sqlite3.Connection, sql: str) -> dict[str, int]:
    return {row[0]: row[1] for row in db.execute(sql).fetchall()}


class MetricsMixin:
    @contextmanager
    def _read_snapshot(self) -> Iterator[sqlite3.Connection]:
        """Run the block in one read transaction on a connection of its own.

        The store's shared connection is serialised by a lock, so a slow
        scrape on it would hold up every claim and commit of a node. A
        connection per snapshot costs the PRAGMA checks of opening it, which
        is small next to the scans below.
        """
        db = open_connection(self.database)
        try:
            db.execute("BEGIN DEFERRED")
            yield db
            db.execute("COMMIT")
        finally:
            db.close()

    def metrics_snapshot(
        self,
        now_ms: int,
        *,
        window_ms: int,
        bucket_bounds_ms: Sequence[int],
        recent_attempts: int,
    ) -> MetricsSnapshot:
        """Read every aggregate a scrape exposes in one read transaction.

        `window_ms` bounds the duration distributions and the dead-letter
        count to the last `window_ms` before `now_ms`. `recent_attempts` is
        how many of the most recently ended attempts the latency sample
        holds. Raises ValueError on a non-positive window or sample size, or
        bounds that are not positive and strictly increasing.
        """
        _check_arguments(window_ms, bucket_bounds_ms, recent_attempts)
        bounds = tuple(bucket_bounds_ms)
        since_ms = now_ms - window_ms
        timed = tuple(str(outcome) for outcome in TIMED_OUTCOMES)
        timed_marks = ", ".join("?" for _ in timed)

        with self._read_snapshot() as db:
            counters = {
                (row[0], row[1]): row[2]
                for row in db.execute(
                    "SELECT name, labels, value FROM durable_counters"
                )
            }
            task_status = _group_counts(
                db, "SELECT status, COUNT(*) FROM tasks GROUP BY status"
            )
            step_status = _group_counts(
                db, "SELECT status, COUNT(*) FROM steps GROUP BY status"
            )
            message_state = _group_counts(
                db, "SELECT state, COUNT(*) FROM messages GROUP BY state"
            )
            member_status = _group_counts(
                db, "SELECT status, COUNT(*) FROM mesh_nodes GROUP BY status"
            )
            ready = _group_counts(
                db,
                "SELECT LOWER(priority), COUNT(*) FROM steps WHERE status = 'PENDING'"
                " AND is_enqueued = 1 AND blocked_by IS NULL GROUP BY LOWER(priority)",
            )

            oldest_ready = oldest_ready_at_ms(db, now_ms)
            oldest_message = db.execute(
                "SELECT MIN(created_at_ms) FROM messages WHERE state = 'QUEUED'"
            ).fetchone()[0]
            dead_lettered = db.execute(
                "SELECT COUNT(*) FROM tasks"
                " WHERE status = 'DEAD_LETTER' AND updated_at_ms >= ?",
                (since_ms,),
            ).fetchone()[0]

            # Clock steps between nodes can make a duration negative: count
            # such an attempt as instant rather than drop it.
            recent = db.execute(
                "SELECT MAX(0, ended_at_ms - started_at_ms) FROM step_attempts"
                f" WHERE ended_at_ms IS NOT NULL AND outcome IN ({timed_marks})"
                " ORDER BY ended_at_ms DESC, step_id, lease_epoch LIMIT ?",
                (*timed, recent_attempts),
            ).fetchall()
            by_agent = _durations(
                db,
                "SELECT s.agent_id AS label,"
                " MAX(0, a.ended_at_ms - a.started_at_ms) AS duration_ms"
                " FROM step_attempts AS a JOIN steps AS s USING (step_id)"
                f" WHERE a.ended_at_ms >= ? AND a.outcome IN ({timed_marks})",
                (since_ms, *timed),
                bounds,
            )
            task_latencies = _durations(
                db,
                "SELECT '' AS label,"
                " MAX(0, finished_at_ms - created_at_ms) AS duration_ms FROM tasks"
                " WHERE updated_at_ms >= ? AND finished_at_ms >= ?",
                (since_ms, since_ms),
                bounds,
            )

        def age(oldest: int | None) -> int:
            return 0 if oldest is None else max(0, now_ms - oldest)

        empty = DurationCounts((0,) * (len(bounds) + 1), 0)
        return MetricsSnapshot(
            taken_at_ms=now_ms,
            window_ms=window_ms,
            bucket_bounds_ms=bounds,
            counters=counters,
            task_status=task_status,
            step_status=step_status,
            message_state=message_state,
            member_status=member_status,
            ready_steps_by_priority=ready,
            running_steps=step_status.get("RUNNING", 0),
            queue_lag_ms=age(oldest_ready),
            oldest_queued_message_age_ms=age(oldest_message),
            tasks_dead_lettered_in_window=dead_lettered,
            recent_attempt_durations_ms=tuple(row[0] for row in recent),
            attempt_durations_by_agent=by_agent,
            task_latencies=task_latencies.get("", empty),
        )
