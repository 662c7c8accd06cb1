"""Real RelayMesh processes for the integration tests, and a view of their root.

These tests run `relaymesh node` as the operator would, one operating-system
process per node, and judge the outcome only by what the processes leave on
the shared root: rows of the SQLite store and files of the bus. Nothing is
mocked, so a test here can catch what unit tests on a `MockClock` cannot.
Examples are two processes racing for one file, a node killed between a
commit and the file move after it, and a lease that another process must
judge expired.

Three rules keep such tests honest and cheap:

- Every process is started in a session of its own and is killed with
  SIGKILL to its whole process group, then reaped, when the test ends,
  whether it passed or not. A leaked node would go on polling its root and
  running steps, taking CPU time from the tests that follow.
- A test waits for a fact (a row, a file, a log event), never for a fixed
  time. `NodeSupervisor.wait_until` polls with a deadline and, on failure,
  says what it waited for and shows the end of every node's log. It also
  stops at once when a node that should be running has exited, since no
  later fact can then appear.
- Slow steps are run by a small test agent script (see `AGENT_SOURCE`) that
  records each start and end in a JSON-lines file. The records count real
  executions, which is what "executed twice" means, independently of the
  store's own bookkeeping. The script leaves when its node dies, and its pid
  is recorded so that teardown can kill it: script agents run in sessions
  of their own, out of reach of a signal to the node's group.

Faults are injected with SIGKILL from outside, or with the crash points of
`relaymesh/faults.py` from inside, which end a process between two writes
that no outside signal could hit reliably.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from relaymesh.config import load_settings
from relaymesh.paths import PRIORITIES, RootLayout
from relaymesh.store import Store

__all__ = [
    "CRASH_EXIT_STATUS",
    "AgentRecord",
    "CliResult",
    "NodeProcess",
    "NodeSupervisor",
    "RootView",
    "TestAgent",
    "by_node",
    "pick",
    "write_settings",
]

T = TypeVar("T")

# Exit status of a process stopped at a crash point (see relaymesh/faults.py).
CRASH_EXIT_STATUS = 137
# How long a node may take from exec to its "node.started" log event.
NODE_START_TIMEOUT_S = 20.0
# Environment variables a node hands on to the script agents it runs.
NODE_NAME_VARIABLE = "RELAYMESH_TEST_NODE"
SLEEP_OVERRIDE_VARIABLE = "RELAYMESH_TEST_SLEEP_S"
# Inherited variables that would change what a child process does.
SCRUBBED_VARIABLES = ("RELAYMESH_CRASH_AT", "RELAYMESH_ROOT", SLEEP_OVERRIDE_VARIABLE)
LOG_TAIL_CHARS = 3000


def write_settings(root: Path, **values: object) -> Path:
    """Write `<root>/relaymesh-settings.json` (camelCase keys) and validate it.

    Loading it here makes a typo in a test fail with the loader's own message
    instead of a node that exits at start.
    """
    path = RootLayout(root).settings_file
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(values, indent=2) + "\n")
    load_settings(path)
    return path


def _tail(path: Path, limit: int = LOG_TAIL_CHARS) -> str:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return "(no output file)"
    return text if len(text) <= limit else "..." + text[-limit:]


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


# Nodes and commands -------------------------------------------------------


@dataclass
class NodeProcess:
    """One `relaymesh node` process, leader of its own process group."""

    node_id: str
    process: subprocess.Popen
    stdout_path: Path
    stderr_path: Path
    # Set when the test means the process to end (signal, crash point).
    exit_expected: bool = False

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def log(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def describe(self) -> str:
        state = "running" if self.running else f"exited {self.process.returncode}"
        return (
            f"--- node {self.node_id} (pid {self.pid}, {state})"
            f" stderr {self.stderr_path}:\n{_tail(self.stderr_path)}"
        )

    def terminate(self) -> None:
        """Send SIGTERM to the node alone, which starts a graceful stop."""
        self.exit_expected = True
        if self.running:
            os.kill(self.pid, signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL the node's process group and reap the node."""
        self.exit_expected = True
        if self.process.poll() is None:
            _kill_group(self.pid)
        self.process.wait()

    def wait_exit(self, timeout_s: float) -> int:
        """Reap the node and return its exit status, or fail after `timeout_s`."""
        self.exit_expected = True
        try:
            return self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"node {self.node_id} did not exit within {timeout_s} s\n"
                + self.describe()
            ) from None


