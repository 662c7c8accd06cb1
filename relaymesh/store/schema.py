"""The SQLite schema of a RelayMesh root.

Table and column names follow the reference implementation so that operators'
queries keep working; the additions are `step_attempts` (every attempt of a
step, kept for operators), `heartbeat_at_ms` (lease renewal, separate from
`updated_at_ms`), `blocked_by` (a step that can never run because a dependency
was dead-lettered) and `durable_counters` (counters that survive restarts).

`tasks.idempotency_key` is indexed but not unique: the `idempotency` table is
the only authority on duplicates, so a key whose record expired can be used
again for a new task.
"""

from __future__ import annotations

SCHEMA_VERSION = 1

STATEMENTS = (
    """
    CREATE TABLE IF NOT EXISTS tasks (
        task_id TEXT PRIMARY KEY,
        namespace TEXT NOT NULL DEFAULT 'default',
        kind TEXT NOT NULL DEFAULT 'single',
        status TEXT NOT NULL,
        idempotency_key TEXT NOT NULL,
        principal_id TEXT NOT NULL DEFAULT 'principal:cli',
        trace_id TEXT NOT NULL,
        result_payload TEXT,
        last_error TEXT,
        created_at_ms INTEGER NOT NULL,
        updated_at_ms INTEGER NOT NULL,
        finished_at_ms INTEGER
    )
    """,
    "CREATE INDEX IF NOT EXISTS idx_tasks_status_updated"
    " ON tasks(status, updated_at_ms)",
    "CREATE INDEX IF NOT EXISTS idx_tasks_idempotency_key ON tasks(idempotency_key)",
    "CREATE INDEX IF NOT EXISTS idx_tasks_updated ON tasks(updated_at_ms)",
    """
    CREATE TABLE IF NOT EXISTS steps (
        step_id TEXT PRIMARY KEY,
        namespace TEXT NOT NULL DEFAULT 'default',
        task_id TEXT NOT NULL REFERENCES tasks(task_id) ON DELETE CASCADE,
        name TEXT NOT NULL,
        agent_id TEXT NOT NULL,
        priority TEXT NOT NULL DEFAULT 'NORMAL',
        payload_path TEXT NOT NULL,
        is_enqueued INTEGER NOT NULL DEFAULT 0,
        blocked_by TEXT,
        result_payload TEXT,
        last_error TEXT,
        status TEXT NOT NULL,
        attempt INTEGER NOT NULL DEFAULT 0,
        next_retry_at_ms INTEGER,
        lease_owner TEXT,
        lease_token TEXT,
        lease_epoch INTEGER NOT NULL DEFAULT 0,
        heartbeat_at_ms INTEGER,
        span_id TEXT,
        parent_span_id TEXT,
        ready_at_ms INTEGER,
        created_at_ms INTEGER NOT NULL,
        updated_at_ms INTEGER NOT NULL
    )
    """,
    "CREATE INDEX IF NOT EXISTS idx_steps_status_next_retry"
    " ON steps(status, next_retry_at_ms)",
    "CREATE INDEX IF NOT EXISTS idx_steps_task_status ON steps(task_id, status)",
    "CREATE INDEX IF NOT EXISTS idx_steps_lease_owner ON steps(lease_owner, status)",
    """
    CREATE TABLE IF NOT EXISTS step_dependencies (
        namespace TEXT NOT NULL DEFAULT 'default',
        task_id TEXT NOT NULL REFERENCES tasks(task_id) ON DELETE CASCADE,
        step_id TEXT NOT NULL REFERENCES steps(step_id) ON DELETE CASCADE,
        depends_on_step_id TEXT NOT NULL REFERENCES steps(step_id) ON DELETE CASCADE,
        created_at_ms INTEGER NOT NULL,
        PRIMARY KEY (step_id, depends_on_step_id)
    )
    """,
    "CREATE INDEX IF NOT EXISTS idx_step_dep_depends_on"
    " ON step_dependencies(depends_on_step_id)",
    "CREATE INDEX IF NOT EXISTS idx_step_dep_task ON step_dependencies(task_id)",
    """
    CREATE TABLE IF NOT EXISTS step_attempts (
        step_id TEXT NOT NULL REFERENCES steps(step_id) ON DELETE CASCADE,
        lease_epoch INTEGER NOT NULL,
        task_id TEXT NOT NULL,
        attempt INTEGER NOT NULL,
        node_id TEXT NOT NULL,
        worker_id TEXT NOT NULL,
        span_id TEXT NOT NULL,
        msg_id TEXT NOT NULL,
        started_at_ms INTEGER NOT NULL,
        ended_at_ms INTEGER,
        outcome TEXT,
        error TEXT,
        PRIMARY KEY (step_id, lease_epoch)
    )
    """,
    "CREATE INDEX IF NOT EXISTS idx_step_attempts_task ON step_attempts(task_id)",
    "CREATE INDEX IF NOT EXISTS idx_step_attempts_ended ON step_attempts(ended_at_ms)",
    """
    CREATE TABLE IF NOT EXISTS messages (
        msg_id TEXT PRIMARY KEY,
        namespace TEXT NOT NULL DEFAULT 'default',
        task_id TEXT NOT NULL REFERENCES tasks(task_id) ON DELETE CASCADE,
        step_id TEXT NOT NULL REFERENCES steps(step_id) ON DELETE CASCADE,
        from_agent TEXT NOT NULL DEFAULT 'system',
        to_agent TEXT NOT NULL,
        priority TEXT NOT NULL,
        state TEXT NOT NULL,
        attempt INTEGER NOT NULL,
        file_name TEXT NOT NULL,
        payload_path TEXT NOT NULL,
        created_at_ms INTEGER NOT NULL,
        updated_at_ms INTEGER NOT NULL
    )
    """,
    "CREATE INDEX IF NOT EXISTS idx_messages_state_created"
    " ON messages(state, created_at_ms)",
    "CREATE INDEX IF NOT EXISTS idx_messages_step ON messages(step_id)",
    "CREATE INDEX IF NOT EXISTS idx_messages_task ON messages(task_id)",
    """
    CREATE TABLE IF NOT EXISTS idempotency (
        idempotency_key TEXT PRIMARY KEY,
        namespace TEXT NOT NULL DEFAULT 'default',
        status TEXT NOT NULL,
        result_ref TEXT NOT NULL,
        result_hash TEXT,
        result_hash_algo TEXT,
        processed_at_ms INTEGER,
        created_at_ms INTEGER NOT NULL,
        updated_at_ms INTEGER NOT NULL
    )
    """,
    "CREATE INDEX IF NOT EXISTS idx_idempotency_processed_at"
    " ON idempotency(processed_at_ms)",
    """
    CREATE TABLE IF NOT EXISTS mesh_nodes (
        node_id TEXT PRIMARY KEY,
        status TEXT NOT NULL,
        incarnation INTEGER NOT NULL DEFAULT 0,
        address TEXT,
        pid INTEGER,
        last_heartbeat_ms INTEGER NOT NULL,
        started_at_ms INTEGER,
        updated_at_ms INTEGER NOT NULL,
        status_changed_at_ms INTEGER NOT NULL
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS lease_conflicts (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        event_type TEXT NOT NULL,
        task_id TEXT,
        step_id TEXT,
        worker_id TEXT,
        expected_status TEXT,
        expected_lease_owner TEXT,
        expected_lease_token TEXT,
        expected_lease_epoch INTEGER,
        actual_status TEXT,
        actual_lease_owner TEXT,
        actual_lease_token TEXT,
        actual_lease_epoch INTEGER,
        occurred_at_ms INTEGER NOT NULL
    )
    """,
    "CREATE INDEX IF NOT EXISTS idx_lease_conflicts_time"
    " ON lease_conflicts(occurred_at_ms)",
    """
    CREATE TABLE IF NOT EXISTS durable_counters (
        name TEXT NOT NULL,
        labels TEXT NOT NULL DEFAULT '',
        value REAL NOT NULL DEFAULT 0,
        updated_at_ms INTEGER NOT NULL,
        PRIMARY KEY (name, labels)
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS settings_history (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        loaded_at_ms INTEGER NOT NULL,
        node_id TEXT NOT NULL,
        trigger TEXT NOT NULL,
        result TEXT NOT NULL,
        changed_fields TEXT NOT NULL DEFAULT '[]',
        error TEXT,
        config_path TEXT NOT NULL,
        config_mtime_ms INTEGER,
        generation INTEGER
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS control (
        key TEXT PRIMARY KEY,
        value INTEGER NOT NULL,
        updated_at_ms INTEGER NOT NULL
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS report_runs (
        kind TEXT NOT NULL,
        bucket TEXT NOT NULL,
        node_id TEXT NOT NULL,
        created_at_ms INTEGER NOT NULL,
        PRIMARY KEY (kind, bucket)
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS schema_info (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    )
    """,
)
