"""Every `relaymesh` command, run as a real process on a root in tmp_path.

Each test drives one command (or one short sequence, such as submit then
`worker --once`) and checks what it printed and what it left in the root.
Output is read as JSON because stdout is a pipe here. The JSON shape
itself is tested in tests/cli/test_output.py, and bad input in
tests/cli/test_bad_input.py.

Worker rounds use `worker --once` and `worker --until-idle`, which return
as soon as their work is done, and dead letters come from the built-in
`fail` agent with a retry policy of one attempt, so no test waits on a
backoff delay. Each command costs about half a second of interpreter
start-up, so roots that several tests need are built once and copied, and
independent read-only commands run together through `run_cli_batch`.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest

BRANCHING_WORKFLOW = {
    "steps": [
        {"id": "a", "agent": "echo", "input": "A"},
        {"id": "b", "agent": "echo", "input": "B", "priority": "high"},
        {"id": "c", "agent": "echo", "input": "C", "dependsOn": ["a", "b"]},
    ]
}
ONE_ATTEMPT_FOR_FAIL = {"agents": [{"id": "fail", "maxAttempts": 1}]}

# The demo's target folder: relative path -> content. Hidden folders,
# __pycache__ folders and other extensions are not counted.
DEMO_FILES = {
    "a.py": "one\ntwo\nthree\n",
    "pkg/b.py": "x\ny",  # no newline at the end: still two lines
    "pkg/sub/c.py": "line\n" * 10,
    "d.py": "",
    "e.py": "z",
    "f.py": "pass\n" * 7,
    ".hidden/skip.py": "pass\n" * 50,
    "pkg/__pycache__/skip.py": "pass\n" * 50,
    "notes.txt": "not python\n" * 3,
}
DEMO_EXPECTED_REPORT = {
    "totalFiles": 6,
    "totalLines": 23,
    "largest": [
        {"file": "pkg/sub/c.py", "lines": 10},
        {"file": "f.py", "lines": 7},
        {"file": "a.py", "lines": 3},
        {"file": "pkg/b.py", "lines": 2},
        {"file": "e.py", "lines": 1},
    ],
}


def inbox_files(root: Path, tier: str) -> list[Path]:
    return sorted((root / "inbox" / tier).glob("*.meta.json"))


def init_root(cli_ok, root: Path) -> Path:
    cli_ok("init", "--root", root)
    return root


@pytest.fixture(scope="module")
def dead_letter_template(tmp_path_factory, cli_runner) -> tuple[Path, list[str]]:
    """Build a root with two dead-lettered `fail` tasks and one finished task.

    Returns the root and the ids of the two dead-lettered tasks.
    """
    home = tmp_path_factory.mktemp("dead-letters")
    root = home / "root"

    def run(*args: object):
        result = cli_runner(tuple(str(arg) for arg in args), cwd=home)
        assert result.returncode == 0, result.describe()
        return result

    run("init", "--root", root)
    policies = root / "agents" / "retry-policies.json"
    policies.write_text(json.dumps(ONE_ATTEMPT_FOR_FAIL), encoding="utf-8")
    dead_ids = [
        run("submit", "--agent", "fail", "--input", text, "--root", root).json()[
            "taskId"
        ]
        for text in ("boom 1", "boom 2")
    ]
    run("submit", "--agent", "echo", "--input", "ok", "--root", root)
    run("worker", "--until-idle", "--node-id", "n1", "--root", root)
    return root, dead_ids


@pytest.fixture
def dead_letter_root(dead_letter_template, tmp_path) -> tuple[Path, list[str]]:
    """A private copy of the dead-letter root, with the dead task ids."""
    template, dead_ids = dead_letter_template
    root = tmp_path / "root"
    shutil.copytree(template, root)
    return root, dead_ids


def run_all_ok(run_cli_batch, cwd: Path, *commands: tuple) -> list:
    """Run independent commands together; fail unless each exits 0."""
    results = run_cli_batch([{"args": args, "cwd": cwd} for args in commands])
    for result in results:
        assert result.returncode == 0, result.describe()
    return results


def received_input(view: dict) -> str:
    """Return the input the echo agent saw, from a finished task's view."""
    assert view["status"] == "SUCCESS", view
    return json.loads(view["resultPayload"])["received"]


