"""Bad input to `relaymesh`: one clear line on stderr, and nothing changes.

Each row of CASES is a command with one thing wrong: a malformed or invalid
file, an option out of range, a missing option, an id that does not exist,
a root that was never initialised. For every row the command must

- exit with the expected status: 2 for a usage or validation error, 1 for a
  task or root that does not exist, 3 for a database that cannot be used;
- print nothing on stdout;
- print exactly one line on stderr, without a traceback, that contains the
  given fragments (the option, file, key or value that was wrong);
- leave the root as it was: the same folders, the same files with the same
  sizes, and the same number of rows in every table of relaymesh.db. A root
  that did not exist must still not exist.

Most rows run on a copy of the seeded root (a finished task, a pending task
and a pending workflow), so a command that wrongly writes has rows and files
to disturb. Files a row needs are written before the "before" snapshot:
paths under `{root}` land in the root, paths under `{inputs}` in a sibling
folder outside it.

All rows run in one module-scoped batch, a few commands at a time, because
each command spends most of its half second starting the interpreter. The
tests then check one row each, so a failure names its row.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pytest

USAGE = 2
NOT_FOUND = 1

SMALL_PAYLOAD_LIMIT = {"{root}/relaymesh-settings.json": {"payloadMaxBytes": 100}}
VALID_WORKFLOW = {"steps": [{"id": "only", "agent": "echo", "input": "x"}]}
MISSING_TASK = "tsk_missing0000000000000000000000"
STORE_ERROR = 3

# Valid JSON nested deeper than Python's json module can parse: it raises
# RecursionError, not JSONDecodeError.
DEEPLY_NESTED = "[" * 5000 + "]" * 5000
DEMO_TARGET = {"{inputs}/target/a.py": "print(1)\n"}


@dataclass(frozen=True)
class BadInput:
    """One row: a command, what it must print, and the files it needs."""

    id: str
    args: tuple[str, ...]
    status: int
    mentions: tuple[str, ...]
    # "seeded" is a copy of the seeded root, "missing" no folder at all, and
    # "empty" an existing empty folder.
    root: str = "seeded"
    # Path with {root} or {inputs} -> str, bytes, or a value written as JSON.
    files: dict[str, object] = field(default_factory=dict)
    stdin: bytes | None = None
    # A known product bug: the row is expected to fail, strictly.
    bug: str | None = None


def workflow_file(name: str, document: object) -> dict[str, object]:
    return {f"{{inputs}}/{name}": document}


def submit_workflow(name: str) -> tuple[str, ...]:
    return ("submit-workflow", "--file", f"{{inputs}}/{name}", "--root", "{root}")


def submit(*options: str) -> tuple[str, ...]:
    return ("submit", *options, "--root", "{root}")


CASES = [
    # Workflow files.
    BadInput(
        "workflow-malformed-json",
        submit_workflow("malformed.json"),
        USAGE,
        ("malformed.json", "not valid JSON", "line 1"),
        files={"{inputs}/malformed.json": '{"steps": [{"id": "a",'},
    ),
    BadInput(
        "workflow-cyclic",
        submit_workflow("cyclic.json"),
        USAGE,
        ("cyclic.json", "cycle"),
        files=workflow_file(
            "cyclic.json",
            {
                "steps": [
                    {"id": "a", "agent": "echo", "dependsOn": ["c"]},
                    {"id": "b", "agent": "echo", "dependsOn": ["a"]},
                    {"id": "c", "agent": "echo", "dependsOn": ["b"]},
                ]
            },
        ),
    ),
    BadInput(
        "workflow-self-dependency",
        submit_workflow("self.json"),
        USAGE,
        ("'a'", "depends on itself"),
        files=workflow_file(
            "self.json", {"steps": [{"id": "a", "agent": "echo", "dependsOn": ["a"]}]}
        ),
    ),
    BadInput(
        "workflow-unknown-dependency",
        submit_workflow("dangling.json"),
        USAGE,
        ("'b'", "unknown step", "'ghost'"),
        files=workflow_file(
            "dangling.json",
            {
                "steps": [
                    {"id": "a", "agent": "echo"},
                    {"id": "b", "agent": "echo", "dependsOn": ["a", "ghost"]},
                ]
            },
        ),
    ),
    BadInput(
        "workflow-unknown-agent",
        submit_workflow("agentless.json"),
        USAGE,
        ("'nobody'", "unknown agent", "echo"),
        files=workflow_file(
            "agentless.json", {"steps": [{"id": "a", "agent": "nobody"}]}
        ),
    ),
    BadInput(
        "workflow-oversize-step",
        submit_workflow("big.json"),
        USAGE,
        ("'big'", "101 bytes", "payloadMaxBytes"),
        files={
            **SMALL_PAYLOAD_LIMIT,
            **workflow_file(
                "big.json",
                {
                    "steps": [
                        {"id": "small", "agent": "echo", "input": "ok"},
                        {"id": "big", "agent": "echo", "input": "x" * 101},
                    ]
                },
            ),
        },
    ),
    BadInput(
        "workflow-unknown-top-level-key",
        submit_workflow("extra.json"),
        USAGE,
        ("'extra'",),
        files=workflow_file("extra.json", {**VALID_WORKFLOW, "extra": 1}),
    ),
    BadInput(
        "workflow-no-steps",
        submit_workflow("empty.json"),
        USAGE,
        ("'steps'", "non-empty"),
        files=workflow_file("empty.json", {"steps": []}),
    ),
    BadInput(
        "workflow-not-utf8",
        submit_workflow("latin1.json"),
        USAGE,
        ("latin1.json", "utf-8"),
        files={"{inputs}/latin1.json": b'{"steps": [{"id": "caf\xe9"}]}'},
    ),
    BadInput(
        "workflow-file-missing",
        submit_workflow("absent.json"),
        USAGE,
        ("absent.json", "does not exist"),
    ),
    BadInput(
        "workflow-file-option-missing",
        ("submit-workflow", "--root", "{root}"),
        USAGE,
        ("--file", "required"),
    ),
    # submit.
    BadInput(
        "submit-unknown-agent",
        submit("--agent", "nobody", "--input", "x"),
        USAGE,
        ("'nobody'", "unknown agent", "echo"),
    ),
    BadInput(
        "submit-oversize-input",
        submit("--agent", "echo", "--input", "x" * 101),
        USAGE,
        ("101 bytes", "100", "payloadMaxBytes"),
        files=SMALL_PAYLOAD_LIMIT,
    ),
    BadInput(
        # 51 characters, 102 bytes in UTF-8: the limit counts bytes.
        "submit-oversize-multibyte-input",
        submit("--agent", "echo", "--input", "é" * 51),
        USAGE,
        ("102 bytes", "payloadMaxBytes"),
        files=SMALL_PAYLOAD_LIMIT,
    ),
    BadInput(
        "submit-oversize-input-file",
        submit("--agent", "echo", "--input-file", "{inputs}/big.txt"),
        USAGE,
        ("101 bytes", "payloadMaxBytes"),
        files={**SMALL_PAYLOAD_LIMIT, "{inputs}/big.txt": "y" * 101},
    ),
    BadInput(
        "submit-bad-priority",
        submit("--agent", "echo", "--input", "x", "--priority", "urgent"),
        USAGE,
        ("--priority", "'urgent'", "high"),
    ),
    BadInput(
        "submit-empty-priority",
        submit("--agent", "echo", "--input", "x", "--priority", ""),
        USAGE,
        ("--priority",),
    ),
    BadInput(
        "submit-payload-not-json",
        submit("--agent", "echo", "--payload", "{not json"),
        USAGE,
        ("--payload", "not valid JSON"),
    ),
    BadInput(
        "submit-input-and-payload",
        submit("--agent", "echo", "--input", "x", "--payload", "{}"),
        USAGE,
        ("--payload", "--input", "not allowed"),
    ),
    BadInput(
        "submit-agent-missing",
        submit("--input", "x"),
        USAGE,
        ("--agent", "required"),
    ),
    BadInput(
        "submit-input-missing",
        submit("--agent", "echo"),
        USAGE,
        ("--input", "--payload", "--input-file", "required"),
    ),
    BadInput(
        "submit-input-file-not-utf8",
        submit("--agent", "echo", "--input-file", "{inputs}/latin1.txt"),
        USAGE,
        ("latin1.txt", "UTF-8"),
        files={"{inputs}/latin1.txt": b"caf\xe9\n"},
    ),
    BadInput(
        "submit-stdin-not-utf8",
        submit("--agent", "echo", "--input-file", "-"),
        USAGE,
        ("standard input", "UTF-8"),
        stdin=b"\xff\xfe\x00binary",
    ),
    BadInput(
        "submit-input-file-missing",
        submit("--agent", "echo", "--input-file", "{inputs}/absent.txt"),
        USAGE,
        ("--input-file", "absent.txt", "No such file"),
    ),
    BadInput(
        "submit-idempotency-key-too-long",
        submit("--agent", "echo", "--input", "x", "--idempotency-key", "k" * 300),
        USAGE,
        ("idempotency key", "300"),
    ),
    # Settings and agent files in the root.
    BadInput(
        "settings-unknown-key-on-submit",
        submit("--agent", "echo", "--input", "x"),
        USAGE,
        (
            "relaymesh-settings.json",
            "'leaseTimeoutMz'",
            "did you mean 'leaseTimeoutMs'",
        ),
        files={"{root}/relaymesh-settings.json": {"leaseTimeoutMz": 1000}},
    ),
    BadInput(
        "settings-unknown-size-key",
        submit("--agent", "echo", "--input", "x"),
        USAGE,
        ("'payloadMaxByte'", "did you mean 'payloadMaxBytes'"),
        files={"{root}/relaymesh-settings.json": {"payloadMaxByte": 1000}},
    ),
    BadInput(
        "settings-integer-wrong-type",
        submit("--agent", "echo", "--input", "x"),
        USAGE,
        ("'leaseTimeoutMs'", "integer", '"fast"'),
        files={"{root}/relaymesh-settings.json": {"leaseTimeoutMs": "fast"}},
    ),
    BadInput(
        "settings-boolean-wrong-type",
        submit("--agent", "echo", "--input", "x"),
        USAGE,
        ("'pauseWorkerWhenLocalNotAlive'", "true or false"),
        files={
            "{root}/relaymesh-settings.json": {"pauseWorkerWhenLocalNotAlive": "yes"}
        },
    ),
    BadInput(
        "settings-malformed-json",
        submit("--agent", "echo", "--input", "x"),
        USAGE,
        ("relaymesh-settings.json", "invalid JSON", "line 1"),
        files={"{root}/relaymesh-settings.json": '{"leaseTimeoutMs": '},
    ),
    BadInput(
        "settings-not-an-object",
        submit("--agent", "echo", "--input", "x"),
        USAGE,
        ("relaymesh-settings.json", "JSON object"),
        files={"{root}/relaymesh-settings.json": [1, 2]},
    ),
    BadInput(
        "scripts-malformed-json",
        submit("--agent", "echo", "--input", "x"),
        USAGE,
        ("scripts.json", "not valid JSON"),
        files={"{root}/agents/scripts.json": '{"agents": [{"id": "x",'},
    ),
    BadInput(
        "scripts-entry-without-command",
        submit("--agent", "echo", "--input", "x"),
        USAGE,
        ("scripts.json", "'lonely'", "command"),
        files={"{root}/agents/scripts.json": {"agents": [{"id": "lonely"}]}},
    ),
    BadInput(
        "scripts-not-an-object",
        submit("--agent", "echo", "--input", "x"),
        USAGE,
        ("scripts.json", "agents"),
        files={"{root}/agents/scripts.json": ["echo"]},
    ),
    BadInput(
        "retry-policies-malformed-json",
        submit("--agent", "echo", "--input", "x"),
        USAGE,
        ("retry-policies.json",),
        files={"{root}/agents/retry-policies.json": '{"agents": ['},
    ),
    # Listing and replay options.
    *(
        BadInput(
            f"tasks-limit-{label}",
            ("tasks", "--limit", value, "--root", "{root}"),
            USAGE,
            ("--limit", value),
        )
        for label, value in (("zero", "0"), ("negative", "-1"), ("text", "abc"))
    ),
    BadInput(
        "tasks-offset-negative",
        ("tasks", "--offset", "-1", "--root", "{root}"),
        USAGE,
        ("--offset", "-1"),
    ),
    BadInput(
        "tasks-bad-status",
        ("tasks", "--status", "bogus", "--root", "{root}"),
        USAGE,
        ("--status", "'BOGUS'", "PENDING"),
    ),
    BadInput(
        "replay-batch-bad-status",
        ("replay-batch", "--status", "PENDING", "--root", "{root}"),
        USAGE,
        ("--status", "'PENDING'", "DEAD_LETTER"),
    ),
    BadInput(
        "replay-batch-limit-zero",
        ("replay-batch", "--limit", "0", "--root", "{root}"),
        USAGE,
        ("--limit", "0"),
    ),
    BadInput(
        "purge-negative-days",
        ("purge", "--done-retention-days", "-1", "--root", "{root}"),
        USAGE,
        ("--done-retention-days", "-1"),
    ),
    BadInput(
        "purge-nan-days",
        ("purge", "--idempotency-ttl-days", "nan", "--root", "{root}"),
        USAGE,
        ("--idempotency-ttl-days", "nan"),
    ),
    # Missing task ids.
    *(
        BadInput(
            f"{command}-id-missing",
            (command, "--root", "{root}"),
            USAGE,
            ("task_id", "required"),
        )
        for command in ("task", "workflow", "replay")
    ),
    # Task ids that do not exist.
    BadInput(
        "task-unknown-id",
        ("task", MISSING_TASK, "--root", "{root}"),
        NOT_FOUND,
        (MISSING_TASK, "not found"),
    ),
    BadInput(
        "workflow-unknown-id",
        ("workflow", MISSING_TASK, "--root", "{root}"),
        NOT_FOUND,
        (MISSING_TASK, "not found"),
    ),
    BadInput(
        "replay-unknown-id",
        ("replay", MISSING_TASK, "--root", "{root}"),
        NOT_FOUND,
        (MISSING_TASK, "not found"),
    ),
    BadInput(
        "replay-dry-run-unknown-id",
        ("replay", MISSING_TASK, "--dry-run", "--root", "{root}"),
        NOT_FOUND,
        (MISSING_TASK, "not found"),
    ),
    # dead-export --out.
    BadInput(
        "dead-export-out-missing",
        ("dead-export", "--root", "{root}"),
        USAGE,
        ("--out", "required"),
    ),
    BadInput(
        "dead-export-out-is-folder",
        ("dead-export", "--out", "{inputs}", "--root", "{root}"),
        USAGE,
        ("--out", "is a folder"),
    ),
    BadInput(
        "dead-export-out-under-file",
        ("dead-export", "--out", "{inputs}/plain.txt/dead.json", "--root", "{root}"),
        USAGE,
        ("--out", "plain.txt"),
        files={"{inputs}/plain.txt": "a file, not a folder\n"},
    ),
    # Node ids.
    BadInput(
        "worker-node-id-with-space",
        ("worker", "--once", "--node-id", "bad id!", "--root", "{root}"),
        USAGE,
        ("--node-id", "'bad id!'"),
    ),
    BadInput(
        "worker-node-id-too-long",
        ("worker", "--once", "--node-id", "n" * 65, "--root", "{root}"),
        USAGE,
        ("--node-id", "1-64"),
    ),
    BadInput(
        "node-node-id-with-slash",
        ("node", "--node-id", "a/b", "--root", "{root}"),
        USAGE,
        ("--node-id", "'a/b'"),
    ),
    BadInput(
        "worker-interval-negative",
        ("worker", "--once", "--interval-ms", "-5", "--root", "{root}"),
        USAGE,
        ("--interval-ms", "-5"),
    ),
    # A root that was never initialised is reported, not created.
    *(
        BadInput(
            f"uninitialised-{'-'.join(args[:1])}",
            (*args, "--root", "{root}"),
            NOT_FOUND,
            ("no RelayMesh root", "relaymesh init"),
            root="missing",
            files=workflow_file("valid.json", VALID_WORKFLOW),
        )
        # One command of each kind: listing, submitting, by task id, batch
        # write, export.
        for args in (
            ("agents",),
            ("submit", "--agent", "echo", "--input", "x"),
            ("submit-workflow", "--file", "{inputs}/valid.json"),
            ("task", MISSING_TASK),
            ("replay-batch",),
            ("dead-export", "--out", "{inputs}/dead.json"),
            ("purge",),
        )
    ),
    *(
        BadInput(
            f"empty-folder-{args[0]}",
            (*args, "--root", "{root}"),
            NOT_FOUND,
            ("no RelayMesh root",),
            root="empty",
        )
        for args in (("submit", "--agent", "echo", "--input", "x"),)
    ),
    BadInput(
        "demo-target-missing",
        ("demo", "--target", "{inputs}/nowhere", "--root", "{root}"),
        USAGE,
        ("--target", "nowhere", "not a folder"),
        root="missing",
    ),
    # JSON nested too deep to parse, in each place that parses JSON.
    BadInput(
        "workflow-deeply-nested",
        submit_workflow("deep.json"),
        USAGE,
        ("deep.json",),
        files={"{inputs}/deep.json": DEEPLY_NESTED},
    ),
    BadInput(
        "settings-deeply-nested",
        submit("--agent", "echo", "--input", "x"),
        USAGE,
        ("relaymesh-settings.json",),
        files={"{root}/relaymesh-settings.json": DEEPLY_NESTED},
    ),
    BadInput(
        "scripts-deeply-nested",
        submit("--agent", "echo", "--input", "x"),
        USAGE,
        ("scripts.json",),
        files={"{root}/agents/scripts.json": DEEPLY_NESTED},
    ),
    BadInput(
        "payload-deeply-nested",
        submit("--agent", "echo", "--payload", DEEPLY_NESTED),
        USAGE,
        ("--payload",),
    ),
    # The demo validates a given root before it writes into it.
    BadInput(
        "demo-settings-invalid",
        ("demo", "--target", "{inputs}/target", "--root", "{root}"),
        USAGE,
        ("'leaseTimeoutMz'",),
        files={
            **DEMO_TARGET,
            "{root}/relaymesh-settings.json": {"leaseTimeoutMz": 1000},
        },
    ),
    BadInput(
        "demo-scripts-malformed",
        ("demo", "--target", "{inputs}/target", "--root", "{root}"),
        USAGE,
        ("scripts.json",),
        files={**DEMO_TARGET, "{root}/agents/scripts.json": '{"agents": ['},
    ),
    # A root whose database was overwritten: a store error, status 3.
    BadInput(
        "database-not-sqlite",
        submit("--agent", "echo", "--input", "x"),
        STORE_ERROR,
        ("relaymesh.db", "not a database"),
        files={"{root}/relaymesh.db": "this is not a database\n" * 200},
    ),
    BadInput(
        "unknown-command",
        ("frobnicate", "--root", "{root}"),
        USAGE,
        ("'frobnicate'",),
    ),
]


@dataclass(frozen=True)
class Outcome:
    root: Path
    before: object
    after: object
    result: object


def _substitute(text: str, root: Path, inputs: Path) -> str:
    return text.replace("{root}", str(root)).replace("{inputs}", str(inputs))


def _write(path: Path, content: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif isinstance(content, str):
        path.write_text(content, encoding="utf-8")
    else:
        path.write_text(json.dumps(content), encoding="utf-8")


@pytest.fixture(scope="module")
def outcomes(
    seeded_root_template, tmp_path_factory, cli_runner, run_cli_batch, snapshot_root
) -> dict[str, Outcome]:
    """Run every row once; map each row id to its snapshots and result."""
    assert len({case.id for case in CASES}) == len(CASES), "duplicate row ids"
    prepared = []
    for case in CASES:
        home = tmp_path_factory.mktemp(case.id)
        root = home / "root"
        inputs = home / "inputs"
        inputs.mkdir()
        if case.root == "seeded":
            shutil.copytree(seeded_root_template, root)
        elif case.root == "empty":
            root.mkdir()
        for name, content in case.files.items():
            _write(Path(_substitute(name, root, inputs)), content)
        args = [_substitute(arg, root, inputs) for arg in case.args]
        prepared.append((case, root, snapshot_root(root), home, args))

    results = run_cli_batch(
        [
            {"args": args, "cwd": home, "stdin": case.stdin}
            for case, _, _, home, args in prepared
        ]
    )
    return {
        case.id: Outcome(root, before, snapshot_root(root), result)
        for (case, root, before, _, _), result in zip(prepared, results)
    }


def _param(case: BadInput):
    marks = [pytest.mark.xfail(strict=True, reason=case.bug)] if case.bug else []
    return pytest.param(case, id=case.id, marks=marks)


@pytest.mark.parametrize("case", [_param(case) for case in CASES])
def test_bad_input_rejected_cleanly(case: BadInput, outcomes):
    outcome = outcomes[case.id]
    result = outcome.result
    where = result.describe()

    assert result.returncode == case.status, where
    assert result.stdout == "", where
    assert "Traceback" not in result.stderr, where
    assert result.stderr.endswith("\n"), where
    assert len(result.stderr.splitlines()) == 1, where
    for fragment in case.mentions:
        assert fragment in result.stderr, f"{fragment!r} not in stderr\n{where}"

    assert outcome.after == outcome.before, f"the root changed\n{where}"
    if case.root == "missing":
        assert not outcome.root.exists(), f"the root was created\n{where}"


@pytest.mark.parametrize("command", ["stats", "tasks", "health", "agents", "metrics"])
def test_read_only_command_warns_about_bad_settings(command, run_cli, tmp_path):
    """A typo in the settings file must not hide the root from its operator."""
    root = tmp_path / "root"
    run_cli("init", "--root", root)
    (root / "relaymesh-settings.json").write_text('{"baseBackofMs": 200}')
    result = run_cli(command, "--root", root)
    warnings = result.stderr.splitlines()
    assert len(warnings) == 1, result.describe()
    assert "warning" in warnings[0]
    assert "did you mean 'baseBackoffMs'" in warnings[0]
    # health reports the broken file as a failed check; the others carry on.
    assert result.returncode == (1 if command == "health" else 0), result.describe()
