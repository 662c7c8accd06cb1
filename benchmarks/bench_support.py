"""Shared parts of the benchmarks: the result row, fresh roots, node
processes, and reading the store from the outside.

Each benchmark works on a root of its own in a temporary folder, with the
real SQLite store and the real file bus, so the figures include every fsync,
rename and transaction the product does. Nodes run as separate processes,
started the way an operator starts them (`python -m relaymesh.cli.main
node`). The benchmark watches them only through the store, with a read-only
connection, as an operator's own SQL query would.

Wall time is taken with `time.perf_counter()` in this process. The node's
steady rate, as opposed to the time an operator waits, is computed from the
timestamps the node itself wrote (first claim to last completion). That
leaves out interpreter start-up and the polling delay of this process.

A node is always started in a session of its own, and `NodeProcess` kills
the whole group and reaps it when its block ends, whatever happened inside.
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from relaymesh.runtime import Runtime

__all__ = [
    "BenchmarkError",
    "NodeProcess",
    "child_environment",
    "Result",
    "fresh_root",
    "load_average",
    "machine_description",
    "percentile",
    "read_store",
    "seed_echo_tasks",
    "wait_until_finished",
    "warm_bytecode_cache",
]

# Not inherited by child processes: a crash point would fail the runs, a
# default root is never wanted, and the bytecode switch is explained below.
SCRUBBED_ENVIRONMENT = (
    "RELAYMESH_CRASH_AT",
    "RELAYMESH_ROOT",
    "PYTHONDONTWRITEBYTECODE",
)
STOP_TIMEOUT_S = 30.0


class BenchmarkError(RuntimeError):
    """A benchmark could not produce its figure (a node died, a wait timed out)."""


@dataclass(frozen=True)
class Result:
    """One row of the table: what was measured, with what, and the figure."""

    benchmark: str
    parameters: str
    value: float  # the median when the benchmark ran more than once
    unit: str
    decimals: int = 1
    low: float | None = None
    high: float | None = None

    @property
    def text(self) -> str:
        median = f"{self.value:,.{self.decimals}f}"
        if self.low is None or self.high is None:
            return median
        return (
            f"{median} ({self.low:,.{self.decimals}f}-{self.high:,.{self.decimals}f})"
        )


def child_environment(folder: Path) -> dict[str, str]:
    """Build the environment of a child process, with a bytecode cache in `folder`.

    An installed package runs from cached bytecode. A checkout run with
    PYTHONDONTWRITEBYTECODE set compiles RelayMesh's modules at every start,
    which made a CLI process about a third slower on the machine of
    docs/performance.md. The cache lives in the benchmark's temporary
    folder, so the checkout is left untouched.
    """
    environment = {
        key: value
        for key, value in os.environ.items()
        if key not in SCRUBBED_ENVIRONMENT
    }
    environment["PYTHONPYCACHEPREFIX"] = str(folder / "bytecode")
    return environment


def warm_bytecode_cache(folder: Path) -> None:
    """Compile the CLI's imports into the cache of `child_environment(folder)`."""
    completed = subprocess.run(
        [sys.executable, "-c", "import relaymesh.cli.main"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        env=child_environment(folder),
        timeout=60,
        start_new_session=True,
    )
    if completed.returncode != 0:
        raise BenchmarkError(
            f"importing relaymesh.cli.main failed with status {completed.returncode}:"
            f" {completed.stderr.decode(errors='replace').strip()}"
        )


def machine_description() -> dict[str, str]:
    """Collect the facts a reader needs to compare these figures with their own."""
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 0
    return {
        "cpu": model,
        "cores": f"{os.cpu_count()} ({usable} usable by this process)",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "sqlite": sqlite3.sqlite_version,
        "system": f"{platform.system()} {platform.release()}",
        "temp filesystem": _filesystem_of(Path(tempfile.gettempdir())),
        "load average": load_average(),
    }


def load_average() -> str:
    """Return the 1, 5 and 15 minute load averages as text.

    Other work on the machine skews every figure, so the run prints them.
    """
    try:
        return " ".join(f"{value:.2f}" for value in os.getloadavg())
    except OSError:
        return "unknown"


def _filesystem_of(path: Path) -> str:
    """Find the type of the mount holding `path` in /proc/mounts (longest match)."""
    best, kind = "", "unknown"
    try:
        resolved = str(path.resolve())
        for line in Path("/proc/mounts").read_text().splitlines():
            fields = line.split()
            if len(fields) < 3:
                continue
            mount_point = fields[1]
            inside = resolved == mount_point or resolved.startswith(
                mount_point.rstrip("/") + "/"
            )
            if inside and len(mount_point) > len(best):
                best, kind = mount_point, fields[2]
    except OSError:
        pass
    return f"{kind} at {best or '?'}"


def fresh_root(base: Path, name: str) -> Path:
    """Create a new, empty root under `base`, named after `name`; return its path.

    Every call makes a new folder, so a benchmark that runs twice never
    finds the tasks of its first run in the store.
    """
    root = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=base))
    Runtime.open(root).close()
    return root


