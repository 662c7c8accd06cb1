"""Submit throughput: in one process through `Runtime.submit`, and as one CLI
process per task through `relaymesh submit`.

An in-process submit is one idempotency lookup, one payload file written
and fsynced, one write transaction (task, step, message, idempotency row,
counter) and two envelope files written and renamed into place. Nothing is
batched across submits: each returns only after its own commit. Creating
the three files and the fsync cost more than the transaction, which is not
fsynced at commit (SQLite's WAL mode with synchronous=NORMAL).

A CLI submit does the same work once, after starting an interpreter,
importing RelayMesh and opening the root. To show where that time goes, the
same number of bare interpreter starts (`python -c pass`) and of imports of
the CLI module are timed next to it.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from bench_support import BenchmarkError, Result, child_environment, fresh_root

from relaymesh.runtime import Runtime

CHILD_TIMEOUT_S = 30.0


def runtime_submit(base: Path, count: int) -> list[Result]:
    root = fresh_root(base, "submit-runtime")
    runtime = Runtime.open(root)
    try:
        runtime.submit("echo", "warm-up")  # first-use costs are not throughput
        started = time.perf_counter()
        for index in range(count):
            runtime.submit("echo", f"runtime submit {index}")
        elapsed = time.perf_counter() - started
    finally:
        runtime.close()
    return [
        Result(
            "submit, in process",
            f"Runtime.submit x {count}",
            count / elapsed,
            "tasks/s",
        ),
        Result(
            "submit, in process",
            "mean time per submit",
            elapsed / count * 1000,
            "ms",
            decimals=2,
        ),
    ]


def cli_submit(base: Path, count: int) -> list[Result]:
    """Time `count` CLI submits, interleaved with bare starts and bare imports.

    Interleaving the three kinds of process spreads any drift of the
    machine's speed over all three, so their differences stay meaningful.
    """
    root = fresh_root(base, "submit-cli")
    script = Path(sys.executable).parent / "relaymesh"
    if script.exists():
        relaymesh = [str(script)]
    else:
        relaymesh = [sys.executable, "-m", "relaymesh.cli.main"]
    environment = child_environment(base)

    totals = {"submit": 0.0, "bare": 0.0, "import": 0.0}
    for index in range(count):
        commands = {
            "submit": [
                *relaymesh,
                "submit",
                "--root",
                str(root),
                "--agent",
                "echo",
                "--input",
                f"cli submit {index}",
                "--json",
            ],
            "bare": [sys.executable, "-c", "pass"],
            "import": [sys.executable, "-c", "import relaymesh.cli.main"],
        }
        for kind, command in commands.items():
            totals[kind] += _time_process(command, environment)

    def per_process_ms(seconds: float) -> float:
        return seconds / count * 1000

    return [
        Result(
            "submit, CLI",
            f"{count} processes in turn",
            count / totals["submit"],
            "processes/s",
        ),
        Result(
            "submit, CLI",
            "mean time of one 'relaymesh submit'",
            per_process_ms(totals["submit"]),
            "ms",
        ),
        Result(
            "submit, CLI: start-up",
            "interpreter alone, 'python -c pass'",
            per_process_ms(totals["bare"]),
            "ms",
        ),
        Result(
            "submit, CLI: imports",
            "importing relaymesh.cli.main",
            per_process_ms(totals["import"] - totals["bare"]),
            "ms",
        ),
        Result(
            "submit, CLI: the rest",
            "parse, open the root, submit",
            per_process_ms(totals["submit"] - totals["import"]),
            "ms",
        ),
    ]


def _time_process(command: list[str], environment: dict[str, str]) -> float:
    """Run `command` to completion; return its wall time in seconds."""
    started = time.perf_counter()
    completed = subprocess.run(
        command,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        env=environment,
        timeout=CHILD_TIMEOUT_S,
        start_new_session=True,
    )
    elapsed = time.perf_counter() - started
    if completed.returncode != 0:
        raise BenchmarkError(
            f"{' '.join(command)} exited with status {completed.returncode}:"
            f" {completed.stderr.decode(errors='replace').strip()}"
        )
    return elapsed
