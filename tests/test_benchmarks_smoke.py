"""The benchmarks still run: `benchmarks/run.py --quick` exits 0 with a table.

Nothing here looks at the figures, because timings on a shared CI machine
prove nothing. What this catches is a benchmark broken by a change to the
runtime, the CLI or the node (a renamed method, a column that moved, a node
that no longer stops on SIGTERM).

The run is a child process in its own session. If it overruns the timeout,
it gets SIGTERM, which it turns into an orderly exit that stops the nodes it
started (they run in sessions of their own), then SIGKILL if that hangs. It
is always reaped before the test ends.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

RUN_SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "run.py"
TIMEOUT_S = 60
COLUMNS = ("benchmark", "parameters", "result", "unit")
EXPECTED_ROWS = (
    "submit, in process",
    "submit, CLI",
    "drain, wall",
    "drain, steady",
    "workers",
    "backlog",
    "memory",
    "latency p50",
    "latency p95",
)


def stop_group(process: subprocess.Popen[str]) -> None:
    """Stop the run's process group and reap it; a no-op once it has exited.

    SIGTERM first: the run turns it into an orderly exit that stops the
    nodes it started (they run in sessions of their own). SIGKILL if that
    takes too long.
    """
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
    except ProcessLookupError:
        process.wait()


@pytest.mark.slow
def test_quick_run_prints_table():
    environment = {
        key: value
        for key, value in os.environ.items()
        if key not in ("RELAYMESH_CRASH_AT", "RELAYMESH_ROOT")
    }
    process = subprocess.Popen(
        [sys.executable, str(RUN_SCRIPT), "--quick"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment,
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        stop_group(process)
        pytest.fail(f"benchmarks/run.py --quick did not finish within {TIMEOUT_S} s")
    finally:
        stop_group(process)

    assert process.returncode == 0, f"exit status {process.returncode}:\n{stderr}"
    header = next(
        (line for line in stdout.splitlines() if all(c in line for c in COLUMNS)),
        None,
    )
    assert header is not None, f"no table header in the output:\n{stdout}"
    for name in EXPECTED_ROWS:
        assert name in stdout, f"no {name!r} row in the output:\n{stdout}"
    for fact in ("cpu:", "cores:", "python:"):
        assert fact in stdout, f"the machine line {fact!r} is missing:\n{stdout}"
