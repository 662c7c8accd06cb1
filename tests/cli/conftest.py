"""Fixtures for the command-line tests: run `relaymesh` as a real process.

Every command runs as `python -m relaymesh.cli.main ...` in a child process,
so argument parsing, exit statuses, the stdout/stderr split and the
JSON-when-piped rule are tested exactly as a shell or a CI job sees them.
Each child gets its own session (hence its own process group) and a
timeout. A child that outlives the timeout is killed together with anything
it started, then reaped, and the test fails with what it printed.

The environment of a child drops RELAYMESH_ROOT and RELAYMESH_CRASH_AT, so a
variable set in the developer's shell cannot point a test at a real root or
make it crash on purpose. A test that needs them passes them explicitly.

Fixtures:

- `run_cli(*args, cwd=..., env=..., stdin=..., timeout_s=..., tty=False)`
  returns a `CliResult`. The working directory defaults to the test's
  `tmp_path`. With `tty=True`, stdout is a pseudo-terminal, so a command
  prints its human-readable form instead of JSON.
- `cli_ok(...)` is `run_cli` that also fails the test unless the exit
  status is 0.
- `run_cli_batch(jobs)` runs independent commands concurrently. Each job is
  a dict with `args` and `cwd`, and optionally `env` and `stdin`.
  `cli_runner` is the underlying `run_command` for fixtures wider than one
  test.
- `snapshot_root(root)` returns a `RootSnapshot`: every file and folder under
  the root with file sizes, and the row count of every table in
  relaymesh.db with a digest of its rows. Two snapshots compare equal unless
  a path, a file size or a row changed. A rewrite of a file that keeps its
  size is not detected, except in the database.
- `seeded_root` is a copy of a root built once per session. It contains a
  finished single task, a pending single task and a pending workflow, so a
  command that wrongly writes has rows and files to disturb.
"""

from __future__ import annotations

import hashlib
import json
import os
import select
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

CLI_MODULE = "relaymesh.cli.main"
DEFAULT_TIMEOUT_S = 60.0
STRIPPED_VARIABLES = ("RELAYMESH_ROOT", "RELAYMESH_CRASH_AT")
# Commands run at once by `run_cli_batch`: one per core plus one, so a core
# is not left idle while another command waits on the disk.
BATCH_WORKERS = min(8, (os.cpu_count() or 1) + 1)

# The workflow inside the seeded root: two roots joined by a third step.
BRANCHING_WORKFLOW = {
    "steps": [
        {"id": "a", "agent": "echo", "input": "A"},
        {"id": "b", "agent": "echo", "input": "B", "priority": "high"},
        {"id": "c", "agent": "echo", "input": "C", "dependsOn": ["a", "b"]},
    ]
}


@dataclass(frozen=True)
class CliResult:
    """What one run of the command printed and how it exited."""

    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    def json(self) -> object:
        """Parse stdout as one JSON document, failing the test if it is not."""
        try:
            return json.loads(self.stdout)
        except json.JSONDecodeError as error:
            pytest.fail(f"stdout of {self.describe()} is not JSON ({error})")

    def json_lines(self) -> list[object]:
        """Parse stdout as JSON Lines (one document per non-empty line)."""
        return [json.loads(line) for line in self.stdout.splitlines() if line.strip()]

    def describe(self) -> str:
        return (
            f"relaymesh {' '.join(self.args)} (exit {self.returncode})\n"
            f"--- stdout ---\n{self.stdout}--- stderr ---\n{self.stderr}"
        )


@dataclass(frozen=True)
class RootSnapshot:
    """The visible state of a root: paths with sizes, and table row counts."""

    folders: frozenset[str]
    file_sizes: Mapping[str, int]
    row_counts: Mapping[str, int]
    # A digest of each table's rows, so that an UPDATE shows up as well.
    row_digests: Mapping[str, str]


def child_environment(overrides: Mapping[str, str] | None) -> dict[str, str]:
    environment = {
        name: value
        for name, value in os.environ.items()
        if name not in STRIPPED_VARIABLES
    }
    environment.update(overrides or {})
    return environment


