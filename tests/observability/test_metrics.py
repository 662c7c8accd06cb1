"""Tests of the Prometheus metrics: durable counters, families, escaping, HTTP.

Roots are built through `Runtime` with the fake clock of tests/conftest.py,
so durations and windows are exact. Expected values are read with plain SQL
on a second connection (`Driver.query`), never through the code under test.
Exposition text is checked by parsing it back with prometheus-client's
parser, and with `promtool check metrics` when promtool is on PATH.
"""

from __future__ import annotations

import json
import random
import re
import shutil
import sqlite3
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.utils import floatToGoString

import relaymesh.runtime
import relaymesh.store._metrics as store_metrics
from relaymesh.errors import ConflictError, ValidationError
from relaymesh.executor import InlineExecutor, ThreadExecutor
from relaymesh.fsm import AttemptOutcome
from relaymesh.observability import metrics
from relaymesh.observability.metrics import (
    CONTENT_TYPE,
    DURATION_BUCKETS_S,
    METRICS,
    WINDOW_MS,
    MetricType,
    RelayMeshCollector,
    nearest_rank,
    read_metrics,
    render_exposition,
    render_metrics_markdown,
    serve_metrics,
)
from relaymesh.runtime import Runtime, TierSelector
from relaymesh.store import StepOutcome, Store
from relaymesh.store._metrics import MetricsMixin

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCS_PAGE = REPO_ROOT / "docs" / "metrics.md"
REGENERATE = "python -m relaymesh.observability.metrics > docs/metrics.md"
HOUR_MS = 3_600_000

# Lint findings of `promtool check metrics` (Prometheus 2.42) that the
# exposition keeps on purpose: the names and the quantile label of these
# gauges are those of the reference implementation.
ACCEPTED_PROMTOOL_LINT = {
    "relaymesh_queue_lag_ms metric names should not contain abbreviated units",
    (
        "relaymesh_oldest_queued_message_age_ms metric names should not contain"
        " abbreviated units"
    ),
    "relaymesh_step_latency_ms metric names should not contain abbreviated units",
    'relaymesh_step_latency_ms non-summary metrics should not have "quantile" label',
}

WEIRD_AGENTS = (
    'say "hi"',
    "back\\slash",
    "new\nline",
    "rocket \N{ROCKET} launch",
    'all of "\\\n\N{SLIGHTLY SMILING FACE}',
)


class MetricsStore(Store, MetricsMixin):
    """The store with the metrics mixin, for as long as `Store` lacks it."""


@pytest.fixture(autouse=True)
def store_with_metrics(monkeypatch: pytest.MonkeyPatch) -> None:
    if not hasattr(Store, "metrics_snapshot"):
        monkeypatch.setattr(relaymesh.runtime, "Store", MetricsStore)


# Helpers -----------------------------------------------------------------------


def exposition(runtime: Runtime) -> str:
    return render_exposition(runtime).decode("utf-8")


def families(text: str) -> dict[str, object]:
    """Parse exposition text into families keyed by their exposed name."""
    parsed = {}
    for family in text_string_to_metric_families(text):
        name = f"{family.name}_total" if family.type == "counter" else family.name
        assert name not in parsed, f"family {name} appears twice"
        parsed[name] = family
    return parsed


def type_lines(text: str) -> list[tuple[str, str]]:
    return [
        (line.split()[2], line.split()[3])
        for line in text.splitlines()
        if line.startswith("# TYPE ")
    ]


def value(text: str, sample_name: str, **labels: str) -> float:
    """Return the one sample called `sample_name` with exactly `labels`."""
    found = [
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == sample_name and sample.labels == labels
    ]
    assert len(found) == 1, f"{sample_name}{labels}: found {len(found)} samples"
    return found[0]


def labelled(text: str, sample_name: str, label: str) -> dict[str, float]:
    return {
        sample.labels[label]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == sample_name
    }


def group_counts(driver, sql: str) -> dict[str, int]:
    return {row["key"]: row["n"] for row in driver.query(sql)}


def run_one(driver, assignment, duration_ms: int, succeed: bool = True):
    driver.clock.advance(duration_ms)
    if succeed:
        return driver.succeed(assignment)
    return driver.fail(assignment)


