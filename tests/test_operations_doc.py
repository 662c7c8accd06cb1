"""Tests that keep docs/operations.md, the operator's guide, true.

The page is written by hand around real command output, so it cannot be
regenerated the way docs/cli.md is. What can drift is checked here instead:

- every command the page promises to cover has a section and an example
  run, and every example command line (`$ relaymesh ...`) is still
  accepted by the real argument parser, unless the example shows it
  failing with a usage error;
- every link points at a file of the repository, and a link with an anchor
  at a heading that exists;
- the tables that list things the code defines (audit actions, lease
  conflict event types, the keys of a task export, the checks of `health`)
  list exactly what the code has. The audit actions are read from the
  source with `ast`, so a new `record(...)` call fails this test until the
  page names it;
- the claim that looking at a root writes no audit row is run: the
  read-only commands are started as real processes on a small root, and
  the audit log must be byte for byte the same afterwards.

The last test is a strict xfail. It pins a defect that bears on the
page's advice to replay a cancelled task: the replay of a soft-cancelled
task whose running steps all succeeded crashes. A fix makes it fail as
XPASS; then remove the marker.
"""

from __future__ import annotations

import ast
import os
import re
import shlex
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from relaymesh.cli.main import build_parser

REPO_ROOT = Path(__file__).resolve().parents[1]
PAGE_PATH = REPO_ROOT / "docs" / "operations.md"

# The commands the page must cover, each with a real example.
COVERED_COMMANDS = (
    "cancel",
    "task-export",
    "audit-tail",
    "audit-query",
    "audit-verify",
    "metrics",
    "serve-metrics",
    "stats",
    "health",
    "reload-settings",
    "settings-history",
    "lease-conflicts",
    "ownership-events",
    "lease-report",
    "purge",
)
# Options the page must show in use: (command, option).
COVERED_OPTIONS = (
    ("node", "--metrics-port"),
    ("node", "--settings-reload-ms"),
    ("health", "--node-id"),
    ("reload-settings", "--wait-ms"),
    ("purge", "--conflict-retention-days"),
    ("cancel", "--mode"),
)
# Commands that the page lists as writing no audit row, run by the read-only test.
READ_ONLY_COMMANDS = (
    "tasks",
    "task",
    "workflow",
    "stats",
    "health",
    "members",
    "agents",
    "metrics",
    "lease-conflicts",
    "ownership-events",
    "settings-history",
    "audit-tail",
    "audit-query",
    "audit-verify",
    "lease-report",
    "dead-export",
)
ACTION_NAME = re.compile(r"[a-z]+(?:\.[a-z_]+)+")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
INLINE_CODE = re.compile(r"`[^`]*`")
CHILD_TIMEOUT_S = 60.0


# --- reading the page -----------------------------------------------------------


def page_text() -> str:
    return PAGE_PATH.read_text(encoding="utf-8")


def split_markdown(text: str) -> tuple[list[str], list[str]]:
    """Return the lines outside fenced code blocks and the lines inside them."""
    prose, code = [], []
    fenced = False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        (code if fenced else prose).append(line)
    return prose, code


def headings(text: str) -> list[str]:
    """Return the heading lines, with their `#` marks, outside code blocks."""
    prose, _ = split_markdown(text)
    return [line for line in prose if re.match(r"#{1,6} ", line)]


def slug(heading: str) -> str:
    """Return the anchor of a heading, by the rule of GitHub's table of contents.

    The title is lower-cased, every character other than a letter, a digit,
    `_`, `-` or a space is dropped, and each space becomes `-`.
    """
    title = heading.lstrip("#").strip().lower()
    title = re.sub(r"[^\w\- ]", "", title)
    return title.replace(" ", "-")


