"""Regression tests for the dead-letter, idempotency, fencing and recovery
bugs of the earlier implementation of RelayMesh.

Each test builds the exact scenario in which the earlier implementation went
wrong, by hand, on a real store and bus, and checks what RelayMesh does
instead. The scenarios:

- replay of a workflow picked an arbitrary step instead of the dead one;
- a parallel branch finishing after a dead letter resurrected the task, and
  the unreachable steps behind the dead one stayed pending (and counted as
  queue lag) forever;
- after the idempotency record expired, re-submitting the same input failed
  on a unique constraint;
- a late success from an owner whose lease was reclaimed;
- workflow results with control characters were not valid JSON;
- a crash between the commit and the file write lost the message, and files
  left in processing/ stayed there;
- the failure commit checked the lease in application code only;
- a deduplicated workflow submit left orphan payload files;
- replay-batch could not replay workflows whose first step had succeeded.
"""

from __future__ import annotations

import json
import random

import pytest

from relaymesh.fsm import AttemptOutcome
from relaymesh.store import LeaseRef, StepOutcome

DAY_MS = 86_400_000
SWEEP_GRACE_MS = 30_000


def by_name(assignments) -> dict:
    return {assignment.step.step_name: assignment for assignment in assignments}


def dead_letter_queued_step(driver, attempts: int = 3) -> None:
    """Fail the one queued step until it is dead-lettered."""
    for attempt in range(1, attempts + 1):
        result = driver.fail(driver.claim_one())
        if attempt < attempts:
            driver.clock.set(result.next_retry_at_ms)
            assert driver.runtime.dispatch_due_retries() == 1
    assert result.step_status == "DEAD_LETTER"


def two_step_workflow_dead_at_second(driver, label: str = ""):
    submitted = driver.submit_workflow(
        [
            {"id": "first", "agent": "echo", "input": f"1{label}"},
            {
                "id": "second",
                "agent": "echo",
                "input": f"2{label}",
                "dependsOn": ["first"],
            },
        ],
        name=f"workflow{label}.json",
    )
    driver.succeed(driver.claim_one(), output=f"first of {submitted.task_id}")
    dead_letter_queued_step(driver)
    assert driver.task(submitted.task_id)["status"] == "DEAD_LETTER"
    return submitted


# Replay --------------------------------------------------------------------------


def test_replay_of_workflow_with_succeeded_first_step_replays_the_dead_step(driver):
    submitted = two_step_workflow_dead_at_second(driver)
    first_before = driver.steps(submitted.task_id)["first"]

    result = driver.runtime.replay(submitted.task_id)
    assert result.replayed
    assert result.steps == ["second"]
    [envelope] = result.envelopes
    assert envelope.step_id == driver.steps(submitted.task_id)["second"]["step_id"]

    steps = driver.steps(submitted.task_id)
    assert steps["first"] == first_before  # untouched, result kept
    assert (steps["second"]["status"], steps["second"]["attempt"]) == ("PENDING", 0)
    assert driver.task(submitted.task_id)["status"] == "RUNNING"

    assignment = driver.claim_one()
    assert assignment.step.step_name == "second"
    assert assignment.step.dependency_outputs == {
        "first": f"first of {submitted.task_id}"
    }
    assert driver.succeed(assignment).task_status == "SUCCESS"


def test_replay_batch_replays_every_workflow_whose_first_step_succeeded(driver):
    tasks = [
        two_step_workflow_dead_at_second(driver, f"-{index}") for index in range(3)
    ]
    assert len({task.task_id for task in tasks}) == 3

    results = driver.runtime.replay_batch("DEAD_LETTER", 100)
    assert sorted(result.task_id for result in results) == sorted(
        task.task_id for task in tasks
    )
    assert all(result.replayed for result in results)
    assert all(result.steps == ["second"] for result in results)
    assert len(driver.inbox()) == 3
    assert driver.drain() == 3
    for task in tasks:
        assert driver.task(task.task_id)["status"] == "SUCCESS"


# Dead letters in parallel branches -------------------------------------------------


def diamond(driver):
    """Submit a workflow and claim its two roots, `fast` and `slow`.

    `join` needs both roots, `tail` needs `join`, and `side` needs only `slow`.
    """
    submitted = driver.submit_workflow(
        [
            {"id": "fast", "agent": "fail", "input": "F"},
            {"id": "slow", "agent": "echo", "input": "S"},
            {
                "id": "join",
                "agent": "echo",
                "input": "J",
                "dependsOn": ["fast", "slow"],
            },
            {"id": "tail", "agent": "echo", "input": "T", "dependsOn": ["join"]},
            {"id": "side", "agent": "echo", "input": "X", "dependsOn": ["slow"]},
        ]
    )
    claimed = by_name(driver.claim(2))
    assert set(claimed) == {"fast", "slow"}
    return submitted, claimed


