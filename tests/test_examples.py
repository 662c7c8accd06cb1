"""The line-count example: its scripts do the arithmetic right, and its files
fit together (workflow, agent declarations, preparation of a root).

The scripts are run directly as child processes, the way a script agent
runs them, on a folder of Python files with known line counts. One test
also runs the whole workflow through the agent registry, without a node.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from relaymesh.agents import AgentRegistry, ScriptAgent, StepContext, agent_stdin
from relaymesh.paths import RootLayout

EXAMPLE = Path(__file__).resolve().parent.parent / "examples/workflows/line-count"
SCRIPTS = EXAMPLE / "scripts"

# relative path -> content; the counts below follow from these.
SAMPLE_FILES = {
    "a.py": "x = 1\ny = 2\nz = 3\n",
    "d.py": "print('no newline at the end')",
    "e.py": "pass\n" * 12,
    "f.py": b"# caf\xe9 in latin-1\n" * 5,
    "pkg/__init__.py": "",
    "pkg/b.py": "\n" * 20,
    "pkg/sub/c.py": "line\n" * 7,
    # Not counted: hidden folders, caches, other extensions.
    ".venv/site.py": "pass\n" * 100,
    "pkg/__pycache__/cached.py": "pass\n" * 100,
    "notes.txt": "not python\n",
}
EXPECTED_FILES = [
    "a.py",
    "d.py",
    "e.py",
    "f.py",
    "pkg/__init__.py",
    "pkg/b.py",
    "pkg/sub/c.py",
]
EXPECTED_COUNTS = {
    "a.py": 3,
    "d.py": 1,
    "e.py": 12,
    "f.py": 5,
    "pkg/__init__.py": 0,
    "pkg/b.py": 20,
    "pkg/sub/c.py": 7,
}
EXPECTED_REPORT = {
    "totalFiles": 7,
    "totalLines": 48,
    "largest": [
        {"file": "pkg/b.py", "lines": 20},
        {"file": "e.py", "lines": 12},
        {"file": "pkg/sub/c.py", "lines": 7},
        {"file": "f.py", "lines": 5},
        {"file": "a.py", "lines": 3},
    ],
}


def run_script(name: str, stdin_text: str) -> subprocess.CompletedProcess[str]:
    """Run one example script in its own process group, always reaped."""
    process = subprocess.Popen(
        [sys.executable, str(SCRIPTS / name)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(stdin_text, timeout=20)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def dependency_stdin(input_text: str, dependencies: dict[str, str]) -> str:
    """What a script agent writes to the script, per the documented contract."""
    context = StepContext(
        task_id="tsk_example",
        step_id="stp_example",
        step_name="step",
        attempt=1,
        trace_id="0" * 32,
        span_id="0" * 16,
        parent_span_id=None,
        traceparent=f"00-{'0' * 32}-{'0' * 16}-01",
        input=input_text,
        dependency_outputs=dependencies,
    )
    return agent_stdin(context)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    folder = tmp_path / "project"
    for relative, content in SAMPLE_FILES.items():
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    return folder


def test_list_finds_python_files_sorted_and_relative(project):
    done = run_script("list_files.py", f"  {project}\n")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"folder": str(project), "files": EXPECTED_FILES}


def test_list_rejects_a_missing_folder(tmp_path):
    done = run_script("list_files.py", str(tmp_path / "absent"))
    assert done.returncode == 2
    assert "absent" in done.stderr
    assert "is not a folder" in done.stderr


def test_shares_are_disjoint_cover_everything_and_count_right(project):
    listing = run_script("list_files.py", str(project)).stdout
    shares = []
    for index in range(4):
        stdin_text = dependency_stdin(f"{index}/4", {"list": listing})
        done = run_script("count_lines.py", stdin_text)
        assert done.returncode == 0, done.stderr
        shares.append(json.loads(done.stdout))

    assert [sorted(share) for share in shares] == [
        ["a.py", "pkg/__init__.py"],
        ["d.py", "pkg/b.py"],
        ["e.py", "pkg/sub/c.py"],
        ["f.py"],
    ]
    merged = {path: lines for share in shares for path, lines in share.items()}
    assert merged == EXPECTED_COUNTS


@pytest.mark.parametrize("share", ["4/4", "-1/4", "1/0", "one/4", ""])
def test_count_rejects_a_bad_share(project, share):
    stdin_text = dependency_stdin(share, {"list": '{"folder": "/", "files": []}'})
    done = run_script("count_lines.py", stdin_text)
    assert done.returncode == 2
    assert done.stderr.startswith("count_lines: ")


def test_count_fails_when_a_listed_file_vanished(project):
    listing = json.dumps({"folder": str(project), "files": ["a.py", "gone.py"]})
    done = run_script("count_lines.py", dependency_stdin("0/1", {"list": listing}))
    assert done.returncode == 1
    assert "cannot read 'gone.py'" in done.stderr


def test_report_adds_up_shares_and_ranks_the_largest(project):
    counts = list(EXPECTED_COUNTS.items())
    shares = {f"count_{i}": json.dumps(dict(counts[i::4])) for i in range(4)}
    done = run_script("line_report.py", dependency_stdin("5", shares))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == EXPECTED_REPORT


def test_report_ties_and_top_count():
    shares = {"count_0": json.dumps({"b.py": 4, "a.py": 4, "c.py": 9})}
    done = run_script("line_report.py", dependency_stdin("2", shares))
    assert json.loads(done.stdout)["largest"] == [
        {"file": "c.py", "lines": 9},
        {"file": "a.py", "lines": 4},
    ]


def test_report_refuses_a_file_counted_twice():
    shares = {"count_0": '{"a.py": 1}', "count_1": '{"a.py": 1}'}
    done = run_script("line_report.py", dependency_stdin("5", shares))
    assert done.returncode == 2
    assert "'a.py' was counted by two shares" in done.stderr


def test_workflow_file_has_the_documented_shape():
    workflow = json.loads((EXAMPLE / "workflow.json").read_text())
    assert set(workflow) == {"steps"}
    steps = {step["id"]: step for step in workflow["steps"]}
    allowed = {"id", "agent", "input", "priority", "dependsOn"}
    assert all(set(step) <= allowed for step in steps.values())
    assert all(isinstance(step["input"], str) for step in steps.values())

    counts = [f"count_{i}" for i in range(4)]
    assert list(steps) == ["list", *counts, "report"]
    assert steps["list"]["input"] == "{target}"
    assert steps["list"]["dependsOn"] == []
    for index, name in enumerate(counts):
        assert steps[name]["input"] == f"{index}/4"
        assert steps[name]["dependsOn"] == ["list"]
    assert steps["report"]["dependsOn"] == counts

    declared = json.loads((EXAMPLE / "scripts.json").read_text())["agents"]
    declared_ids = {agent["id"] for agent in declared}
    assert {step["agent"] for step in steps.values()} == declared_ids
    for agent in declared:
        python, script = agent["command"]
        assert python == "{python}"
        assert (EXAMPLE / "scripts" / Path(script).name).is_file()
        assert script.startswith("agents/scripts/")


def prepare(root: Path, target: Path) -> Path:
    done = subprocess.run(
        [
            sys.executable,
            str(EXAMPLE / "prepare.py"),
            "--root",
            str(root),
            "--target",
            str(target),
        ],
        capture_output=True,
        text=True,
        timeout=20,
        start_new_session=True,
    )
    assert done.returncode == 0, done.stderr
    return Path(done.stdout.strip())


def test_prepare_keeps_other_agents_and_escapes_odd_paths(tmp_path):
    root = tmp_path / "root"
    layout = RootLayout(root)
    layout.scripts_file.parent.mkdir(parents=True)
    layout.scripts_file.write_text(
        json.dumps({"agents": [{"id": "mine", "command": ["true"]}]})
    )
    target = tmp_path / 'odd "quoted" \\ folder'
    target.mkdir()

    workflow_file = prepare(root, target)

    workflow = json.loads(workflow_file.read_text())
    assert workflow["steps"][0]["input"] == str(target)
    registry = AgentRegistry.load(layout)
    assert registry.ids() == [
        "count-lines",
        "echo",
        "fail",
        "line-report",
        "list-python-files",
        "mine",
    ]
    agent = registry.require("count-lines")
    assert isinstance(agent, ScriptAgent)
    assert agent.spec.command == (
        sys.executable,
        str(root / "agents" / "scripts" / "count_lines.py"),
    )

    # Preparing again replaces the example's agents instead of duplicating them.
    prepare(root, target)
    assert len(AgentRegistry.load(layout).ids()) == 6


async def test_whole_workflow_through_the_agent_registry(tmp_path, project):
    root = tmp_path / "root"
    workflow = json.loads(prepare(root, project).read_text())
    registry = AgentRegistry.load(RootLayout(root))
    outputs: dict[str, str] = {}

    async def run_step(step: dict) -> None:
        context = StepContext(
            task_id="tsk_demo",
            step_id=f"stp_tsk_demo_{step['id']}",
            step_name=step["id"],
            attempt=1,
            trace_id="a" * 32,
            span_id="b" * 16,
            parent_span_id=None,
            traceparent=f"00-{'a' * 32}-{'b' * 16}-01",
            input=step["input"],
            dependency_outputs={name: outputs[name] for name in step["dependsOn"]},
        )
        result = await registry.require(step["agent"]).run(context)
        assert result.ok, f"step {step['id']}: {result.error}"
        outputs[step["id"]] = result.output

    # Run in waves: every step whose dependencies are done, concurrently.
    pending = list(workflow["steps"])
    while pending:
        ready = [s for s in pending if all(d in outputs for d in s["dependsOn"])]
        assert ready, "the workflow has a step that can never run"
        async with trio.open_nursery() as nursery:
            for step in ready:
                nursery.start_soon(run_step, step)
        pending = [s for s in pending if s not in ready]

    assert json.loads(outputs["report"]) == EXPECTED_REPORT