@dataclass(frozen=True)
class CliResult:
    returncode: int
    stdout: str
    stderr: str


@dataclass(frozen=True)
class AgentRecord:
    """One line the test agent wrote: it started, ended, or was stopped."""

    event: str  # "start", "end", "terminated" or "orphaned"
    node: str
    attempt: int
    task_id: str
    step_id: str
    pid: int


@dataclass(frozen=True)
class TestAgent:
    """A script agent declared on a root, with the records its runs leave."""

    __test__ = False  # not a pytest test class, despite the name

    agent_id: str
    records_file: Path

    def records(self, event: str | None = None) -> list[AgentRecord]:
        try:
            text = self.records_file.read_text()
        except FileNotFoundError:
            return []
        # The last element is empty, or a line still being written.
        lines = text.split("\n")[:-1]
        records = [AgentRecord(**json.loads(line)) for line in lines]
        return [r for r in records if event is None or r.event == event]


class NodeSupervisor:
    """Launcher of the nodes, CLI commands and test agents of one root.

    `close()` kills everything it launched.
    """

    def __init__(self, root: Path, work_folder: Path) -> None:
        self.root = root
        self.logs = work_folder / "logs"
        self.agent_pids = work_folder / "agent-pids"
        self.agent_records = work_folder / "agent-records"
        for folder in (self.logs, self.agent_pids, self.agent_records):
            folder.mkdir(parents=True, exist_ok=True)
        self.nodes: list[NodeProcess] = []
        self._agents: list[dict] = []
        self._launches = 0

    # Starting ---------------------------------------------------------------

    def _environment(self, extra: dict[str, str] | None) -> dict[str, str]:
        environment = {
            key: value
            for key, value in os.environ.items()
            if key not in SCRUBBED_VARIABLES
        }
        environment.update(extra or {})
        return environment

    def _output_files(self, name: str) -> tuple[Path, Path]:
        self._launches += 1
        stem = self.logs / f"{self._launches:02d}-{name}"
        return stem.with_suffix(".stdout"), stem.with_suffix(".stderr")

    def start(
        self,
        node_id: str,
        *,
        workers: int = 2,
        env: dict[str, str] | None = None,
        wait_started: bool = True,
    ) -> NodeProcess:
        """Start `relaymesh node`; by default wait for its "node.started" event.

        A node started with RELAYMESH_CRASH_AT in `env` is expected to exit,
        so `wait_until` does not treat its death as a failure.
        """
        command = [
            sys.executable, "-m", "relaymesh.cli.main", "node",
            "--node-id", node_id, "--root", str(self.root),
            "--workers", str(workers), "--log-level", "info",
        ]  # fmt: skip
        environment = self._environment({NODE_NAME_VARIABLE: node_id, **(env or {})})
        stdout_path, stderr_path = self._output_files(node_id)
        with open(stdout_path, "wb") as stdout, open(stderr_path, "wb") as stderr:
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                env=environment,
                cwd=self.logs,
                start_new_session=True,
            )
        node = NodeProcess(node_id, process, stdout_path, stderr_path)
        node.exit_expected = "RELAYMESH_CRASH_AT" in environment
        self.nodes.append(node)
        if wait_started:
            self.wait_until(
                lambda: f"node.started node_id={node_id} " in node.log(),
                NODE_START_TIMEOUT_S,
                f"node {node_id} to log node.started",
            )
        return node

    def run_cli(
        self, *arguments: str, env: dict[str, str] | None = None, timeout_s: float = 30
    ) -> CliResult:
        """Run one `relaymesh` command on the root, in its own process group."""
        command = [
            sys.executable, "-m", "relaymesh.cli.main", *arguments,
            "--root", str(self.root),
        ]  # fmt: skip
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=self._environment(env),
            cwd=self.logs,
            start_new_session=True,
            text=True,
        )
        try:
            stdout, stderr = process.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"relaymesh {' '.join(arguments)} did not exit within {timeout_s} s"
            ) from None
        finally:
            # A reaped leader's group number may be reused, so only a
            # command that is still running has its group killed.
            if process.poll() is None:
                _kill_group(process.pid)
                process.communicate()
        return CliResult(process.returncode, stdout, stderr)

    def install_agent(
        self,
        agent_id: str,
        *,
        sleep_s: float,
        retry_sleep_s: float | None = None,
        timeout_ms: int = 120_000,
    ) -> TestAgent:
        """Declare a test agent in `<root>/agents/scripts.json` (kept with others).

        A run sleeps `sleep_s` on attempt 1 and `retry_sleep_s` (default: the
        same) on later attempts. A node started with RELAYMESH_TEST_SLEEP_S in
        its environment overrides both for the runs it starts.
        """
        script = self.agent_records.parent / "test_agent.py"
        script.write_text(AGENT_SOURCE)
        records = self.agent_records / f"{agent_id}.jsonl"
        retry = sleep_s if retry_sleep_s is None else retry_sleep_s
        self._agents.append(
            {
                "id": agent_id,
                "command": [
                    sys.executable, str(script), str(records), str(self.agent_pids),
                    str(sleep_s), str(retry),
                ],
                "timeoutMs": timeout_ms,
            }
        )  # fmt: skip
        scripts_file = RootLayout(self.root).scripts_file
        scripts_file.parent.mkdir(parents=True, exist_ok=True)
        scripts_file.write_text(json.dumps({"agents": self._agents}, indent=2) + "\n")
        return TestAgent(agent_id, records)

    # Waiting ----------------------------------------------------------------

    def describe(self) -> str:
        return "\n".join(node.describe() for node in self.nodes) or "(no nodes)"

    def wait_until(
        self,
        condition: Callable[[], T],
        timeout_s: float,
        description: str,
        interval_s: float = 0.05,
    ) -> T:
        """Poll `condition` until it returns something truthy, and return that.

        Raise AssertionError, quoting `description` and showing the nodes' logs, when
        the deadline passes or as soon as a node exits unexpectedly.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            value = condition()
            if value:
                return value
            dead = [n for n in self.nodes if not n.exit_expected and not n.running]
            if dead:
                names = ", ".join(node.node_id for node in dead)
                raise AssertionError(
                    f"node {names} exited while waiting for {description}\n"
                    + self.describe()
                )
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"timed out after {timeout_s} s waiting for {description}"
                    f" (last value: {value!r})\n" + self.describe()
                )
            time.sleep(interval_s)

    # Teardown ---------------------------------------------------------------

    def close(self) -> None:
        """Kill every running node's process group and reap it, then stray agents.

        A node that was already reaped is skipped, because its group number
        may have been reused. Script agents run in sessions of their own, so
        that group only ever contained the node.
        """
        for node in self.nodes:
            if node.process.poll() is None:
                _kill_group(node.pid)
        for node in self.nodes:
            node.process.wait()
        # Script agents lead sessions of their own; each recorded its pid.
        for pid_file in self.agent_pids.iterdir():
            pid = int(pid_file.name)
            if _is_test_agent(pid):
                _kill_group(pid)


def _is_test_agent(pid: int) -> bool:
    """Check that `pid` still runs the test agent, so a reused pid is spared."""
    try:
        command_line = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"test_agent.py" in command_line


# The store and the bus ----------------------------------------------------


class RootView:
    """Read-only queries on a root's store, and counts of its bus files."""

    def __init__(self, root: Path) -> None:
        self.layout = RootLayout(root)
        self.store = Store(self.layout.database)
        self._connection = sqlite3.connect(
            self.layout.database, isolation_level=None, timeout=10
        )
        self._connection.row_factory = sqlite3.Row
        self._connection.execute("PRAGMA query_only = ON")

    def close(self) -> None:
        self._connection.close()
        self.store.close()

    def rows(self, sql: str, *parameters: object) -> list[dict]:
        return [dict(row) for row in self._connection.execute(sql, parameters)]

    def value(self, sql: str, *parameters: object) -> object:
        return self._connection.execute(sql, parameters).fetchone()[0]

    def step(self, step_id: str) -> dict:
        return self.rows("SELECT * FROM steps WHERE step_id = ?", step_id)[0]

    def only_step(self) -> dict:
        steps = self.rows("SELECT * FROM steps")
        assert len(steps) == 1, f"expected one step on the root, found {len(steps)}"
        return steps[0]

    def task_status(self, task_id: str) -> str:
        return str(self.value("SELECT status FROM tasks WHERE task_id = ?", task_id))

    def attempts(self, step_id: str | None = None) -> list[dict]:
        """Attempt rows, of one step or of all, in lease epoch order."""
        return self.rows(
            "SELECT * FROM step_attempts WHERE ? IS NULL OR step_id = ?"
            " ORDER BY step_id, lease_epoch",
            step_id,
            step_id,
        )

    def lease_conflicts(self) -> list[dict]:
        return self.rows("SELECT * FROM lease_conflicts ORDER BY id")

    def counter(self, name: str) -> float:
        counters = self.store.counters()
        return sum(value for (key, _), value in counters.items() if key == name)

    def bus_files(self, folder: Path) -> list[Path]:
        """Envelope files anywhere under `folder` (done/ has one folder a day)."""
        if not folder.exists():
            return []
        return sorted(
            path
            for path in folder.rglob("*.meta.json")
            if not path.name.startswith(".")
        )

    def inbox_files(self) -> list[Path]:
        return [
            path
            for tier in PRIORITIES
            for path in self.bus_files(self.layout.inbox_tier(tier))
        ]

    def processing_files(self, owner: str | None = None) -> list[Path]:
        folder = self.layout.processing
        return self.bus_files(folder if owner is None else folder / owner)