def insert_attempt(
    driver,
    agent_id: str,
    duration_ms: int,
    *,
    outcome: str = "SUCCESS",
    ended_at_ms: int | None = None,
) -> str:
    """Insert a task, a step of `agent_id` and one ended attempt, with plain SQL."""
    ended = driver.clock() if ended_at_ms is None else ended_at_ms
    started = ended - duration_ms
    number = driver.scalar("SELECT COUNT(*) FROM tasks") + 1
    task_id, step_id = f"tsk_sql{number}", f"stp_sql{number}"
    db = driver._reader
    db.execute(
        "INSERT INTO tasks(task_id, status, idempotency_key, trace_id,"
        " created_at_ms, updated_at_ms) VALUES (?, 'SUCCESS', ?, 't', ?, ?)",
        (task_id, task_id, started, ended),
    )
    db.execute(
        "INSERT INTO steps(step_id, task_id, name, agent_id, payload_path, status,"
        " attempt, lease_epoch, created_at_ms, updated_at_ms)"
        " VALUES (?, ?, 'main', ?, '/dev/null', 'SUCCESS', 1, 1, ?, ?)",
        (step_id, task_id, agent_id, started, ended),
    )
    db.execute(
        "INSERT INTO step_attempts(step_id, lease_epoch, task_id, attempt, node_id,"
        " worker_id, span_id, msg_id, started_at_ms, ended_at_ms, outcome)"
        " VALUES (?, 1, ?, 1, 'n', 'n/w0', 's', 'm', ?, ?, ?)",
        (step_id, task_id, started, ended, outcome),
    )
    return step_id


# Durable counters ----------------------------------------------------------------


def test_counters_survive_restart(root, clock_ms, rng, make_driver):
    driver = make_driver()
    for index in range(3):
        driver.runtime.submit("echo", f"before {index}")
    assert driver.drain() == 3
    before = exposition(driver.runtime)
    assert value(before, "relaymesh_steps_succeeded_total") == 3
    driver.runtime.close()

    reopened = Runtime.open(root, clock_ms=clock_ms, rng=rng)
    try:
        after_restart = exposition(reopened)
        for name in (
            "relaymesh_steps_succeeded_total",
            "relaymesh_tasks_replayed_total",
        ):
            assert value(after_restart, name) == value(before, name)
        assert (
            value(after_restart, "relaymesh_tasks_submitted_total", kind="single") == 3
        )

        for index in range(2):
            reopened.submit("echo", f"after {index}")
        driver.runtime = reopened
        assert driver.drain() == 2
        later = exposition(reopened)
    finally:
        reopened.close()
    assert value(later, "relaymesh_steps_succeeded_total") == 5
    assert value(later, "relaymesh_tasks_submitted_total", kind="single") == 5


def test_counters_equal_across_processes_view(driver, root, clock_ms, rng):
    driver.runtime.submit("echo", "x")
    driver.drain()
    other = Runtime.open(root, clock_ms=clock_ms, rng=rng)
    try:
        assert exposition(other) == exposition(driver.runtime)
    finally:
        other.close()


def test_every_bumped_counter_is_defined():
    pattern = re.compile(r'(?:_bump_counter\(\s*db,\s*|add_counter\(\s*)"(\w+)"')
    used = set()
    for path in (REPO_ROOT / "relaymesh").rglob("*.py"):
        used |= set(pattern.findall(path.read_text(encoding="utf-8")))
    defined = {d.durable_counter for d in METRICS if d.durable_counter is not None}
    assert used, "found no counter bumps in relaymesh/; the pattern is stale"
    assert used <= defined, f"counters without a metric: {sorted(used - defined)}"


def test_unlabelled_counter_sums_stray_labels(driver):
    driver.runtime.store.add_counter("steps_succeeded_total", 2, driver.clock())
    driver.runtime.store.add_counter("steps_succeeded_total", 3, driver.clock(), "x")
    assert value(exposition(driver.runtime), "relaymesh_steps_succeeded_total") == 5


# Families and types --------------------------------------------------------------


def test_each_family_once_with_type(driver):
    driver.runtime.submit("echo", "one")
    driver.drain()
    text = exposition(driver.runtime)
    declared = type_lines(text)
    names = [name for name, _ in declared]
    assert len(names) == len(set(names)), Counter(names).most_common(3)
    assert declared == [(d.name, str(d.type)) for d in METRICS]

    parsed = families(text)
    for definition in METRICS:
        assert parsed[definition.name].type == definition.type, definition.name


def test_help_lines_present(driver):
    text = exposition(driver.runtime)
    helps = [line.split()[2] for line in text.splitlines() if line.startswith("# HELP")]
    assert helps == [d.name for d in METRICS]


def test_gauges_do_not_end_in_total():
    for definition in METRICS:
        if definition.type != MetricType.COUNTER:
            assert not definition.name.endswith("_total"), definition.name
        else:
            assert definition.name.endswith("_total"), definition.name


