"""Tests of relaymesh/store/connection.py: PRAGMAs on every connection, and
writers that wait for each other instead of failing.

The earlier implementation set the PRAGMAs once at start-up and never again,
so its working connections ran with foreign keys off and the default
synchronous level. These tests open connections the way the runtime does and
read every value back, force a value that does not apply to check that the
store refuses to run, and put two writers on two threads against one file.
"""

from __future__ import annotations

import random
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from relaymesh.errors import StoreError
from relaymesh.runtime import Runtime
from relaymesh.store import Store, connection
from relaymesh.store.connection import (
    BUSY_TIMEOUT_MS,
    REQUIRED_PRAGMAS,
    immediate,
    open_connection,
    read_pragmas,
)

EXPECTED = {
    "journal_mode": "wal",
    "synchronous": "1",
    "foreign_keys": "1",
    "busy_timeout": str(BUSY_TIMEOUT_MS),
}


def test_fresh_connection_reads_back_every_pragma(tmp_path: Path):
    db = open_connection(tmp_path / "store.db")
    try:
        assert read_pragmas(db) == EXPECTED
    finally:
        db.close()


def test_every_connection_to_one_file_gets_the_pragmas(tmp_path: Path):
    # foreign_keys, synchronous and busy_timeout belong to the connection.
    # Only journal_mode is stored in the database file.
    path = tmp_path / "store.db"
    first = open_connection(path)
    second = open_connection(path)
    try:
        assert read_pragmas(first) == EXPECTED
        assert read_pragmas(second) == EXPECTED
        plain = sqlite3.connect(path)
        try:
            assert plain.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            assert plain.execute("PRAGMA foreign_keys").fetchone()[0] == 0
        finally:
            plain.close()
    finally:
        first.close()
        second.close()


def test_busy_timeout_is_several_seconds():
    assert BUSY_TIMEOUT_MS >= 5000


def test_runtime_store_connection_has_the_pragmas(runtime):
    with runtime.store._read() as db:
        assert read_pragmas(db) == EXPECTED


def test_store_enforces_foreign_keys(runtime):
    with pytest.raises(sqlite3.IntegrityError):
        with runtime.store._tx() as db:
            db.execute(
                "INSERT INTO steps(step_id, task_id, name, agent_id, payload_path,"
                " status, created_at_ms, updated_at_ms)"
                " VALUES ('stp_x', 'tsk_missing', 'main', 'echo', '', 'PENDING', 0, 0)"
            )
    assert (
        runtime.store._connection.execute("SELECT COUNT(*) FROM steps").fetchone()[0]
        == 0
    )


def test_synchronous_mismatch_raises_store_error(tmp_path, monkeypatch):
    forced = dict(REQUIRED_PRAGMAS)
    forced["synchronous"] = ("PRAGMA synchronous=FULL", "1")
    monkeypatch.setattr(connection, "REQUIRED_PRAGMAS", forced)
    with pytest.raises(StoreError) as caught:
        open_connection(tmp_path / "store.db")
    message = str(caught.value)
    assert "PRAGMA synchronous" in message
    assert "expected 1" in message
    assert "read back 2" in message
    assert str(tmp_path / "store.db") in message


def test_foreign_keys_mismatch_raises_store_error(tmp_path, monkeypatch):
    forced = dict(REQUIRED_PRAGMAS)
    forced["foreign_keys"] = ("PRAGMA foreign_keys=OFF", "1")
    monkeypatch.setattr(connection, "REQUIRED_PRAGMAS", forced)
    with pytest.raises(
        StoreError, match="PRAGMA foreign_keys .*expected 1, read back 0"
    ):
        open_connection(tmp_path / "store.db")


def test_store_open_raises_on_pragma_mismatch(tmp_path, monkeypatch):
    forced = dict(REQUIRED_PRAGMAS)
    forced["busy_timeout"] = ("PRAGMA busy_timeout=1", str(BUSY_TIMEOUT_MS))
    monkeypatch.setattr(connection, "REQUIRED_PRAGMAS", forced)
    with pytest.raises(StoreError, match="PRAGMA busy_timeout"):
        Store(tmp_path / "store.db")