def anchors(text: str) -> set[str]:
    found: set[str] = set()
    seen: dict[str, int] = {}
    for heading in headings(text):
        base = slug(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def example_runs(text: str) -> list[tuple[str, str]]:
    """Return the example command lines (`$ relaymesh ...` in code blocks),
    each with the line printed after it."""
    _, code = split_markdown(text)
    return [
        (line[2:].strip(), following)
        for line, following in zip(code, [*code[1:], ""])
        if line.startswith("$ relaymesh ")
    ]


def example_command_lines(text: str) -> list[str]:
    return [line for line, _ in example_runs(text)]


def command_argv(line: str) -> list[str]:
    """Return the arguments of an example line, without pipes, redirects or `&`."""
    command = re.split(r";\s|\s\|\s|\s>\s|\s&$", line)[0]
    argv = shlex.split(command)
    assert argv[0] == "relaymesh", line
    return argv[1:]


def section_table(text: str, heading: str) -> list[str]:
    """Return the names in the first column of the section's tables."""
    lines = text.splitlines()
    start = lines.index(heading)
    level = len(heading) - len(heading.lstrip("#"))
    rows: list[str] = []
    fenced = False
    for line in lines[start + 1 :]:
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        match = re.match(r"(#{1,6}) ", line)
        if fenced or (match and len(match.group(1)) > level):
            continue
        if match:
            break
        if re.fullmatch(r"\|[-| ]+\|", line) and rows:
            rows.pop()  # the row above a separator is the header
        elif line.startswith("|"):
            rows.append(line)
    return [
        name for row in rows for name in re.findall(r"`([^`]+)`", row.split("|")[1])
    ]


# --- the page covers the commands -----------------------------------------------


@pytest.mark.parametrize("command", COVERED_COMMANDS)
def test_command_has_section_and_example(command):
    text = page_text()
    in_heading = any(f"`{command}`" in line for line in headings(text))
    in_example = any(
        command_argv(line)[0] == command for line in example_command_lines(text)
    )
    assert in_heading, f"docs/operations.md has no section on {command!r}"
    assert in_example, f"docs/operations.md has no example run of {command!r}"


@pytest.mark.parametrize(("command", "option"), COVERED_OPTIONS)
def test_option_appears_in_example(command, option):
    uses = [
        argv
        for argv in map(command_argv, example_command_lines(page_text()))
        if argv[0] == command and option in argv
    ]
    assert uses, f"no example of `relaymesh {command} {option}` in docs/operations.md"


def test_node_options_have_sections():
    titles = headings(page_text())
    for option in ("--metrics-port", "--settings-reload-ms"):
        assert f"### `node {option}`" in titles


def test_example_command_lines_parse(capsys):
    """Each example parses, except those shown failing with a usage error."""
    parser = build_parser()
    runs = example_runs(page_text())
    assert len(runs) > 20, "expected the examples to be found"
    for line, printed in runs:
        argv = command_argv(line)
        usage_error = printed.startswith(f"relaymesh {argv[0]}: error:")
        try:
            parser.parse_args(argv)
        except SystemExit:
            assert usage_error, f"the example `{line}` is not accepted by relaymesh"
        else:
            assert not usage_error, f"the example `{line}` is shown failing but parses"
    capsys.readouterr()  # the usage errors printed on the way


# --- links ---------------------------------------------------------------------------


def test_every_link_resolves():
    text = page_text()
    prose, _ = split_markdown(text)
    targets = [
        target for line in prose for target in LINK.findall(INLINE_CODE.sub("``", line))
    ]
    assert targets, "expected links in docs/operations.md"
    for target in targets:
        assert not target.startswith(("http:", "https:")), (
            f"link {target!r} leaves the repository"
        )
        path_part, _, anchor = target.partition("#")
        path = (PAGE_PATH.parent / path_part).resolve() if path_part else PAGE_PATH
        assert path.is_file(), f"link {target!r} points at no file"
        assert path.is_relative_to(REPO_ROOT), f"link {target!r} leaves the repository"
        if anchor:
            known = anchors(path.read_text(encoding="utf-8"))
            assert anchor in known, (
                f"link {target!r}: no heading with anchor {anchor!r} in {path.name}"
            )


# --- tables that list what the code defines ------------------------------------


def _constants(node: ast.AST) -> set[str]:
    return {
        item.value
        for item in ast.walk(node)
        if isinstance(item, ast.Constant) and isinstance(item.value, str)
    }


def _called_name(call: ast.Call) -> str:
    func = call.func
    if isinstance(func, ast.Attribute):
        return func.attr
    return getattr(func, "id", "")


def _actions_of_call(call: ast.Call) -> set[str]:
    """Collect the actions of `record("x", ...)`, `audit.append("x", ...)`
    and `action="x"` keywords."""
    found = set()
    name = _called_name(call)
    receiver = getattr(call.func, "value", None)
    appends_to_audit = name == "append" and getattr(receiver, "attr", "") == "audit"
    if ("record" in name or appends_to_audit) and call.args:
        first = call.args[0]
        if isinstance(first, ast.Constant) and isinstance(first.value, str):
            found.add(first.value)
    for keyword in call.keywords:
        if keyword.arg == "action":
            found |= _constants(keyword.value)
    return found


def _actions_of_assignment(assign: ast.Assign) -> set[str]:
    """Collect the actions of `action = ...` and `action, other = "x", ...`."""
    found = set()
    for target in assign.targets:
        if isinstance(target, ast.Name) and target.id == "action":
            found |= _constants(assign.value)
        elif isinstance(target, ast.Tuple) and isinstance(assign.value, ast.Tuple):
            for element, value in zip(target.elts, assign.value.elts):
                if isinstance(element, ast.Name) and element.id == "action":
                    found |= _constants(value)
    return found


def audited_actions() -> set[str]:
    """Return the audit actions that the runtime and the settings watcher write."""
    sources = (
        REPO_ROOT / "relaymesh" / "runtime.py",
        REPO_ROOT / "relaymesh" / "_operator.py",
        REPO_ROOT / "relaymesh" / "actors" / "settings_watcher.py",
    )
    actions: set[str] = set()
    for source in sources:
        for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call):
                actions |= _actions_of_call(node)
            elif isinstance(node, ast.Assign):
                actions |= _actions_of_assignment(node)
    return {action for action in actions if ACTION_NAME.fullmatch(action)}


