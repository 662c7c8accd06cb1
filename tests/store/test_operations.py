"""Tests of retries, replays and purges (relaymesh/store/_operations.py and
the failure path of relaymesh/store/_leases.py), driven through the runtime.

Retry delays are checked against `backoff_bounds_ms`, the one place the
formula lives, rather than against numbers copied into the test, so the
test follows the policy (defaults, settings, or a per-agent override) that
the step is supposed to run under. Dry runs of replay and purge are checked
the strict way: every row and every file is compared before and after, and
the report must equal the one the real run gives afterwards.
"""

from __future__ import annotations

import pytest

from relaymesh.agents.builtin import FAIL_AGENT_ERROR
from relaymesh.agents.policies import RetryPolicy, backoff_bounds_ms

DAY_MS = 86_400_000


def fail_until_dead(driver, expected_attempts: int) -> list[tuple[int, int, int]]:
    """Fail the queued step until it is dead-lettered.

    Returns (attempt, failed_at_ms, next_retry_at_ms) for each retry scheduled.
    """
    retries = []
    for attempt in range(1, expected_attempts + 1):
        assignment = driver.claim_one()
        assert assignment.step.attempt == attempt
        failed_at = driver.clock()
        result = driver.fail(assignment)
        if attempt == expected_attempts:
            assert result.step_status == "DEAD_LETTER"
            assert result.next_retry_at_ms is None
            return retries
        assert result.step_status == "RETRYING"
        retries.append((attempt, failed_at, result.next_retry_at_ms))
        # Not due one millisecond early, due exactly on time.
        driver.clock.set(result.next_retry_at_ms - 1)
        assert driver.runtime.dispatch_due_retries() == 0
        driver.clock.advance(1)
        assert driver.runtime.dispatch_due_retries() == 1
    raise AssertionError("step was not dead-lettered")


# Retry and backoff ----------------------------------------------------------


def test_fail_agent_retries_with_backoff_then_dead_letters(make_driver):
    driver = make_driver(settings={"maxAttempts": 3})
    submitted = driver.runtime.submit("fail", "doomed")
    policy = driver.runtime.policies.policy_for("fail")
    assert policy.max_attempts == 3

    retries = fail_until_dead(driver, 3)
    assert [attempt for attempt, _, _ in retries] == [1, 2]
    for attempt, failed_at, retry_at in retries:
        low, high = backoff_bounds_ms(policy, attempt)
        assert low <= retry_at - failed_at <= high, (attempt, retry_at - failed_at)

    step = driver.query("SELECT * FROM steps")[0]
    assert (step["status"], step["attempt"], step["lease_epoch"]) == (
        "DEAD_LETTER",
        3,
        3,
    )
    assert step["next_retry_at_ms"] is None
    attempts = driver.attempts(step["step_id"])
    assert [row["attempt"] for row in attempts] == [1, 2, 3]
    assert {row["outcome"] for row in attempts} == {"FAILED"}
    assert {row["error"] for row in attempts} == {FAIL_AGENT_ERROR}

    task = driver.task(submitted.task_id)
    assert task["status"] == "DEAD_LETTER"
    assert task["lastError"] == (
        f"step 'main' dead-lettered after attempt 3: {FAIL_AGENT_ERROR}"
    )
    assert driver.scalar("SELECT status FROM idempotency") == "DEAD_LETTER"
    assert driver.inbox() == []
    assert len(driver.files("retry")) == 2
    assert len(driver.files("dead")) == 1
    states = [
        row["state"]
        for row in driver.query("SELECT state FROM messages ORDER BY created_at_ms")
    ]
    assert states == ["FAILED", "FAILED", "DEAD"]


def test_task_is_retrying_between_attempts(driver):
    submitted = driver.runtime.submit("fail", "x")
    result = driver.fail(driver.claim_one())
    task = driver.task(submitted.task_id)
    assert task["status"] == "RETRYING"
    assert task["lastError"] == FAIL_AGENT_ERROR
    assert task["steps"][0]["nextRetryAtMs"] == result.next_retry_at_ms
    assert driver.scalar("SELECT status FROM idempotency") == "RETRYING"
    driver.clock.set(result.next_retry_at_ms)
    driver.runtime.dispatch_due_retries()
    assert driver.task(submitted.task_id)["status"] == "PENDING"
    [name] = driver.inbox()
    assert name.startswith(f"{result.next_retry_at_ms:013d}_")


@pytest.mark.parametrize("max_attempts", [1, 2, 5])
def test_max_attempts_from_settings(make_driver, max_attempts):
    driver = make_driver(settings={"maxAttempts": max_attempts})
    driver.runtime.submit("fail", "x")
    fail_until_dead(driver, max_attempts)
    assert driver.scalar("SELECT attempt FROM steps") == max_attempts


