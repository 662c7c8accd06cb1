"""Hot reload of settings in a running node.

The watcher reloads when the settings, script agent or retry policy file
changes (checked every `--settings-reload-ms`; 0 turns file watching off)
or when `reload-settings`
bumps the reload generation in the store (checked every maintenance
interval). A reload validates settings, retry policies and script agents
together and swaps them in on the trio loop in one step, so actors see
either the old configuration or the new one. An invalid file changes
nothing: the node keeps running on what it had, logs a warning and records
the rejected attempt in the settings history.

Intervals that actors read on every loop (heartbeat, lease timeout, poll
and maintenance intervals, retry policy) apply from their next iteration;
the number of workers is fixed for the life of the node.
"""

from __future__ import annotations

import logging

import trio

from relaymesh.config import DEFAULT_SETTINGS, changed_fields
from relaymesh.errors import ValidationError
from relaymesh.executor import Executor
from relaymesh.observability.logs import event
from relaymesh.runtime import Runtime

log = logging.getLogger("relaymesh.settings")


async def record_startup_settings(
    runtime: Runtime, executor: Executor, node_id: str
) -> None:
    """Record the settings a node starts with (the keys that differ from defaults)."""
    signature = await executor.run(runtime.settings_signature)
    generation = await executor.run(runtime.store.settings_reload_generation)
    await executor.run(
        lambda: runtime.store.record_settings_load(
            now_ms=runtime.clock_ms(),
            node_id=node_id,
            trigger="startup",
            result="loaded",
            changed_fields=changed_fields(DEFAULT_SETTINGS, runtime.settings),
            error=None,
            config_path=str(runtime.layout.settings_file),
            config_mtime_ms=signature[0] // 1_000_000 if signature else None,
            generation=generation,
        )
    )


async def reload_configuration(
    runtime: Runtime,
    executor: Executor,
    node_id: str,
    trigger: str,
    generation: int | None,
) -> dict:
    """Load, validate and apply; record the outcome; return it."""
    signature = await executor.run(runtime.settings_signature)
    try:
        configuration = await executor.run(runtime.load_configuration)
    except ValidationError as error:
        changed, result, message = [], "rejected", str(error)
        event(
            log,
            logging.WARNING,
            "settings.rejected",
            node_id=node_id,
            trigger=trigger,
            error=message,
        )
    else:
        changed = runtime.apply_configuration(configuration)
        result, message = ("reloaded" if changed else "unchanged"), None
        event(
            log,
            logging.INFO,
            f"settings.{result}",
            node_id=node_id,
            trigger=trigger,
            changed_fields=",".join(changed) or None,
        )
    outcome = {
        "now_ms": runtime.clock_ms(),
        "node_id": node_id,
        "trigger": trigger,
        "result": result,
        "changed_fields": changed,
        "error": message,
        "config_path": str(runtime.layout.settings_file),
        "config_mtime_ms": signature[0] // 1_000_000 if signature else None,
        "generation": generation,
    }
    await executor.run(lambda: runtime.store.record_settings_load(**outcome))
    if runtime.audit is not None:
        await executor.run(
            lambda: runtime.audit.append(
                "runtime.settings.load",
                f"node:{node_id}",
                "runtime/settings",
                result,
                details={
                    "trigger": trigger,
                    "changed_fields": changed,
                    "changed_count": len(changed),
                    "error": message,
                    "generation": generation,
                },
            )
        )
    return outcome


async def settings_watcher_loop(
    runtime: Runtime,
    executor: Executor,
    node_id: str,
    reload_interval_ms: int,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Watch for reload triggers; reports started once it has a baseline."""
    signature = await executor.run(runtime.configuration_signature)
    generation = await executor.run(runtime.store.settings_reload_generation)
    last_file_check = trio.current_time()
    task_status.started()
    while True:
        await trio.sleep(runtime.settings.maintenance_interval_ms / 1000)
        try:
            requested = await executor.run(runtime.store.settings_reload_generation)
            trigger = None
            if requested != generation:
                generation, trigger = requested, "reload_request"
            elif reload_interval_ms and (
                trio.current_time() - last_file_check >= reload_interval_ms / 1000
            ):
                last_file_check = trio.current_time()
                if await executor.run(runtime.configuration_signature) != signature:
                    trigger = "file_changed"
            if trigger is not None:
                signature = await executor.run(runtime.configuration_signature)
                await reload_configuration(
                    runtime, executor, node_id, trigger, generation
                )
        except Exception:
            log.exception("settings check failed; trying again next interval")
