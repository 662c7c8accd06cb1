"""The audit log: an append-only, hash-chained JSON Lines file shared by processes.

Nodes and CLI commands on a root append to one file,
`<root>/audit/audit.log`. Each row is one compact JSON object on one line,
with its fields in a fixed order (`FIELDS`). A row's `hash` is the SHA-256
of the compact JSON of all its other fields, and its `prev_hash` is the
`hash` of the row before it in the log, so the rows form a chain. Editing,
inserting or deleting a row in the middle breaks the chain at that row, and
`AuditLog.verify` reports where.

Concurrency. Several processes append at once, so no process may remember
the previous hash between appends: a writer that did would chain its rows to
its own last row and not to the last row in the file. Instead each append
holds an exclusive `flock(2)` on `audit/.lock` while it reads the last row's
hash from the tail of the file, builds its rows and writes them with one
`write(2)` on an `O_APPEND` descriptor. Nothing is kept open between calls,
so the lock is never shared by a forked child, and two threads of one
process exclude each other too (each call opens its own lock descriptor).
Reading the tail costs a few small `pread` calls, cheap enough that an
append needs no cached hash, which other processes could make stale.
`flock` works on local filesystems. Over NFS it may not exclude writers on
other hosts, and such a root is not supported.

Crashes. A process killed in the middle of a write can leave a last line
without its newline. The rule, shared by the writer and `verify`: a line
that parses as a JSON object with string `hash` and `prev_hash` fields is a
row, whether or not it ends in a newline, and any other line is not a row.
The writer chains to the last row in the log and skips lines that are not
rows. When the file does not end in a newline, the writer starts its first
row on a new line. `verify` names a line that is not a row a `torn_line`
when it is the unterminated last line of a file, or when the next row
chains past it to the row before it. Otherwise it is `invalid_json`: a row
that was complete when written and damaged later. Rows reach the kernel
with each append but are not fsynced, so a power cut can lose the newest
rows. Only a process crash is covered by the rule above.

Rotation. Before it appends, a writer that finds `audit.log` at or above
`max_bytes` renames it to `audit.log.1`, shifting older files up by one and
deleting those numbered above `keep_files`, all under the lock. The chain
continues across files: the first row of a new file has as `prev_hash` the
last hash of the file rotated away. Readers take the same lock, shared,
only while they open the files, so a rotation can never make a reader miss
or repeat a file, and a long `verify` does not hold writers back.

Redaction. The values of `details` keys that name secrets (`is_secret_key`)
are replaced by `"***"`, recursively through nested objects and lists.
The rule looks at key names only. An earlier implementation also masked
any long token-like string value, which hid the ids, paths and setting
names that make an audit row useful. Idempotency keys are ids chosen by the
submitter, not secrets, so `idempotency_key` stays readable.

The methods block on file I/O and on the lock. Async code calls them
through the executor seam, never directly on the event loop.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import json
import math
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

__all__ = [
    "FIELDS",
    "REDACTED",
    "AuditEvent",
    "AuditLog",
    "AuditProblem",
    "VerifyReport",
    "format_timestamp",
    "is_secret_key",
    "redact",
    "row_hash",
]

LOG_NAME = "audit.log"
LOCK_NAME = ".lock"
DEFAULT_MAX_BYTES = 16 * 1024 * 1024
DEFAULT_KEEP_FILES = 8

FIELDS = (
    "timestamp",
    "namespace",
    "action",
    "actor",
    "principal_id",
    "resource",
    "result",
    "trace_id",
    "span_id",
    "task_id",
    "step_id",
    "details",
    "prev_hash",
    "hash",
)

REDACTED = "***"

# Matched against a key folded to lower case without "_", "-", "." and
# whitespace, so "apiKey", "API-Key" and "api_key" all contain "apikey".
_SECRET_KEY_PARTS = (
    "password",
    "passwd",
    "secret",
    "token",
    "authorization",
    "apikey",
    "credential",
    "privatekey",
)
_SECRET_KEY_EXACT = "key"
_KEY_SEPARATORS = re.compile(r"[\s_.\-]")

_ROTATED_NAME = re.compile(re.escape(LOG_NAME) + r"\.([0-9]+)")
_FIRST_CHUNK_BYTES = 8 * 1024
_MAX_CHUNK_BYTES = 1024 * 1024
_MAX_PROBLEMS = 100


def _compact_json(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def row_hash(row: Mapping[str, object]) -> str:
    """Compute the hash a row should carry: SHA-256 of its other fields."""
    body = {key: value for key, value in row.items() if key != "hash"}
    return hashlib.sha256(_compact_json(body).encode("utf-8")).hexdigest()


def format_timestamp(epoch_ns: int) -> str:
    """Format epoch nanoseconds as ISO-8601 UTC: `2024-05-01T12:00:00.000000001Z`."""
    seconds, nanoseconds = divmod(epoch_ns, 1_000_000_000)
    tm = time.gmtime(seconds)
    return (
        f"{tm.tm_year:04d}-{tm.tm_mon:02d}-{tm.tm_mday:02d}"
        f"T{tm.tm_hour:02d}:{tm.tm_min:02d}:{tm.tm_sec:02d}.{nanoseconds:09d}Z"
    )


def _timestamp_of(moment: datetime, *, end_of_microsecond: bool = False) -> str:
    """Format a datetime like a row's timestamp, taking a naive one as UTC.

    A datetime stops at microseconds. With `end_of_microsecond` the text
    names the last nanosecond of that microsecond, so that an inclusive
    upper bound includes every row written within it.
    """
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    utc = moment.astimezone(timezone.utc)
    nanoseconds = utc.microsecond * 1000 + (999 if end_of_microsecond else 0)
    return (
        f"{utc.year:04d}-{utc.month:02d}-{utc.day:02d}"
        f"T{utc.hour:02d}:{utc.minute:02d}:{utc.second:02d}.{nanoseconds:09d}Z"
    )


# Redaction ------------------------------------------------------------------


@functools.lru_cache(maxsize=4096)
def is_secret_key(name: str) -> bool:
    """Tell whether a details key names a secret, whose value is redacted."""
    folded = _KEY_SEPARATORS.sub("", name.lower())
    if folded == _SECRET_KEY_EXACT:
        return True
    return any(part in folded for part in _SECRET_KEY_PARTS)


def _clean_text(text: str) -> str:
    # Lone surrogates (from undecodable file names) cannot be written as
    # UTF-8, so they are spelled out as backslash escapes.
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def _clean(value: object) -> object:
    """Copy a value as plain JSON data, redacting secret keys at every depth."""
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, str):
        return _clean_text(value)
    if isinstance(value, float):
        # JSON has no NaN or infinity, so these are written as text.
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, Mapping):
        cleaned = {}
        for key, item in value.items():
            name = _clean_text(str(key))
            cleaned[name] = REDACTED if is_secret_key(name) else _clean(item)
        return cleaned
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_clean(item) for item in value]
    # Paths, enums, datetimes and other objects are written as their text.
    return _clean_text(str(value))


def redact(details: Mapping[str, object] | None) -> dict[str, object]:
    """Return a JSON-ready copy of `details` with every secret value redacted.

    Only key names decide: the value of a key that `is_secret_key` matches
    becomes `"***"`, whatever it is (text, number, object or list), at any
    depth, including objects inside lists. Other values are kept as they are,
    so ids, paths and the setting names in a list stay readable.
    """
    if details is None:
        return {}
    if not isinstance(details, Mapping):
        raise TypeError(
            f"audit details must be a mapping (a JSON object), "
            f"not {type(details).__name__}"
        )
    return _clean(details)  # type: ignore[return-value]


# Events ---------------------------------------------------------------------


@dataclass(frozen=True)
class AuditEvent:
    """One row to append: what happened, to what, and with what result."""

    action: str
    actor: str
    resource: str
    result: str
    task_id: str | None = None
    step_id: str | None = None
    trace_id: str | None = None
    span_id: str | None = None
    principal_id: str = ""
    details: Mapping[str, object] | None = None

    def __post_init__(self) -> None:
        for name in ("action", "actor", "resource", "result", "principal_id"):
            value = getattr(self, name)
            if not isinstance(value, str):
                raise TypeError(
                    f"audit {name} must be text, not {type(value).__name__} ({value!r})"
                )
        if not self.action:
            raise ValueError(
                "audit action must not be empty (for example 'task.submit')"
            )
        for name in ("task_id", "step_id", "trace_id", "span_id"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise TypeError(
                    f"audit {name} must be text or None, not {type(value).__name__} "
                    f"({value!r})"
                )


def _as_event(item: AuditEvent | Mapping[str, object]) -> AuditEvent:
    if isinstance(item, AuditEvent):
        return item
    if isinstance(item, Mapping):
        return AuditEvent(**item)  # type: ignore[arg-type]
    raise TypeError(
        f"append_many takes AuditEvent objects or mappings of their fields, "
        f"not {type(item).__name__}"
    )


# Verification results --------------------------------------------------------


@dataclass(frozen=True)
class AuditProblem:
    """One place where the log is not an intact chain."""

    file: str
    line: int  # 1-based, within `file`
    reason: str  # invalid_json, prev_hash_mismatch, hash_mismatch or torn_line
    detail: str

    def describe(self) -> str:
        return f"{self.file} line {self.line}: {self.reason}: {self.detail}"


@dataclass(frozen=True)
class VerifyReport:
    """The outcome of checking every row of the log, oldest first."""

    rows_checked: int
    files: tuple[str, ...]  # oldest first
    problems: tuple[AuditProblem, ...]  # the first `_MAX_PROBLEMS` found
    problem_count: int
    last_hash: str  # "" when there is no row
    # Whether the oldest row present is the first row ever written (its
    # prev_hash is ""). False once rotation has deleted the oldest file,
    # None when there is no row.
    starts_at_genesis: bool | None

    @property
    def ok(self) -> bool:
        return self.problem_count == 0

    @property
    def first_problem(self) -> AuditProblem | None:
        return self.problems[0] if self.problems else None


# File reading ----------------------------------------------------------------


@dataclass(frozen=True)
class _Segment:
    """One open file of the log and its size when the snapshot was taken."""

    name: str
    fd: int
    size: int


def _parse_row(line: bytes) -> dict | None:
    """Parse a line into a row, or None when the line is not a row."""
    try:
        row = json.loads(line)
    except (ValueError, RecursionError):
        return None
    if not isinstance(row, dict):
        return None
    if not isinstance(row.get("hash"), str) or not isinstance(
        row.get("prev_hash"), str
    ):
        return None
    return row


def _lines_forward(segment: _Segment) -> Iterator[tuple[int, bytes, bool]]:
    """Yield (line number, line without newline, whether it had a newline)."""
    offset = 0
    number = 0
    pending = b""
    while offset < segment.size:
        data = os.pread(
            segment.fd, min(_MAX_CHUNK_BYTES, segment.size - offset), offset
        )
        if not data:
            break
        offset += len(data)
        *complete, pending = (pending + data).split(b"\n")
        for line in complete:
            number += 1
            yield number, line, True
    if pending:
        yield number + 1, pending, False


def _lines_backward(fd: int, size: int) -> Iterator[tuple[bytes, bool]]:
    """Yield (line without newline, whether it had a newline), last line first."""
    if size == 0:
        return
    terminated = os.pread(fd, 1, size - 1) == b"\n"
    position = size - 1 if terminated else size
    chunk = _FIRST_CHUNK_BYTES
    carry = b""
    while position > 0:
        start = max(0, position - chunk)
        buffer = os.pread(fd, position - start, start) + carry
        position = start
        parts = buffer.split(b"\n")
        carry = parts[0]  # may continue in the chunk before this one
        for line in reversed(parts[1:]):
            yield line, terminated
            terminated = True
        chunk = min(chunk * 2, _MAX_CHUNK_BYTES)
    yield carry, terminated


def _last_hash_in(fd: int, size: int) -> str | None:
    for line, _terminated in _lines_backward(fd, size):
        row = _parse_row(line)
        if row is not None:
            return row["hash"]
    return None


def _write_all(fd: int, data: bytes) -> None:
    # A regular file takes the whole buffer in one write(2) unless the disk
    # is full or a quota is hit. Then the loop writes again, and that write
    # raises the error.
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


# The log ---------------------------------------------------------------------


class AuditLog:
    """The audit log in `folder` (a root's `audit/`), shared by processes.

    `max_bytes` is the size at which `audit.log` is rotated before the next
    append. Raising it makes rotations rarer but every read that scans the
    log (query, verify) longer. `keep_files` is how many rotated files are
    kept, so the log takes at most about `max_bytes * (keep_files + 1)`
    bytes. `clock_ns` returns wall time in epoch nanoseconds.

    Constructing the object touches no file, and reading creates none, so a
    read-only command leaves the root as it found it.
    """

    def __init__(
        self,
        folder: Path,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        keep_files: int = DEFAULT_KEEP_FILES,
        clock_ns: Callable[[], int] = time.time_ns,
        namespace: str = "default",
    ) -> None:
        if (
            isinstance(max_bytes, bool)
            or not isinstance(max_bytes, int)
            or max_bytes < 1
        ):
            raise ValueError(
                f"audit max_bytes must be an integer >= 1, not {max_bytes!r}"
            )
        if (
            isinstance(keep_files, bool)
            or not isinstance(keep_files, int)
            or not (0 <= keep_files <= 10_000)
        ):
            raise ValueError(
                f"audit keep_files must be an integer from 0 to 10000, "
                f"not {keep_files!r}"
            )
        if not isinstance(namespace, str) or not namespace:
            raise ValueError(
                f"audit namespace must be non-empty text, not {namespace!r}"
            )
        self.folder = Path(folder)
        self.max_bytes = max_bytes
        self.keep_files = keep_files
        self.namespace = namespace
        self._clock_ns = clock_ns

    @property
    def path(self) -> Path:
        """The file rows are appended to."""
        return self.folder / LOG_NAME

    # Writing -----------------------------------------------------------------

    def append(
        self,
        action: str,
        actor: str,
        resource: str,
        result: str,
        *,
        task_id: str | None = None,
        step_id: str | None = None,
        trace_id: str | None = None,
        span_id: str | None = None,
        principal_id: str = "",
        details: Mapping[str, object] | None = None,
    ) -> dict[str, object]:
        """Append one row and return it as written."""
        event = AuditEvent(
            action,
            actor,
            resource,
            result,
            task_id=task_id,
            step_id=step_id,
            trace_id=trace_id,
            span_id=span_id,
            principal_id=principal_id,
            details=details,
        )
        return self.append_many([event])[0]

    def append_many(
        self, events: Iterable[AuditEvent | Mapping[str, object]]
    ) -> list[dict[str, object]]:
        """Append several rows with one lock and one write; return them as written.

        Each item is an `AuditEvent` or a mapping of its field names. The
        rows are consecutive in the log and chained in the order given.
        """
        prepared = [_as_event(item) for item in events]
        if not prepared:
            return []
        # Redaction and validation happen before the lock is taken.
        details = [redact(event.details) for event in prepared]

        with self._locked(fcntl.LOCK_EX, create=True):
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                size = os.fstat(fd).st_size
                prev_hash = self._last_hash(fd, size)
                needs_newline = size > 0 and os.pread(fd, 1, size - 1) != b"\n"

                if size >= self.max_bytes:
                    os.close(fd)
                    fd = -1
                    self._rotate()
                    fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
                    # An unterminated line stays at the end of the rotated file.
                    needs_newline = False

                rows, data = self._chain(prepared, details, prev_hash)
                _write_all(fd, b"\n" + data if needs_newline else data)
            finally:
                if fd >= 0:
                    os.close(fd)
        return rows

    def _chain(
        self, events: list[AuditEvent], details: list[dict], prev_hash: str
    ) -> tuple[list[dict[str, object]], bytes]:
        rows = []
        lines = []
        for event, event_details in zip(events, details, strict=True):
            row: dict[str, object] = {
                "timestamp": format_timestamp(self._clock_ns()),
                "namespace": self.namespace,
                "action": event.action,
                "actor": event.actor,
                "principal_id": event.principal_id,
                "resource": event.resource,
                "result": event.result,
                "trace_id": event.trace_id,
                "span_id": event.span_id,
                "task_id": event.task_id,
                "step_id": event.step_id,
                "details": event_details,
                "prev_hash": prev_hash,
            }
            body = _compact_json(row)
            digest = hashlib.sha256(body.encode("utf-8")).hexdigest()
            row["hash"] = digest
            # The body ends with "}", so the hash goes in as its last field.
            lines.append(f'{body[:-1]},"hash":"{digest}"}}\n')
            rows.append(row)
            prev_hash = digest
        return rows, "".join(lines).encode("utf-8")

    def _last_hash(self, fd: int, size: int) -> str:
        """Find the hash of the last row in the log, or "" when there is none."""
        found = _last_hash_in(fd, size)
        if found is not None:
            return found
        for number in self._rotated_numbers():
            try:
                rotated = os.open(self.folder / f"{LOG_NAME}.{number}", os.O_RDONLY)
            except FileNotFoundError:
                continue
            try:
                found = _last_hash_in(rotated, os.fstat(rotated).st_size)
            finally:
                os.close(rotated)
            if found is not None:
                return found
        return ""

    def _rotate(self) -> None:
        # Oldest first, so that each rename goes to a name already vacated.
        for number in sorted(self._rotated_numbers(), reverse=True):
            source = self.folder / f"{LOG_NAME}.{number}"
            if number >= self.keep_files:
                source.unlink(missing_ok=True)
            else:
                os.replace(source, self.folder / f"{LOG_NAME}.{number + 1}")
        if self.keep_files:
            os.replace(self.path, self.folder / f"{LOG_NAME}.1")
        else:
            self.path.unlink()

    # Locking and snapshots ---------------------------------------------------

    def _rotated_numbers(self) -> list[int]:
        """Numbers of the rotated files present, newest (1) first."""
        try:
            names = os.listdir(self.folder)
        except FileNotFoundError:
            return []
        numbers = []
        for name in names:
            match = _ROTATED_NAME.fullmatch(name)
            if match:
                numbers.append(int(match.group(1)))
        return sorted(numbers)

    @contextmanager
    def _locked(self, operation: int, *, create: bool) -> Iterator[None]:
        """Hold `flock(operation)` on the lock file.

        Without `create`, a missing lock file means no writer has ever run
        here, and the caller proceeds without a lock and without creating it.
        """
        lock_path = self.folder / LOCK_NAME
        if create:
            try:
                fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
            except FileNotFoundError:
                self.folder.mkdir(parents=True, exist_ok=True)
                fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        else:
            try:
                fd = os.open(lock_path, os.O_RDONLY)
            except FileNotFoundError:
                fd = -1
        try:
            if fd >= 0:
                fcntl.flock(fd, operation)
            yield
        finally:
            if fd >= 0:
                os.close(fd)  # closing the descriptor releases the lock

    @contextmanager
    def _snapshot(self) -> Iterator[list[_Segment]]:
        """Open every file of the log, newest first, as of one instant.

        The shared lock is held only while the files are opened. Open
        descriptors keep their files readable through later renames and
        deletions, and reads stop at the sizes seen here, so a writer that
        appends or rotates meanwhile changes nothing that the caller sees.
        """
        segments: list[_Segment] = []
        try:
            with self._locked(fcntl.LOCK_SH, create=False):
                names = [LOG_NAME] + [
                    f"{LOG_NAME}.{number}" for number in self._rotated_numbers()
                ]
                for name in names:
                    try:
                        fd = os.open(self.folder / name, os.O_RDONLY)
                    except FileNotFoundError:
                        continue
                    segments.append(_Segment(name, fd, os.fstat(fd).st_size))
            yield segments
        finally:
            for segment in segments:
                os.close(segment.fd)

    def _lines_newest_first(self) -> Iterator[bytes]:
        with self._snapshot() as segments:
            for segment in segments:
                for line, _terminated in _lines_backward(segment.fd, segment.size):
                    if line.strip():
                        yield line

    # Reading -----------------------------------------------------------------

    def read_rows(self, newest_first: bool = True) -> Iterator[dict[str, object]]:
        """Yield every row of the log across rotated files.

        Lines that are not rows (torn or damaged lines) are skipped; `verify`
        reports them.
        """
        if newest_first:
            for line in self._lines_newest_first():
                row = _parse_row(line)
                if row is not None:
                    yield row
            return
        with self._snapshot() as segments:
            for segment in reversed(segments):
                for _number, line, _terminated in _lines_forward(segment):
                    row = _parse_row(line)
                    if row is not None:
                        yield row

    def tail(self, count: int) -> list[str]:
        """Return the last `count` lines of the log, oldest first, as written."""
        if count < 0:
            raise ValueError(f"tail count must be >= 0, not {count}")
        lines: list[str] = []
        if count == 0:
            return lines
        for line in self._lines_newest_first():
            lines.append(line.decode("utf-8", "replace"))
            if len(lines) == count:
                break
        lines.reverse()
        return lines

    def query(
        self,
        task_id: str | None = None,
        action: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 100,
    ) -> list[str]:
        """Return up to `limit` matching lines as written, newest first.

        `task_id` and `action` match exactly. `since` and `until` bound the
        row's timestamp, both inclusive, at the microsecond precision of a
        datetime. A naive datetime is taken as UTC.
        """
        if limit < 1:
            raise ValueError(f"query limit must be >= 1, not {limit}")
        since_text = None if since is None else _timestamp_of(since)
        until_text = (
            None if until is None else _timestamp_of(until, end_of_microsecond=True)
        )
        if (
            since_text is not None
            and until_text is not None
            and since_text > until_text
        ):
            raise ValueError(
                f"query since {since_text} is after until {until_text}; "
                f"since must be at or before until"
            )

        # Cheap byte tests on the compact line skip most rows before parsing.
        # The parsed row then decides, because details may contain the same text.
        needles = []
        if task_id is not None:
            needles.append(f'"task_id":{_compact_json(task_id)}'.encode("utf-8"))
        if action is not None:
            needles.append(f'"action":{_compact_json(action)}'.encode("utf-8"))

        matches: list[str] = []
        for line in self._lines_newest_first():
            if not all(needle in line for needle in needles):
                continue
            row = _parse_row(line)
            if row is None:
                continue
            if task_id is not None and row.get("task_id") != task_id:
                continue
            if action is not None and row.get("action") != action:
                continue
            stamp = row.get("timestamp")
            if since_text is not None or until_text is not None:
                if not isinstance(stamp, str):
                    continue
                if since_text is not None and stamp < since_text:
                    continue
                if until_text is not None and stamp > until_text:
                    continue
            matches.append(line.decode("utf-8"))
            if len(matches) == limit:
                break
        return matches

    def verify(self) -> VerifyReport:
        """Check every row's hash and its link to the row before, oldest first.

        The oldest row present anchors the chain: its `prev_hash` cannot be
        checked once the files before it were rotated away. Removing rows
        from the end of the log leaves a valid chain, which only a copy of
        `last_hash` kept elsewhere can reveal.
        """
        checker = _ChainChecker()
        with self._snapshot() as segments:
            files = tuple(segment.name for segment in reversed(segments))
            for segment in reversed(segments):
                for number, line, terminated in _lines_forward(segment):
                    checker.check_line(segment.name, number, line, terminated)
        return checker.report(files)


class _ChainChecker:
    """The state of `AuditLog.verify` as it walks the lines, oldest first."""

    def __init__(self) -> None:
        self.rows_checked = 0
        self.problems: list[AuditProblem] = []
        self.problem_count = 0
        # Hash the next row's prev_hash must equal, or None when it cannot
        # be known (before the first row, and after a damaged row).
        self.expected_prev: str | None = None
        self.last_hash: str | None = None
        self.starts_at_genesis: bool | None = None
        # Terminated lines that are not rows, classified by the next row.
        self.pending: list[tuple[str, int, bytes]] = []

    def add(self, file: str, line: int, reason: str, detail: str) -> None:
        self.problem_count += 1
        if len(self.problems) < _MAX_PROBLEMS:
            self.problems.append(AuditProblem(file, line, reason, detail))

    def check_line(self, file: str, number: int, line: bytes, terminated: bool) -> None:
        row = _parse_row(line)
        if row is None:
            if terminated:
                self.pending.append((file, number, line))
            else:
                self.add(file, number, "torn_line", _TORN_DETAIL)
            return

        self.rows_checked += 1
        prev_hash = row["prev_hash"]
        if self.starts_at_genesis is None:
            self.starts_at_genesis = prev_hash == ""
        if self.pending:
            self._classify_pending(prev_hash)

        computed = row_hash(row)
        if computed != row["hash"]:
            self.add(
                file,
                number,
                "hash_mismatch",
                f"the row stores hash {row['hash']} but its fields hash to {computed}",
            )
        if self.expected_prev is not None and prev_hash != self.expected_prev:
            self.add(
                file,
                number,
                "prev_hash_mismatch",
                f"prev_hash is {prev_hash!r} but the row before has hash "
                f"{self.expected_prev!r}",
            )
        # Chaining on from the stored hash reports one edited row once.
        self.expected_prev = row["hash"]
        self.last_hash = row["hash"]

    def _classify_pending(self, prev_hash: str) -> None:
        # A writer that found a torn line chained past it to the row before.
        # A damaged row was complete when its successor was written, so the
        # successor names a hash that no readable row has.
        before = self.last_hash if self.last_hash is not None else ""
        skipped = prev_hash == before
        for file, number, line in self.pending:
            if skipped:
                self.add(file, number, "torn_line", _TORN_DETAIL)
            else:
                self.add(file, number, "invalid_json", _invalid_detail(line))
        self.pending = []
        if not skipped:
            self.expected_prev = None

    def report(self, files: tuple[str, ...]) -> VerifyReport:
        for file, number, line in self.pending:
            self.add(file, number, "invalid_json", _invalid_detail(line))
        self.pending = []
        return VerifyReport(
            rows_checked=self.rows_checked,
            files=files,
            problems=tuple(self.problems),
            problem_count=self.problem_count,
            last_hash=self.last_hash or "",
            starts_at_genesis=self.starts_at_genesis,
        )


_TORN_DETAIL = (
    "incomplete row left by a write that was cut short; "
    "the chain continues from the row before it"
)


def _invalid_detail(line: bytes) -> str:
    text = line.decode("utf-8", "replace")
    shown = text if len(text) <= 80 else text[:77] + "..."
    return f"not a JSON object with text fields hash and prev_hash: {shown!r}"