def envelope_priorities(root: Path) -> dict[str, list[str]]:
    """Map each inbox tier to the priorities written in its envelopes."""
    return {
        tier: [
            json.loads(path.read_text(encoding="utf-8"))["priority"]
            for path in inbox_files(root, tier)
        ]
        for tier in ("high", "normal", "low")
    }


# init, agents ---------------------------------------------------------------


def test_init_creates_layout(cli_ok, tmp_path):
    root = tmp_path / "root"

    document = cli_ok("init", "--root", root).json()

    assert document == {"root": str(root.resolve()), "initialized": True}
    assert (root / "relaymesh.db").is_file()
    for folder in (
        "inbox/high",
        "inbox/normal",
        "inbox/low",
        "processing",
        "done",
        "dead",
        "retry",
        "payload",
        "meta",
        "agents",
    ):
        assert (root / folder).is_dir(), folder


def test_agents_lists_builtin_and_script(cli_ok, tmp_path):
    root = init_root(cli_ok, tmp_path / "root")
    scripts = {
        "agents": [
            {
                "id": "shout",
                "command": [sys.executable, "-c", "print(1)"],
                "timeoutMs": 5000,
            }
        ]
    }
    (root / "agents" / "scripts.json").write_text(json.dumps(scripts), encoding="utf-8")

    agents = cli_ok("agents", "--root", root).json()

    by_id = {agent["agentId"]: agent for agent in agents}
    assert sorted(by_id) == ["echo", "fail", "shout"]
    assert by_id["echo"]["kind"] == "builtin"
    assert by_id["shout"]["command"] == [sys.executable, "-c", "print(1)"]
    assert by_id["shout"]["timeoutMs"] == 5000


# submit and worker ------------------------------------------------------------


def test_submit_input_then_worker_once(cli_ok, tmp_path):
    root = init_root(cli_ok, tmp_path / "root")

    submitted = cli_ok(
        "submit", "--agent", "echo", "--input", "héllo wörld", "--root", root
    ).json()

    assert submitted["deduplicated"] is False
    assert submitted["status"] == "PENDING"
    assert submitted["message"] == "task submitted"
    assert submitted["taskId"].startswith("tsk_")
    assert len(inbox_files(root, "normal")) == 1

    rounds = cli_ok("worker", "--once", "--node-id", "n1", "--root", root).json_lines()

    assert len(rounds) == 1
    assert rounds[0]["processed"] is True
    assert rounds[0]["taskId"] == submitted["taskId"]
    assert rounds[0]["outcome"] == "SUCCESS"
    assert rounds[0]["taskStatus"] == "SUCCESS"
    assert inbox_files(root, "normal") == []

    view = cli_ok("task", submitted["taskId"], "--root", root).json()
    assert view["status"] == "SUCCESS"
    assert json.loads(view["resultPayload"])["received"] == "héllo wörld"
    attempts = view["steps"][0]["attempts"]
    assert [attempt["nodeId"] for attempt in attempts] == ["n1"]
    assert attempts[0]["outcome"] == "SUCCESS"


def test_submit_payload_file_and_stdin(cli_ok, run_cli_batch, tmp_path):
    root = init_root(cli_ok, tmp_path / "root")
    payload = '{"k": [1, 2], "name": "ünï"}'
    file_text = "first line\nsecond line ✓\n\ttabbed\n"
    input_file = tmp_path / "input.txt"
    input_file.write_text(file_text, encoding="utf-8")
    stdin_text = "from standard input\nwith ünicode\n"

    from_payload = cli_ok(
        "submit", "--agent", "echo", "--payload", payload, "--root", root
    ).json()["taskId"]
    from_file = cli_ok(
        "submit", "--agent", "echo", "--input-file", input_file, "--root", root
    ).json()["taskId"]
    from_stdin = cli_ok(
        "submit",
        "--agent",
        "echo",
        "--input-file",
        "-",
        "--root",
        root,
        stdin=stdin_text.encode("utf-8"),
    ).json()["taskId"]
    rounds = cli_ok("worker", "--until-idle", "--root", root).json_lines()

    assert [summary["processed"] for summary in rounds] == [True, True, True, False]
    views = run_all_ok(
        run_cli_batch,
        tmp_path,
        *(
            ("task", task_id, "--root", root)
            for task_id in (from_payload, from_file, from_stdin)
        ),
    )
    assert received_input(views[0].json()) == payload
    assert received_input(views[1].json()) == file_text
    assert received_input(views[2].json()) == stdin_text


