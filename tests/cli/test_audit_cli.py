"""Tests of the audit commands: audit-tail, audit-query, audit-verify.

The commands are parsed by a parser built here with the module's
`register`, exactly as the `relaymesh` parser builds its own, and their
handlers run in-process with stdout captured. Each test initialises a real
root and fills its audit log through `AuditLog`.
"""

from __future__ import annotations

import argparse
import json
from datetime import datetime, timezone
from pathlib import Path

import pytest

from relaymesh.cli import audit as audit_cli
from relaymesh.cli.arguments import ArgumentParser, add_common
from relaymesh.cli.output import Output
from relaymesh.errors import NotFoundError, ValidationError
from relaymesh.observability.audit import AuditLog
from relaymesh.paths import RootLayout
from relaymesh.runtime import Runtime

START_NS = 1_714_564_800_000_000_000  # 2024-05-01T12:00:00Z
STEP_NS = 60 * 1_000_000_000  # one row a minute


class MinuteClock:
    def __init__(self) -> None:
        self.next_ns = START_NS

    def __call__(self) -> int:
        now = self.next_ns
        self.next_ns += STEP_NS
        return now


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="relaymesh")
    common = ArgumentParser(add_help=False)
    add_common(common)
    commands = parser.add_subparsers(dest="command", parser_class=ArgumentParser)
    audit_cli.register(commands, common)
    return parser


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(list(argv))


def run(*argv: str, terminal: bool = False) -> int:
    """Run a command; `terminal` makes the output act as on a terminal."""
    args = parse(*argv)
    out = Output(args.json)
    if terminal and not args.json:
        out.json = False
    return args.handler(args, out)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "root"
    Runtime.open(path).close()
    return path


@pytest.fixture
def log(root: Path) -> AuditLog:
    return AuditLog(RootLayout(root).audit, clock_ns=MinuteClock())


@pytest.fixture
def filled(log: AuditLog) -> list[dict]:
    """Rows at 12:00, 12:01, ... 12:09 on 2024-05-01: t0..t4 twice each."""
    rows = []
    for index in range(10):
        action = "task.submit" if index < 5 else "task.cancel"
        task_id = f"t{index % 5}"
        rows.append(log.append(action, "cli", f"task/{task_id}", "ok", task_id=task_id))
    return rows


def log_lines(root: Path) -> list[str]:
    return (
        (RootLayout(root).audit / "audit.log").read_text(encoding="utf-8").splitlines()
    )


def audit_state(root: Path) -> dict[str, bytes]:
    folder = RootLayout(root).audit
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


def test_register_adds_audit_commands():
    parser = build_parser()
    commands = next(
        action
        for action in parser._actions
        if isinstance(action, argparse._SubParsersAction)
    )
    assert sorted(commands.choices) == ["audit-query", "audit-tail", "audit-verify"]


# audit-tail -----------------------------------------------------------------------


def test_tail_prints_last_lines_oldest_first(root, filled, capsys):
    status = run("audit-tail", "--root", str(root), "--lines", "3")

    assert status == 0
    assert capsys.readouterr().out.splitlines() == log_lines(root)[-3:]


def test_tail_default_is_fifty_lines(root, log, capsys):
    for index in range(60):
        log.append("a.b", "cli", f"r{index}", "ok")

    run("audit-tail", "--root", str(root))

    assert capsys.readouterr().out.splitlines() == log_lines(root)[-50:]


def test_tail_json_option_prints_array(root, filled, capsys):
    run("audit-tail", "--root", str(root), "--lines", "2", "--json")

    assert json.loads(capsys.readouterr().out) == filled[-2:]


def test_tail_json_keeps_torn_line(root, filled, capsys):
    with (RootLayout(root).audit / "audit.log").open("a") as handle:
        handle.write('{"timestamp":"20')

    run("audit-tail", "--root", str(root), "--lines", "2", "--json")

    document = json.loads(capsys.readouterr().out)
    assert document == [filled[-1], {"unparsedLine": '{"timestamp":"20'}]