def test_dead_lettered_workflow_stays_dead_when_a_parallel_branch_finishes_later(
    make_driver,
):
    driver = make_driver(retry_policies=[{"id": "fail", "maxAttempts": 1}])
    submitted, claimed = diamond(driver)

    assert driver.fail(claimed["fast"]).task_status == "DEAD_LETTER"
    driver.clock.advance(5_000)
    late = driver.succeed(claimed["slow"])
    assert late.committed
    assert late.task_status == "DEAD_LETTER"
    assert late.envelopes == []  # "side" is not started in a dead task

    task = driver.task(submitted.task_id)
    assert task["status"] == "DEAD_LETTER"
    assert "step 'fast' dead-lettered after attempt 1" in task["lastError"]
    steps = driver.steps(submitted.task_id)
    assert steps["slow"]["status"] == "SUCCESS"
    assert (steps["join"]["status"], steps["join"]["blocked_by"]) == ("PENDING", "fast")
    assert (steps["tail"]["status"], steps["tail"]["blocked_by"]) == ("PENDING", "fast")
    assert steps["side"]["blocked_by"] is None
    assert driver.runtime.store.status_counts()["blockedSteps"] == 2
    blocked = {s["name"]: s["blockedBy"] for s in task["steps"]}
    assert blocked["join"] == blocked["tail"] == "fast"

    # Unreachable steps are not lag, however long they wait.
    driver.clock.advance(DAY_MS)
    assert driver.runtime.store.queue_lag_ms(driver.clock()) == 0
    assert driver.runtime.stats()["queueLagMs"] == 0
    assert driver.inbox() == []


def test_replay_after_parallel_branch_finished_runs_the_blocked_steps(make_driver):
    driver = make_driver(retry_policies=[{"id": "fail", "maxAttempts": 1}])
    submitted, claimed = diamond(driver)
    driver.fail(claimed["fast"])
    driver.succeed(claimed["slow"])

    result = driver.runtime.replay(submitted.task_id)
    assert result.steps == ["fast"]
    steps = driver.steps(submitted.task_id)
    assert all(row["blocked_by"] is None for row in steps.values())
    assert driver.task(submitted.task_id)["status"] == "RUNNING"

    # "side" was held back while the task was dead; it is queued now too.
    queued = by_name(driver.claim(5))
    assert set(queued) == {"fast", "side"}
    driver.succeed(queued["fast"])  # the agent works this time
    driver.succeed(queued["side"])
    join = driver.claim_one()
    assert join.step.step_name == "join"
    assert set(join.step.dependency_outputs) == {"fast", "slow"}
    driver.succeed(join)
    tail = driver.claim_one()
    assert tail.step.step_name == "tail"
    driver.succeed(tail)
    task = driver.task(submitted.task_id)
    assert task["status"] == "SUCCESS"
    assert set(json.loads(task["resultPayload"])) == {
        "fast",
        "slow",
        "join",
        "tail",
        "side",
    }


def test_parallel_branch_dead_lettering_later_keeps_the_task_dead(make_driver):
    driver = make_driver(retry_policies=[{"id": "fail", "maxAttempts": 1}])
    submitted = driver.submit_workflow(
        [
            {"id": "left", "agent": "fail", "input": "L"},
            {"id": "right", "agent": "fail", "input": "R"},
        ]
    )
    left, right = sorted(driver.claim(2), key=lambda a: a.step.step_name)
    driver.fail(left)
    driver.fail(right)
    assert driver.task(submitted.task_id)["status"] == "DEAD_LETTER"
    result = driver.runtime.replay(submitted.task_id)
    assert result.steps == ["left", "right"]
    assert len(driver.inbox()) == 2


def test_retry_of_parallel_branch_keeps_the_dead_letter_error_of_the_task(make_driver):
    driver = make_driver(retry_policies=[{"id": "fail", "maxAttempts": 1}])
    submitted, claimed = diamond(driver)
    driver.fail(claimed["fast"])
    dead = driver.task(submitted.task_id)
    driver.clock.advance(1_000)
    # "slow" (echo, three attempts) fails once and is scheduled for a retry.
    assert driver.fail(claimed["slow"], error="flaky").step_status == "RETRYING"
    task = driver.task(submitted.task_id)
    assert task["status"] == "DEAD_LETTER"
    assert task["lastError"] == dead["lastError"]
    assert task["finishedAtMs"] == dead["finishedAtMs"]