def test_label_values_exist_at_zero(runtime):
    text = exposition(runtime)
    assert labelled(text, "relaymesh_tasks", "status") == {
        "PENDING": 0, "RUNNING": 0, "RETRYING": 0, "SUCCESS": 0,
        "DEAD_LETTER": 0, "CANCELLED": 0,
    }  # fmt: skip
    conflicts = labelled(text, "relaymesh_lease_conflict_events_total", "event_type")
    assert set(conflicts) == set(metrics.CONFLICT_EVENT_TYPES)
    assert set(conflicts.values()) == {0}
    assert labelled(text, "relaymesh_queue_depth", "priority") == {
        "high": 0, "normal": 0, "low": 0,
    }  # fmt: skip
    assert value(text, "relaymesh_step_latency_ms", quantile="0.95") == 0
    assert value(text, "relaymesh_task_latency_seconds_count") == 0


def test_unknown_status_value_is_exposed(driver):
    driver.runtime.submit("echo", "x")
    driver._reader.execute(
        "INSERT INTO mesh_nodes(node_id, status, last_heartbeat_ms, updated_at_ms,"
        " status_changed_at_ms) VALUES ('n1', 'WANDERING', 0, 0, 0)"
    )
    nodes = labelled(exposition(driver.runtime), "relaymesh_mesh_nodes", "status")
    assert nodes["WANDERING"] == 1
    assert list(nodes)[:4] == ["ALIVE", "SUSPECT", "DEAD", "LEFT"]


def test_describe_does_not_read_root(runtime):
    runtime.store.close()
    registry = CollectorRegistry(auto_describe=True)
    registry.register(RelayMeshCollector(runtime))  # must not touch the store


# A busy root ---------------------------------------------------------------------


class ManualClock:
    """Wall clock in epoch milliseconds that moves only when a test advances it."""

    def __init__(self, now_ms: int = 1_700_000_000_000) -> None:
        self.now_ms = now_ms

    def __call__(self) -> int:
        return self.now_ms

    def advance(self, delta_ms: int) -> None:
        self.now_ms += delta_ms


class BusyRoot:
    """A root with 300 tasks in every state, and plain SQL reads of it."""

    def __init__(self, runtime: Runtime, clock: ManualClock) -> None:
        self.runtime = runtime
        self.clock = clock
        self.selector = TierSelector(runtime.settings.max_consecutive_high)
        self.reader = sqlite3.connect(runtime.layout.database, isolation_level=None)
        self.reader.row_factory = sqlite3.Row

    def run_one(self, duration_ms: int) -> None:
        """Claim one message and commit its attempt `duration_ms` later."""
        (assignment,) = self.runtime.claim_batch(
            self.selector, 1, "node-a", "node-a/w0"
        )
        step = assignment.step
        self.clock.advance(duration_ms)
        failed = step.agent_id == "fail"
        outcome = StepOutcome(
            step_id=step.step_id,
            lease_token=step.lease_token,
            lease_epoch=step.lease_epoch,
            outcome=AttemptOutcome.FAILED if failed else AttemptOutcome.SUCCESS,
            output="" if failed else "ok",
            error="failed on purpose" if failed else "",
            file_path=step.file_path,
            worker_id="node-a/w0",
        )
        self.runtime.commit_outcomes([outcome])

    def query(self, sql: str) -> list[dict]:
        return [dict(row) for row in self.reader.execute(sql).fetchall()]

    def scalar(self, sql: str) -> object:
        return self.reader.execute(sql).fetchone()[0]

    def inbox(self, tier: str) -> list[Path]:
        return list((self.runtime.layout.inbox_tier(tier)).glob("*.meta.json"))