def pick(row: dict, *columns: str) -> tuple:
    """Return the values of `columns` in `row`, for compact assertions."""
    return tuple(row[column] for column in columns)


def by_node(attempts: Iterable[dict]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for attempt in attempts:
        counts[attempt["node_id"]] = counts.get(attempt["node_id"], 0) + 1
    return counts


# The test agent -----------------------------------------------------------

# Run as: python test_agent.py RECORDS PID_FOLDER SLEEP_S RETRY_SLEEP_S
AGENT_SOURCE = '''\
"""Test agent for RelayMesh integration tests: sleep, and record the run."""
import json
import os
import signal
import sys
import time

records, pid_folder, sleep_s, retry_sleep_s = sys.argv[1:5]
attempt = int(os.environ.get("RELAYMESH_ATTEMPT", "0"))
seconds = float(sleep_s if attempt <= 1 else retry_sleep_s)
seconds = float(os.environ.get("RELAYMESH_TEST_SLEEP_S", seconds))
pid_file = os.path.join(pid_folder, str(os.getpid()))
parent = os.getppid()


def record(event):
    line = json.dumps({
        "event": event,
        "node": os.environ.get("RELAYMESH_TEST_NODE", "?"),
        "attempt": attempt,
        "task_id": os.environ.get("RELAYMESH_TASK_ID", ""),
        "step_id": os.environ.get("RELAYMESH_STEP_ID", ""),
        "pid": os.getpid(),
    })
    with open(records, "a") as handle:
        handle.write(line + "\\n")


def leave(event, status):
    record(event)
    try:
        os.unlink(pid_file)
    except FileNotFoundError:
        pass
    os._exit(status)


open(pid_file, "w").close()
signal.signal(signal.SIGTERM, lambda *_: leave("terminated", 143))
record("start")
deadline = time.monotonic() + seconds
while time.monotonic() < deadline:
    if os.getppid() != parent:
        leave("orphaned", 3)  # the node died, so the output has no reader
    time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
print(json.dumps({"node": os.environ.get("RELAYMESH_TEST_NODE"), "attempt": attempt}))
sys.stdout.flush()
leave("end", 0)
'''
