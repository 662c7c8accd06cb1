"""Commands that run work: node, worker, demo."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import signal
import socket
import sys
import tempfile
import time
import uuid
from pathlib import Path

import trio

from relaymesh.actors.node import Node
from relaymesh.actors.round import run_round
from relaymesh.cli.arguments import integer_in
from relaymesh.cli.common import open_runtime
from relaymesh.cli.output import Output
from relaymesh.errors import ValidationError
from relaymesh.executor import ThreadExecutor
from relaymesh.fsm import TERMINAL_TASK_STATES
from relaymesh.runtime import Runtime, TierSelector

# The id names a folder under processing/, so it must not be "." or "..".
NODE_ID_PATTERN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "workflows" / "line-count"


def node_id(text: str) -> str:
    if not NODE_ID_PATTERN.fullmatch(text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a valid node id: use 1-64 letters, digits, '_', '.',"
            " '-', starting with a letter, digit or '_'"
        )
    return text


def register(commands, common: argparse.ArgumentParser) -> None:
    parser = commands.add_parser(
        "node", parents=[common], help="run a node: scheduler, workers, leases, reclaim"
    )
    parser.add_argument("--node-id", type=node_id, required=True)
    parser.add_argument("--workers", type=integer_in(1, 1024), default=4)
    parser.add_argument(
        "--graceful-timeout-ms",
        type=integer_in(0, 3_600_000),
        default=None,
        help="how long running steps may finish after SIGINT/SIGTERM"
        " (default: gracefulTimeoutMs from the settings)",
    )
    parser.add_argument(
        "--metrics-port",
        type=integer_in(0, 65535),
        default=None,
        help="serve Prometheus metrics on this port (0: any free port; default: off)",
    )
    parser.add_argument(
        "--metrics-host",
        default="127.0.0.1",
        help="address for --metrics-port (default 127.0.0.1, this host only)",
    )
    parser.add_argument(
        "--settings-reload-ms",
        type=integer_in(0, 86_400_000),
        default=10_000,
        help="how often to check the settings file for changes (0: only on"
        " 'reload-settings')",
    )
    parser.set_defaults(handler=run_node, log_default="info")

    parser = commands.add_parser(
        "worker", parents=[common], help="run worker rounds in this process"
    )
    parser.add_argument("--once", action="store_true", help="run one round and exit")
    parser.add_argument(
        "--until-idle",
        action="store_true",
        help="loop until a round finds no work, then exit",
    )
    parser.add_argument(
        "--node-id",
        type=node_id,
        default=None,
        help="lease owner name (default: worker-<host>-<pid>)",
    )
    parser.add_argument(
        "--interval-ms",
        type=integer_in(0, 3_600_000),
        default=1000,
        help="pause after a round that found no work",
    )
    parser.set_defaults(handler=run_worker, log_default="warning")

    parser = commands.add_parser(
        "demo",
        parents=[common],
        help="run the line-count example workflow on a node and print its report",
    )
    parser.add_argument(
        "--target",
        default=None,
        help="folder whose Python files are counted (default: the relaymesh package)",
    )
    parser.add_argument("--workers", type=integer_in(1, 64), default=4)
    parser.add_argument("--timeout-s", type=integer_in(1, 3600), default=120)
    parser.set_defaults(handler=run_demo, log_default="warning")


def run_node(args: argparse.Namespace, out: Output) -> int:
    # Until the node's own signal receiver is open, remember a SIGINT or
    # SIGTERM instead of dying of it; the node then stops gracefully at once.
    early_signals: list[int] = []
    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, lambda signum, frame: early_signals.append(signum))
    runtime = open_runtime(args)
    if args.graceful_timeout_ms is not None:
        runtime.overrides["graceful_timeout_ms"] = args.graceful_timeout_ms
        runtime.settings = runtime.settings.with_overrides(**runtime.overrides)
    node = Node(
        runtime,
        ThreadExecutor(),
        args.node_id,
        workers=args.workers,
        address=socket.gethostname(),
        settings_reload_ms=args.settings_reload_ms,
        early_signals=early_signals,
        metrics_address=(
            (args.metrics_host, args.metrics_port)
            if args.metrics_port is not None
            else None
        ),
    )
    trio.run(node.run)
    # The node has stopped; a late signal must not cut the summary short.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    runtime.close()
    out.document(
        {"nodeId": args.node_id, "stopped": True}, f"node {args.node_id} stopped"
    )
    return 0


def run_worker(args: argparse.Namespace, out: Output) -> int:
    runtime = open_runtime(args)
    owner = args.node_id or f"worker-{socket.gethostname()}-{os.getpid()}"
    worker_id = f"{owner}/w0"
    runtime.actor = f"worker:{owner}"

    async def rounds() -> int:
        executor = ThreadExecutor()
        selector = TierSelector(runtime.settings.max_consecutive_high)
        stop = trio.Event()
        while True:
            summary = await run_round(
                runtime, executor, owner, worker_id, selector, stop
            )
            print(json.dumps(summary), flush=True)
            if (
                args.once
                or stop.is_set()
                or (args.until_idle and not summary["processed"])
            ):
                return 0
            if not summary["processed"]:
                await trio.sleep(args.interval_ms / 1000)

    try:
        return trio.run(rounds)
    finally:
        runtime.close()


def _load_example_preparer():
    preparer = EXAMPLE / "prepare.py"
    if not preparer.exists():
        raise ValidationError(
            f"the demo needs the repository's example at {EXAMPLE}; install RelayMesh"
            " from a clone with 'pip install -e .'"
        )
    spec = importlib.util.spec_from_file_location("relaymesh_demo_prepare", preparer)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_demo(args: argparse.Namespace, out: Output) -> int:
    preparer = _load_example_preparer()
    target = Path(args.target or Path(__file__).resolve().parents[1]).resolve()
    if not target.is_dir():
        raise ValidationError(f"--target {target} is not a folder")
    if args.root:
        root = Path(args.root).resolve()
        # Validate the root's own files before the demo writes into it.
        Runtime.open(root).close()
    else:
        root = Path(tempfile.mkdtemp(prefix="relaymesh-demo-"))
    preparer.install_scripts(root, sys.executable)
    workflow_file = root / "line-count.workflow.json"
    preparer.write_workflow(str(target), workflow_file)

    runtime = Runtime.open(root)
    log_line = sys.stderr.write
    log_line(f"demo root: {root}\ncounting Python lines under: {target}\n")
    started = time.monotonic()
    view = trio.run(_demo_run, runtime, workflow_file, args.workers, args.timeout_s)
    runtime.close()
    elapsed = time.monotonic() - started

    report_step = next(step for step in view["steps"] if step["name"] == "report")
    document = {
        "root": str(root),
        "taskId": view["taskId"],
        "status": view["status"],
        "elapsedSeconds": round(elapsed, 2),
        "report": report_step["resultPayload"],
        "lastError": view["lastError"],
    }
    if out.json:
        out.document(document)
    else:
        print(f"workflow {view['taskId']} {view['status']} in {elapsed:.1f} s")
        if view["status"] == "SUCCESS":
            print(report_step["resultPayload"])
        else:
            print(f"error: {view['lastError']}")
        print(f"inspect it: relaymesh task {view['taskId']} --root {root}")
    return 0 if view["status"] == "SUCCESS" else 1


async def _demo_run(
    runtime: Runtime, workflow_file: Path, workers: int, timeout_s: int
) -> dict:
    executor = ThreadExecutor()
    node = Node(runtime, executor, "demo-node", workers=workers)
    async with trio.open_nursery() as nursery:
        await nursery.start(_run_node_without_signals, node)
        # Every demo run counts the files as they are now, so it must not be
        # deduplicated against an earlier run on the same root.
        key = f"demo-{uuid.uuid4().hex}"
        result = await executor.run(runtime.submit_workflow, workflow_file, key)
        view = await _wait_for_task(runtime, executor, result.task_id, timeout_s)
        node.stop()
    return view


async def _run_node_without_signals(
    node: Node, task_status=trio.TASK_STATUS_IGNORED
) -> None:
    await node.run(handle_signals=False, task_status=task_status)


async def _wait_for_task(
    runtime: Runtime, executor, task_id: str, timeout_s: int
) -> dict:
    """Poll the task until it finishes, showing progress on a terminal."""
    from rich.progress import Progress

    with Progress(transient=True, disable=not sys.stderr.isatty()) as progress:
        bar = None
        with trio.move_on_after(timeout_s):
            while True:
                view = await executor.run(runtime.store.task_view, task_id)
                done = sum(1 for step in view["steps"] if step["status"] == "SUCCESS")
                if bar is None:
                    bar = progress.add_task("steps", total=len(view["steps"]))
                progress.update(bar, completed=done)
                if view["status"] in TERMINAL_TASK_STATES:
                    return view
                await trio.sleep(0.1)
    raise ValidationError(
        f"the demo workflow did not finish within {timeout_s} s; see"
        f" 'relaymesh task {task_id} --root {runtime.layout.root}'"
    )