def test_submit_priority_picks_tier(cli_ok, tmp_path):
    root = init_root(cli_ok, tmp_path / "root")

    def submit(text: str, *priority: str) -> str:
        return cli_ok(
            "submit", "--agent", "echo", "--input", text, *priority, "--root", root
        ).json()["taskId"]

    submit("default priority")
    submit("low", "--priority", "low")
    high = submit("upper case", "--priority", "HIGH")

    assert envelope_priorities(root) == {
        "high": ["HIGH"],
        "normal": ["NORMAL"],
        "low": ["LOW"],
    }
    first = cli_ok("worker", "--once", "--root", root).json_lines()
    assert first[0]["taskId"] == high
    assert inbox_files(root, "high") == []


def test_submit_idempotency_key_dedups(cli_ok, tmp_path):
    root = init_root(cli_ok, tmp_path / "root")

    def submit(text: str, *key: str) -> dict:
        return cli_ok(
            "submit", "--agent", "echo", "--input", text, *key, "--root", root
        ).json()

    keyed = submit("a", "--idempotency-key", "order-17")
    same_key_other_input = submit("b", "--idempotency-key", "order-17")
    unkeyed = submit("a")
    unkeyed_again = submit("a")
    other_key = submit("a", "--idempotency-key", "order-18")

    assert keyed["deduplicated"] is False
    assert same_key_other_input["taskId"] == keyed["taskId"]
    assert same_key_other_input["deduplicated"] is True
    assert same_key_other_input["message"] == "task deduplicated by idempotency key"
    assert unkeyed["taskId"] != keyed["taskId"]
    assert unkeyed_again["taskId"] == unkeyed["taskId"]
    assert unkeyed_again["deduplicated"] is True
    assert other_key["taskId"] not in {keyed["taskId"], unkeyed["taskId"]}
    assert other_key["deduplicated"] is False
    # One queued message per task created, none for the deduplicated submits.
    assert len(inbox_files(root, "normal")) == 3


def test_submit_workflow_runs_to_success(cli_ok, tmp_path):
    root = init_root(cli_ok, tmp_path / "root")
    workflow_file = tmp_path / "branching.json"
    workflow_file.write_text(json.dumps(BRANCHING_WORKFLOW), encoding="utf-8")

    submitted = cli_ok(
        "submit-workflow", "--file", workflow_file, "--root", root
    ).json()

    assert submitted["message"] == "workflow submitted"
    assert submitted["deduplicated"] is False
    task_id = submitted["taskId"]
    detail = cli_ok("workflow", task_id, "--root", root).json()
    assert detail["task"]["taskId"] == task_id
    assert detail["task"]["kind"] == "workflow"
    steps = {step["name"]: step for step in detail["steps"]}
    assert sorted(steps) == ["a", "b", "c"]
    assert sorted(steps["c"]["dependsOn"]) == ["a", "b"]
    assert steps["a"]["enqueued"] is True
    assert steps["b"]["enqueued"] is True
    assert steps["c"]["enqueued"] is False
    assert steps["b"]["priority"] == "HIGH"
    assert len(inbox_files(root, "high")) == 1
    assert len(inbox_files(root, "normal")) == 1

    rounds = cli_ok("worker", "--until-idle", "--node-id", "n1", "--root", root)
    summaries = rounds.json_lines()

    assert [summary["processed"] for summary in summaries] == [True, True, True, False]
    assert summaries[0]["stepId"] == steps["b"]["stepId"]
    assert summaries[2]["stepId"] == steps["c"]["stepId"]
    detail = cli_ok("workflow", task_id, "--root", root).json()
    assert detail["task"]["status"] == "SUCCESS"
    assert {step["status"] for step in detail["steps"]} == {"SUCCESS"}

    again = cli_ok("submit-workflow", "--file", workflow_file, "--root", root).json()
    assert again["taskId"] == task_id
    assert again["deduplicated"] is True
    assert again["message"] == "workflow deduplicated by idempotency key"

    keyed = cli_ok(
        "submit-workflow",
        "--file",
        workflow_file,
        "--idempotency-key",
        "wf-2",
        "--root",
        root,
    ).json()
    assert keyed["deduplicated"] is False
    assert keyed["taskId"] != task_id