def test_backoff_follows_settings_base_and_cap(make_driver):
    settings = {
        "maxAttempts": 6,
        "baseBackoffMs": 100,
        "maxBackoffMs": 500,
        "retryJitterMaxMs": 10,
    }
    driver = make_driver(settings=settings)
    driver.runtime.submit("fail", "x")
    retries = fail_until_dead(driver, 6)
    policy = RetryPolicy(6, 100, 500, 10)
    delays = [retry_at - failed_at for _, failed_at, retry_at in retries]
    for (attempt, _, _), delay in zip(retries, delays, strict=True):
        low, high = backoff_bounds_ms(policy, attempt)
        assert low <= delay <= high
    # 100, 200, 400, then capped at 500 (plus jitter).
    assert [delay // 100 for delay in delays] == [1, 2, 4, 5, 5]


def test_per_agent_retry_policy_overrides_the_settings(make_driver):
    driver = make_driver(
        settings={"maxAttempts": 4},
        retry_policies=[
            {"id": "fail", "maxAttempts": 2, "baseBackoffMs": 500, "maxBackoffMs": 700}
        ],
    )
    fail_policy = driver.runtime.policies.policy_for("fail")
    assert (fail_policy.max_attempts, fail_policy.base_backoff_ms) == (2, 500)

    driver.runtime.submit("fail", "x")
    retries = fail_until_dead(driver, 2)
    [(attempt, failed_at, retry_at)] = retries
    low, high = backoff_bounds_ms(fail_policy, attempt)
    assert 500 <= low <= retry_at - failed_at <= high

    # An agent without an override keeps the settings' four attempts.
    driver.runtime.submit("echo", "y")
    fail_until_dead(driver, 4)


def test_dispatch_respects_the_batch_limit(make_driver):
    driver = make_driver(settings={"retryDispatchLimit": 2})
    for index in range(3):
        driver.runtime.submit("fail", f"x{index}")
    for assignment in driver.claim(3):
        driver.fail(assignment)
    driver.clock.advance(10_000)
    assert driver.runtime.dispatch_due_retries() == 2
    assert driver.runtime.dispatch_due_retries() == 1
    assert driver.runtime.dispatch_due_retries() == 0
    assert len(driver.inbox()) == 3


def test_retry_counters_are_durable(driver):
    driver.runtime.submit("fail", "x")
    fail_until_dead(driver, 3)
    stats = driver.runtime.stats()
    assert stats["retriesScheduledTotal"] == 2
    assert stats["deadLetteredTotal"] == 1


# Replay ---------------------------------------------------------------------


def test_replay_of_a_dead_single_step_task_runs_it_again(driver):
    submitted = driver.runtime.submit("fail", "x")
    fail_until_dead(driver, 3)
    result = driver.runtime.replay(submitted.task_id)
    assert (result.replayed, result.message, result.steps) == (
        True,
        "replayed",
        ["main"],
    )

    step = driver.query("SELECT * FROM steps")[0]
    assert (step["status"], step["attempt"], step["lease_epoch"]) == ("PENDING", 0, 3)
    task = driver.task(submitted.task_id)
    assert (task["status"], task["lastError"], task["resultPayload"]) == (
        "PENDING",
        None,
        None,
    )
    assert driver.scalar("SELECT status FROM idempotency") == "PENDING"
    assert driver.scalar("SELECT processed_at_ms FROM idempotency") is None
    assert len(driver.inbox()) == 1

    assignment = driver.claim_one()
    assert (assignment.step.attempt, assignment.step.lease_epoch) == (1, 4)
    assert driver.succeed(assignment).task_status == "SUCCESS"


def test_replay_rejects_tasks_that_are_not_dead(driver):
    submitted = driver.runtime.submit("echo", "x")
    result = driver.runtime.replay(submitted.task_id)
    assert not result.replayed
    assert "PENDING" in result.message
    assert "DEAD_LETTER" in result.message
    assert driver.runtime.replay("tsk_missing").message == "task not found"


def test_replay_dry_run_changes_nothing_and_reports_the_real_result(driver):
    submitted = driver.submit_workflow(
        [
            {"id": "a", "agent": "echo", "input": "A"},
            {"id": "b", "agent": "fail", "input": "B", "dependsOn": ["a"]},
            {"id": "c", "agent": "echo", "input": "C", "dependsOn": ["b"]},
        ]
    )
    driver.succeed(driver.claim_one())
    fail_until_dead(driver, 3)
    before = driver.snapshot()

    preview = driver.runtime.replay(submitted.task_id, dry_run=True)
    assert driver.snapshot() == before
    assert preview.envelopes == []

    real = driver.runtime.replay(submitted.task_id)
    assert (preview.replayed, preview.message, preview.steps) == (
        real.replayed,
        real.message,
        real.steps,
    )
    assert real.steps == ["b"]
    assert len(real.envelopes) == 1


def test_replay_batch_dry_run_changes_nothing(driver):
    for index in range(3):
        driver.runtime.submit("fail", f"x{index}")
    for _ in range(3):
        for assignment in driver.claim(3):
            driver.fail(assignment)
        driver.clock.advance(60_000)
        driver.runtime.dispatch_due_retries()
    before = driver.snapshot()
    preview = driver.runtime.replay_batch("DEAD_LETTER", 10, dry_run=True)
    assert driver.snapshot() == before
    real = driver.runtime.replay_batch("DEAD_LETTER", 10)
    assert [(r.task_id, r.replayed, r.steps) for r in preview] == [
        (r.task_id, r.replayed, r.steps) for r in real
    ]
    assert len(real) == 3 and all(r.replayed for r in real)


# Purge ----------------------------------------------------------------------


def finished_tasks(driver) -> dict[str, str]:
    """One succeeded and one dead-lettered task, finished now."""
    done = driver.runtime.submit("echo", "ok")
    driver.succeed(driver.claim_one())
    dead = driver.runtime.submit("fail", "bad")
    fail_until_dead(driver, 3)
    return {"done": done.task_id, "dead": dead.task_id}


def purge_report(driver, dry_run: bool, days: float = 7) -> dict:
    report = driver.runtime.purge(days, days, days, dry_run=dry_run)
    return {key: value for key, value in report.items() if key != "dryRun"}


def test_purge_keeps_tasks_inside_their_retention(driver):
    finished_tasks(driver)
    live = driver.runtime.submit("echo", "queued")
    before = driver.snapshot()
    driver.clock.advance(6 * DAY_MS)
    report = purge_report(driver, dry_run=False)
    assert report["tasksPurged"] == 0
    assert driver.snapshot() == before
    assert driver.task(live.task_id)["status"] == "PENDING"


def test_purge_deletes_old_finished_tasks_with_their_rows_and_files(driver):
    tasks = finished_tasks(driver)
    live = driver.runtime.submit("echo", "queued")
    driver.clock.advance(8 * DAY_MS)
    for folder in ("done", "dead", "retry"):
        for path in (driver.root / folder).rglob("*.meta.json"):
            driver.age_file(path, 8 * DAY_MS)

    report = purge_report(driver, dry_run=False)
    expected = {
        "tasksPurged": 2,
        "payloadFilesPurged": 2,
        "metaFilesPurged": 4,
        "idempotencyRowsPurged": 2,  # the records of the two purged tasks
        "doneFilesPurged": 1,
        "deadFilesPurged": 1,
        "retryFilesPurged": 2,
    }
    assert {key: report[key] for key in expected} == expected
    for task_id in tasks.values():
        assert driver.runtime.store.task_view(task_id) is None
        assert (
            driver.scalar("SELECT COUNT(*) FROM steps WHERE task_id = ?", task_id) == 0
        )
        assert (
            driver.scalar("SELECT COUNT(*) FROM messages WHERE task_id = ?", task_id)
            == 0
        )
        assert (
            driver.scalar(
                "SELECT COUNT(*) FROM step_attempts WHERE task_id = ?", task_id
            )
            == 0
        )
    assert driver.row_counts()["idempotency"] == 1
    assert len(driver.files("payload")) == 1
    [live_message] = driver.query("SELECT msg_id FROM messages")
    assert driver.files("meta") == [f"{live_message['msg_id']}.meta.json"]
    assert driver.task(live.task_id)["status"] == "PENDING"
    assert driver.files("done") == driver.files("dead") == driver.files("retry") == []


def test_purge_dry_run_changes_nothing_and_reports_the_real_numbers(driver):
    finished_tasks(driver)
    driver.runtime.submit("echo", "queued")
    driver.clock.advance(8 * DAY_MS)
    for path in (driver.root / "retry").glob("*.meta.json"):
        driver.age_file(path, 8 * DAY_MS)
    before = driver.snapshot()

    preview = purge_report(driver, dry_run=True)
    assert driver.snapshot() == before
    real = purge_report(driver, dry_run=False)
    assert preview == real
    assert real["tasksPurged"] == 2
    assert real["retryFilesPurged"] == 2


def test_purge_uses_separate_retention_for_done_and_dead(driver):
    tasks = finished_tasks(driver)
    driver.clock.advance(3 * DAY_MS)
    report = driver.runtime.purge(1, 30, 7)
    assert report["tasksPurged"] == 1
    assert driver.runtime.store.task_view(tasks["done"]) is None
    assert driver.task(tasks["dead"])["status"] == "DEAD_LETTER"


def test_purge_expires_idempotency_records_of_kept_tasks(driver):
    submitted = driver.runtime.submit("echo", "ok")
    driver.succeed(driver.claim_one())
    driver.clock.advance(2 * DAY_MS)
    report = driver.runtime.purge(30, 30, 1)
    assert (report["tasksPurged"], report["idempotencyRowsPurged"]) == (0, 1)
    assert driver.task(submitted.task_id)["status"] == "SUCCESS"
    again = driver.runtime.submit("echo", "ok")
    assert again.deduplicated is False