# Idempotency after the TTL ---------------------------------------------------------


@pytest.mark.parametrize("clean_up_first", [False, True])
def test_resubmit_after_idempotency_record_expired_creates_a_new_task(
    make_driver, clean_up_first
):
    driver = make_driver(settings={"idempotencyTtlDays": 1})
    first = driver.runtime.submit("echo", "same input")
    driver.succeed(driver.claim_one())
    driver.clock.advance(DAY_MS + 1)
    if clean_up_first:
        assert driver.runtime.cleanup_idempotency() == 1

    again = driver.runtime.submit("echo", "same input")
    assert again.deduplicated is False
    assert again.task_id != first.task_id
    assert driver.task(first.task_id)["status"] == "SUCCESS"
    assert (
        driver.scalar(
            "SELECT COUNT(*) FROM tasks WHERE idempotency_key = ?",
            driver.task(first.task_id)["idempotencyKey"],
        )
        == 2
    )
    record = driver.query("SELECT * FROM idempotency")
    assert [(row["result_ref"], row["status"]) for row in record] == [
        (again.task_id, "PENDING")
    ]
    # The new task runs, and the key then deduplicates to it.
    driver.succeed(driver.claim_one())
    third = driver.runtime.submit("echo", "same input")
    assert (third.task_id, third.deduplicated) == (again.task_id, True)


def test_resubmit_after_the_task_was_purged_creates_a_new_task(driver):
    first = driver.runtime.submit("echo", "same input")
    driver.succeed(driver.claim_one())
    driver.clock.advance(8 * DAY_MS)
    assert driver.runtime.purge(7, 7, 7)["tasksPurged"] == 1
    again = driver.runtime.submit("echo", "same input")
    assert again.deduplicated is False
    assert again.task_id != first.task_id


def test_resubmit_of_expired_workflow_creates_a_new_task(make_driver):
    driver = make_driver(settings={"idempotencyTtlDays": 1})
    steps = [{"id": "only", "agent": "echo", "input": "x"}]
    first = driver.submit_workflow(steps)
    driver.succeed(driver.claim_one())
    driver.clock.advance(DAY_MS + 1)
    again = driver.submit_workflow(steps)
    assert (again.deduplicated, again.task_id != first.task_id) == (False, True)


# Fencing ---------------------------------------------------------------------------


def test_late_success_after_lease_reclaim_is_refused_and_recorded(driver):
    submitted = driver.runtime.submit("echo", "x")
    assignment = driver.claim_one(owner="node-a")
    driver.clock.advance(20_000)
    leases = driver.runtime.store.running_leases()
    [reclaimed] = driver.runtime.reclaim_leases(leases, "lease expired")
    assert reclaimed.committed
    task_before = driver.query("SELECT * FROM tasks")
    step_before = driver.query("SELECT * FROM steps")

    driver.clock.advance(1_000)
    late = driver.succeed(assignment, output="too late")
    assert not late.committed
    assert late.file_destination == "dead"
    assert driver.query("SELECT * FROM tasks") == task_before
    assert driver.query("SELECT * FROM steps") == step_before
    [conflict] = driver.conflicts()
    assert conflict["event_type"] == "success_commit_conflict"
    assert conflict["expected_lease_token"] == assignment.step.lease_token
    assert conflict["expected_lease_epoch"] == 1
    assert conflict["actual_status"] == "RETRYING"
    assert conflict["actual_lease_token"] is None
    assert driver.files("dead") == [assignment.step.file_path.name]
    assert driver.task(submitted.task_id)["status"] == "RETRYING"


def test_late_success_after_the_step_was_claimed_again_is_refused(driver):
    driver.runtime.submit("echo", "x")
    old = driver.claim_one(owner="node-a")
    driver.clock.advance(20_000)
    driver.runtime.reclaim_leases(driver.runtime.store.running_leases(), "expired")
    driver.clock.advance(60_000)
    driver.runtime.dispatch_due_retries()
    new = driver.claim_one(owner="node-b")

    assert not driver.succeed(old, output="stale").committed
    row = driver.query("SELECT status, lease_owner, lease_epoch FROM steps")[0]
    assert row == {"status": "RUNNING", "lease_owner": "node-b", "lease_epoch": 2}
    result = driver.succeed(new, output="fresh")
    assert result.committed
    assert driver.scalar("SELECT result_payload FROM tasks") == "fresh"
    assert driver.runtime.store.successful_attempt_counts() == {new.step.step_id: 1}


