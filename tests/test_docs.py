"""Tests that keep the user documentation in step with the code.

docs/cli.md is generated from the argparse parser by relaymesh/cli/docs.py,
so it is compared with a fresh rendering. The hand-written pages are
checked where they name things the code defines: every table of the schema
must appear in docs/layout.md, and every command in docs/cli.md.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from relaymesh.cli import docs
from relaymesh.cli.docs import (
    EXAMPLES,
    NOTES,
    OPTION_NOTES,
    command_parsers,
    render_cli_markdown,
)
from relaymesh.store.schema import STATEMENTS

REPO_ROOT = Path(__file__).resolve().parents[1]
DOCS = REPO_ROOT / "docs"
CREATE_TABLE = re.compile(r"CREATE TABLE IF NOT EXISTS (\w+)\s*\((.*)\)", re.DOTALL)
TABLE_CONSTRAINTS = ("PRIMARY", "FOREIGN", "UNIQUE", "CHECK", "CONSTRAINT")


def schema_tables() -> dict[str, list[str]]:
    """Map each table in the schema to its column names, in declaration order."""
    tables = {}
    for statement in STATEMENTS:
        match = CREATE_TABLE.search(statement)
        if match is None:
            continue
        columns = []
        for line in match.group(2).splitlines():
            words = line.strip().split()
            if words and words[0].upper() not in TABLE_CONSTRAINTS:
                columns.append(words[0])
        tables[match.group(1)] = columns
    return tables


# --- docs/cli.md ---------------------------------------------------------------


def test_cli_page_is_up_to_date():
    committed = (DOCS / "cli.md").read_text(encoding="utf-8")
    assert committed == render_cli_markdown(), (
        f"docs/cli.md is stale; regenerate it with `{docs.REGENERATE}`"
    )


def test_cli_page_names_every_command():
    page = (DOCS / "cli.md").read_text(encoding="utf-8")
    for name in command_parsers():
        assert f"### `{name}`" in page, f"command {name!r} has no section"
        assert f"](#{name})" in page, f"command {name!r} is missing from the index"


def test_cli_module_entry_point_prints_page():
    completed = subprocess.run(
        [sys.executable, "-W", "error", "-m", "relaymesh.cli.docs"],
        capture_output=True,
        text=True,
        timeout=60,
        start_new_session=True,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stderr == ""
    assert completed.stdout == render_cli_markdown()


def test_every_command_has_note_and_example():
    commands = set(command_parsers())
    assert sorted(commands - set(EXAMPLES)) == [], "commands without an example"
    assert sorted(commands - set(NOTES)) == [], "commands without a note"
    assert sorted(set(EXAMPLES) - commands) == [], "examples of unknown commands"
    assert sorted(set(NOTES) - commands) == [], "notes of unknown commands"


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_example_is_a_real_run(name):
    command_line, _, output = EXAMPLES[name].partition("\n")
    assert command_line.startswith(f"$ relaymesh {name} ")
    if name == "worker":
        documents = [json.loads(line) for line in output.splitlines()]
        assert documents, "the worker example prints no round"
    elif name in ("metrics", "serve-metrics"):
        # Prometheus text, not JSON: it must parse as an exposition.
        exposition = "\n".join(
            line
            for line in output.splitlines()
            if not line.startswith(("$", "serving"))
        )
        families = list(text_string_to_metric_families(exposition + "\n"))
        assert families, "the example shows no metric family"
    else:
        json.loads(output)


def test_every_option_has_a_description():
    shared = docs.common_option_dests()
    for name, (_, command) in command_parsers().items():
        for action in command._actions:
            if action.dest in shared or action.dest == "help":
                continue
            described = action.help or OPTION_NOTES.get((name, action.dest))
            assert described, (
                f"{name} {action.dest}: no help and no entry in OPTION_NOTES"
            )


def test_option_notes_name_options_without_help():
    commands = command_parsers()
    for name, dest in OPTION_NOTES:
        assert name in commands, f"OPTION_NOTES names unknown command {name!r}"
        actions = {action.dest: action for action in commands[name][1]._actions}
        assert dest in actions, f"OPTION_NOTES names unknown option {name} {dest}"
        assert not actions[dest].help, (
            f"{name} {dest} has help text now; delete its entry in OPTION_NOTES"
        )


def test_integer_ranges_are_shown():
    page = render_cli_markdown()
    assert "| `--limit LIMIT` | `50` | integer 1 to 10000 |" in page
    assert "| `--offset OFFSET` | `0` | integer >= 0 |" in page


# --- docs/layout.md ------------------------------------------------------------


def test_schema_parser_finds_tables():
    tables = schema_tables()
    assert "tasks" in tables
    assert "task_id" in tables["tasks"]
    assert "PRIMARY" not in tables["step_attempts"]


def test_layout_page_names_every_table():
    page = (DOCS / "layout.md").read_text(encoding="utf-8")
    for table in schema_tables():
        assert f"### `{table}`" in page, f"table {table!r} is not described"


def test_layout_page_names_every_column():
    page = (DOCS / "layout.md").read_text(encoding="utf-8")
    for table, columns in schema_tables().items():
        section = page.split(f"### `{table}`", 1)[-1].split("\n### ", 1)[0]
        for column in columns:
            assert f"`{column}`" in section, f"column {table}.{column} is not described"


# --- links between pages ---------------------------------------------------------


def heading_anchors(text: str) -> set[str]:
    """Return the anchors that GitHub derives from a page's headings."""
    anchors = set()
    for line in text.splitlines():
        if not line.startswith("#"):
            continue
        title = line.lstrip("#").strip().replace("`", "").lower()
        title = re.sub(r"[^\w\- ]", "", title)
        anchors.add(title.replace(" ", "-"))
    return anchors


def test_heading_anchors_follow_github():
    text = "## Script agents: `agents/scripts.json`\n### `submit-workflow`\n"
    assert heading_anchors(text) == {
        "script-agents-agentsscriptsjson",
        "submit-workflow",
    }


@pytest.mark.parametrize("page", ["model.md", "cli.md", "layout.md", "agents.md"])
def test_links_resolve(page):
    text = (DOCS / page).read_text(encoding="utf-8")
    for target, anchor in re.findall(r"\]\(([\w.-]*)(?:#([\w-]+))?\)", text):
        linked = DOCS / target if target else DOCS / page
        assert linked.exists(), f"{page} links to missing {target}"
        if anchor:
            anchors = heading_anchors(linked.read_text(encoding="utf-8"))
            assert anchor in anchors, f"{page} links to missing {target}#{anchor}"