@pytest.fixture(scope="module")
def busy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BusyRoot]:
    """300 tasks: done, running, queued, retrying and dead-lettered.

    Built once per module, because the tests only read it.
    """
    home = tmp_path_factory.mktemp("busy")
    root = home / "root"
    (root / "agents").mkdir(parents=True)
    (root / "agents" / "retry-policies.json").write_text(
        json.dumps({"agents": [{"id": "fail", "maxAttempts": 2}]})
    )
    clock = ManualClock()
    with pytest.MonkeyPatch.context() as patch:
        if not hasattr(Store, "metrics_snapshot"):
            patch.setattr(relaymesh.runtime, "Store", MetricsStore)
        runtime = Runtime.open(root, clock_ms=clock, rng=random.Random(7))
    busy = BusyRoot(runtime, clock)

    priorities = ("high", "normal", "low")
    for index in range(200):
        runtime.submit("echo", f"echo {index}", priority=priorities[index % 3])
    for index in range(60):
        runtime.submit("fail", f"fail {index}", priority=priorities[index % 3])
    for index in range(40):
        workflow = home / f"workflow-{index}.json"
        steps = [
            {"id": "a", "agent": "echo", "input": f"a{index}"},
            {"id": "b", "agent": "echo", "input": f"b{index}", "dependsOn": ["a"]},
            {"id": "c", "agent": "fail", "input": f"c{index}", "priority": "low"},
        ]
        workflow.write_text(json.dumps({"steps": steps}))
        runtime.submit_workflow(workflow)

    # 150 attempts lasting 1..150 ms; then, once the retries are due, 40
    # more lasting 2 s each; then 25 claims left running.
    for duration in range(1, 151):
        busy.run_one(duration)
    clock.advance(60_000)
    runtime.dispatch_due_retries()
    for _ in range(40):
        busy.run_one(2_000)
    assert len(runtime.claim_batch(busy.selector, 25, "node-b", "node-b/w0")) == 25
    clock.advance(1_000)

    yield busy
    busy.reader.close()
    runtime.close()


def test_busy_root_matches_sql(busy):
    text = exposition(busy.runtime)
    assert busy.scalar("SELECT COUNT(*) FROM tasks") == 300

    expected_tasks = group_counts(
        busy, "SELECT status AS key, COUNT(*) AS n FROM tasks GROUP BY status"
    )
    expected_steps = group_counts(
        busy, "SELECT status AS key, COUNT(*) AS n FROM steps GROUP BY status"
    )
    expected_messages = group_counts(
        busy, "SELECT state AS key, COUNT(*) AS n FROM messages GROUP BY state"
    )
    tasks = labelled(text, "relaymesh_tasks", "status")
    steps = labelled(text, "relaymesh_steps", "status")
    messages = labelled(text, "relaymesh_messages", "state")
    assert {k: v for k, v in tasks.items() if v} == expected_tasks
    assert {k: v for k, v in steps.items() if v} == expected_steps
    assert {k: v for k, v in messages.items() if v} == expected_messages
    assert len([status for status, n in expected_tasks.items() if n]) >= 4

    assert value(text, "relaymesh_running_steps") == 25
    assert expected_steps["RUNNING"] == 25
    assert value(text, "relaymesh_processing_meta_files") == 25


def test_busy_root_counters(busy):
    text = exposition(busy.runtime)
    kinds = group_counts(
        busy, "SELECT kind AS key, COUNT(*) AS n FROM tasks GROUP BY kind"
    )
    assert (
        value(text, "relaymesh_tasks_submitted_total", kind="single") == kinds["single"]
    )
    assert value(text, "relaymesh_tasks_submitted_total", kind="workflow") == 40

    succeeded = busy.scalar("SELECT COUNT(*) FROM steps WHERE status = 'SUCCESS'")
    dead = busy.scalar("SELECT COUNT(*) FROM steps WHERE status = 'DEAD_LETTER'")
    failed_attempts = busy.scalar(
        "SELECT COUNT(*) FROM step_attempts WHERE outcome = 'FAILED'"
    )
    assert dead > 0
    assert value(text, "relaymesh_steps_succeeded_total") == succeeded
    assert value(text, "relaymesh_dead_lettered_total") == dead
    assert value(text, "relaymesh_retries_scheduled_total") == failed_attempts - dead


def test_busy_root_queues(busy):
    text = exposition(busy.runtime)
    depth = labelled(text, "relaymesh_queue_depth", "priority")
    inbox = labelled(text, "relaymesh_inbox_depth", "priority")
    ready = group_counts(
        busy,
        "SELECT LOWER(priority) AS key, COUNT(*) AS n FROM steps"
        " WHERE status = 'PENDING' AND is_enqueued = 1 GROUP BY LOWER(priority)",
    )
    for tier in ("high", "normal", "low"):
        assert inbox[tier] == len(busy.inbox(tier)), tier
        assert depth[tier] == ready.get(tier, 0), tier
        assert depth[tier] == inbox[tier], tier
    assert sum(depth.values()) > 0

    now = busy.clock()
    assert value(text, "relaymesh_queue_lag_ms") == busy.runtime.store.queue_lag_ms(now)
    oldest = busy.scalar(
        "SELECT MIN(created_at_ms) FROM messages WHERE state = 'QUEUED'"
    )
    assert value(text, "relaymesh_oldest_queued_message_age_ms") == now - oldest
    dead_tasks = busy.scalar("SELECT COUNT(*) FROM tasks WHERE status = 'DEAD_LETTER'")
    assert value(text, "relaymesh_dead_letter_growth_1h") == dead_tasks


