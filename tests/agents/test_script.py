"""Script agents: pipes, deadlines, cancellation and process-group cleanup.

Every script here is a small Python program run with the interpreter that
runs the tests. Scripts that start helpers record their pids in a file, so a
test can check afterwards that no process outlived its step. A fixture kills
any such helper left behind by a failing test.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest
import trio

from relaymesh.agents import AgentResult, ScriptAgent, ScriptSpec, StepContext
from relaymesh.agents.script import _format_seconds
from relaymesh.errors import ValidationError

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
SPAN_ID = "b7ad6b7169203331"
HELPER_MARKER = "relaymesh-test-helper"

# A helper process that sleeps; the marker lets the cleanup fixture tell it
# apart from an unrelated process that reused its pid.
SPAWN_HELPER = f"""
import subprocess, sys
helper = subprocess.Popen(
    [sys.executable, "-c", "import time; time.sleep(30)", "{HELPER_MARKER}"]
)
"""


def make_context(
    input_text: str = "", dependencies: dict[str, str] | None = None
) -> StepContext:
    return StepContext(
        task_id="tsk_42",
        step_id="stp_tsk_42_count_a",
        step_name="count_a",
        attempt=2,
        trace_id=TRACE_ID,
        span_id=SPAN_ID,
        parent_span_id=None,
        traceparent=f"00-{TRACE_ID}-{SPAN_ID}-01",
        input=input_text,
        dependency_outputs=dependencies or {},
    )


def script_agent(
    tmp_path: Path,
    body: str,
    *,
    agent_id: str = "probe",
    timeout_ms: int = 10_000,
    env: dict[str, str] | None = None,
    **options: int,
) -> ScriptAgent:
    script = tmp_path / f"{agent_id}.py"
    script.write_text(body)
    spec = ScriptSpec(
        agent_id=agent_id,
        command=(sys.executable, str(script)),
        timeout_ms=timeout_ms,
        env=env or {},
        cwd=tmp_path,
    )
    return ScriptAgent(spec, **options)


def process_gone(pid: int) -> bool:
    """True when the pid no longer names a live process (zombies count as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def wait_until_gone(pid: int, within_s: float = 2.0) -> bool:
    # A signalled process dies asynchronously; give it a moment.
    deadline = time.monotonic() + within_s
    while not process_gone(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def read_pids(path: Path) -> list[int]:
    return [int(line) for line in path.read_text().split()]


@pytest.fixture
def pid_file(tmp_path: Path):
    """Where scripts record pids; helpers still alive at teardown are killed."""
    path = tmp_path / "pids.txt"
    yield path
    if not path.exists():
        return
    for pid in read_pids(path):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if HELPER_MARKER.encode() in cmdline:
            os.kill(pid, signal.SIGKILL)


async def test_output_is_stdout_with_one_trailing_newline_removed(tmp_path):
    agent = script_agent(
        tmp_path,
        "import sys\nsys.stdout.write(sys.stdin.read().upper() + '\\n\\n')\n",
    )
    result = await agent.run(make_context("abc"))
    assert result == AgentResult(ok=True, output="ABC\n")


async def test_chatty_script_writing_megabytes_before_reading_stdin(tmp_path):
    # 5 MB out before reading 1 MB in: both far beyond a pipe buffer, so a
    # runner that reads output only after exit would deadlock until timeout.
    agent = script_agent(
        tmp_path,
        "import sys\n"
        "sys.stdout.buffer.write(b'x' * 5_000_000)\n"
        "sys.stdout.flush()\n"
        "data = sys.stdin.buffer.read()\n"
        "sys.stdout.buffer.write(b'|%d' % len(data))\n",
        timeout_ms=20_000,
    )
    started = time.monotonic()
    result = await agent.run(make_context("y" * 1_000_000))
    assert result.ok, result.error
    assert len(result.output) == 5_000_000 + len("|1000000")
    assert result.output.endswith("|1000000")
    assert time.monotonic() - started < 10


async def test_timeout_stops_the_process_group_and_reaps_it(tmp_path, pid_file):
    agent = script_agent(
        tmp_path,
        "import os\n"
        + SPAWN_HELPER
        + f"open({str(pid_file)!r}, 'w').write(f'{{os.getpid()}} {{helper.pid}}')\n"
        "import time\ntime.sleep(30)\n",
        agent_id="sleeper",
        timeout_ms=1_000,
    )

    started = time.monotonic()
    result = await agent.run(make_context())
    elapsed = time.monotonic() - started

    assert result.outcome == "TIMEOUT"
    assert not result.ok
    assert result.error == "script 'sleeper' timed out after 1.0 s"
    assert 0.9 < elapsed < 2.5
    leader, helper = read_pids(pid_file)
    assert process_gone(leader), "the script itself must be reaped"
    assert wait_until_gone(helper), "the helper in its group must be killed"


async def test_script_ignoring_sigterm_is_killed_after_the_grace(tmp_path, pid_file):
    agent = script_agent(
        tmp_path,
        "import os, signal, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        f"open({str(pid_file)!r}, 'w').write(str(os.getpid()))\n"
        "time.sleep(30)\n",
        timeout_ms=300,
        kill_grace_ms=200,
    )
    started = time.monotonic()
    result = await agent.run(make_context())
    assert result.outcome == "TIMEOUT"
    assert time.monotonic() - started < 2
    assert process_gone(read_pids(pid_file)[0])


async def test_cancelling_the_caller_kills_the_group_before_propagating(
    tmp_path, pid_file
):
    agent = script_agent(
        tmp_path,
        "import os\n"
        + SPAWN_HELPER
        + f"open({str(pid_file)!r}, 'w').write(f'{{os.getpid()}} {{helper.pid}}')\n"
        "import time\ntime.sleep(30)\n",
        timeout_ms=60_000,
    )
    results: list[AgentResult] = []

    async def run_step() -> None:
        results.append(await agent.run(make_context()))

    started = time.monotonic()
    with trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_step)
            while not pid_file.exists() or len(pid_file.read_text().split()) < 2:
                await trio.sleep(0.02)
            scope.cancel()

    assert scope.cancelled_caught
    assert results == [], "a cancelled run must raise, not return a result"
    assert time.monotonic() - started < 5
    leader, helper = read_pids(pid_file)
    assert process_gone(leader), "the script must be reaped before cancel returns"
    assert wait_until_gone(helper)


async def test_success_kills_stray_background_child(tmp_path, pid_file):
    agent = script_agent(
        tmp_path,
        SPAWN_HELPER + f"open({str(pid_file)!r}, 'w').write(str(helper.pid))\n"
        "print('done')\n",
    )
    started = time.monotonic()
    result = await agent.run(make_context())
    assert result == AgentResult(ok=True, output="done")
    assert time.monotonic() - started < 3
    assert wait_until_gone(read_pids(pid_file)[0])


async def test_environment_carries_trace_context_and_step_identity(tmp_path):
    agent = script_agent(
        tmp_path,
        "import json, os\n"
        "keys = ['TRACEPARENT', 'RELAYMESH_TASK_ID', 'RELAYMESH_STEP_ID',\n"
        "        'RELAYMESH_STEP_NAME', 'RELAYMESH_ATTEMPT', 'EXTRA', 'PATH']\n"
        "print(json.dumps({k: os.environ.get(k) for k in keys}))\n",
        env={"EXTRA": "from-spec"},
    )
    result = await agent.run(make_context())
    seen = json.loads(result.output)
    assert seen["TRACEPARENT"] == f"00-{TRACE_ID}-{SPAN_ID}-01"
    assert seen["RELAYMESH_TASK_ID"] == "tsk_42"
    assert seen["RELAYMESH_STEP_ID"] == "stp_tsk_42_count_a"
    assert seen["RELAYMESH_STEP_NAME"] == "count_a"
    assert seen["RELAYMESH_ATTEMPT"] == "2"
    assert seen["EXTRA"] == "from-spec"
    assert seen["PATH"] == os.environ.get("PATH"), "the parent environment is kept"


async def test_working_folder_is_the_spec_cwd(tmp_path):
    agent = script_agent(tmp_path, "import os\nprint(os.getcwd())\n")
    result = await agent.run(make_context())
    assert Path(result.output).resolve() == tmp_path.resolve()


async def test_nonzero_exit_quotes_the_last_stderr_line(tmp_path):
    agent = script_agent(
        tmp_path,
        "import sys\n"
        "print('partial output')\n"
        "sys.stderr.write('warming up\\nreal problem: disk full\\n\\n')\n"
        "sys.exit(3)\n",
        agent_id="x",
    )
    result = await agent.run(make_context())
    assert result.outcome == "FAILED"
    assert not result.ok
    assert result.error == "script 'x' exited with status 3: real problem: disk full"


async def test_nonzero_exit_without_stderr_quotes_the_stdout_tail(tmp_path):
    agent = script_agent(
        tmp_path,
        "import sys\nprint('line one')\nprint('y' * 1000)\nsys.exit(1)\n",
        agent_id="x",
    )
    result = await agent.run(make_context())
    prefix = "script 'x' exited with status 1: "
    assert result.error.startswith(prefix + "...")
    assert result.error.endswith("yyy")
    assert len(result.error) == len(prefix) + 300
    assert "\n" not in result.error


async def test_long_stderr_line_is_cut_to_300_characters(tmp_path):
    agent = script_agent(
        tmp_path, "import sys\nsys.stderr.write('E' * 5000)\nsys.exit(2)\n"
    )
    result = await agent.run(make_context())
    detail = result.error.split(": ", 1)[1]
    assert len(detail) == 300
    assert detail.endswith("...")


async def test_death_by_signal_names_the_signal(tmp_path):
    agent = script_agent(
        tmp_path,
        "import os, signal, sys\n"
        "sys.stderr.write('about to crash\\n'); sys.stderr.flush()\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n",
        agent_id="x",
    )
    result = await agent.run(make_context())
    assert result.error == "script 'x' was killed by signal SIGKILL (9): about to crash"


async def test_output_beyond_the_cap_stops_the_script(tmp_path):
    agent = script_agent(
        tmp_path,
        "import sys, time\n"
        "sys.stdout.write('z' * 5000); sys.stdout.flush()\n"
        "time.sleep(30)\n",
        agent_id="x",
        max_output_bytes=1000,
    )
    started = time.monotonic()
    result = await agent.run(make_context())
    assert result.outcome == "FAILED"
    assert "output exceeds 1000 bytes" in result.error
    assert time.monotonic() - started < 3


async def test_output_exactly_at_the_cap_is_accepted(tmp_path):
    agent = script_agent(
        tmp_path, "import sys\nsys.stdout.write('z' * 1000)\n", max_output_bytes=1000
    )
    result = await agent.run(make_context())
    assert result.ok
    assert len(result.output) == 1000


async def test_missing_program_fails_with_its_name(tmp_path):
    spec = ScriptSpec(agent_id="ghost", command=("relaymesh-no-such-program-x",))
    result = await ScriptAgent(spec).run(make_context())
    assert not result.ok
    assert result.outcome == "FAILED"
    assert "script 'ghost' could not start 'relaymesh-no-such-program-x'" in (
        result.error
    )
    assert "no such program" in result.error


async def test_file_without_execute_permission_fails_clearly(tmp_path):
    script = tmp_path / "plain.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o644)
    result = await ScriptAgent(ScriptSpec("plain", (str(script),))).run(make_context())
    assert not result.ok
    assert str(script) in result.error
    assert "permission denied" in result.error


async def test_missing_working_folder_is_named(tmp_path):
    missing = tmp_path / "nowhere"
    spec = ScriptSpec("lost", (sys.executable, "-c", "pass"), cwd=missing)
    result = await ScriptAgent(spec).run(make_context())
    assert not result.ok
    assert f"working folder '{missing}' does not exist" in result.error


async def test_step_with_dependencies_reads_the_json_document(tmp_path):
    agent = script_agent(tmp_path, "import sys\nsys.stdout.write(sys.stdin.read())\n")
    context = make_context("0/4", {"list": '["a.py", "b.py"]', "extra": "é\n"})
    result = await agent.run(context)
    assert json.loads(result.output) == {
        "input": "0/4",
        "dependencies": {"extra": "é\n", "list": '["a.py", "b.py"]'},
    }


async def test_script_that_ignores_its_input_still_succeeds(tmp_path):
    agent = script_agent(tmp_path, "print('ignored')\n")
    result = await agent.run(make_context("z" * 2_000_000))
    assert result == AgentResult(ok=True, output="ignored")


def test_spec_rejects_an_empty_command_or_token():
    with pytest.raises(ValidationError, match="non-empty list"):
        ScriptSpec(agent_id="a", command=())
    with pytest.raises(ValidationError, match="non-empty list"):
        ScriptSpec(agent_id="a", command=("python3", ""))
    with pytest.raises(ValidationError, match="NUL"):
        ScriptSpec(agent_id="a", command=("true",), env={"K": "a\0b"})
    with pytest.raises(ValidationError, match="positive"):
        ScriptSpec(agent_id="a", command=("true",), timeout_ms=0)


@pytest.mark.parametrize(
    ("milliseconds", "text"),
    [(2000, "2.0"), (1500, "1.5"), (1234, "1.234"), (100, "0.1"), (60000, "60.0")],
)
def test_timeout_seconds_format(milliseconds, text):
    assert _format_seconds(milliseconds) == text