def _kill_group(process: subprocess.Popen) -> None:
    # The child leads its own session, so its pid is its process group id.
    # The group stays reserved until the leader is reaped, which has not
    # happened yet wherever this is called.
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def run_command(
    args: tuple[str, ...],
    *,
    cwd: Path,
    env: Mapping[str, str] | None = None,
    stdin: bytes | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    tty: bool = False,
) -> CliResult:
    """Run `relaymesh *args` in a new session and return what it printed."""
    if tty:
        return _run_on_terminal(args, cwd=cwd, env=env, timeout_s=timeout_s)
    command = [sys.executable, "-m", CLI_MODULE, *args]
    process = subprocess.Popen(
        command,
        cwd=cwd,
        env=child_environment(env),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        try:
            stdout, stderr = process.communicate(stdin or b"", timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _kill_group(process)
            stdout, stderr = process.communicate()
            pytest.fail(
                f"relaymesh {' '.join(args)} timed out after {timeout_s} s\n"
                f"--- stdout ---\n{stdout.decode(errors='replace')}"
                f"--- stderr ---\n{stderr.decode(errors='replace')}"
            )
    finally:
        if process.returncode is None:
            _kill_group(process)
            process.wait()
    return CliResult(
        tuple(args),
        process.returncode,
        stdout.decode("utf-8", errors="replace"),
        stderr.decode("utf-8", errors="replace"),
    )


def _run_on_terminal(
    args: tuple[str, ...],
    *,
    cwd: Path,
    env: Mapping[str, str] | None,
    timeout_s: float,
) -> CliResult:
    """Run with stdout on a pseudo-terminal and stderr on a pipe."""
    controller, terminal = os.openpty()
    environment = child_environment({"COLUMNS": "200", "TERM": "dumb", **(env or {})})
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", CLI_MODULE, *args],
            cwd=cwd,
            env=environment,
            stdin=subprocess.DEVNULL,
            stdout=terminal,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
    finally:
        os.close(terminal)

    error_fd = process.stderr.fileno()
    chunks = {controller: bytearray(), error_fd: bytearray()}
    open_fds = set(chunks)
    deadline = time.monotonic() + timeout_s
    try:
        # Read both streams until each reports end of file. A pseudo-terminal
        # reports it as EIO once the last writer has closed it.
        while open_fds:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                _kill_group(process)
                pytest.fail(f"relaymesh {' '.join(args)} timed out after {timeout_s} s")
            readable, _, _ = select.select(list(open_fds), [], [], remaining)
            for fd in readable:
                try:
                    data = os.read(fd, 65536)
                except OSError:
                    data = b""
                if data:
                    chunks[fd].extend(data)
                else:
                    open_fds.discard(fd)
        process.wait(timeout=max(deadline - time.monotonic(), 1.0))
    finally:
        if process.returncode is None:
            _kill_group(process)
            process.wait()
        os.close(controller)
        process.stderr.close()
    # The terminal turns each newline into CR LF.
    stdout = chunks[controller].decode("utf-8", errors="replace").replace("\r\n", "\n")
    stderr = chunks[error_fd].decode("utf-8", errors="replace")
    return CliResult(tuple(args), process.returncode, stdout, stderr)


@pytest.fixture
def run_cli(tmp_path: Path) -> Callable[..., CliResult]:
    """Run the command line with the test's tmp_path as working directory."""

    def run(
        *args: str,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
        stdin: bytes | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        tty: bool = False,
    ) -> CliResult:
        return run_command(
            tuple(str(arg) for arg in args),
            cwd=cwd or tmp_path,
            env=env,
            stdin=stdin,
            timeout_s=timeout_s,
            tty=tty,
        )

    return run


@pytest.fixture
def cli_ok(run_cli: Callable[..., CliResult]) -> Callable[..., CliResult]:
    """Like `run_cli`, but fail the test unless the command exits 0."""

    def run(*args: str, **options) -> CliResult:
        result = run_cli(*args, **options)
        assert result.returncode == 0, result.describe()
        return result

    return run


@pytest.fixture(scope="session")
def cli_runner() -> Callable[..., CliResult]:
    """`run_command` itself, for session- and module-scoped fixtures."""
    return run_command


@pytest.fixture(scope="session")
def run_cli_batch() -> Callable[[list[dict]], list[CliResult]]:
    """Run several independent commands at once and return results in order.

    Each job is a dict of `run_command` keyword arguments plus `args`. Most
    of a command's run time is interpreter start-up and imports, so running
    a few at a time cuts the wall time of a table of cases roughly by the
    number of cores. Jobs must not share a root that any of them writes.
    """

    def run(jobs: list[dict]) -> list[CliResult]:
        with ThreadPoolExecutor(max_workers=BATCH_WORKERS) as pool:
            futures = [
                pool.submit(
                    run_command,
                    tuple(str(arg) for arg in job["args"]),
                    **{key: value for key, value in job.items() if key != "args"},
                )
                for job in jobs
            ]
            return [future.result() for future in futures]

    return run


# Snapshots ----------------------------------------------------------------


def _read_tables(database: Path) -> tuple[dict[str, int], dict[str, str]]:
    """Return the row count and a digest of the rows of every table."""
    # Read a copy in a folder outside the root: opening the database in place
    # could create -wal and -shm files and so change the root.
    with tempfile.TemporaryDirectory(prefix="relaymesh-snapshot-") as scratch:
        for suffix in ("", "-wal"):
            source = database.with_name(database.name + suffix)
            if source.exists():
                shutil.copyfile(source, Path(scratch) / source.name)
        connection = sqlite3.connect(Path(scratch) / database.name)
        try:
            return _read_open_tables(connection)
        except sqlite3.DatabaseError:
            # Not an SQLite file; its size is still part of the snapshot.
            return {}, {}
        finally:
            connection.close()


def _read_open_tables(
    connection: sqlite3.Connection,
) -> tuple[dict[str, int], dict[str, str]]:
    tables = [
        row[0]
        for row in connection.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'"
            " AND name NOT LIKE 'sqlite_%' ORDER BY name"
        )
    ]
    counts: dict[str, int] = {}
    digests: dict[str, str] = {}
    for table in tables:
        rows = sorted(
            repr(row) for row in connection.execute(f'SELECT * FROM "{table}"')
        )
        counts[table] = len(rows)
        digests[table] = hashlib.sha256("\n".join(rows).encode()).hexdigest()
    return counts, digests


def take_snapshot(root: Path) -> RootSnapshot:
    """Record the folders, file sizes and table row counts under `root`."""
    folders: set[str] = set()
    sizes: dict[str, int] = {}
    if root.exists():
        for path in sorted(root.rglob("*")):
            relative = path.relative_to(root).as_posix()
            if path.is_dir():
                folders.add(relative)
            else:
                sizes[relative] = path.stat().st_size
    database = root / "relaymesh.db"
    counts, digests = _read_tables(database) if database.exists() else ({}, {})
    return RootSnapshot(frozenset(folders), sizes, counts, digests)


@pytest.fixture(scope="session")
def snapshot_root() -> Callable[[Path], RootSnapshot]:
    return take_snapshot


# A seeded root ------------------------------------------------------------


@pytest.fixture(scope="session")
def seeded_root_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Build a root once: one finished task, one pending task, one workflow."""
    home = tmp_path_factory.mktemp("seeded")
    root = home / "root"
    workflow = home / "branching.json"
    workflow.write_text(json.dumps(BRANCHING_WORKFLOW), encoding="utf-8")

    def run(*args: str) -> CliResult:
        result = run_command(tuple(args), cwd=home)
        assert result.returncode == 0, result.describe()
        return result

    run("init", "--root", str(root))
    run("submit", "--agent", "echo", "--input", "done", "--root", str(root))
    run("worker", "--once", "--node-id", "seed", "--root", str(root))
    run("submit", "--agent", "echo", "--input", "waiting", "--root", str(root))
    run("submit-workflow", "--file", str(workflow), "--root", str(root))
    return root


@pytest.fixture
def seeded_root(seeded_root_template: Path, tmp_path: Path) -> Path:
    """A private copy of the seeded root, at tmp_path/root."""
    root = tmp_path / "root"
    shutil.copytree(seeded_root_template, root)
    return root