def test_busy_root_latencies(busy):
    text = exposition(busy.runtime)
    rows = busy.query(
        "SELECT s.agent_id, a.ended_at_ms - a.started_at_ms AS duration"
        " FROM step_attempts AS a JOIN steps AS s USING (step_id)"
        " WHERE a.ended_at_ms IS NOT NULL"
    )
    assert len(rows) == 190
    durations = [row["duration"] for row in rows]
    assert value(text, "relaymesh_step_latency_ms", quantile="0.95") == nearest_rank(
        durations, 95
    )
    assert value(text, "relaymesh_step_latency_ms", quantile="0.99") == 2_000

    for agent in ("echo", "fail"):
        mine = [row["duration"] for row in rows if row["agent_id"] == agent]
        count = value(text, "relaymesh_step_duration_seconds_count", agent=agent)
        total = value(text, "relaymesh_step_duration_seconds_sum", agent=agent)
        assert count == len(mine)
        assert total == pytest.approx(sum(mine) / 1000)
        for bound in DURATION_BUCKETS_S:
            le = floatToGoString(bound)
            expected = len([d for d in mine if d <= bound * 1000])
            observed = value(
                text, "relaymesh_step_duration_seconds_bucket", agent=agent, le=le
            )
            assert observed == expected, (agent, le)

    finished = busy.query(
        "SELECT finished_at_ms - created_at_ms AS latency FROM tasks"
        " WHERE finished_at_ms IS NOT NULL"
    )
    assert value(text, "relaymesh_task_latency_seconds_count") == len(finished)
    assert value(text, "relaymesh_task_latency_seconds_sum") == pytest.approx(
        sum(row["latency"] for row in finished) / 1000
    )


def test_busy_root_promtool(busy):
    check_with_promtool(exposition(busy.runtime))


# Windows and buckets ---------------------------------------------------------------


def test_bucket_bounds_are_inclusive(driver):
    for duration in (5, 6, 10, 300_000, 300_001):
        insert_attempt(driver, "edge", duration)
    text = exposition(driver.runtime)

    def bucket(le: str) -> float:
        return value(
            text, "relaymesh_step_duration_seconds_bucket", agent="edge", le=le
        )

    assert bucket("0.005") == 1
    assert bucket("0.01") == 3
    assert bucket("300.0") == 4
    assert bucket("+Inf") == 5
    assert value(text, "relaymesh_step_duration_seconds_count", agent="edge") == 5


def test_histograms_cover_last_hour(driver):
    driver.runtime.submit("echo", "x")
    (assignment,) = driver.claim(1)
    run_one(driver, assignment, 30)
    text = exposition(driver.runtime)
    assert value(text, "relaymesh_step_duration_seconds_count", agent="echo") == 1
    assert value(text, "relaymesh_task_latency_seconds_count") == 1

    driver.clock.advance(WINDOW_MS + 1)
    later = exposition(driver.runtime)
    assert labelled(later, "relaymesh_step_duration_seconds_count", "agent") == {}
    assert value(later, "relaymesh_task_latency_seconds_count") == 0
    assert value(later, "relaymesh_steps_succeeded_total") == 1
    # The quantiles use the most recent attempts, whatever their age.
    assert value(later, "relaymesh_step_latency_ms", quantile="0.99") == 30


def test_queue_lag_matches_store_rule(driver):
    task = driver.runtime.submit("fail", "x")
    driver.clock.advance(700)
    assert value(exposition(driver.runtime), "relaymesh_queue_lag_ms") == 700

    driver.fail(driver.claim_one())
    retry_at = driver.steps(task.task_id)["main"]["next_retry_at_ms"]
    for now in (retry_at - 1, retry_at, retry_at + 300):
        driver.clock.set(now)
        lag = value(exposition(driver.runtime), "relaymesh_queue_lag_ms")
        assert lag == driver.runtime.store.queue_lag_ms(now), now
    assert lag == 300


def test_dead_letter_growth_window(make_driver):
    driver = make_driver(retry_policies=[{"id": "fail", "maxAttempts": 1}])
    driver.runtime.submit("fail", "x")
    driver.drain()
    text = exposition(driver.runtime)
    assert value(text, "relaymesh_dead_letter_growth_1h") == 1
    assert value(text, "relaymesh_dead_lettered_total") == 1

    driver.clock.advance(HOUR_MS + 1)
    later = exposition(driver.runtime)
    assert value(later, "relaymesh_dead_letter_growth_1h") == 0
    assert value(later, "relaymesh_dead_lettered_total") == 1


