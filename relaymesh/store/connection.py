"""Opening SQLite connections with the PRAGMAs RelayMesh relies on.

Only `journal_mode` is stored in the database file; `synchronous`,
`busy_timeout` and `foreign_keys` belong to a connection and are lost when it
closes. So every connection sets all four and reads them back, and a value
that does not read back stops the process instead of running with weaker
guarantees than the operator was promised.

Connections run in autocommit mode (`isolation_level=None`) and every write
transaction starts with `BEGIN IMMEDIATE`: the write lock is taken up front,
so a second writer waits on `busy_timeout` instead of failing at its first
write with SQLITE_BUSY, which a deferred transaction cannot retry.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from relaymesh.errors import StoreError

__all__ = ["BUSY_TIMEOUT_MS", "open_connection", "read_pragmas", "immediate"]

BUSY_TIMEOUT_MS = 10_000

# PRAGMA name -> (statement, value expected on read-back).
REQUIRED_PRAGMAS = {
    "journal_mode": ("PRAGMA journal_mode=WAL", "wal"),
    "synchronous": ("PRAGMA synchronous=NORMAL", "1"),
    "foreign_keys": ("PRAGMA foreign_keys=ON", "1"),
    "busy_timeout": (f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}", str(BUSY_TIMEOUT_MS)),
}


def read_pragmas(connection: sqlite3.Connection) -> dict[str, str]:
    """Return the current value of every required PRAGMA, as lower-case text."""
    values = {}
    for name in REQUIRED_PRAGMAS:
        row = connection.execute(f"PRAGMA {name}").fetchone()
        values[name] = str(row[0]).lower()
    return values


def open_connection(database: Path) -> sqlite3.Connection:
    """Open `database`, apply the PRAGMAs and verify them; raise StoreError if not."""
    try:
        connection = sqlite3.connect(
            database,
            isolation_level=None,
            check_same_thread=False,
            timeout=BUSY_TIMEOUT_MS / 1000,
        )
    except sqlite3.Error as error:
        raise StoreError(f"cannot open the store {database}: {error}") from error
    try:
        for statement, _ in REQUIRED_PRAGMAS.values():
            connection.execute(statement)
        actual = read_pragmas(connection)
    except sqlite3.Error as error:
        connection.close()
        raise StoreError(f"cannot configure the store {database}: {error}") from error
    for name, (_, expected) in REQUIRED_PRAGMAS.items():
        if actual[name] != expected:
            connection.close()
            raise StoreError(
                f"PRAGMA {name} did not apply on {database}: expected {expected},"
                f" read back {actual[name]} (is the file on a filesystem that"
                " supports SQLite's WAL mode?)"
            )
    connection.row_factory = sqlite3.Row
    return connection


@contextmanager
def immediate(connection: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """Run the block in a `BEGIN IMMEDIATE` transaction; roll back on any error."""
    connection.execute("BEGIN IMMEDIATE")
    try:
        yield connection
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")