@pytest.mark.parametrize(
    ("token_of", "epoch_delta"),
    [("own", 1), ("own", -1), ("forged", 0)],
    ids=["newer-epoch", "older-epoch", "wrong-token"],
)
def test_failure_commit_with_stale_lease_is_refused_by_the_fenced_update(
    driver, token_of, epoch_delta
):
    submitted = driver.runtime.submit("echo", "x")
    assignment = driver.claim_one()
    step = assignment.step
    token = step.lease_token if token_of == "own" else "lease_forged"
    stale = StepOutcome(
        step_id=step.step_id,
        lease_token=token,
        lease_epoch=step.lease_epoch + epoch_delta,
        outcome=AttemptOutcome.FAILED,
        error="boom",
        worker_id="node-a/w0",
    )

    store = driver.runtime.store
    [result] = store.complete_steps(
        [stale], driver.clock(), driver.runtime.policies.policy_for, random.Random(5)
    )

    assert not result.committed
    [conflict] = driver.conflicts()
    assert conflict["event_type"] == "failure_commit_conflict"
    assert conflict["expected_lease_epoch"] == step.lease_epoch + epoch_delta
    assert conflict["actual_lease_epoch"] == step.lease_epoch
    row = driver.query("SELECT * FROM steps")[0]
    assert (row["status"], row["lease_token"], row["attempt"]) == (
        "RUNNING",
        step.lease_token,
        1,
    )
    assert row["last_error"] is None
    assert driver.task(submitted.task_id)["status"] == "RUNNING"
    # The real owner can still commit.
    assert driver.fail(assignment).committed


def test_dead_letter_commit_with_stale_epoch_is_refused(make_driver):
    driver = make_driver(settings={"maxAttempts": 1})
    submitted = driver.runtime.submit("echo", "x")
    assignment = driver.claim_one()
    stale = driver.outcome(
        assignment,
        AttemptOutcome.FAILED,
        error="boom",
        epoch=assignment.step.lease_epoch + 1,
    )
    [result] = driver.runtime.commit_outcomes([stale])
    assert not result.committed
    assert driver.task(submitted.task_id)["status"] == "RUNNING"
    assert [c["event_type"] for c in driver.conflicts()] == ["failure_commit_conflict"]


def test_failure_update_carries_token_and_epoch_in_its_where_clause(driver):
    driver.runtime.submit("echo", "x")
    assignment = driver.claim_one()
    statements: list[str] = []
    connection = driver.runtime.store._connection
    connection.set_trace_callback(statements.append)
    try:
        driver.fail(assignment)
    finally:
        connection.set_trace_callback(None)
    [update] = [
        sql
        for sql in statements
        if sql.startswith("UPDATE steps SET status = 'RETRYING'")
    ]
    where = update.split("WHERE", 1)[1]
    assert "status = 'RUNNING'" in where
    assert f"lease_token = '{assignment.step.lease_token}'" in where
    assert f"lease_epoch = {assignment.step.lease_epoch}" in where


# Workflow results ------------------------------------------------------------------


def test_workflow_result_with_tabs_and_control_characters_is_valid_json(driver):
    outputs = {
        "tabs": "col1\tcol2\tcol3\n",
        "controls": "nul\x00 bell\x07 esc\x1b unit\x1f",
        "quotes": 'say "hi" \\ back\\slash\r\n',
        "unicode": "naïve – ✓ \u2028 line separator",
    }
    submitted = driver.submit_workflow(
        [{"id": name, "agent": "echo", "input": name} for name in outputs]
    )
    for assignment in driver.claim(len(outputs)):
        driver.succeed(assignment, output=outputs[assignment.step.step_name])

    task = driver.task(submitted.task_id)
    assert task["status"] == "SUCCESS"
    assert json.loads(task["resultPayload"]) == outputs
    again = driver.submit_workflow(
        [{"id": name, "agent": "echo", "input": name} for name in outputs]
    )
    assert json.loads(again.result) == outputs
    record = driver.query("SELECT result_hash FROM idempotency")[0]
    assert len(record["result_hash"]) == 64


# Crashes between the store and the bus ---------------------------------------------


