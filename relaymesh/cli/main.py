"""The `relaymesh` command: parse, dispatch, and turn errors into one line."""

from __future__ import annotations

import sys

from relaymesh.cli import audit, dead, leases, metrics, operations, run, tasks
from relaymesh.cli.arguments import ArgumentParser, add_common
from relaymesh.cli.output import Output
from relaymesh.errors import StoreError, UsageError
from relaymesh.observability.logs import configure_logging

__all__ = ["build_parser", "main"]


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="relaymesh",
        description="Reliable jobs for heterogeneous agents on SQLite and a folder.",
    )
    parser.add_argument(
        "--version", action="version", version=f"relaymesh {_version()}"
    )
    common = ArgumentParser(add_help=False)
    add_common(common)
    commands = parser.add_subparsers(
        dest="command", metavar="COMMAND", parser_class=ArgumentParser
    )
    tasks.register(commands, common)
    dead.register(commands, common)
    operations.register(commands, common)
    operations.register_settings(commands, common)
    leases.register(commands, common)
    audit.register(commands, common)
    metrics.register(commands, common)
    run.register(commands, common)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    configure_logging(args.log_level or getattr(args, "log_default", "warning"))
    out = Output(args.json)
    try:
        return args.handler(args, out)
    except (UsageError, StoreError) as error:
        sys.stderr.write(f"relaymesh {args.command}: {error}\n")
        return error.exit_status
    except BaseExceptionGroup as group:
        # An actor of a node failed on bad input (a port in use, say): report
        # it like any other command error, not as a traceback.
        matched, _ = group.split((UsageError, StoreError))
        if matched is None:
            raise
        error = _first_leaf(matched)
        sys.stderr.write(f"relaymesh {args.command}: {error}\n")
        return error.exit_status
    except KeyboardInterrupt:
        sys.stderr.write(f"relaymesh {args.command}: interrupted\n")
        return 130
    except BrokenPipeError:
        return 0


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("relaymesh")
    except PackageNotFoundError:
        return "unknown"


def _first_leaf(group: BaseExceptionGroup) -> BaseException:
    first = group.exceptions[0]
    return _first_leaf(first) if isinstance(first, BaseExceptionGroup) else first


if __name__ == "__main__":
    sys.exit(main())