@pytest.mark.parametrize("outcome", ["ABANDONED", "RELEASED", "CANCELLED"])
def test_interrupted_attempts_not_timed(driver, outcome):
    insert_attempt(driver, "timed", 40)
    insert_attempt(driver, "timed", 90_000, outcome=outcome)
    text = exposition(driver.runtime)
    assert value(text, "relaymesh_step_duration_seconds_count", agent="timed") == 1
    assert value(text, "relaymesh_step_latency_ms", quantile="0.99") == 40


@pytest.mark.parametrize("outcome", ["SUCCESS", "FAILED", "TIMEOUT", "CONFLICT"])
def test_finished_attempts_timed(driver, outcome):
    insert_attempt(driver, "timed", 40, outcome=outcome)
    text = exposition(driver.runtime)
    assert value(text, "relaymesh_step_duration_seconds_count", agent="timed") == 1


def test_negative_duration_counts_as_zero(driver):
    insert_attempt(driver, "skewed", -50)
    text = exposition(driver.runtime)
    assert value(text, "relaymesh_step_duration_seconds_sum", agent="skewed") == 0
    bucket = value(
        text, "relaymesh_step_duration_seconds_bucket", agent="skewed", le="0.005"
    )
    assert bucket == 1


def test_latency_sample_keeps_most_recent(driver, monkeypatch):
    monkeypatch.setattr(metrics, "RECENT_ATTEMPTS", 3)
    start = driver.clock()
    for offset, duration in enumerate([900, 800, 10, 20, 30]):
        insert_attempt(driver, "a", duration, ended_at_ms=start + offset)
    text = exposition(driver.runtime)
    assert value(text, "relaymesh_step_latency_ms", quantile="0.99") == 30


@pytest.mark.parametrize(
    ("values", "percentile", "expected"),
    [
        ([], 95, 0),
        ([7], 95, 7),
        (list(range(1, 101)), 95, 95),
        (list(range(1, 101)), 7, 7),
        (list(range(1, 101)), 99, 99),
        (list(range(1, 101)), 100, 100),
        (list(range(1, 21)), 95, 19),
        (list(range(1, 21)), 99, 20),
        ([5, 1, 4, 2, 3], 50, 3),
        (list(range(1000, 0, -1)), 95, 950),
    ],
)
def test_nearest_rank(values, percentile, expected):
    assert nearest_rank(values, percentile) == expected


@pytest.mark.parametrize("percentile", [0, -1, 101])
def test_nearest_rank_rejects_percentile(percentile):
    with pytest.raises(ValueError, match="percentile"):
        nearest_rank([1, 2], percentile)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"window_ms": 0}, "window_ms"),
        ({"recent_attempts": 0}, "recent_attempts"),
        ({"bucket_bounds_ms": []}, "bucket_bounds_ms"),
        ({"bucket_bounds_ms": [0, 5]}, "bucket_bounds_ms"),
        ({"bucket_bounds_ms": [5, 5]}, "bucket_bounds_ms"),
        ({"bucket_bounds_ms": [10, 5]}, "bucket_bounds_ms"),
    ],
)
def test_snapshot_rejects_arguments(runtime, arguments, message):
    valid = {"window_ms": 1, "bucket_bounds_ms": [5, 10], "recent_attempts": 1}
    with pytest.raises(ValueError, match=message):
        runtime.store.metrics_snapshot(0, **{**valid, **arguments})


# One consistent snapshot ------------------------------------------------------------


def test_snapshot_ignores_concurrent_commit(driver, root, clock_ms, monkeypatch):
    for index in range(3):
        driver.runtime.submit("echo", f"first {index}")
    writer = Runtime.open(root, clock_ms=clock_ms)
    original = store_metrics._group_counts
    calls = []

    def group_counts_with_concurrent_submit(db, sql):
        # Commit a new task on another connection between the snapshot's
        # first query (the counters) and its second (task statuses).
        if not calls:
            writer.submit("echo", "sneaked in")
        calls.append(sql)
        return original(db, sql)

    monkeypatch.setattr(
        store_metrics, "_group_counts", group_counts_with_concurrent_submit
    )
    try:
        reading = read_metrics(driver.runtime)
    finally:
        writer.close()
    snapshot = reading.store
    assert calls, "the snapshot no longer calls _group_counts; update this test"
    assert snapshot.counters[("tasks_submitted_total", "single")] == 3
    assert sum(snapshot.task_status.values()) == 3
    assert sum(snapshot.step_status.values()) == 3
    assert sum(snapshot.message_state.values()) == 3

    monkeypatch.setattr(store_metrics, "_group_counts", original)
    assert sum(read_metrics(driver.runtime).store.task_status.values()) == 4