def test_tail_of_empty_log_prints_nothing(root, capsys):
    assert run("audit-tail", "--root", str(root)) == 0
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("0", "0 is out of range: must be at least 1 and at most 100000"),
        ("100001", "100001 is out of range"),
        ("many", "'many' is not an integer"),
    ],
)
def test_tail_rejects_bad_line_count(root, capsys, value, message):
    with pytest.raises(SystemExit) as exit_info:
        parse("audit-tail", "--root", str(root), "--lines", value)

    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert "--lines" in error
    assert message in error


# audit-query ----------------------------------------------------------------------


def test_query_prints_json_array_newest_first(root, filled, capsys):
    status = run("audit-query", "--root", str(root), "--task-id", "t1")

    assert status == 0
    document = json.loads(capsys.readouterr().out)
    assert document == [filled[6], filled[1]]


def test_query_on_terminal_prints_lines(root, filled, capsys):
    run("audit-query", "--root", str(root), "--action", "task.cancel", terminal=True)

    assert capsys.readouterr().out.splitlines() == log_lines(root)[5:][::-1]


def test_query_on_terminal_without_match(root, filled, capsys):
    run("audit-query", "--root", str(root), "--task-id", "nope", terminal=True)

    assert capsys.readouterr().out == "no audit rows match\n"


def test_query_without_match_prints_empty_array(root, filled, capsys):
    run("audit-query", "--root", str(root), "--task-id", "nope")

    assert json.loads(capsys.readouterr().out) == []


def test_query_time_range_inclusive(root, filled, capsys):
    run(
        "audit-query",
        "--root",
        str(root),
        "--from",
        "2024-05-01T12:02:00Z",
        "--to",
        "2024-05-01T14:04:00+02:00",
    )

    document = json.loads(capsys.readouterr().out)
    assert [row["timestamp"] for row in document] == [
        "2024-05-01T12:04:00.000000000Z",
        "2024-05-01T12:03:00.000000000Z",
        "2024-05-01T12:02:00.000000000Z",
    ]


def test_query_time_without_offset_is_utc(root, filled, capsys):
    run("audit-query", "--root", str(root), "--from", "2024-05-01T12:08:00")

    assert [row["task_id"] for row in json.loads(capsys.readouterr().out)] == [
        "t4",
        "t3",
    ]


def test_query_limit(root, filled, capsys):
    run("audit-query", "--root", str(root), "--limit", "2")

    assert json.loads(capsys.readouterr().out) == [filled[9], filled[8]]


@pytest.mark.parametrize("option", ["--from", "--to"])
def test_query_rejects_bad_time(root, capsys, option):
    with pytest.raises(SystemExit) as exit_info:
        parse("audit-query", "--root", str(root), option, "yesterday")

    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1
    assert f"argument {option}" in error
    assert "'yesterday'" in error
    assert "2024-05-01T12:00:00Z" in error


def test_query_rejects_from_after_to(root, filled):
    with pytest.raises(ValidationError) as error_info:
        run(
            "audit-query",
            "--root",
            str(root),
            "--from",
            "2024-05-02T00:00:00Z",
            "--to",
            "2024-05-01T00:00:00Z",
        )

    message = str(error_info.value)
    assert "--from 2024-05-02T00:00:00+00:00" in message
    assert "--to 2024-05-01T00:00:00+00:00" in message
    assert "--from must be at or before --to" in message
    assert error_info.value.exit_status == 2


