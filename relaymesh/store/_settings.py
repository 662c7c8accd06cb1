"""Settings loads and reload requests, shared by every process of a root.

`reload-settings` runs in its own process, so it cannot swap the settings
of a running node directly. It bumps a generation number in `control`
instead; every node polls that number and reloads when it changes, and each
load (by a node, for any reason) is recorded in `settings_history` with the
names of the fields that changed, never their values.
"""

from __future__ import annotations

import json

RELOAD_GENERATION_KEY = "settings_reload_generation"


class SettingsMixin:
    def request_settings_reload(self, now_ms: int) -> int:
        """Bump the reload generation; return the new value."""
        with self._tx() as db:
            db.execute(
                "INSERT INTO control(key, value, updated_at_ms) VALUES (?, 1, ?)"
                " ON CONFLICT(key) DO UPDATE SET value = value + 1,"
                " updated_at_ms = excluded.updated_at_ms",
                (RELOAD_GENERATION_KEY, now_ms),
            )
            return db.execute(
                "SELECT value FROM control WHERE key = ?", (RELOAD_GENERATION_KEY,)
            ).fetchone()[0]

    def settings_reload_generation(self) -> int:
        with self._read() as db:
            row = db.execute(
                "SELECT value FROM control WHERE key = ?", (RELOAD_GENERATION_KEY,)
            ).fetchone()
        return row[0] if row else 0

    def record_settings_load(
        self,
        *,
        now_ms: int,
        node_id: str,
        trigger: str,
        result: str,
        changed_fields: list[str],
        error: str | None,
        config_path: str,
        config_mtime_ms: int | None,
        generation: int | None,
    ) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO settings_history(loaded_at_ms, node_id, trigger, result,"
                " changed_fields, error, config_path, config_mtime_ms, generation)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    now_ms,
                    node_id,
                    trigger,
                    result,
                    json.dumps(changed_fields),
                    error,
                    config_path,
                    config_mtime_ms,
                    generation,
                ),
            )

    def settings_history(self, limit: int, generation: int | None = None) -> list[dict]:
        with self._read() as db:
            rows = db.execute(
                "SELECT * FROM settings_history WHERE (? IS NULL OR generation = ?)"
                " ORDER BY id DESC LIMIT ?",
                (generation, generation, limit),
            ).fetchall()
        return [
            {
                "loadedAtMs": row["loaded_at_ms"],
                "nodeId": row["node_id"],
                "trigger": row["trigger"],
                "result": row["result"],
                "changedFields": json.loads(row["changed_fields"]),
                "changedCount": len(json.loads(row["changed_fields"])),
                "error": row["error"],
                "configPath": row["config_path"],
                "configMtimeMs": row["config_mtime_ms"],
                "generation": row["generation"],
            }
            for row in rows
        ]