def test_worker_until_idle_drains_queue(cli_ok, seeded_root):
    rounds = cli_ok("worker", "--until-idle", "--root", seeded_root).json_lines()

    # The pending single task and the workflow's three steps, then an idle round.
    assert [summary["processed"] for summary in rounds] == [True] * 4 + [False]
    for tier in ("high", "normal", "low"):
        assert inbox_files(seeded_root, tier) == []
    statuses = {
        task["status"] for task in cli_ok("tasks", "--root", seeded_root).json()
    }
    assert statuses == {"SUCCESS"}

    idle = cli_ok("worker", "--once", "--root", seeded_root).json_lines()
    assert len(idle) == 1
    assert idle[0]["processed"] is False
    assert idle[0]["taskId"] is None
    assert idle[0]["message"] == "no queued messages"


# task, tasks, workflow --------------------------------------------------------


def test_tasks_status_limit_offset(run_cli_batch, seeded_root):
    options = {
        "all": (),
        "success": ("--status", "SUCCESS"),
        "pending": ("--status", "pending"),
        "dead": ("--status", "DEAD_LETTER"),
        "first page": ("--limit", "2"),
        "second page": ("--limit", "2", "--offset", "2"),
        "past the end": ("--offset", "3"),
    }
    results = run_all_ok(
        run_cli_batch,
        seeded_root.parent,
        *(("tasks", *option, "--root", seeded_root) for option in options.values()),
    )
    listing = {name: result.json() for name, result in zip(options, results)}

    everything = listing["all"]
    assert len(everything) == 3
    updated = [task["updatedAtMs"] for task in everything]
    assert updated == sorted(updated, reverse=True)
    assert [task["status"] for task in listing["success"]] == ["SUCCESS"]
    assert [task["status"] for task in listing["pending"]] == ["PENDING"] * 2
    assert listing["dead"] == []
    assert len(listing["first page"]) == 2
    assert len(listing["second page"]) == 1
    assert listing["first page"] + listing["second page"] == everything
    assert listing["past the end"] == []


def test_task_and_workflow_views(cli_ok, run_cli_batch, seeded_root):
    tasks = cli_ok("tasks", "--root", seeded_root).json()
    finished = next(task for task in tasks if task["status"] == "SUCCESS")
    pending = next(
        task
        for task in tasks
        if task["status"] == "PENDING" and task["kind"] == "single"
    )

    task_view, single_detail = run_all_ok(
        run_cli_batch,
        seeded_root.parent,
        ("task", finished["taskId"], "--root", seeded_root),
        ("workflow", pending["taskId"], "--root", seeded_root),
    )

    view = task_view.json()
    assert view["taskId"] == finished["taskId"]
    assert view["kind"] == "single"
    assert view["status"] == "SUCCESS"
    assert view["traceId"] == finished["traceId"]
    assert len(view["steps"]) == 1
    assert view["steps"][0]["agentId"] == "echo"
    assert received_input(view) == "done"
    assert view["steps"][0]["attempts"][0]["nodeId"] == "seed"

    detail = single_detail.json()
    assert detail["task"]["taskId"] == pending["taskId"]
    assert detail["task"]["status"] == "PENDING"
    assert [step["name"] for step in detail["steps"]] == ["main"]
    assert detail["steps"][0]["dependsOn"] == []
    assert detail["steps"][0]["enqueued"] is True


# replay, replay-batch, dead-export, purge -------------------------------------


def test_replay_dry_run_then_real(cli_ok, run_cli, snapshot_root, dead_letter_root):
    root, [task_id, other_id] = dead_letter_root
    before = snapshot_root(root)

    dry = cli_ok("replay", task_id, "--dry-run", "--root", root).json()

    assert dry == {
        "taskId": task_id,
        "replayed": True,
        "message": "replayed",
        "steps": ["main"],
        "dryRun": True,
    }
    assert snapshot_root(root) == before

    real = cli_ok("replay", task_id, "--root", root).json()

    assert real["replayed"] is True
    assert real["dryRun"] is False
    assert real["steps"] == ["main"]
    assert snapshot_root(root) != before
    assert len(inbox_files(root, "normal")) == 1
    statuses = {
        task["taskId"]: task["status"]
        for task in cli_ok("tasks", "--root", root).json()
    }
    assert statuses[task_id] == "PENDING"
    assert statuses[other_id] == "DEAD_LETTER"

    again = run_cli("replay", task_id, "--root", root)
    assert again.returncode == 1, again.describe()
    assert again.json()["replayed"] is False
    assert "PENDING" in again.json()["message"]


