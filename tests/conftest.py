"""Shared fixtures: a runtime on a temporary root, driven by hand.

The store, bus and runtime tests run in-process on a real SQLite database
and real files under `tmp_path`. The two sources of nondeterminism that the
runtime takes as arguments are replaced. The wall clock is a `FakeClock`
that moves only when a test advances it, and randomness (ids, backoff
jitter) comes from a `random.Random` with a fixed seed. A failing test
therefore fails the same way on every run.

Agents are not run. A test plays the worker itself: it claims messages with
`Runtime.claim_batch`, decides each attempt's outcome, and commits it with
`Runtime.commit_outcomes`. That keeps every step of the lifecycle under the
test's control (a late commit, a stale token, a crash between two writes)
without an event loop. `Driver` bundles those moves with the inspection the
tests need. It reads rows over a second SQLite connection, which also proves
that what the runtime reports was committed. Its snapshots of every row
count and bus file serve tests that assert that something changed nothing.

The clock starts at a fixed instant in the past, so file modification times
(which are real) always look newer than the fake "now". Tests of behaviour
that reads mtimes (the sweep of `processing/`, purge of old bus files) set
the times they need with `Driver.age_file`.
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from relaymesh.agents.builtin import FAIL_AGENT_ERROR
from relaymesh.fsm import AttemptOutcome
from relaymesh.runtime import Assignment, Runtime, TierSelector
from relaymesh.store import CommitResult, PreparedStep, PreparedTask, StepOutcome

START_MS = 1_700_000_000_000
TABLES = (
    "tasks",
    "steps",
    "step_dependencies",
    "step_attempts",
    "messages",
    "idempotency",
    "lease_conflicts",
    "mesh_nodes",
)
DATABASE_FILES = ("relaymesh.db", "relaymesh.db-wal", "relaymesh.db-shm")


class FakeClock:
    """Wall clock in epoch milliseconds that moves only when a test moves it."""

    def __init__(self, start_ms: int = START_MS) -> None:
        self.now_ms = start_ms

    def __call__(self) -> int:
        return self.now_ms

    def advance(self, delta_ms: int) -> int:
        self.now_ms += delta_ms
        return self.now_ms

    def set(self, now_ms: int) -> int:
        self.now_ms = now_ms
        return now_ms


def echo_output(assignment: Assignment) -> str:
    """The output a test uses for a successful attempt: input and step name."""
    return f"{assignment.step.step_name}:{assignment.input_text}"


class Driver:
    """A runtime plus the moves and reads the tests make on it."""

    def __init__(self, runtime: Runtime, clock: FakeClock) -> None:
        self.runtime = runtime
        self.clock = clock
        self.root = runtime.layout.root
        self.selector = TierSelector(runtime.settings.max_consecutive_high)
        self._reader = sqlite3.connect(runtime.layout.database, isolation_level=None)
        self._reader.row_factory = sqlite3.Row

    def close(self) -> None:
        self._reader.close()

    # Worker moves ----------------------------------------------------------

    def claim(
        self, count: int = 1, owner: str = "node-a", worker: str = "node-a/w0"
    ) -> list[Assignment]:
        return self.runtime.claim_batch(self.selector, count, owner, worker)

    def claim_one(self, owner: str = "node-a") -> Assignment:
        claimed = self.claim(1, owner, f"{owner}/w0")
        assert len(claimed) == 1, "expected one queued message to claim"
        return claimed[0]

    def outcome(
        self,
        assignment: Assignment,
        kind: str = AttemptOutcome.SUCCESS,
        *,
        output: str | None = None,
        error: str = "",
        token: str | None = None,
        epoch: int | None = None,
    ) -> StepOutcome:
        step = assignment.step
        if output is None:
            output = echo_output(assignment) if kind == AttemptOutcome.SUCCESS else ""
        return StepOutcome(
            step_id=step.step_id,
            lease_token=step.lease_token if token is None else token,
            lease_epoch=step.lease_epoch if epoch is None else epoch,
            outcome=kind,
            output=output,
            error=error,
            file_path=step.file_path,
            worker_id=f"{step.lease_owner}/w0",
        )

    def succeed(
        self, assignment: Assignment, output: str | None = None
    ) -> CommitResult:
        outcome = self.outcome(assignment, AttemptOutcome.SUCCESS, output=output)
        return self.runtime.commit_outcomes([outcome])[0]

    def fail(
        self, assignment: Assignment, error: str = FAIL_AGENT_ERROR
    ) -> CommitResult:
        outcome = self.outcome(assignment, AttemptOutcome.FAILED, error=error)
        return self.runtime.commit_outcomes([outcome])[0]

    def execute(self, assignment: Assignment) -> CommitResult:
        """Play the built-in agents: `fail` fails, anything else succeeds."""
        if assignment.step.agent_id == "fail":
            return self.fail(assignment)
        return self.succeed(assignment)

    def drain(self, max_rounds: int = 1000) -> int:
        """Claim and execute until the inbox is empty; return the steps executed."""
        executed = 0
        for _ in range(max_rounds):
            claimed = self.claim(16)
            if not claimed:
                return executed
            for assignment in claimed:
                self.execute(assignment)
                executed += 1
        raise AssertionError(f"inbox not empty after {max_rounds} rounds")

    # Submissions -------------------------------------------------------------

    def queue_many(self, count: int, priority: str) -> list[str]:
        """Queue `count` single-step echo tasks fast and return their step ids.

        For volume tests of the scheduler. `Runtime.submit` writes each
        payload durably and each envelope twice, which costs milliseconds a
        task on a slow disk. Here the rows go in through the store as submit
        writes them, but the tasks of one call share one payload file (its
        text is the priority) and only the inbox copy of each envelope is
        written. The clock moves one millisecond per task, so the inbox
        order is the order of the returned ids.
        """
        store = self.runtime.store
        payload = self.root / "payload" / f"volume-{store.ids.hex(4)}.payload"
        payload.write_text(priority, encoding="utf-8")
        step_ids = []
        for _ in range(count):
            task_id = store.ids.new("tsk")
            step_id = store.ids.new("stp")
            task = PreparedTask(
                task_id=task_id,
                kind="single",
                idempotency_key=f"volume-{task_id}",
                trace_id=store.ids.trace_id(),
                steps=(
                    PreparedStep(
                        step_id, "main", "echo", priority.upper(), str(payload), ()
                    ),
                ),
            )
            result = store.insert_task(
                task, self.clock(), self.runtime.idempotency_ttl_ms
            )
            for envelope in result.envelopes:
                path = self.root / "inbox" / priority / envelope.file_name
                path.write_text(envelope.to_json())
            step_ids.append(step_id)
            self.clock.advance(1)
        return step_ids

    def write_workflow(self, document: object, name: str = "workflow.json") -> Path:
        path = self.root.parent / name
        text = document if isinstance(document, str) else json.dumps(document)
        path.write_text(text, encoding="utf-8")
        return path

    def submit_workflow(self, steps: list[dict], name: str = "workflow.json", **kwargs):
        return self.runtime.submit_workflow(
            self.write_workflow({"steps": steps}, name), **kwargs
        )

    # Reads -------------------------------------------------------------------

    def query(self, sql: str, *params: object) -> list[dict]:
        return [dict(row) for row in self._reader.execute(sql, params).fetchall()]

    def scalar(self, sql: str, *params: object) -> object:
        return self._reader.execute(sql, params).fetchone()[0]

    def task(self, task_id: str) -> dict:
        view = self.runtime.store.task_view(task_id)
        assert view is not None, f"task {task_id} not found"
        return view

    def steps(self, task_id: str) -> dict[str, dict]:
        """Rows of the task's steps keyed by step name."""
        rows = self.query("SELECT * FROM steps WHERE task_id = ?", task_id)
        return {row["name"]: row for row in rows}

    def attempts(self, step_id: str) -> list[dict]:
        return self.query(
            "SELECT * FROM step_attempts WHERE step_id = ? ORDER BY lease_epoch",
            step_id,
        )

    def conflicts(self) -> list[dict]:
        return self.query("SELECT * FROM lease_conflicts ORDER BY id")

    def files(self, folder: str) -> list[str]:
        """Names of the envelope and payload files under a folder of the root."""
        base = self.root / folder
        if not base.exists():
            return []
        return sorted(
            str(path.relative_to(base))
            for path in base.rglob("*")
            if path.is_file() and not path.name.startswith(".")
        )

    def inbox(self, tier: str = "normal") -> list[str]:
        return self.files(f"inbox/{tier}")

    def row_counts(self) -> dict[str, int]:
        return {table: self.scalar(f"SELECT COUNT(*) FROM {table}") for table in TABLES}

    def snapshot(self) -> dict[str, object]:
        """Row counts, the rows of the main tables, and every bus file with its size."""
        # The audit log is left out: every operation appends to it, dry runs
        # included, because a dry run is itself an event worth recording.
        files = {
            str(relative): path.stat().st_size
            for path in self.root.rglob("*")
            if path.is_file()
            and path.name not in DATABASE_FILES
            and (relative := path.relative_to(self.root)).parts[0] != "audit"
        }
        return {
            "rows": self.row_counts(),
            "tasks": self.query("SELECT * FROM tasks ORDER BY task_id"),
            "steps": self.query("SELECT * FROM steps ORDER BY step_id"),
            "messages": self.query("SELECT * FROM messages ORDER BY msg_id"),
            "idempotency": self.query(
                "SELECT * FROM idempotency ORDER BY idempotency_key"
            ),
            "files": files,
        }

    def age_file(self, path: Path, age_ms: int) -> None:
        """Set a file's mtime to `age_ms` before the fake clock's now."""
        seconds = (self.clock() - age_ms) / 1000
        os.utime(path, (seconds, seconds))