def test_query_rejects_bad_limit(root, capsys):
    with pytest.raises(SystemExit):
        parse("audit-query", "--root", str(root), "--limit", "0")

    assert "--limit" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-05-01T12:00:00Z", datetime(2024, 5, 1, 12, tzinfo=timezone.utc)),
        ("2024-05-01T14:00:00+02:00", datetime(2024, 5, 1, 12, tzinfo=timezone.utc)),
        ("2024-05-01T12:00:00", datetime(2024, 5, 1, 12, tzinfo=timezone.utc)),
        ("2024-05-01", datetime(2024, 5, 1, tzinfo=timezone.utc)),
        (
            "2024-05-01T12:00:00.123456Z",
            datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=timezone.utc),
        ),
    ],
)
def test_iso_time_accepts(text, expected):
    assert audit_cli.iso_time(text) == expected


@pytest.mark.parametrize("text", ["", "now", "2024-13-01", "0001-01-01T00:00:00+01:00"])
def test_iso_time_rejects(text):
    with pytest.raises(argparse.ArgumentTypeError, match="expected an ISO-8601 time"):
        audit_cli.iso_time(text)


# audit-verify ---------------------------------------------------------------------


def test_verify_valid_chain(root, filled, capsys):
    status = run("audit-verify", "--root", str(root))

    assert status == 0
    document = json.loads(capsys.readouterr().out)
    assert document["ok"] is True
    assert document["rowsChecked"] == 10
    assert document["files"] == ["audit.log"]
    assert document["lastHash"] == filled[-1]["hash"]
    assert document["startsAtGenesis"] is True
    assert document["problemCount"] == 0
    assert document["firstProblem"] is None


def test_verify_valid_chain_on_terminal(root, filled, capsys):
    run("audit-verify", "--root", str(root), terminal=True)

    summary = capsys.readouterr().out
    assert summary.startswith("audit chain valid: 10 rows in audit.log")
    assert filled[-1]["hash"] in summary


def test_verify_broken_chain(root, filled, capsys):
    path = RootLayout(root).audit / "audit.log"
    lines = path.read_text(encoding="utf-8").splitlines()
    del lines[4]
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")

    status = run("audit-verify", "--root", str(root))

    assert status == 1
    document = json.loads(capsys.readouterr().out)
    assert document["ok"] is False
    assert document["problemCount"] == 1
    first = document["firstProblem"]
    assert (first["file"], first["line"], first["reason"]) == (
        "audit.log",
        5,
        "prev_hash_mismatch",
    )


def test_verify_broken_chain_on_terminal(root, filled, capsys):
    with (RootLayout(root).audit / "audit.log").open("a") as handle:
        handle.write("junk\n")

    status = run("audit-verify", "--root", str(root), terminal=True)

    assert status == 1
    summary = capsys.readouterr().out
    assert summary.startswith("audit chain broken: 1 problem(s) in 10 rows")
    assert "audit.log line 11: invalid_json" in summary


def test_verify_empty_log(root, capsys):
    assert run("audit-verify", "--root", str(root)) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["rowsChecked"] == 0
    assert document["startsAtGenesis"] is None


# Read-only behaviour ------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["audit-tail", "--lines", "5"],
        ["audit-query", "--task-id", "t1"],
        ["audit-query", "--from", "2024-05-01T12:00:00Z"],
        ["audit-verify"],
    ],
)
def test_read_commands_write_nothing(root, filled, argv):
    before = audit_state(root)

    run(*argv, "--root", str(root))
    run(*argv, "--root", str(root), terminal=True)

    assert audit_state(root) == before


@pytest.mark.parametrize("command", ["audit-tail", "audit-query", "audit-verify"])
def test_read_commands_on_root_without_log(root, command):
    assert audit_state(root) == {}

    assert run(command, "--root", str(root)) == 0

    assert audit_state(root) == {}


@pytest.mark.parametrize("command", ["audit-tail", "audit-query", "audit-verify"])
def test_missing_root_is_clear_error(tmp_path, command):
    missing = tmp_path / "nowhere"

    with pytest.raises(NotFoundError) as error_info:
        run(command, "--root", str(missing))

    message = str(error_info.value)
    assert f"no RelayMesh root at {missing}" in message
    assert "relaymesh init" in message
    assert not missing.exists()