def test_message_lost_between_commit_and_file_write_is_rewritten_by_sweep(driver):
    submitted = driver.runtime.submit("echo", "x")
    [name] = driver.inbox()
    (driver.root / "inbox" / "normal" / name).unlink()
    (driver.root / "meta" / name.split("_", 1)[1]).unlink()

    driver.clock.advance(SWEEP_GRACE_MS - 1)
    assert driver.runtime.sweep().messages_rewritten == 0  # may still be in flight
    driver.clock.advance(1)
    report = driver.runtime.sweep()
    assert report.messages_rewritten == 1
    assert driver.inbox() == [name]
    assert driver.files("meta") == [name.split("_", 1)[1]]
    assert driver.runtime.sweep().messages_rewritten == 0  # once is enough

    driver.succeed(driver.claim_one())
    assert driver.task(submitted.task_id)["status"] == "SUCCESS"


def test_message_lost_behind_a_backlog_is_rewritten_by_sweep(driver, monkeypatch):
    # The batch is shrunk to three so that a backlog of three queued messages
    # stands for the real batch of a thousand.
    store = driver.runtime.store
    original = store.queued_messages_older_than
    monkeypatch.setattr(
        store,
        "queued_messages_older_than",
        lambda cutoff_ms, limit, after=(-1, ""): original(
            cutoff_ms, min(limit, 3), after
        ),
    )
    for index in range(3):
        driver.runtime.submit("echo", f"backlog {index}")
        driver.clock.advance(1)
    lost = driver.runtime.submit("echo", "lost")
    (driver.root / "inbox" / "normal" / lost.envelopes[0].file_name).unlink()

    driver.clock.advance(SWEEP_GRACE_MS)
    assert driver.runtime.sweep().messages_rewritten == 1


def test_step_inserted_without_the_bus_is_recovered_by_sweep(driver):
    # The insert commits but the process dies before it writes any file.
    bus = driver.runtime.bus
    original = bus.enqueue_many
    bus.enqueue_many = lambda envelopes: None
    try:
        submitted = driver.submit_workflow(
            [
                {"id": "a", "agent": "echo", "input": "A"},
                {"id": "b", "agent": "echo", "input": "B", "dependsOn": ["a"]},
            ]
        )
    finally:
        bus.enqueue_many = original
    assert driver.inbox() == []
    assert driver.claim(1) == []

    driver.clock.advance(SWEEP_GRACE_MS)
    assert driver.runtime.sweep().messages_rewritten == 1
    assert driver.drain() == 2
    assert driver.task(submitted.task_id)["status"] == "SUCCESS"


def test_file_left_in_processing_with_queued_message_returns_to_inbox(driver):
    # A crash between the rename into processing/ and the claim transaction.
    submitted = driver.runtime.submit("echo", "x")
    [name] = driver.inbox()
    claimed = driver.runtime.bus.claim("normal", name, "node-dead")
    assert driver.scalar("SELECT state FROM messages") == "QUEUED"

    driver.clock.advance(SWEEP_GRACE_MS + 1)
    assert driver.runtime.sweep().files_returned_to_inbox == 0  # file looks fresh
    driver.age_file(claimed.path, SWEEP_GRACE_MS + 1)
    report = driver.runtime.sweep()
    assert report.files_returned_to_inbox == 1
    assert report.messages_rewritten == 0
    assert driver.inbox() == [name]
    assert driver.files("processing") == []

    driver.succeed(driver.claim_one())
    assert driver.task(submitted.task_id)["status"] == "SUCCESS"


def test_own_processing_files_are_recovered_at_once_on_restart(driver):
    driver.runtime.submit("echo", "x")
    [name] = driver.inbox()
    driver.runtime.bus.claim("normal", name, "node-a")
    assert driver.runtime.sweep().files_returned_to_inbox == 0
    assert driver.runtime.sweep(own_owner="node-a").files_returned_to_inbox == 1
    assert driver.inbox() == [name]


def test_file_left_in_processing_after_commit_is_settled_by_sweep(driver):
    # A crash between the success commit and the move to done/.
    submitted = driver.runtime.submit("echo", "x")
    assignment = driver.claim_one()
    outcome = driver.outcome(assignment)
    driver.runtime.store.complete_steps(
        [outcome], driver.clock(), driver.runtime.policies.policy_for, random.Random(1)
    )
    assert driver.task(submitted.task_id)["status"] == "SUCCESS"
    assert assignment.step.file_path.exists()

    driver.age_file(assignment.step.file_path, SWEEP_GRACE_MS + 1)
    report = driver.runtime.sweep()
    assert report.files_settled == 1
    assert driver.files("processing") == []
    assert driver.files("done") == [f"2023-11-14/{assignment.step.file_path.name}"]