def test_in_memory_database_is_rejected():
    # A memory database reports journal_mode=memory: the same failure an
    # operator meets on a filesystem without shared-memory support.
    with pytest.raises(
        StoreError, match="PRAGMA journal_mode .*expected wal, read back memory"
    ):
        open_connection(Path(":memory:"))


def test_failing_pragma_statement_raises_store_error(tmp_path, monkeypatch):
    forced = dict(REQUIRED_PRAGMAS)
    forced["synchronous"] = ("PRAGMA synchronous=NORMAL; nonsense", "1")
    monkeypatch.setattr(connection, "REQUIRED_PRAGMAS", forced)
    with pytest.raises(StoreError, match="cannot configure the store"):
        open_connection(tmp_path / "store.db")


def test_unopenable_path_raises_store_error(tmp_path):
    with pytest.raises(StoreError, match="cannot"):
        open_connection(tmp_path / "missing-folder" / "store.db")


def test_immediate_rolls_back_on_error(tmp_path):
    db = open_connection(tmp_path / "store.db")
    try:
        db.execute("CREATE TABLE t (x INTEGER)")
        with pytest.raises(RuntimeError):
            with immediate(db):
                db.execute("INSERT INTO t VALUES (1)")
                raise RuntimeError("abort")
        assert db.execute("SELECT COUNT(*) FROM t").fetchone()[0] == 0
        assert not db.in_transaction
    finally:
        db.close()


def test_second_writer_waits_for_the_lock(tmp_path):
    path = tmp_path / "store.db"
    setup = open_connection(path)
    setup.execute("CREATE TABLE t (writer TEXT)")
    setup.close()

    first_holds_lock = threading.Event()
    errors: list[BaseException] = []
    second_waited_ms: list[float] = []

    def first() -> None:
        db = open_connection(path)
        try:
            with immediate(db):
                db.execute("INSERT INTO t VALUES ('first')")
                first_holds_lock.set()
                time.sleep(0.3)
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)
        finally:
            db.close()

    def second() -> None:
        db = open_connection(path)
        try:
            first_holds_lock.wait(5)
            started = time.monotonic()
            with immediate(db):
                db.execute("INSERT INTO t VALUES ('second')")
            second_waited_ms.append((time.monotonic() - started) * 1000)
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)
        finally:
            db.close()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert errors == []
    assert second_waited_ms and second_waited_ms[0] >= 200
    check = open_connection(path)
    try:
        rows = [row[0] for row in check.execute("SELECT writer FROM t ORDER BY rowid")]
    finally:
        check.close()
    assert rows == ["first", "second"]


def test_two_runtimes_on_one_root_submit_concurrently(root, clock_ms):

    runtimes = [
        Runtime.open(root, clock_ms=clock_ms, rng=random.Random(seed))
        for seed in (1, 2)
    ]
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def submit_many(runtime: Runtime, label: str) -> None:
        try:
            start.wait(5)
            for index in range(40):
                runtime.submit("echo", f"{label}-{index}")
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [
        threading.Thread(target=submit_many, args=(runtime, label))
        for runtime, label in zip(runtimes, ("a", "b"), strict=True)
    ]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert errors == []
        with runtimes[0].store._read() as db:
            assert db.execute("SELECT COUNT(*) FROM tasks").fetchone()[0] == 80
            assert db.execute("SELECT COUNT(*) FROM messages").fetchone()[0] == 80
    finally:
        for runtime in runtimes:
            runtime.close()


def test_non_database_file_raises_store_error(tmp_path):
    path = tmp_path / "store.db"
    path.write_bytes(b"this is not an SQLite database, just text" * 100)
    with pytest.raises(StoreError, match="cannot configure the store"):
        open_connection(path)