def test_replay_batch_dry_run_then_real(cli_ok, snapshot_root, dead_letter_root):
    root, dead_ids = dead_letter_root
    before = snapshot_root(root)

    dry = cli_ok("replay-batch", "--dry-run", "--root", root).json()

    assert dry["status"] == "DEAD_LETTER"
    assert dry["dryRun"] is True
    assert (dry["total"], dry["replayed"], dry["failed"]) == (2, 2, 0)
    assert sorted(detail["taskId"] for detail in dry["details"]) == sorted(dead_ids)
    assert snapshot_root(root) == before

    first = cli_ok("replay-batch", "--limit", "1", "--root", root).json()
    assert (first["total"], first["replayed"], first["failed"]) == (1, 1, 0)
    rest = cli_ok("replay-batch", "--status", "dead_letter", "--root", root).json()
    assert (rest["total"], rest["replayed"], rest["failed"]) == (1, 1, 0)
    assert len(inbox_files(root, "normal")) == 2

    empty = cli_ok("replay-batch", "--root", root).json()
    assert (empty["total"], empty["replayed"], empty["failed"]) == (0, 0, 0)


def test_dead_export_writes_file(cli_ok, run_cli_batch, dead_letter_root, tmp_path):
    root, dead_ids = dead_letter_root
    out = tmp_path / "exports" / "nested" / "dead.json"
    limited = tmp_path / "limited.json"

    full, one, to_stdout = run_cli_batch(
        [
            {"args": ("dead-export", "--out", out, "--root", root), "cwd": tmp_path},
            {
                "args": (
                    "dead-export",
                    "--out",
                    limited,
                    "--limit",
                    "1",
                    "--root",
                    root,
                ),
                "cwd": tmp_path,
            },
            {"args": ("dead-export", "--out", "-", "--root", root), "cwd": tmp_path},
        ]
    )

    for result in (full, one, to_stdout):
        assert result.returncode == 0, result.describe()
    assert full.json() == {"exported": 2, "outputPath": str(out.resolve())}
    letters = json.loads(out.read_text(encoding="utf-8"))
    assert sorted(letter["taskId"] for letter in letters) == sorted(dead_ids)
    for letter in letters:
        assert letter["agentId"] == "fail"
        assert letter["attempt"] == 1
        assert letter["lastError"]
        assert [attempt["outcome"] for attempt in letter["attempts"]] == ["FAILED"]

    assert one.json()["exported"] == 1
    assert len(json.loads(limited.read_text(encoding="utf-8"))) == 1
    assert to_stdout.json() == letters


def test_purge_dry_run_then_real(cli_ok, snapshot_root, dead_letter_root):
    root, _ = dead_letter_root
    retention = (
        "--done-retention-days",
        "0",
        "--dead-retention-days",
        "0",
        "--idempotency-ttl-days",
        "0",
    )
    before = snapshot_root(root)

    dry = cli_ok("purge", *retention, "--dry-run", "--root", root).json()

    assert dry["dryRun"] is True
    assert dry["doneFilesPurged"] == 1
    assert dry["deadFilesPurged"] == 2
    assert dry["tasksPurged"] >= 1
    assert snapshot_root(root) == before

    real = cli_ok("purge", *retention, "--root", root).json()

    assert real == {**dry, "dryRun": False}
    assert list((root / "done").rglob("*.meta.json")) == []
    assert list((root / "dead").glob("*.meta.json")) == []

    defaults = cli_ok("purge", "--root", root).json()
    counts = {key: value for key, value in defaults.items() if key != "dryRun"}
    assert set(counts.values()) == {0}


# stats, members, demo ---------------------------------------------------------


