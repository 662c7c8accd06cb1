"""Concurrent writers in separate processes keep one valid hash chain.

Each writer is a real `python -c` process that appends 10,000 rows. The
writers wait for a start file, so that their appends overlap, and run in
their own process groups, which the tests kill and reap whatever happens.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from relaymesh.observability.audit import AuditLog

ROWS_PER_WRITER = 10_000
WRITER_TIMEOUT_S = 120

WRITER = """
import os, sys, time
from pathlib import Path
from relaymesh.observability.audit import AuditLog

folder, name, count, max_bytes, keep_files, start_file = sys.argv[1:7]
log = AuditLog(Path(folder), max_bytes=int(max_bytes), keep_files=int(keep_files))
deadline = time.monotonic() + 30
while not os.path.exists(start_file):
    if time.monotonic() > deadline:
        sys.exit("start file never appeared")
    time.sleep(0.001)
for index in range(int(count)):
    log.append("test.write", name, f"row/{index}", "ok",
               details={"writer": name, "index": index})
"""


@contextmanager
def writers(
    folder: Path, names: list[str], *, max_bytes: int, keep_files: int
) -> Iterator[list[subprocess.Popen]]:
    """Start one writer process per name; on exit, kill and reap all of them."""
    start_file = folder.parent / "start"
    processes: list[subprocess.Popen] = []
    try:
        for name in names:
            command = [
                sys.executable,
                "-c",
                WRITER,
                str(folder),
                name,
                str(ROWS_PER_WRITER),
                str(max_bytes),
                str(keep_files),
                str(start_file),
            ]
            processes.append(
                subprocess.Popen(
                    command,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    start_new_session=True,
                )
            )
        start_file.touch()
        yield processes
    finally:
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
            process.communicate()


def wait_all(processes: list[subprocess.Popen]) -> None:
    deadline = time.monotonic() + WRITER_TIMEOUT_S
    for process in processes:
        remaining = max(0.0, deadline - time.monotonic())
        _stdout, stderr = process.communicate(timeout=remaining)
        assert process.returncode == 0, stderr.decode("utf-8", "replace")


def all_lines(folder: Path) -> list[str]:
    """Every line of every log file, oldest file first."""
    rotated = sorted(
        (path for path in folder.glob("audit.log.*")),
        key=lambda path: int(path.suffix[1:]),
        reverse=True,
    )
    lines: list[str] = []
    for path in [*rotated, folder / "audit.log"]:
        text = path.read_text(encoding="utf-8")
        assert text.endswith("\n"), f"{path.name} ends with a partial line"
        lines.extend(text.splitlines())
    return lines


def check_writer_order(rows: list[dict], names: list[str]) -> None:
    """Each writer's rows appear in the order it wrote them."""
    for name in names:
        indexes = [row["details"]["index"] for row in rows if row["actor"] == name]
        assert indexes == sorted(indexes), f"rows of {name} are out of order"


def switches(rows: list[dict]) -> int:
    return sum(
        1 for before, after in zip(rows, rows[1:]) if before["actor"] != after["actor"]
    )


def test_two_processes_keep_chain_valid(tmp_path: Path):
    folder = tmp_path / "audit"
    names = ["writer-a", "writer-b"]

    with writers(folder, names, max_bytes=1 << 30, keep_files=8) as processes:
        wait_all(processes)

    lines = all_lines(folder)
    assert len(lines) == 2 * ROWS_PER_WRITER
    rows = [json.loads(line) for line in lines]
    check_writer_order(rows, names)
    for name in names:
        assert sum(1 for row in rows if row["actor"] == name) == ROWS_PER_WRITER
    # The writers really interleaved, so the chain crossed between them.
    assert switches(rows) > 1

    report = AuditLog(folder).verify()
    assert report.ok, report.first_problem
    assert report.rows_checked == 2 * ROWS_PER_WRITER
    assert report.starts_at_genesis is True


def test_two_processes_rotating_keep_chain_valid(tmp_path: Path):
    folder = tmp_path / "audit"
    names = ["writer-a", "writer-b"]

    # About 200 rows per file, and every file is kept.
    with writers(folder, names, max_bytes=64 * 1024, keep_files=10_000) as processes:
        wait_all(processes)

    rotated = list(folder.glob("audit.log.*"))
    assert len(rotated) > 50
    lines = all_lines(folder)
    assert len(lines) == 2 * ROWS_PER_WRITER
    rows = [json.loads(line) for line in lines]
    check_writer_order(rows, names)

    log = AuditLog(folder)
    report = log.verify()
    assert report.ok, report.first_problem
    assert report.rows_checked == 2 * ROWS_PER_WRITER
    assert report.starts_at_genesis is True
    assert len(report.files) == len(rotated) + 1
    assert [json.loads(line) for line in log.tail(500)] == rows[-500:]


def test_two_processes_rotating_and_deleting(tmp_path: Path):
    folder = tmp_path / "audit"
    names = ["writer-a", "writer-b"]

    with writers(folder, names, max_bytes=16 * 1024, keep_files=3) as processes:
        wait_all(processes)

    assert sorted(path.name for path in folder.glob("audit.log*")) == [
        "audit.log",
        "audit.log.1",
        "audit.log.2",
        "audit.log.3",
    ]
    report = AuditLog(folder).verify()
    assert report.ok, report.first_problem
    assert report.starts_at_genesis is False
    last = json.loads(all_lines(folder)[-1])
    assert report.last_hash == last["hash"]


def test_killed_writer_leaves_appendable_log(tmp_path: Path):
    # A writer killed at an arbitrary instant may leave a torn line. A later
    # writer must still append a row that chains to the last complete row.
    folder = tmp_path / "audit"

    with writers(folder, ["victim"], max_bytes=1 << 30, keep_files=8) as processes:
        time.sleep(0.3)
        os.killpg(processes[0].pid, signal.SIGKILL)
        processes[0].wait(timeout=WRITER_TIMEOUT_S)

    log = AuditLog(folder)
    last_complete = next(log.read_rows(), None)
    row = log.append("test.write", "survivor", "row/0", "ok")

    assert row["prev_hash"] == (last_complete["hash"] if last_complete else "")
    report = log.verify()
    assert all(problem.reason == "torn_line" for problem in report.problems)
