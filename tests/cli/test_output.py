"""What `relaymesh` prints: JSON for programs, text for people.

When stdout is not a terminal, or `--json` is given, a command prints one
JSON document whose field names are camelCase. The exception is `worker`,
which prints one compact JSON object per round (JSON Lines). On a terminal,
without `--json`, a command prints a summary or a table instead. Successful
commands print nothing on stderr, and an error is one line on stderr
whatever stdout is.

The terminal cases run the command with stdout on a pseudo-terminal.
"""

from __future__ import annotations

import json
import re
import shutil

import pytest

CAMEL_CASE = re.compile(r"[a-z][a-z0-9]*(?:[A-Z][a-z0-9]*)*")
# Objects whose keys are data (status names), not field names.
DATA_KEYED_FIELDS = {"taskStatus", "stepStatus", "messageState"}
WORKFLOW = {
    "steps": [
        {"id": "first", "agent": "echo", "input": "1"},
        {"id": "second", "agent": "echo", "input": "2", "dependsOn": ["first"]},
    ]
}


def field_names_not_camel_case(value: object, path: str = "$") -> list[str]:
    """Return the JSON paths of every object key that is not camelCase."""
    found: list[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            if not CAMEL_CASE.fullmatch(key):
                found.append(f"{path}.{key}")
            if key not in DATA_KEYED_FIELDS:
                found.extend(field_names_not_camel_case(item, f"{path}.{key}"))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found.extend(field_names_not_camel_case(item, f"{path}[{index}]"))
    return found


def shape(value: object) -> object:
    """Reduce a JSON value to its structure: keys and value types."""
    if isinstance(value, dict):
        return {key: shape(item) for key, item in value.items()}
    if isinstance(value, list):
        return [shape(item) for item in value[:1]]
    return type(value).__name__


# Commands whose output is checked, each on its own copy of the seeded root.
# "{task}" is the id of the seeded root's finished task.
COMMANDS = {
    "init": ("init",),
    "agents": ("agents",),
    "submit": ("submit", "--agent", "echo", "--input", "new"),
    "submit-workflow": ("submit-workflow", "--file", "{workflow}"),
    "task": ("task", "{task}"),
    "tasks": ("tasks",),
    "workflow": ("workflow", "{task}"),
    "replay": ("replay", "{task}"),
    "replay-batch": ("replay-batch", "--dry-run"),
    "dead-export": ("dead-export", "--out", "{out}"),
    "purge": ("purge", "--dry-run"),
    "stats": ("stats",),
    "members": ("members",),
}
# The command's expected exit status where it is not 0: replaying a task that
# is not dead-lettered is reported, in JSON, with status 1.
EXIT_STATUS = {"replay": 1}
# Commands also run with --json (on a pipe it must change nothing).
WITH_JSON_FLAG = ("init", "submit", "task", "tasks", "stats")


@pytest.fixture(scope="module")
def printed(seeded_root_template, tmp_path_factory, run_cli_batch, cli_runner):
    """Run every command piped; map its name to its results.

    The first result is the plain run; a command in WITH_JSON_FLAG has a
    second result, the same command with --json.
    """
    home = tmp_path_factory.mktemp("output")
    workflow = home / "workflow.json"
    workflow.write_text(json.dumps(WORKFLOW), encoding="utf-8")
    listing = cli_runner(
        ("tasks", "--status", "SUCCESS", "--root", str(seeded_root_template)), cwd=home
    )
    finished = listing.json()[0]["taskId"]

    names = []
    jobs = []
    for name, args in COMMANDS.items():
        variants = [(), ("--json",)] if name in WITH_JSON_FLAG else [()]
        for flags in variants:
            root = home / f"{name}{'-json' if flags else ''}"
            shutil.copytree(seeded_root_template, root)
            values = {
                "{task}": finished,
                "{workflow}": str(workflow),
                "{out}": str(root.parent / f"{root.name}-dead.json"),
            }
            filled = [values.get(arg, arg) for arg in args]
            names.append(name)
            jobs.append({"args": (*filled, *flags, "--root", root), "cwd": home})

    results: dict[str, list] = {name: [] for name in COMMANDS}
    for name, result in zip(names, run_cli_batch(jobs)):
        results[name].append(result)
    return results


@pytest.mark.parametrize("name", list(COMMANDS))
def test_piped_output_is_camel_case_json(printed, name):
    runs = printed[name]

    for result in runs:
        assert result.returncode == EXIT_STATUS.get(name, 0), result.describe()
        assert result.stderr == "", result.describe()
    document = runs[0].json()
    assert field_names_not_camel_case(document) == [], runs[0].describe()
    if name in WITH_JSON_FLAG:
        # --json prints the same document shape when stdout is already a pipe.
        assert shape(runs[1].json()) == shape(document)


def test_json_is_indented_document(printed):
    piped = printed["stats"][0]

    assert piped.stdout.startswith('{\n  "')
    assert piped.stdout.endswith("}\n")
    assert piped.stdout == json.dumps(json.loads(piped.stdout), indent=2) + "\n"


def test_worker_prints_json_lines(cli_ok, seeded_root):
    result = cli_ok("worker", "--until-idle", "--node-id", "n1", "--root", seeded_root)

    lines = result.stdout.splitlines()
    assert len(lines) == 5
    for line in lines:
        summary = json.loads(line)
        assert isinstance(summary, dict)
        assert field_names_not_camel_case(summary) == [], line
    assert [json.loads(line)["processed"] for line in lines] == [True] * 4 + [False]
    assert result.stderr == ""


def test_demo_json_fields(cli_ok, tmp_path):
    target = tmp_path / "target"
    target.mkdir()
    (target / "one.py").write_text("a\nb\n", encoding="utf-8")

    result = cli_ok("demo", "--target", target, "--root", tmp_path / "root")

    document = result.json()
    assert field_names_not_camel_case(document) == []
    assert sorted(document) == [
        "elapsedSeconds",
        "lastError",
        "report",
        "root",
        "status",
        "taskId",
    ]
    assert json.loads(document["report"])["totalLines"] == 2


# On a terminal ------------------------------------------------------------


def test_terminal_init_prints_summary(cli_ok, tmp_path):
    root = tmp_path / "root"

    result = cli_ok("init", "--root", root, tty=True)

    assert result.stdout == f"Initialized RelayMesh at: {root.resolve()}\n"
    assert result.stderr == ""


def test_terminal_json_flag_prints_json(cli_ok, tmp_path):
    root = tmp_path / "root"

    result = cli_ok("init", "--root", root, "--json", tty=True)

    assert result.json() == {"root": str(root.resolve()), "initialized": True}


def test_terminal_tasks_prints_table(cli_ok, seeded_root):
    result = cli_ok("tasks", "--root", seeded_root, tty=True)

    with pytest.raises(json.JSONDecodeError):
        json.loads(result.stdout)
    assert "taskId" in result.stdout
    assert "status" in result.stdout
    assert result.stdout.count("PENDING") == 2
    assert result.stdout.count("SUCCESS") == 1


def test_terminal_error_is_one_line(run_cli, seeded_root):
    result = run_cli("task", "tsk_nothing", "--root", seeded_root, tty=True)

    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.describe()
    assert "'tsk_nothing' not found" in lines[0]
