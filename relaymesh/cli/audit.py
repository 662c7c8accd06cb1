"""Commands about the audit log: audit-tail, audit-query, audit-verify.

All three only read. They open the log of an existing root without
initialising it, create no file, and append no audit row about themselves:
a log that records its own readers grows with every look at it.

`audit-tail` prints the lines as written (JSON Lines), because that is
already a format programs read. `audit-query` prints a JSON array of rows
when stdout is not a terminal or `--json` is given, and the lines as
written on a terminal. Rows keep the snake_case field names of the file.
"""

from __future__ import annotations

import argparse
import json
from datetime import datetime, timezone

from relaymesh.cli.arguments import integer_in
from relaymesh.cli.output import Output
from relaymesh.errors import NotFoundError, ValidationError
from relaymesh.observability.audit import AuditLog, VerifyReport
from relaymesh.paths import RootLayout, resolve_root

__all__ = ["iso_time", "register"]

TIME_EXAMPLE = "2024-05-01T12:00:00Z"


def iso_time(text: str) -> datetime:
    """An argparse type: an ISO-8601 time, taken as UTC when it has no offset."""
    try:
        moment = datetime.fromisoformat(text.strip())
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=timezone.utc)
        return moment.astimezone(timezone.utc)
    except (ValueError, OverflowError):
        raise argparse.ArgumentTypeError(
            f"invalid time {text!r}: expected an ISO-8601 time such as "
            f"{TIME_EXAMPLE} or 2024-05-01T14:00:00+02:00"
        ) from None


def register(commands, common: argparse.ArgumentParser) -> None:
    parser = commands.add_parser(
        "audit-tail", parents=[common], help="print the newest audit log lines"
    )
    parser.add_argument(
        "--lines",
        type=integer_in(1, 100_000),
        default=50,
        help="number of lines to print, oldest first (1 to 100000, default 50)",
    )
    parser.set_defaults(handler=run_audit_tail)

    parser = commands.add_parser(
        "audit-query", parents=[common], help="find audit rows, newest first"
    )
    parser.add_argument("--task-id", help="only rows of this task id (exact match)")
    parser.add_argument("--action", help="only rows of this action, e.g. task.submit")
    parser.add_argument(
        "--from",
        dest="from_time",
        type=iso_time,
        metavar="ISO",
        help=f"only rows at or after this time, e.g. {TIME_EXAMPLE} (no offset: UTC)",
    )
    parser.add_argument(
        "--to",
        dest="to_time",
        type=iso_time,
        metavar="ISO",
        help="only rows at or before this time (no offset: UTC)",
    )
    parser.add_argument(
        "--limit",
        type=integer_in(1, 100_000),
        default=100,
        help="maximum rows to print (1 to 100000, default 100)",
    )
    parser.set_defaults(handler=run_audit_query)

    parser = commands.add_parser(
        "audit-verify",
        parents=[common],
        help="check the hash chain of the audit log; exit 1 if it is broken",
    )
    parser.set_defaults(handler=run_audit_verify)


def open_audit_log(args: argparse.Namespace) -> AuditLog:
    """Open the audit log of the root named by --root, which must exist."""
    root = resolve_root(args.root)
    layout = RootLayout(root)
    if not layout.database.exists():
        raise NotFoundError(
            f"no RelayMesh root at {root} (run 'relaymesh init --root {root}' first)"
        )
    return AuditLog(layout.audit)


def run_audit_tail(args: argparse.Namespace, out: Output) -> int:
    lines = open_audit_log(args).tail(args.lines)
    if args.json:
        out.document([_row_or_text(line) for line in lines])
        return 0
    for line in lines:
        print(line)
    return 0


def _row_or_text(line: str) -> object:
    # A torn or damaged line is still shown, as text, rather than dropped.
    try:
        return json.loads(line)
    except ValueError:
        return {"unparsedLine": line}


def run_audit_query(args: argparse.Namespace, out: Output) -> int:
    if (
        args.from_time is not None
        and args.to_time is not None
        and args.from_time > args.to_time
    ):
        raise ValidationError(
            f"--from {args.from_time.isoformat()} is after --to "
            f"{args.to_time.isoformat()}: --from must be at or before --to"
        )
    lines = open_audit_log(args).query(
        task_id=args.task_id,
        action=args.action,
        since=args.from_time,
        until=args.to_time,
        limit=args.limit,
    )
    if out.json:
        out.document([json.loads(line) for line in lines])
    elif not lines:
        print("no audit rows match")
    else:
        for line in lines:
            print(line)
    return 0


def _verify_document(report: VerifyReport) -> dict:
    problems = [
        {
            "file": problem.file,
            "line": problem.line,
            "reason": problem.reason,
            "detail": problem.detail,
        }
        for problem in report.problems
    ]
    return {
        "ok": report.ok,
        "rowsChecked": report.rows_checked,
        "files": list(report.files),
        "lastHash": report.last_hash,
        "startsAtGenesis": report.starts_at_genesis,
        "problemCount": report.problem_count,
        "firstProblem": problems[0] if problems else None,
        "problems": problems,
    }


def _verify_summary(report: VerifyReport) -> str:
    files = ", ".join(report.files) or "no files"
    if report.ok:
        start = (
            "from the first row ever written"
            if report.starts_at_genesis is not False
            else "from the oldest row kept after rotation"
        )
        last_hash = report.last_hash or "(none)"
        return (
            f"audit chain valid: {report.rows_checked} rows in {files}, "
            f"checked {start}; last hash {last_hash}"
        )
    first = report.first_problem
    assert first is not None
    return (
        f"audit chain broken: {report.problem_count} problem(s) in "
        f"{report.rows_checked} rows; first at {first.describe()}"
    )


def run_audit_verify(args: argparse.Namespace, out: Output) -> int:
    report = open_audit_log(args).verify()
    out.document(_verify_document(report), _verify_summary(report))
    return 0 if report.ok else 1