def test_audit_actions_match_code():
    in_code = audited_actions()
    assert {"task.submit", "step.execute", "runtime.settings.load"} <= in_code
    documented = section_table(page_text(), "### What is audited")
    assert len(documented) == len(set(documented)), "an action is listed twice"
    assert set(documented) == in_code, (
        f"missing from the page: {sorted(in_code - set(documented))}; "
        f"not written by the code: {sorted(set(documented) - in_code)}"
    )


def test_conflict_event_types_match_store():
    store = REPO_ROOT / "relaymesh" / "store"
    source = "".join(
        (store / name).read_text(encoding="utf-8")
        for name in ("_leases.py", "_reclaims.py")
    )
    in_code = set(re.findall(r'"(\w+_conflict)"', source))
    assert len(in_code) == 6, in_code
    documented = section_table(page_text(), "### `lease-conflicts`")
    assert set(documented) == in_code


def test_task_export_keys_match_table(driver):
    submitted = driver.runtime.submit("echo", "export me")
    driver.drain()
    document = driver.runtime.export_task(submitted.task_id)
    assert document["format"] == "relaymesh.task-export.v1"
    assert "`relaymesh.task-export.v1`" in page_text()
    documented = section_table(page_text(), "### `task-export`")
    assert documented[: len(document)] == list(document), (
        "the key table of task-export must list the export's keys in order"
    )


def test_health_checks_match_table(driver):
    checks = driver.runtime.health(node_id="node-x")["checks"]
    documented = section_table(page_text(), "### `health`")
    assert documented[: len(checks)] == list(checks)


# --- reading a root writes no audit row -------------------------------------------


def run_relaymesh(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """Run the CLI in its own process group; kill and reap it on any failure."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("RELAYMESH_ROOT", "RELAYMESH_CRASH_AT")
    }
    argv = [sys.executable, "-m", "relaymesh.cli.main", *args]
    process = subprocess.Popen(
        argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, start_new_session=True,
    )  # fmt: skip
    try:
        stdout, stderr = process.communicate(timeout=CHILD_TIMEOUT_S)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
    return subprocess.CompletedProcess(argv, process.returncode, stdout, stderr)


def test_read_only_commands_write_no_audit_row(make_driver, tmp_path):
    driver = make_driver(retry_policies=[{"id": "fail", "maxAttempts": 1}])
    single = driver.runtime.submit("echo", "look at me")
    dead = driver.runtime.submit("fail", "dead on arrival")
    driver.submit_workflow(
        [
            {"id": "a", "agent": "echo", "input": "first"},
            {"id": "b", "agent": "echo", "input": "second", "dependsOn": ["a"]},
        ]
    )
    driver.drain()
    root = str(driver.root)
    audit_log = driver.root / "audit" / "audit.log"
    before = audit_log.read_bytes()
    assert before, "the setup should have written audit rows"

    jobs = [
        [command, "--root", root]
        for command in READ_ONLY_COMMANDS
        if command not in ("task", "workflow", "lease-report", "dead-export")
    ]
    jobs += [
        ["task", single.task_id, "--root", root],
        ["workflow", single.task_id, "--root", root],
        ["health", "--node-id", "node-a", "--root", root],
        ["audit-query", "--task-id", single.task_id, "--root", root],
        ["lease-report", "--out", str(tmp_path / "report.json"), "--root", root],
        ["dead-export", "--out", "-", "--root", root],
        ["replay", dead.task_id, "--dry-run", "--root", root],
        ["replay-batch", "--dry-run", "--root", root],
        ["purge", "--dry-run", "--done-retention-days", "0", "--root", root],
    ]
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        results = list(pool.map(lambda args: run_relaymesh(args, tmp_path), jobs))

    for args, result in zip(jobs, results):
        assert result.returncode in (0, 1), (args, result.stderr)
        assert "Traceback" not in result.stderr, (args, result.stderr)
    assert audit_log.read_bytes() == before
    assert sorted(path.name for path in audit_log.parent.glob("audit.log*")) == [
        "audit.log"
    ]


def test_page_lists_read_only_commands():
    paragraph = next(
        block
        for block in page_text().split("\n\n")
        if block.startswith("Commands that only look write no audit row")
    )
    for command in READ_ONLY_COMMANDS:
        assert f"`{command}`" in paragraph, command


# --- a defect that bears on the page's advice ----------------------------------


def test_replay_soft_cancelled_finished_task(driver):
    submitted = driver.runtime.submit("echo", "finishes after a soft cancel")
    assignment = driver.claim_one()
    cancelled = driver.runtime.cancel(submitted.task_id, "soft", "superseded")
    assert cancelled.still_running == ["main"]
    driver.succeed(assignment)
    assert driver.task(submitted.task_id)["status"] == "CANCELLED"

    result = driver.runtime.replay(submitted.task_id, dry_run=True)

    assert result.task_id == submitted.task_id
    assert not result.replayed
    assert "no dead-lettered or cancelled steps" in result.message