def test_snapshot_keeps_store_writable(runtime):
    read_metrics(runtime)
    assert not runtime.store._connection.in_transaction
    runtime.submit("echo", "still writable")


def test_snapshot_skips_store_lock(runtime):
    # A node's worker thread inside a long transaction holds the lock of the
    # store's shared connection. A scrape must not wait for it.
    locked = threading.Event()
    release = threading.Event()

    def hold_lock() -> None:
        with runtime.store._lock:
            locked.set()
            release.wait(timeout=30)

    holder = threading.Thread(target=hold_lock)
    holder.start()
    readings = []
    try:
        assert locked.wait(timeout=10)
        scraper = threading.Thread(
            target=lambda: readings.append(read_metrics(runtime))
        )
        scraper.start()
        scraper.join(timeout=10)
        assert readings, "the snapshot waited for the store's connection lock"
    finally:
        release.set()
        holder.join()


def test_snapshot_error_leaves_store_usable(runtime, monkeypatch):
    def broken(db, sql):
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(store_metrics, "_group_counts", broken)
    with pytest.raises(sqlite3.OperationalError, match="disk I/O error"):
        read_metrics(runtime)
    monkeypatch.undo()

    runtime.submit("echo", "after the error")
    assert read_metrics(runtime).store.task_status == {"PENDING": 1}


# Escaping ---------------------------------------------------------------------------


def test_weird_agent_names_round_trip(driver):
    for index, agent in enumerate(WEIRD_AGENTS):
        insert_attempt(driver, agent, 10 * (index + 1))
    text = exposition(driver.runtime)
    counts = labelled(text, "relaymesh_step_duration_seconds_count", "agent")
    assert counts == {agent: 1 for agent in WEIRD_AGENTS}

    assert 'agent="say \\"hi\\""' in text
    assert 'agent="back\\\\slash"' in text
    assert 'agent="new\\nline"' in text
    assert "\N{ROCKET}" in text
    for line in text.splitlines():
        assert line.startswith(("#", "relaymesh_")), f"broken line: {line!r}"


def test_weird_agent_names_promtool(driver):
    for index, agent in enumerate(WEIRD_AGENTS):
        insert_attempt(driver, agent, 10 * (index + 1))
    check_with_promtool(exposition(driver.runtime))


def check_with_promtool(text: str) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not on PATH (Debian package 'prometheus')")
    completed = subprocess.run(
        [promtool, "check", "metrics"],
        input=text.encode("utf-8"),
        capture_output=True,
        timeout=60,
        start_new_session=True,
        check=False,
    )
    output = (completed.stdout + completed.stderr).decode("utf-8", errors="replace")
    # promtool exits 1 when the text does not parse and 3 when it only has
    # lint findings.
    assert completed.returncode in (0, 3), output
    findings = {line.strip() for line in output.splitlines() if line.strip()}
    assert findings <= ACCEPTED_PROMTOOL_LINT, findings - ACCEPTED_PROMTOOL_LINT


# The HTTP endpoint --------------------------------------------------------------------