@pytest.fixture
def clock_ms() -> FakeClock:
    return FakeClock()


@pytest.fixture
def rng() -> random.Random:
    return random.Random(1)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "root"


@pytest.fixture
def open_runtime(
    root: Path, clock_ms: FakeClock, rng: random.Random
) -> Iterator[Callable[..., Runtime]]:
    """Open the root, first writing the settings and retry policies given.

    `settings` maps camelCase settings keys to values. `retry_policies` is
    the list of entries of `agents/retry-policies.json`.
    """
    opened: list[Runtime] = []

    def open_(
        settings: dict | None = None, retry_policies: list[dict] | None = None
    ) -> Runtime:
        root.mkdir(parents=True, exist_ok=True)
        if settings is not None:
            (root / "relaymesh-settings.json").write_text(json.dumps(settings))
        if retry_policies is not None:
            (root / "agents").mkdir(exist_ok=True)
            (root / "agents" / "retry-policies.json").write_text(
                json.dumps({"agents": retry_policies})
            )
        runtime = Runtime.open(root, clock_ms=clock_ms, rng=rng)
        opened.append(runtime)
        return runtime

    yield open_
    for runtime in opened:
        runtime.close()


@pytest.fixture
def runtime(open_runtime: Callable[..., Runtime]) -> Runtime:
    return open_runtime()


@pytest.fixture
def make_driver(
    open_runtime: Callable[..., Runtime], clock_ms: FakeClock
) -> Iterator[Callable[..., Driver]]:
    """Build a `Driver`. Keyword arguments are passed on to `open_runtime`."""
    drivers: list[Driver] = []

    def make(**kwargs: object) -> Driver:
        driver = Driver(open_runtime(**kwargs), clock_ms)
        drivers.append(driver)
        return driver

    yield make
    for driver in drivers:
        driver.close()


@pytest.fixture
def driver(make_driver: Callable[..., Driver]) -> Driver:
    return make_driver()
