"""Unit tests of the audit log: row format, hash chain, redaction, rotation,
torn lines, reading and verification.

Every test writes real files under `tmp_path` and reads them back with plain
`json` and `hashlib`, so the format is checked independently of the module's
own helpers. Time comes from `StepClock`, which moves one millisecond per
row, so timestamps are known exactly.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from relaymesh.observability import audit
from relaymesh.observability.audit import (
    FIELDS,
    AuditEvent,
    AuditLog,
    format_timestamp,
    is_secret_key,
    redact,
)

START_NS = 1_700_000_000_123_456_789  # 2023-11-14T22:13:20.123456789Z
STEP_NS = 1_000_000


class StepClock:
    """Wall clock in epoch nanoseconds that moves STEP_NS on every reading."""

    def __init__(self, start_ns: int = START_NS) -> None:
        self.next_ns = start_ns

    def __call__(self) -> int:
        now = self.next_ns
        self.next_ns += STEP_NS
        return now


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return tmp_path / "root" / "audit"


@pytest.fixture
def log(folder: Path) -> AuditLog:
    return AuditLog(folder, clock_ns=StepClock())


def file_lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def expected_hash(row: dict) -> str:
    """The hash rule written out independently of the module."""
    body = {key: row[key] for key in FIELDS if key != "hash"}
    text = json.dumps(body, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def append_rows(log: AuditLog, count: int, *, start: int = 0) -> list[dict]:
    return [
        log.append(
            "task.submit",
            "cli",
            f"task/t{index}",
            "submitted",
            task_id=f"t{index}",
            details={"index": index},
        )
        for index in range(start, start + count)
    ]


def folder_state(folder: Path) -> dict[str, bytes]:
    if not folder.exists():
        return {}
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


# Row format ---------------------------------------------------------------------


def test_row_fields_in_order(log: AuditLog):
    log.append("task.submit", "cli", "task/t1", "submitted", task_id="t1")

    [line] = file_lines(log.path)
    keys = [key for key, _value in json.loads(line, object_pairs_hook=list)]
    assert keys == list(FIELDS)


def test_row_is_compact_json_on_one_line(log: AuditLog):
    log.append("task.submit", "cli", "task/t1", "submitted", details={"a": [1, 2]})

    text = log.path.read_text(encoding="utf-8")
    assert text.endswith("\n")
    assert text.count("\n") == 1
    row = json.loads(text)
    assert text == json.dumps(row, separators=(",", ":"), ensure_ascii=False) + "\n"


def test_row_values_and_defaults(log: AuditLog):
    row = log.append(
        "step.execute",
        "node-a/w0",
        "step/s1",
        "step_completed",
        task_id="t1",
        step_id="s1",
        trace_id="a" * 32,
        span_id="b" * 16,
        principal_id="web:ops",
        details={"attempt": 2},
    )

    assert row["timestamp"] == "2023-11-14T22:13:20.123456789Z"
    assert row["namespace"] == "default"
    assert row["action"] == "step.execute"
    assert row["actor"] == "node-a/w0"
    assert row["principal_id"] == "web:ops"
    assert row["resource"] == "step/s1"
    assert row["result"] == "step_completed"
    assert row["trace_id"] == "a" * 32
    assert row["span_id"] == "b" * 16
    assert row["task_id"] == "t1"
    assert row["step_id"] == "s1"
    assert row["details"] == {"attempt": 2}


def test_absent_ids_are_null(log: AuditLog):
    row = log.append("maintenance.tick", "system", "runtime/maintenance", "ok")

    for name in ("trace_id", "span_id", "task_id", "step_id"):
        assert row[name] is None
    assert row["principal_id"] == ""
    assert row["details"] == {}


def test_namespace_is_configurable(folder: Path):
    log = AuditLog(folder, namespace="team-a", clock_ns=StepClock())

    row = log.append("task.submit", "cli", "task/t1", "submitted")

    assert row["namespace"] == "team-a"


def test_append_returns_row_as_written(log: AuditLog):
    row = log.append("task.submit", "cli", "task/t1", "submitted", details={"x": "é"})

    [line] = file_lines(log.path)
    assert json.loads(line) == row
    assert "é" in line  # written as UTF-8, not as a \u escape


@pytest.mark.parametrize(
    ("epoch_ns", "text"),
    [
        (0, "1970-01-01T00:00:00.000000000Z"),
        (START_NS, "2023-11-14T22:13:20.123456789Z"),
        (1, "1970-01-01T00:00:00.000000001Z"),
        (4_102_444_799_999_999_999, "2099-12-31T23:59:59.999999999Z"),
    ],
)
def test_timestamp_is_utc_with_nanoseconds(epoch_ns: int, text: str):
    assert format_timestamp(epoch_ns) == text


# Hash chain ---------------------------------------------------------------------


def test_hash_recomputes_from_fields_before_it(log: AuditLog):
    append_rows(log, 3)

    for line in file_lines(log.path):
        row = json.loads(line)
        assert row["hash"] == expected_hash(row)


def test_first_row_ever_has_empty_prev_hash(log: AuditLog):
    first = log.append("task.submit", "cli", "task/t1", "submitted")

    assert first["prev_hash"] == ""


def test_each_prev_hash_is_hash_of_row_before(log: AuditLog):
    append_rows(log, 5)

    rows = [json.loads(line) for line in file_lines(log.path)]
    for before, after in zip(rows, rows[1:]):
        assert after["prev_hash"] == before["hash"]


def test_new_instance_continues_chain(folder: Path):
    first = AuditLog(folder, clock_ns=StepClock()).append("a.b", "cli", "r", "ok")

    second = AuditLog(folder, clock_ns=StepClock()).append("a.b", "cli", "r", "ok")

    assert second["prev_hash"] == first["hash"]


def test_chain_follows_rows_of_other_writers(folder: Path):
    # Two writers in one process take turns; neither may chain to its own
    # previous row when the other wrote in between.
    left = AuditLog(folder, clock_ns=StepClock())
    right = AuditLog(folder, clock_ns=StepClock())

    a = left.append("a.b", "left", "r", "ok")
    b = right.append("a.b", "right", "r", "ok")
    c = left.append("a.b", "left", "r", "ok")

    assert b["prev_hash"] == a["hash"]
    assert c["prev_hash"] == b["hash"]
    assert left.verify().ok


def test_append_many_chains_rows_in_order(log: AuditLog):
    before = log.append("a.b", "cli", "r", "ok")

    rows = log.append_many(
        [
            AuditEvent("step.execute", "w0", "step/s1", "step_completed", step_id="s1"),
            {
                "action": "step.execute",
                "actor": "w0",
                "resource": "step/s2",
                "result": "retry_scheduled",
                "step_id": "s2",
            },
        ]
    )

    assert [row["step_id"] for row in rows] == ["s1", "s2"]
    assert rows[0]["prev_hash"] == before["hash"]
    assert rows[1]["prev_hash"] == rows[0]["hash"]
    assert [json.loads(line) for line in file_lines(log.path)] == [before, *rows]


def test_append_many_is_one_write(log: AuditLog, monkeypatch: pytest.MonkeyPatch):
    log.append("a.b", "cli", "r", "ok")
    writes: list[int] = []
    real_write = os.write

    def counting_write(fd, data):
        writes.append(len(data))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", counting_write)
    log.append_many(
        [AuditEvent("a.b", "cli", f"r{index}", "ok") for index in range(100)]
    )
    monkeypatch.undo()

    assert len(writes) == 1
    assert len(file_lines(log.path)) == 101


def test_append_many_of_nothing_creates_nothing(log: AuditLog, folder: Path):
    assert log.append_many([]) == []
    assert not folder.exists()


def test_append_many_rejects_other_items(log: AuditLog):
    with pytest.raises(TypeError, match="not list"):
        log.append_many([["a.b", "cli", "r", "ok"]])


def test_append_many_rejects_unknown_field(log: AuditLog):
    with pytest.raises(TypeError, match="colour"):
        log.append_many(
            [
                {
                    "action": "a",
                    "actor": "b",
                    "resource": "c",
                    "result": "d",
                    "colour": "red",
                }
            ]
        )


def test_threads_keep_chain_valid(log: AuditLog):
    def write(name: str) -> None:
        for index in range(300):
            log.append("a.b", name, f"r{index}", "ok")

    threads = [threading.Thread(target=write, args=(f"t{n}",)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    report = log.verify()
    assert report.ok, report.first_problem
    assert report.rows_checked == 1200


def test_row_larger_than_read_chunk(log: AuditLog):
    big = log.append("a.b", "cli", "r", "ok", details={"text": "x" * 50_000})

    after = log.append("a.b", "cli", "r", "ok")

    assert after["prev_hash"] == big["hash"]
    assert log.tail(2)[0] == file_lines(log.path)[0]
    assert log.verify().ok


# Input checks ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"max_bytes": 0}, ValueError, "max_bytes must be an integer >= 1, not 0"),
        ({"max_bytes": 1.5}, ValueError, "not 1.5"),
        ({"keep_files": -1}, ValueError, "keep_files must be an integer from 0"),
        ({"namespace": ""}, ValueError, "namespace must be non-empty"),
    ],
)
def test_constructor_rejects_bad_settings(folder, kwargs, error, message):
    with pytest.raises(error, match=message):
        AuditLog(folder, **kwargs)


def test_append_rejects_empty_action(log: AuditLog, folder: Path):
    with pytest.raises(ValueError, match="action must not be empty"):
        log.append("", "cli", "r", "ok")
    assert not folder.exists()


def test_append_rejects_non_text_field(log: AuditLog):
    with pytest.raises(TypeError, match="audit result must be text, not int"):
        log.append("a.b", "cli", "r", 3)


def test_append_rejects_non_text_id(log: AuditLog):
    with pytest.raises(TypeError, match="audit task_id must be text or None"):
        log.append("a.b", "cli", "r", "ok", task_id=7)


def test_append_rejects_details_that_are_not_a_mapping(log: AuditLog):
    with pytest.raises(TypeError, match="mapping .a JSON object., not list"):
        log.append("a.b", "cli", "r", "ok", details=[1, 2])


# Redaction ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    [
        "password",
        "PASSWORD",
        "db_password",
        "passwd",
        "client_secret",
        "secretValue",
        "token",
        "access_token",
        "lease_token",
        "Authorization",
        "proxy-authorization",
        "api_key",
        "apikey",
        "apiKey",
        "X-API-Key",
        "credential",
        "credentials",
        "private_key",
        "privateKey",
        "key",
        "KEY",
        "_key",
    ],
)
def test_secret_key_names(key: str):
    assert is_secret_key(key)


@pytest.mark.parametrize(
    "key",
    [
        "idempotency_key",
        "idempotencyKey",
        "keys",
        "keyboard",
        "monkey",
        "msg_id",
        "output",
        "config",
        "configPath",
        "changed_fields",
        "path",
        "author",
    ],
)
def test_readable_key_names(key: str):
    assert not is_secret_key(key)


def test_redaction_replaces_values_of_secret_keys(log: AuditLog):
    row = log.append(
        "a.b",
        "cli",
        "r",
        "ok",
        details={
            "password": "hunter2",
            "api_key": 12345,
            "token": None,
            "credentials": {"user": "u", "pass": "p"},
            "secret": ["a", "b"],
            "key": "k-value",
            "user": "alice",
        },
    )

    assert row["details"] == {
        "password": "***",
        "api_key": "***",
        "token": "***",
        "credentials": "***",
        "secret": "***",
        "key": "***",
        "user": "alice",
    }
    assert "hunter2" not in log.path.read_text(encoding="utf-8")
    assert "k-value" not in log.path.read_text(encoding="utf-8")


def test_redaction_reaches_nested_objects_and_lists(log: AuditLog):
    row = log.append(
        "a.b",
        "cli",
        "r",
        "ok",
        details={
            "request": {"headers": {"Authorization": "Bearer abc", "Accept": "*/*"}},
            "agents": [
                {"id": "echo", "apiKey": "sk-1"},
                {"id": "script", "env": [{"name": "HOME", "client_secret": "s"}]},
            ],
            "matrix": [[{"password": "p", "n": 1}]],
        },
    )

    details = row["details"]
    assert details["request"]["headers"] == {"Authorization": "***", "Accept": "*/*"}
    assert details["agents"][0] == {"id": "echo", "apiKey": "***"}
    assert details["agents"][1]["env"] == [{"name": "HOME", "client_secret": "***"}]
    assert details["matrix"] == [[{"password": "***", "n": 1}]]


def test_ids_paths_and_setting_names_stay_readable(log: AuditLog):
    # Long token-like values are exactly what a value-based mask would hide.
    details = {
        "msg_id": "msg_01HZX3Q4R5S6T7U8V9W0XYZABC",
        "output": "/var/lib/relaymesh/payload/msg_01HZX3Q4R5S6T7U8V9W0.payload.json",
        "config": "/etc/relaymesh/relaymesh-settings.json",
        "trace": "0af7651916cd43dd8448eb211c80319c",
        "changed_fields": ["pauseWorkerWhenLocalNotAlive", "leaseTimeoutMs"],
        "idempotency_key": "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822c",
    }

    row = log.append(
        "runtime.settings.load",
        "system",
        "runtime/settings",
        "reloaded",
        details=details,
    )

    assert row["details"] == details
    assert json.loads(file_lines(log.path)[0])["details"] == details


def test_idempotency_key_readable_but_key_redacted(log: AuditLog):
    row = log.append(
        "task.submit",
        "cli",
        "task/t1",
        "deduplicated",
        details={"idempotency_key": "order-42", "key": "order-42"},
    )

    assert row["details"] == {"idempotency_key": "order-42", "key": "***"}


def test_redaction_leaves_caller_details_unchanged(log: AuditLog):
    details = {"password": "p", "nested": {"token": "t"}}

    log.append("a.b", "cli", "r", "ok", details=details)

    assert details == {"password": "p", "nested": {"token": "t"}}


def test_values_that_are_not_json_are_written_as_text(log: AuditLog):
    row = log.append(
        "a.b",
        "cli",
        "r",
        "ok",
        details={
            "path": Path("/tmp/x.json"),
            "pair": (1, 2),
            "ratio": math.nan,
            "huge": math.inf,
            3: "int key",
            "name": "bad\udcffbyte",
        },
    )

    assert row["details"] == {
        "path": "/tmp/x.json",
        "pair": [1, 2],
        "ratio": "nan",
        "huge": "inf",
        "3": "int key",
        "name": "bad\\udcffbyte",
    }
    assert log.verify().ok


def test_redact_of_none_is_empty():
    assert redact(None) == {}


# Rotation -----------------------------------------------------------------------


def rotated_names(folder: Path) -> list[str]:
    return sorted(
        path.name for path in folder.iterdir() if path.name.startswith("audit")
    )


def test_rotation_keeps_configured_file_count(folder: Path):
    log = AuditLog(folder, max_bytes=1000, keep_files=2, clock_ns=StepClock())

    append_rows(log, 60)

    assert rotated_names(folder) == ["audit.log", "audit.log.1", "audit.log.2"]


def test_rotation_happens_at_max_bytes(folder: Path):
    log = AuditLog(folder, max_bytes=1000, keep_files=5, clock_ns=StepClock())
    append_rows(log, 60)

    for name in ("audit.log.1", "audit.log.2"):
        size = (folder / name).stat().st_size
        line = len(file_lines(folder / name)[-1].encode("utf-8")) + 1
        # A file is rotated by the first append that finds it at max_bytes.
        assert 1000 <= size < 1000 + line


def test_rotation_continues_chain_across_files(folder: Path):
    log = AuditLog(folder, max_bytes=1000, keep_files=3, clock_ns=StepClock())
    append_rows(log, 40)

    older = json.loads(file_lines(folder / "audit.log.1")[-1])
    newer = json.loads(file_lines(folder / "audit.log")[0])
    assert newer["prev_hash"] == older["hash"]


def test_rotation_with_no_kept_files(folder: Path):
    log = AuditLog(folder, max_bytes=500, keep_files=0, clock_ns=StepClock())

    rows = append_rows(log, 20)

    assert rotated_names(folder) == ["audit.log"]
    report = log.verify()
    assert report.ok
    assert report.starts_at_genesis is False
    assert report.last_hash == rows[-1]["hash"]


def test_rotation_removes_files_above_keep_files(folder: Path):
    # Files left by an earlier, larger keep_files are removed at rotation.
    AuditLog(folder, max_bytes=500, keep_files=6, clock_ns=StepClock())
    append_rows(AuditLog(folder, max_bytes=500, keep_files=6), 40)
    assert "audit.log.6" in rotated_names(folder)

    append_rows(AuditLog(folder, max_bytes=500, keep_files=2), 5)

    assert rotated_names(folder) == ["audit.log", "audit.log.1", "audit.log.2"]


def test_reads_span_rotated_files(folder: Path):
    log = AuditLog(folder, max_bytes=1000, keep_files=50, clock_ns=StepClock())
    rows = append_rows(log, 40)
    assert len(rotated_names(folder)) > 3
    written = [
        json.dumps(row, separators=(",", ":"), ensure_ascii=False) for row in rows
    ]

    assert list(log.read_rows()) == rows[::-1]
    assert list(log.read_rows(newest_first=False)) == rows
    assert log.tail(25) == written[-25:]
    assert log.tail(1000) == written
    assert log.query(task_id="t0") == [written[0]]
    assert log.query(action="task.submit", limit=40) == written[::-1]

    report = log.verify()
    assert report.ok
    assert report.rows_checked == 40
    assert report.files[-1] == "audit.log"
    oldest = max(int(name.rsplit(".", 1)[1]) for name in rotated_names(folder)[1:])
    assert report.files[0] == f"audit.log.{oldest}"
    assert report.starts_at_genesis is True


def test_verify_after_oldest_files_deleted(folder: Path):
    log = AuditLog(folder, max_bytes=1000, keep_files=2, clock_ns=StepClock())
    rows = append_rows(log, 60)

    report = log.verify()

    assert report.ok
    assert report.starts_at_genesis is False
    assert report.last_hash == rows[-1]["hash"]
    assert report.rows_checked < 60


# Torn lines ---------------------------------------------------------------------


def tear(path: Path, fragment: str = '{"timestamp":"2023-11-14T22:13:2') -> None:
    """Leave what a writer killed in the middle of its write leaves."""
    with path.open("a", encoding="utf-8") as handle:
        handle.write(fragment)


def test_unterminated_fragment_is_torn_line(log: AuditLog):
    append_rows(log, 3)
    tear(log.path)

    report = log.verify()

    assert not report.ok
    assert report.rows_checked == 3
    assert report.problem_count == 1
    problem = report.first_problem
    assert (problem.file, problem.line, problem.reason) == ("audit.log", 4, "torn_line")


def test_append_after_torn_line_starts_new_line(log: AuditLog):
    rows = append_rows(log, 3)
    tear(log.path)

    after = log.append("a.b", "cli", "r", "ok")

    lines = file_lines(log.path)
    assert len(lines) == 5
    assert lines[3] == '{"timestamp":"2023-11-14T22:13:2'
    assert json.loads(lines[4]) == after
    assert after["prev_hash"] == rows[-1]["hash"]


def test_verify_continues_past_torn_line(log: AuditLog):
    append_rows(log, 3)
    tear(log.path)
    append_rows(log, 3, start=3)

    report = log.verify()

    assert report.rows_checked == 6
    assert report.problem_count == 1
    problem = report.first_problem
    assert (problem.line, problem.reason) == (4, "torn_line")


def test_torn_first_write_ever(log: AuditLog, folder: Path):
    folder.mkdir(parents=True)
    tear(log.path)

    first = log.append("a.b", "cli", "r", "ok")

    assert first["prev_hash"] == ""
    report = log.verify()
    assert report.starts_at_genesis is True
    assert [p.reason for p in report.problems] == ["torn_line"]


def test_torn_line_stays_in_rotated_file(folder: Path):
    log = AuditLog(folder, max_bytes=3000, keep_files=3, clock_ns=StepClock())
    rows = append_rows(log, 4)
    tear(log.path, "{" + "x" * 3000)

    after = log.append("a.b", "cli", "r", "ok")

    assert (folder / "audit.log.1").read_text(encoding="utf-8").endswith("x" * 3000)
    assert after["prev_hash"] == rows[-1]["hash"]
    report = log.verify()
    assert report.problem_count == 1
    problem = report.first_problem
    assert (problem.file, problem.line, problem.reason) == (
        "audit.log.1",
        5,
        "torn_line",
    )


def test_complete_row_missing_only_newline(log: AuditLog):
    rows = append_rows(log, 2)
    data = log.path.read_bytes()
    log.path.write_bytes(data[:-1])  # drop the final newline
    assert log.verify().ok

    after = log.append("a.b", "cli", "r", "ok")

    assert after["prev_hash"] == rows[-1]["hash"]
    assert len(file_lines(log.path)) == 3
    assert log.verify().ok


def test_torn_write_of_repair_itself(log: AuditLog):
    # A crash during the write that repairs a torn line leaves two bad lines.
    rows = append_rows(log, 2)
    tear(log.path)
    tear(log.path, '\n{"timestamp":"2023')

    after = log.append("a.b", "cli", "r", "ok")

    assert after["prev_hash"] == rows[-1]["hash"]
    report = log.verify()
    assert [(p.line, p.reason) for p in report.problems] == [
        (3, "torn_line"),
        (4, "torn_line"),
    ]


# Tampering ----------------------------------------------------------------------


def rewrite_line(path: Path, index: int, text: str | None) -> None:
    lines = file_lines(path)
    if text is None:
        del lines[index]
    else:
        lines[index] = text
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def test_verify_valid_chain(log: AuditLog):
    rows = append_rows(log, 5)

    report = log.verify()

    assert report.ok
    assert report.first_problem is None
    assert report.rows_checked == 5
    assert report.files == ("audit.log",)
    assert report.last_hash == rows[-1]["hash"]
    assert report.starts_at_genesis is True


def test_verify_edited_row_is_hash_mismatch(log: AuditLog):
    append_rows(log, 5)
    row = json.loads(file_lines(log.path)[2])
    row["result"] = "rejected"
    rewrite_line(log.path, 2, json.dumps(row, separators=(",", ":")))

    report = log.verify()

    assert report.problem_count == 1
    problem = report.first_problem
    assert (problem.file, problem.line, problem.reason) == (
        "audit.log",
        3,
        "hash_mismatch",
    )


def test_verify_deleted_row_is_prev_hash_mismatch(log: AuditLog):
    append_rows(log, 5)
    rewrite_line(log.path, 2, None)

    report = log.verify()

    assert report.problem_count == 1
    assert (report.first_problem.line, report.first_problem.reason) == (
        3,
        "prev_hash_mismatch",
    )


def test_verify_forged_row_breaks_next_link(log: AuditLog):
    append_rows(log, 5)
    row = json.loads(file_lines(log.path)[2])
    row["result"] = "rejected"
    row["hash"] = expected_hash(row)
    rewrite_line(
        log.path, 2, json.dumps(row, separators=(",", ":"), ensure_ascii=False)
    )

    report = log.verify()

    assert report.problem_count == 1
    assert (report.first_problem.line, report.first_problem.reason) == (
        4,
        "prev_hash_mismatch",
    )


def test_verify_damaged_line_is_invalid_json(log: AuditLog):
    append_rows(log, 5)
    rewrite_line(log.path, 1, "garbage that was a row")

    report = log.verify()

    assert report.problem_count == 1
    assert (report.first_problem.line, report.first_problem.reason) == (
        2,
        "invalid_json",
    )
    assert "garbage that was a row" in report.first_problem.detail


def test_verify_damaged_last_line_is_invalid_json(log: AuditLog):
    append_rows(log, 3)
    rewrite_line(log.path, 2, '{"not": "a row"}')

    report = log.verify()

    assert [(p.line, p.reason) for p in report.problems] == [(3, "invalid_json")]


def test_verify_reports_every_problem(log: AuditLog):
    append_rows(log, 8)
    rewrite_line(log.path, 1, "junk")
    rewrite_line(log.path, 5, None)

    report = log.verify()

    assert [(p.line, p.reason) for p in report.problems] == [
        (2, "invalid_json"),
        (6, "prev_hash_mismatch"),
    ]


def test_verify_problem_cap(log: AuditLog):
    append_rows(log, 3)
    with log.path.open("a", encoding="utf-8") as handle:
        handle.write("junk\n" * 150)

    report = log.verify()

    assert report.problem_count == 150
    assert len(report.problems) == 100


# Queries ------------------------------------------------------------------------


def row_time(index: int) -> datetime:
    """The time of the row written `index`-th by a fresh StepClock (to the µs)."""
    epoch_us = (START_NS + index * STEP_NS) // 1000
    return datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(microseconds=epoch_us)


def test_query_by_task_and_action(log: AuditLog):
    log.append("task.submit", "cli", "task/t1", "submitted", task_id="t1")
    log.append("task.submit", "cli", "task/t2", "submitted", task_id="t2")
    log.append("task.cancel", "cli", "task/t1", "cancelled", task_id="t1")
    # Mentions t1 only inside details, so it must not match.
    log.append(
        "task.submit",
        "cli",
        "task/t3",
        "submitted",
        task_id="t3",
        details={"task_id": "t1"},
    )

    assert [json.loads(line)["action"] for line in log.query(task_id="t1")] == [
        "task.cancel",
        "task.submit",
    ]
    assert [
        json.loads(line)["task_id"] for line in log.query(action="task.submit")
    ] == [
        "t3",
        "t2",
        "t1",
    ]
    assert len(log.query(task_id="t1", action="task.cancel")) == 1
    assert log.query(task_id="t9") == []


def test_query_time_range_is_inclusive(log: AuditLog):
    append_rows(log, 10)

    lines = log.query(since=row_time(3), until=row_time(6))

    assert [json.loads(line)["task_id"] for line in lines] == ["t6", "t5", "t4", "t3"]


def test_query_naive_time_is_utc(log: AuditLog):
    append_rows(log, 10)

    naive = row_time(8).replace(tzinfo=None)

    assert len(log.query(since=naive)) == 2


def test_query_time_with_offset(log: AuditLog):
    append_rows(log, 10)
    plus_two = timezone(timedelta(hours=2))

    lines = log.query(until=row_time(1).astimezone(plus_two))

    assert [json.loads(line)["task_id"] for line in lines] == ["t1", "t0"]


def test_query_limit_keeps_newest(log: AuditLog):
    append_rows(log, 10)

    lines = log.query(limit=3)

    assert [json.loads(line)["task_id"] for line in lines] == ["t9", "t8", "t7"]


def test_query_rejects_bad_arguments(log: AuditLog):
    with pytest.raises(ValueError, match="limit must be >= 1, not 0"):
        log.query(limit=0)
    with pytest.raises(ValueError, match="since .* is after until"):
        log.query(since=row_time(5), until=row_time(1))


def test_query_skips_torn_lines(log: AuditLog):
    append_rows(log, 2)
    tear(log.path)

    assert len(log.query()) == 2


def test_tail_oldest_first(log: AuditLog):
    append_rows(log, 5)

    lines = log.tail(3)

    assert lines == file_lines(log.path)[2:]
    assert log.tail(0) == []
    assert log.tail(50) == file_lines(log.path)


def test_tail_shows_torn_line_as_written(log: AuditLog):
    append_rows(log, 2)
    tear(log.path)

    assert log.tail(1) == ['{"timestamp":"2023-11-14T22:13:2']


# Reading writes nothing ------------------------------------------------------------


def test_reading_missing_log_creates_nothing(folder: Path):
    log = AuditLog(folder)

    assert log.tail(10) == []
    assert log.query() == []
    assert list(log.read_rows()) == []
    report = log.verify()

    assert report.ok
    assert report.rows_checked == 0
    assert report.files == ()
    assert report.starts_at_genesis is None
    assert not folder.exists()


def test_reading_changes_no_file(log: AuditLog, folder: Path):
    append_rows(log, 5)
    before = folder_state(folder)

    log.tail(3)
    log.query(task_id="t1")
    list(log.read_rows())
    log.verify()

    assert folder_state(folder) == before


def test_reading_without_lock_file(log: AuditLog, folder: Path):
    # A log copied from elsewhere has no lock file; reads must not add one.
    append_rows(log, 3)
    (folder / ".lock").unlink()

    assert len(log.tail(5)) == 3
    assert log.verify().ok
    assert not (folder / ".lock").exists()


def test_public_names():
    assert sorted(audit.__all__) == sorted(
        [
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
    )