async def http_exchange(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send raw `request` to 127.0.0.1:`port`; return status, headers and body."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        if request:
            await stream.send_all(request)
        received = bytearray()
        while chunk := await stream.receive_some(65536):
            received += chunk
    head, _, body = bytes(received).partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("ascii").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, header_value = line.partition(":")
        headers[name.strip().lower()] = header_value.strip()
    return int(status_line.split()[1]), headers, body


async def get(port: int, path: str, method: str = "GET"):
    request = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
    return await http_exchange(port, request)


async def test_serve_metrics_over_http(runtime):
    runtime.submit("echo", "served")
    async with trio.open_nursery() as nursery:
        port = await nursery.start(
            serve_metrics, runtime, "127.0.0.1", 0, ThreadExecutor()
        )
        status, headers, body = await get(port, "/metrics")
        assert status == 200
        assert headers["content-type"] == CONTENT_TYPE
        assert int(headers["content-length"]) == len(body)
        text = body.decode("utf-8")
        assert value(text, "relaymesh_tasks_submitted_total", kind="single") == 1
        assert [name for name, _ in type_lines(text)] == [d.name for d in METRICS]

        status, _, body = await get(port, "/metrics?debug=1")
        assert status == 200

        status, _, body = await get(port, "/")
        assert status == 404
        assert b"/metrics" in body

        status, _, _ = await get(port, "/metrics/extra")
        assert status == 404
        nursery.cancel_scope.cancel()


async def test_serve_metrics_head_and_methods(runtime):
    async with trio.open_nursery() as nursery:
        port = await nursery.start(
            serve_metrics, runtime, "127.0.0.1", 0, InlineExecutor()
        )
        status, headers, body = await get(port, "/metrics", method="HEAD")
        assert status == 200
        assert body == b""
        assert int(headers["content-length"]) > 0

        status, headers, _ = await get(port, "/metrics", method="POST")
        assert status == 405
        assert headers["allow"] == "GET, HEAD"

        status, _, _ = await http_exchange(port, b"NONSENSE\r\n\r\n")
        assert status == 400

        status, _, _ = await http_exchange(
            port, b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 9000
        )
        assert status == 431
        nursery.cancel_scope.cancel()


async def test_serve_metrics_concurrent_scrapes(runtime):
    results = []

    async def scrape(port: int) -> None:
        results.append((await get(port, "/metrics"))[0])

    async with trio.open_nursery() as nursery:
        port = await nursery.start(
            serve_metrics, runtime, "127.0.0.1", 0, ThreadExecutor()
        )
        async with trio.open_nursery() as scrapers:
            for _ in range(8):
                scrapers.start_soon(scrape, port)
        nursery.cancel_scope.cancel()
    assert results == [200] * 8


async def test_serve_metrics_idle_client_times_out(runtime, autojump_clock):
    async with trio.open_nursery() as nursery:
        port = await nursery.start(
            serve_metrics, runtime, "127.0.0.1", 0, InlineExecutor()
        )
        status, _, body = await http_exchange(port, b"")
        assert status == 408
        assert b"timed out" in body
        nursery.cancel_scope.cancel()


async def test_serve_metrics_store_error_is_500(runtime, monkeypatch):
    def locked(*args, **kwargs):
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(runtime.store, "metrics_snapshot", locked)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(
            serve_metrics, runtime, "127.0.0.1", 0, InlineExecutor()
        )
        status, _, body = await get(port, "/metrics")
        assert status == 500
        assert b"cannot read the root: database is locked" in body
        status, _, _ = await get(port, "/elsewhere")
        assert status == 404
        nursery.cancel_scope.cancel()


async def test_serve_metrics_survives_render_bug(runtime, monkeypatch, caplog):
    def buggy(*args, **kwargs):
        raise KeyError("missing")

    monkeypatch.setattr(runtime.store, "metrics_snapshot", buggy)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(
            serve_metrics, runtime, "127.0.0.1", 0, InlineExecutor()
        )
        status, _, body = await get(port, "/metrics")
        assert status == 500
        assert b"see the server log" in body
        monkeypatch.undo()
        status, _, _ = await get(port, "/metrics")
        assert status == 200
        nursery.cancel_scope.cancel()
    assert "metrics.render_failed" in caplog.text


@pytest.mark.parametrize(
    ("host", "port"), [("127.0.0.1", -1), ("127.0.0.1", 65536), ("", 9464)]
)
async def test_serve_metrics_rejects_address(runtime, host, port):
    with pytest.raises(ValidationError):
        await serve_metrics(runtime, host, port, InlineExecutor())


async def test_serve_metrics_port_in_use(runtime):
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    try:
        with pytest.raises(ConflictError, match=f"port {port}"):
            await serve_metrics(runtime, "127.0.0.1", port, InlineExecutor())
    finally:
        for listener in listeners:
            await listener.aclose()


# Documentation ------------------------------------------------------------------------


def test_docs_page_is_up_to_date():
    committed = DOCS_PAGE.read_text(encoding="utf-8")
    assert committed == render_metrics_markdown(), (
        f"{DOCS_PAGE.relative_to(REPO_ROOT)} is stale; regenerate it with `{REGENERATE}`"
    )


def test_docs_list_every_metric():
    page = render_metrics_markdown()
    for definition in METRICS:
        assert f"| `{definition.name}`" in page, definition.name


def test_module_prints_docs_page():
    completed = subprocess.run(
        [sys.executable, "-W", "error", "-m", "relaymesh.observability.metrics"],
        capture_output=True,
        text=True,
        timeout=60,
        start_new_session=True,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout == render_metrics_markdown()