def test_stats_counts_seeded_root(cli_ok, seeded_root):
    stats = cli_ok("stats", "--root", seeded_root).json()

    assert stats["taskStatus"] == {"SUCCESS": 1, "PENDING": 2}
    assert stats["stepStatus"] == {"SUCCESS": 1, "PENDING": 4}
    assert stats["messageState"] == {"DONE": 1, "QUEUED": 3}
    assert stats["inboxHigh"] == 1
    assert stats["inboxNormal"] == 2
    assert stats["inboxLow"] == 0
    assert stats["processingMetaFiles"] == 0
    assert stats["deadMetaFiles"] == 0
    assert stats["queueLagMs"] >= 0


def test_members_empty_without_nodes(cli_ok, seeded_root):
    assert cli_ok("members", "--root", seeded_root).json() == []


def test_read_commands_leave_root_unchanged(
    cli_ok, run_cli_batch, seeded_root, snapshot_root
):
    task_id = cli_ok("tasks", "--root", seeded_root).json()[0]["taskId"]
    before = snapshot_root(seeded_root)

    run_all_ok(
        run_cli_batch,
        seeded_root.parent,
        *(
            (*args, "--root", seeded_root)
            for args in (
                ("agents",),
                ("tasks",),
                ("task", task_id),
                ("workflow", task_id),
                ("stats",),
                ("members",),
            )
        ),
    )
    assert snapshot_root(seeded_root) == before

    # Running init on an existing root is allowed and keeps everything.
    cli_ok("init", "--root", seeded_root)
    assert snapshot_root(seeded_root) == before


def test_demo_counts_target_lines(cli_ok, run_cli_batch, tmp_path):
    target = tmp_path / "target"
    for relative, text in DEMO_FILES.items():
        path = target / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    root = tmp_path / "demo-root"

    result = cli_ok("demo", "--target", target, "--root", root, "--json")

    document = result.json()
    assert document["status"] == "SUCCESS", document
    assert document["root"] == str(root.resolve())
    assert document["lastError"] is None
    assert json.loads(document["report"]) == DEMO_EXPECTED_REPORT

    workflow, members = run_all_ok(
        run_cli_batch,
        tmp_path,
        ("workflow", document["taskId"], "--root", root),
        ("members", "--root", root),
    )
    steps = workflow.json()["steps"]
    assert sorted(step["name"] for step in steps) == [
        "count_0",
        "count_1",
        "count_2",
        "count_3",
        "list",
        "report",
    ]
    assert {step["status"] for step in steps} == {"SUCCESS"}
    assert [member["nodeId"] for member in members.json()] == ["demo-node"]


# --root defaults ----------------------------------------------------------------


def test_root_from_environment(cli_ok, tmp_path):
    root = tmp_path / "from-env"
    environment = {"RELAYMESH_ROOT": str(root)}

    document = cli_ok("init", env=environment).json()
    submitted = cli_ok("submit", "--agent", "echo", "--input", "x", env=environment)

    assert document["root"] == str(root.resolve())
    assert (root / "relaymesh.db").is_file()
    assert not (tmp_path / "relaymesh-data").exists()
    tasks = cli_ok("tasks", "--root", root).json()
    assert [task["taskId"] for task in tasks] == [submitted.json()["taskId"]]


def test_root_option_beats_environment(cli_ok, tmp_path):
    from_env = tmp_path / "from-env"
    from_option = tmp_path / "from-option"

    document = cli_ok(
        "init", "--root", from_option, env={"RELAYMESH_ROOT": str(from_env)}
    ).json()

    assert document["root"] == str(from_option.resolve())
    assert not from_env.exists()


def test_root_defaults_to_working_directory(cli_ok, tmp_path):
    document = cli_ok("init", cwd=tmp_path).json()
    submitted = cli_ok("submit", "--agent", "echo", "--input", "x", cwd=tmp_path)

    default_root = tmp_path / "relaymesh-data"
    assert document["root"] == str(default_root.resolve())
    assert (default_root / "relaymesh.db").is_file()
    tasks = cli_ok("tasks", "--root", default_root).json()
    assert [task["taskId"] for task in tasks] == [submitted.json()["taskId"]]


def test_relative_root_resolves_against_cwd(cli_ok, tmp_path):
    workdir = tmp_path / "work"
    workdir.mkdir()

    document = cli_ok("init", "--root", os.path.join("nested", "root"), cwd=workdir)

    assert document.json()["root"] == str((workdir / "nested" / "root").resolve())
    assert (workdir / "nested" / "root" / "relaymesh.db").is_file()
