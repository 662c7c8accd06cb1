"""Commands about metrics: metrics (print once) and serve-metrics (HTTP).

Both read the root's durable state through
`relaymesh/observability/metrics.py`, so a fresh process prints the same
counters as a long-running node. `serve-metrics` listens on 127.0.0.1 by
default: the endpoint has no authentication, and exposing it to a network
should be a decision the operator writes down with `--host`.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from functools import partial

import trio

from relaymesh.cli.arguments import integer_in
from relaymesh.cli.common import open_runtime
from relaymesh.cli.output import Output
from relaymesh.errors import UsageError
from relaymesh.executor import ThreadExecutor
from relaymesh.observability.logs import event
from relaymesh.observability.metrics import (
    METRICS_PATH,
    render_exposition,
    serve_metrics,
)
from relaymesh.runtime import Runtime

__all__ = ["register"]

log = logging.getLogger("relaymesh.metrics")

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
    runtime = open_runtime(args, read_only=True)
    try:
        exposition = render_exposition(runtime)
    finally:
        runtime.close()
    sys.stdout.buffer.write(exposition)
    sys.stdout.flush()
    return 0


def _announce(host: str, port: int) -> None:
    url_host = f"[{host}]" if ":" in host else host
    sys.stderr.write(f"serving metrics on http://{url_host}:{port}{METRICS_PATH}\n")
    sys.stderr.flush()


async def _serve_until_signal(runtime: Runtime, host: str, port: int) -> None:
    """Serve until SIGINT or SIGTERM; raise a bind or address error as itself."""
    failure: UsageError | None = None
    # The receiver replaces whatever disposition the process inherited, so a
    # server started in the background, where SIGINT is ignored, still stops
    # on it.
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            serve = partial(serve_metrics, runtime, host, port, ThreadExecutor())
            try:
                bound_port = await nursery.start(serve)
            except UsageError as error:
                # Leave the nursery first: raised inside it, the error would
                # reach the user wrapped in an exception group.
                failure = error
            else:
                _announce(host, bound_port)
                async for signal_number in signals:
                    event(log, logging.INFO, "metrics.signal",
                          signal=signal.Signals(signal_number).name)  # fmt: skip
                    break
                nursery.cancel_scope.cancel()
    if failure is not None:
        raise failure


def run_serve_metrics(args: argparse.Namespace, out: Output) -> int:
    runtime = open_runtime(args, read_only=True)
    try:
        trio.run(_serve_until_signal, runtime, args.host, args.port)
    finally:
        runtime.close()
    return 0