def test_file_of_a_running_step_is_left_for_the_lease_to_decide(driver):
    driver.runtime.submit("echo", "x")
    assignment = driver.claim_one()
    driver.age_file(assignment.step.file_path, 10 * SWEEP_GRACE_MS)
    driver.clock.advance(10 * SWEEP_GRACE_MS)
    assert driver.runtime.sweep().total() == 0
    assert assignment.step.file_path.exists()


def test_release_lost_between_commit_and_files_is_repaired_by_sweep(driver):
    driver.runtime.submit("echo", "x")
    assignment = driver.claim_one()
    step = assignment.step
    # The release commits; the process dies before discarding and enqueueing.
    lease = LeaseRef(step.step_id, step.lease_token, step.lease_epoch)
    driver.runtime.store.release_leases([lease], driver.clock())
    driver.clock.advance(SWEEP_GRACE_MS)
    driver.age_file(step.file_path, SWEEP_GRACE_MS + 1)
    report = driver.runtime.sweep()
    assert (report.messages_rewritten, report.files_settled) == (1, 1)
    # The released message was replaced by a new one, so its file goes away.
    assert driver.files("processing") == []
    assert driver.files("dead") == []
    assert len(driver.inbox()) == 1
    again = driver.claim_one(owner="node-b")
    assert again.step.attempt == 1
    assert driver.succeed(again).committed


# Orphan payload files --------------------------------------------------------------


def test_deduplicated_workflow_submit_leaves_no_orphan_payload_files(driver):
    steps = [
        {"id": "a", "agent": "echo", "input": "A"},
        {"id": "b", "agent": "echo", "input": "B", "dependsOn": ["a"]},
    ]
    first = driver.submit_workflow(steps)
    payloads = driver.files("payload")
    assert len(payloads) == 2

    again = driver.submit_workflow(steps, name="again.json")
    assert again.deduplicated
    assert driver.files("payload") == payloads

    # The race: the key is inserted by another process after the lookup.
    store = driver.runtime.store
    original = store.find_idempotent
    store.find_idempotent = lambda *args: None
    try:
        raced = driver.submit_workflow(steps, name="raced.json")
    finally:
        store.find_idempotent = original
    assert (raced.task_id, raced.deduplicated) == (first.task_id, True)
    assert driver.files("payload") == payloads
    assert driver.row_counts()["steps"] == 2


def test_failed_insert_removes_the_payload_files_it_wrote(driver, monkeypatch):
    def broken_insert(*args):
        raise RuntimeError("disk full")

    monkeypatch.setattr(driver.runtime.store, "insert_task", broken_insert)
    with pytest.raises(RuntimeError, match="disk full"):
        driver.submit_workflow([{"id": "a", "agent": "echo", "input": "A"}])
    with pytest.raises(RuntimeError, match="disk full"):
        driver.runtime.submit("echo", "x")
    assert driver.files("payload") == []


# Audit rows and conflict rows name the real actors --------------------------------


def test_deduplicated_submit_audit_row_carries_the_task_trace_id(driver):
    first = driver.runtime.submit("echo", "once", idempotency_key="k-trace")
    driver.runtime.submit("echo", "once", idempotency_key="k-trace")
    rows = [json.loads(line) for line in driver.runtime.audit.tail(2)]
    submitted, deduplicated = rows
    assert deduplicated["result"] == "deduplicated"
    assert deduplicated["trace_id"] == submitted["trace_id"]
    assert deduplicated["trace_id"] == first.trace_id
    assert deduplicated["step_id"] is None


def test_attempt_and_conflict_rows_name_the_worker_not_the_node(driver):
    driver.runtime.submit("echo", "who ran it")
    # A node claims for its scheduler: the worker is not known yet.
    (assignment,) = driver.claim(1, "node-a", "node-a")
    outcome = driver.outcome(assignment)
    worker_outcome = StepOutcome(**{**outcome.__dict__, "worker_id": "node-a/w3"})
    driver.runtime.commit_outcomes([worker_outcome])
    (attempt,) = driver.attempts(assignment.step.step_id)
    assert attempt["worker_id"] == "node-a/w3"
    assert attempt["node_id"] == "node-a"

    # A late second commit of the same attempt is a conflict by that worker.
    driver.runtime.commit_outcomes([worker_outcome])
    (conflict,) = driver.conflicts()
    assert conflict["worker_id"] == "node-a/w3"
