"""Commands about leases: lease-conflicts, ownership-events, lease-report."""

from __future__ import annotations

import argparse
from pathlib import Path

from relaymesh.cli.arguments import integer_in
from relaymesh.cli.common import open_runtime
from relaymesh.cli.output import Output
from relaymesh.errors import ValidationError

HOUR_MS = 3_600_000


def register(commands, common: argparse.ArgumentParser) -> None:
    parser = commands.add_parser(
        "lease-conflicts",
        parents=[common],
        help="refused fenced writes, with expected and actual owner, token, epoch",
    )
    parser.add_argument("--limit", type=integer_in(1, 100_000), default=100)
    parser.add_argument("--since-hours", type=integer_in(1, 87_600), default=24)
    parser.set_defaults(handler=run_lease_conflicts)

    parser = commands.add_parser(
        "ownership-events",
        parents=[common],
        help="timeline of claims, hand-backs, reclaims and conflicts",
    )
    parser.add_argument("--limit", type=integer_in(1, 100_000), default=100)
    parser.add_argument("--since-hours", type=integer_in(1, 87_600), default=24)
    parser.set_defaults(handler=run_ownership_events)

    parser = commands.add_parser(
        "lease-report", parents=[common], help="aggregate lease conflicts into a report"
    )
    parser.add_argument("--hours", type=integer_in(1, 87_600), default=24)
    parser.add_argument("--limit", type=integer_in(10, 1_000_000), default=5000)
    parser.add_argument(
        "--out",
        help="report file (default: <root>/reports/lease-conflicts-manual.json)",
    )
    parser.set_defaults(handler=run_lease_report)


def run_lease_conflicts(args: argparse.Namespace, out: Output) -> int:
    runtime = open_runtime(args, read_only=True)
    since = runtime.clock_ms() - args.since_hours * HOUR_MS
    rows = runtime.store.lease_conflicts(since, args.limit)
    out.rows(
        rows,
        [
            "occurredAtMs",
            "eventType",
            "stepId",
            "workerId",
            "expectedLeaseEpoch",
            "actualStatus",
            "actualLeaseOwner",
            "actualLeaseEpoch",
        ],
    )
    return 0


def run_ownership_events(args: argparse.Namespace, out: Output) -> int:
    runtime = open_runtime(args, read_only=True)
    since = runtime.clock_ms() - args.since_hours * HOUR_MS
    rows = runtime.store.ownership_events(since, args.limit)
    out.rows(
        rows, ["occurredAtMs", "action", "nodeId", "stepId", "leaseEpoch", "source"]
    )
    return 0


def run_lease_report(args: argparse.Namespace, out: Output) -> int:
    runtime = open_runtime(args)
    path = (
        Path(args.out)
        if args.out
        else runtime.layout.reports / "lease-conflicts-manual.json"
    )
    if path.is_dir():
        raise ValidationError(f"--out {path} is a folder; give a file name")
    report = runtime.write_lease_report(path, args.hours, args.limit)
    document = {"generated": True, "path": str(path.resolve()), "rows": report["rows"]}
    noun = "conflict" if report["rows"] == 1 else "conflicts"
    out.document(document, f"wrote {report['rows']} {noun} to {path}")
    return 0
