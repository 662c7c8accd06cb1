"""Commands about dead letters and retention: replay, replay-batch,
dead-export, purge."""

from __future__ import annotations

import argparse
import json

from relaymesh.cli.arguments import days, integer_in
from relaymesh.cli.common import open_runtime, write_output
from relaymesh.cli.output import Output
from relaymesh.errors import NotFoundError


def register(commands, common: argparse.ArgumentParser) -> None:
    parser = commands.add_parser(
        "replay",
        parents=[common],
        help="run a dead-lettered or cancelled task again from its failed steps",
    )
    parser.add_argument("task_id")
    parser.add_argument(
        "--dry-run", action="store_true", help="say what would be replayed"
    )
    parser.set_defaults(handler=run_replay)

    parser = commands.add_parser(
        "replay-batch", parents=[common], help="replay many tasks of one status"
    )
    parser.add_argument(
        "--status",
        type=str.upper,
        choices=("DEAD_LETTER", "CANCELLED"),
        default="DEAD_LETTER",
    )
    parser.add_argument("--limit", type=integer_in(1, 100_000), default=100)
    parser.add_argument(
        "--dry-run", action="store_true", help="say what would be replayed"
    )
    parser.set_defaults(handler=run_replay_batch)

    parser = commands.add_parser(
        "dead-export",
        parents=[common],
        help="write dead-lettered steps with their attempts to a JSON file",
    )
    parser.add_argument("--out", required=True, help="output file ('-' for stdout)")
    parser.add_argument("--limit", type=integer_in(1, 1_000_000), default=1000)
    parser.set_defaults(handler=run_dead_export)

    parser = commands.add_parser(
        "purge",
        parents=[common],
        help="delete finished tasks, old bus files and expired idempotency records",
    )
    parser.add_argument("--done-retention-days", type=days, default=7.0)
    parser.add_argument("--dead-retention-days", type=days, default=7.0)
    parser.add_argument(
        "--idempotency-ttl-days",
        type=days,
        default=None,
        help="default: idempotencyTtlDays from the settings",
    )
    parser.add_argument(
        "--conflict-retention-days",
        type=days,
        default=30.0,
        help="keep lease conflict rows this long",
    )
    parser.add_argument("--dry-run", action="store_true", help="count, delete nothing")
    parser.set_defaults(handler=run_purge)


def _replay_document(result) -> dict:
    return {
        "taskId": result.task_id,
        "replayed": result.replayed,
        "message": result.message,
        "steps": result.steps,
    }


def run_replay(args: argparse.Namespace, out: Output) -> int:
    runtime = open_runtime(args)
    result = runtime.replay(args.task_id, dry_run=args.dry_run)
    if result.message == "task not found":
        raise NotFoundError(f"task {args.task_id!r} not found")
    document = {**_replay_document(result), "dryRun": args.dry_run}
    verb = "would replay" if args.dry_run else "replayed"
    summary = (
        f"{verb} {result.task_id}: steps {', '.join(result.steps) or 'none'}"
        if result.replayed
        else f"not replayed: {result.message}"
    )
    out.document(document, summary)
    return 0 if result.replayed else 1


def run_replay_batch(args: argparse.Namespace, out: Output) -> int:
    runtime = open_runtime(args)
    results = runtime.replay_batch(args.status, args.limit, dry_run=args.dry_run)
    replayed = sum(1 for result in results if result.replayed)
    document = {
        "status": args.status,
        "dryRun": args.dry_run,
        "total": len(results),
        "replayed": replayed,
        "failed": len(results) - replayed,
        "details": [_replay_document(result) for result in results],
    }
    verb = "would replay" if args.dry_run else "replayed"
    out.document(document, f"{verb} {replayed} of {len(results)} {args.status} tasks")
    return 0 if replayed == len(results) else 1


def run_dead_export(args: argparse.Namespace, out: Output) -> int:
    runtime = open_runtime(args, read_only=True)
    letters = runtime.store.dead_letters(args.limit)
    text = json.dumps(letters, indent=2, ensure_ascii=False) + "\n"
    target = write_output(args.out, text)
    if target is None:
        return 0
    document = {"exported": len(letters), "outputPath": str(target.resolve())}
    out.document(document, f"exported {len(letters)} dead letters to {target}")
    return 0


def run_purge(args: argparse.Namespace, out: Output) -> int:
    runtime = open_runtime(args)
    ttl = (
        args.idempotency_ttl_days
        if args.idempotency_ttl_days is not None
        else runtime.settings.idempotency_ttl_days
    )
    document = runtime.purge(
        args.done_retention_days,
        args.dead_retention_days,
        ttl,
        dry_run=args.dry_run,
        conflict_retention_days=args.conflict_retention_days,
    )
    verb = "would delete" if args.dry_run else "deleted"
    summary = "\n".join(
        f"{verb} {value} {key.removesuffix('Purged')}"
        for key, value in document.items()
        if key != "dryRun"
    )
    out.document(document, summary)
    return 0
