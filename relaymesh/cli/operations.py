"""Commands that steer running work: cancel."""

from __future__ import annotations

import argparse

from relaymesh.cli.common import open_runtime
from relaymesh.cli.output import Output
from relaymesh.errors import NotFoundError
from relaymesh.store import CANCEL_MODES


def register(commands, common: argparse.ArgumentParser) -> None:
    parser = commands.add_parser(
        "cancel", parents=[common],
        help="cancel a task: soft lets running steps finish, hard stops them too",
    )
    parser.add_argument("task_id")
    parser.add_argument("--mode", type=str.lower, choices=CANCEL_MODES, default="hard")
    parser.add_argument("--reason", default="cancelled by operator",
                        help="recorded as the task's last error")
    parser.set_defaults(handler=run_cancel)


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
