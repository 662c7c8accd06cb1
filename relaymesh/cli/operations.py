"""Commands that steer running work: cancel."""

from __future__ import annotations

import argparse
import json
import time

from relaymesh.cli.arguments import integer_in
from relaymesh.cli.common import check_output_path, open_runtime, write_output
from relaymesh.cli.output import Output
from relaymesh.errors import NotFoundError, ValidationError
from relaymesh.paths import RootLayout, resolve_root
from relaymesh.runtime import wall_clock_ms
from relaymesh.store import CANCEL_MODES, Store


def register(commands, common: argparse.ArgumentParser) -> None:
    parser = commands.add_parser(
        "cancel",
        parents=[common],
        help="cancel a task: soft lets running steps finish, hard stops them too",
    )
    parser.add_argument("task_id")
    parser.add_argument("--mode", type=str.lower, choices=CANCEL_MODES, default="hard")
    parser.add_argument(
        "--reason",
        default="cancelled by operator",
        help="recorded as the task's last error",
    )
    parser.set_defaults(handler=run_cancel)

    parser = commands.add_parser(
        "task-export",
        parents=[common],
        help="write a task with steps, attempts, messages, payloads and audit events",
    )
    parser.add_argument("task_id")
    parser.add_argument("--out", required=True, help="output file ('-' for stdout)")
    parser.set_defaults(handler=run_task_export)


def run_cancel(args: argparse.Namespace, out: Output) -> int:
    runtime = open_runtime(args)
    result = runtime.cancel(args.task_id, args.mode, args.reason)
    if result.message == "task not found":
        raise NotFoundError(f"task {args.task_id!r} not found")
    document = {
        "taskId": result.task_id,
        "cancelled": result.cancelled,
        "mode": result.mode,
        "message": result.message,
        "stepRows": result.step_rows,
        "messageRows": result.message_rows,
        "stillRunning": result.still_running,
    }
    if result.cancelled:
        running = ", ".join(result.still_running)
        tail = f"; still running: {running}" if running else ""
        summary = f"cancelled {result.task_id} ({result.mode}){tail}"
    else:
        summary = f"not cancelled: {result.message}"
    out.document(document, summary)
    return 0 if result.cancelled else 1


def run_task_export(args: argparse.Namespace, out: Output) -> int:
    runtime = open_runtime(args)
    check_output_path(args.out)
    document = runtime.export_task(args.task_id)
    text = json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    target = write_output(args.out, text)
    if target is None:
        return 0
    summary = {
        "taskId": args.task_id,
        "exported": True,
        "stepCount": len(document["task"]["steps"]),
        "messageCount": len(document["messages"]),
        "auditEvents": len(document["auditEvents"]),
        "output": str(target.resolve()),
    }
    out.document(summary, f"exported {args.task_id} to {target}")
    return 0


def register_settings(commands, common: argparse.ArgumentParser) -> None:
    parser = commands.add_parser(
        "reload-settings",
        parents=[common],
        help="validate the settings file and make running nodes reload it",
    )
    parser.add_argument(
        "--wait-ms",
        type=integer_in(0, 600_000),
        default=5000,
        help="how long to wait for every live node to report its reload",
    )
    parser.set_defaults(handler=run_reload_settings)

    parser = commands.add_parser(
        "settings-history",
        parents=[common],
        help="the latest settings loads and what each changed",
    )
    parser.add_argument("--limit", type=integer_in(1, 10_000), default=20)
    parser.set_defaults(handler=run_settings_history)


def run_reload_settings(args: argparse.Namespace, out: Output) -> int:
    try:
        runtime = open_runtime(args)
    except ValidationError as error:
        _record_rejected_reload(args, error)
        raise ValidationError(f"{error}; running nodes keep their settings") from None
    generation = runtime.store.request_settings_reload(runtime.clock_ms())
    live = [
        member["nodeId"]
        for member in runtime.store.members()
        if member["status"] == "ALIVE"
        and runtime.clock_ms() - member["lastHeartbeatMs"]
        < runtime.settings.lease_timeout_ms
    ]
    deadline = time.monotonic() + args.wait_ms / 1000
    reports: dict[str, dict] = {}
    while True:
        for row in runtime.store.settings_history(1000, generation=generation):
            reports.setdefault(row["nodeId"], row)
        if set(live) <= set(reports) or time.monotonic() >= deadline:
            break
        time.sleep(0.1)
    missing = sorted(set(live) - set(reports))
    document = {
        "generation": generation,
        "valid": True,
        "nodes": [
            {key: row[key] for key in ("nodeId", "result", "changedFields", "error")}
            for row in reports.values()
        ],
        "missing": missing,
    }
    lines = [f"reload requested (generation {generation})"]
    lines += [
        f"{row['nodeId']}: {row['result']} {', '.join(row['changedFields'])}".rstrip()
        for row in reports.values()
    ]
    lines += [f"{node}: no answer within {args.wait_ms} ms" for node in missing]
    out.lines(document, lines)
    return 0 if not missing else 1


def _record_rejected_reload(args: argparse.Namespace, error: ValidationError) -> None:
    """Record in the settings history that a reload was requested and rejected."""
    layout = RootLayout(resolve_root(args.root))
    if not layout.database.exists():
        return
    store = Store(layout.database)
    try:
        store.record_settings_load(
            now_ms=wall_clock_ms(),
            node_id="cli",
            trigger="reload_request",
            result="rejected",
            changed_fields=[],
            error=str(error),
            config_path=str(layout.settings_file),
            config_mtime_ms=None,
            generation=None,
        )
    finally:
        store.close()


def run_settings_history(args: argparse.Namespace, out: Output) -> int:
    rows = open_runtime(args, read_only=True).store.settings_history(args.limit)
    out.rows(
        rows, ["loadedAtMs", "nodeId", "trigger", "result", "changedFields", "error"]
    )
    return 0
