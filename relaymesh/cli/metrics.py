"""Commands about metrics: metrics (print once) and serve-metrics (HTTP).

Both read the root's durable state through
`relaymesh/observability/metrics.py`, so a fresh process prints the same
counters as a long-running node. `serve-metrics` listens on 127.0.0.1 by
default: the endpoint has no authentication, and exposing it to a network
should be a decision the operator writes down with `--host`.
"""

from __future__ import annotations

import argparse
import sys
from functools import partial

import trio

from relaymesh.cli.arguments import integer_in
from relaymesh.cli.common import open_runtime
from relaymesh.cli.output import Output
from relaymesh.executor import ThreadExecutor
from relaymesh.observability.metrics import (
    METRICS_PATH,
    render_exposition,
    serve_metrics,
)

__all__ = ["register"]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 9464


def register(commands, common: argparse.ArgumentParser) -> None:
    parser = commands.add_parser(
        "metrics",
        parents=[common],
        help="print the Prometheus metrics of the root once (text format;"
        " --json does not apply)",
    )
    parser.set_defaults(handler=run_metrics)

    parser = commands.add_parser(
        "serve-metrics",
        parents=[common],
        help=f"serve the Prometheus metrics over HTTP at {METRICS_PATH}",
    )
    parser.add_argument(
        "--port",
        type=integer_in(1, 65535),
        default=DEFAULT_PORT,
        help=f"TCP port to listen on (default: {DEFAULT_PORT})",
    )
    parser.add_argument(
        "--host",
        default=DEFAULT_HOST,
        help=f"address to listen on (default: {DEFAULT_HOST}; the endpoint has"
        " no authentication, so choose a wider address deliberately)",
    )
    parser.set_defaults(handler=run_serve_metrics, log_default="info")


def run_metrics(args: argparse.Namespace, out: Output) -> int:
    runtime = open_runtime(args)
    try:
        exposition = render_exposition(runtime)
    finally:
        runtime.close()
    sys.stdout.buffer.write(exposition)
    sys.stdout.flush()
    return 0


class _Announcement:
    """The task status of the server: prints where it listens once it does."""

    def __init__(self, host: str) -> None:
        self.host = f"[{host}]" if ":" in host else host

    def started(self, port: int) -> None:
        sys.stderr.write(
            f"serving metrics on http://{self.host}:{port}{METRICS_PATH}\n"
        )
        sys.stderr.flush()


def run_serve_metrics(args: argparse.Namespace, out: Output) -> int:
    runtime = open_runtime(args)
    # The server is started without a nursery of its own, so that a bind
    # error reaches the command as itself rather than inside an exception
    # group, and the user sees one line.
    serve = partial(
        serve_metrics,
        runtime,
        args.host,
        args.port,
        ThreadExecutor(),
        task_status=_Announcement(args.host),
    )
    try:
        trio.run(serve)
    finally:
        runtime.close()
    return 0