def seed_echo_tasks(root: Path, count: int, label: str = "seed") -> float:
    """Submit `count` distinct echo tasks through the runtime; return seconds."""
    runtime = Runtime.open(root)
    try:
        started = time.perf_counter()
        for index in range(count):
            runtime.submit("echo", f"{label} {index}")
        return time.perf_counter() - started
    finally:
        runtime.close()


@contextlib.contextmanager
def read_store(root: Path) -> Iterator[sqlite3.Connection]:
    """Open a read-only connection to the store of `root`; close it on exit."""
    uri = f"file:{root / 'relaymesh.db'}?mode=ro"
    connection = sqlite3.connect(uri, uri=True, timeout=10)
    connection.row_factory = sqlite3.Row
    try:
        yield connection
    finally:
        connection.close()


def percentile(values: list[float], fraction: float) -> float:
    """Return the nearest-rank percentile of `values` (fraction in (0, 1])."""
    if not values:
        raise BenchmarkError("no samples to take a percentile of")
    ordered = sorted(values)
    rank = max(1, math.ceil(len(ordered) * fraction))
    return ordered[rank - 1]


def wait_until_finished(
    root: Path,
    expected: int,
    timeout_s: float,
    nodes: list[NodeProcess],
    poll_s: float = 0.02,
) -> float:
    """Poll the store until `expected` tasks are SUCCESS; return the time it took.

    Raises BenchmarkError if a node exits or `timeout_s` passes first. The
    error lists the tasks by status, which distinguishes a stuck run from a
    slow one.
    """
    started = time.perf_counter()
    deadline = started + timeout_s
    with read_store(root) as store:
        while True:
            done = store.execute(
                "SELECT count(*) FROM tasks WHERE status = 'SUCCESS'"
            ).fetchone()[0]
            if done >= expected:
                return time.perf_counter() - started
            for node in nodes:
                node.check_alive()
            if time.perf_counter() > deadline:
                counts = dict(
                    store.execute("SELECT status, count(*) FROM tasks GROUP BY status")
                )
                raise BenchmarkError(
                    f"only {done} of {expected} tasks succeeded within {timeout_s:.0f}"
                    f" s (tasks by status: {counts})"
                )
            time.sleep(poll_s)


class NodeProcess:
    """A `relaymesh node` child process in its own session, always reaped.

    Use it as a context manager: leaving the block stops the node with
    SIGTERM (a graceful stop), and kills the whole process group if it has
    not exited within `STOP_TIMEOUT_S`.
    """

    def __init__(self, root: Path, node_id: str, workers: int, folder: Path):
        self.root = root
        self.node_id = node_id
        self.workers = workers
        self.folder = folder  # the benchmark's temporary folder
        self.log_path = root / f"{node_id}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0

    @property
    def pid(self) -> int:
        if self.process is None:
            raise BenchmarkError(f"node {self.node_id} was never started")
        return self.process.pid

    def __enter__(self) -> NodeProcess:
        command = [
            sys.executable,
            "-m",
            "relaymesh.cli.main",
            "node",
            "--root",
            str(self.root),
            "--node-id",
            self.node_id,
            "--workers",
            str(self.workers),
            "--log-level",
            "info",
        ]
        with open(self.log_path, "wb") as log:
            self.started_at = time.perf_counter()
            self.process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
                env=child_environment(self.folder),
                start_new_session=True,
            )
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.process is None:
            return
        try:
            if self.process.poll() is None:
                os.killpg(self.process.pid, signal.SIGTERM)
                self.process.wait(timeout=STOP_TIMEOUT_S)
        except (subprocess.TimeoutExpired, ProcessLookupError):
            pass
        finally:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.process.wait()

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def check_alive(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            raise BenchmarkError(
                f"node {self.node_id} exited with status {self.process.returncode};"
                f" last lines of {self.log_path}:\n{self.log_tail()}"
            )

    def wait_started(self, timeout_s: float = 30.0) -> float:
        """Wait for the node's `node.started` log line; return seconds since spawn."""
        deadline = time.perf_counter() + timeout_s
        while time.perf_counter() < deadline:
            self.check_alive()
            try:
                if b"node.started" in self.log_path.read_bytes():
                    return time.perf_counter() - self.started_at
            except OSError:
                pass
            time.sleep(0.01)
        raise BenchmarkError(
            f"node {self.node_id} did not start within {timeout_s:.0f} s;"
            f" last lines of {self.log_path}:\n{self.log_tail()}"
        )

    def memory_kb(self, field: str) -> int:
        """Read a `Vm*` field of /proc/<pid>/status in kB (VmRSS now, VmHWM peak)."""
        self.check_alive()
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
        raise BenchmarkError(f"/proc/{self.pid}/status has no {field} line")

    def stop(self) -> int:
        """Stop gracefully with SIGTERM and return the exit status."""
        os.killpg(self.pid, signal.SIGTERM)
        try:
            status = self.process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise BenchmarkError(
                f"node {self.node_id} did not stop within {STOP_TIMEOUT_S:.0f} s"
                f" of SIGTERM; last lines of {self.log_path}:\n{self.log_tail()}"
            ) from None
        if status != 0:
            raise BenchmarkError(
                f"node {self.node_id} stopped with status {status}; last lines of"
                f" {self.log_path}:\n{self.log_tail()}"
            )
        return status
