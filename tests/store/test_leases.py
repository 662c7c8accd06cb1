"""Tests of the fenced writes in relaymesh/store/_leases.py: claims, renewals,
completions, releases and reclaims.

Every write that changes a step's owner or outcome carries the lease token
and epoch it was given, in the WHERE clause of one UPDATE. The tests build
the situations where that fence matters: a reclaim between claim and
commit, a stale epoch, a second message for the same step. In each, the
write is rejected and recorded in `lease_conflicts`, and the step and the
task stay as they were. They also pin the claim-side rejections that are not races:
a stale copy of a file is dropped quietly, a malformed one goes to dead/.
"""

from __future__ import annotations

import json

from relaymesh.fsm import AttemptOutcome
from relaymesh.store import LeaseRef


def lease_of(assignment) -> LeaseRef:
    step = assignment.step
    return LeaseRef(step.step_id, step.lease_token, step.lease_epoch)


def reclaim_all(driver, reason: str = "lease expired"):
    leases = driver.runtime.store.running_leases()
    return driver.runtime.reclaim_leases(leases, reason)


# Claims -----------------------------------------------------------------------


def test_claim_leases_the_step_and_moves_the_file_to_processing(driver):
    submitted = driver.runtime.submit("echo", "payload text")
    [assignment] = driver.claim(4, owner="node-a", worker="node-a/w3")
    step = assignment.step

    assert assignment.input_text == "payload text"
    assert step.task_id == submitted.task_id
    assert step.agent_id == "echo"
    assert step.attempt == 1
    assert step.lease_epoch == 1
    assert step.lease_owner == "node-a"
    assert step.lease_token.startswith("lease_")
    assert len(step.span_id) == 16
    assert step.file_path.parent == driver.root / "processing" / "node-a"
    assert step.file_path.exists()
    assert driver.inbox() == []

    row = driver.query("SELECT * FROM steps")[0]
    assert (
        row["status"],
        row["lease_owner"],
        row["lease_token"],
        row["lease_epoch"],
    ) == (
        "RUNNING",
        "node-a",
        step.lease_token,
        1,
    )
    assert row["heartbeat_at_ms"] == driver.clock()
    assert driver.scalar("SELECT state FROM messages") == "PROCESSING"
    assert driver.task(submitted.task_id)["status"] == "RUNNING"
    [attempt] = driver.attempts(step.step_id)
    assert (attempt["node_id"], attempt["worker_id"], attempt["outcome"]) == (
        "node-a",
        "node-a/w3",
        None,
    )


def test_every_claim_gets_a_new_token_and_a_higher_epoch(driver):
    driver.runtime.submit("echo", "x")
    first = driver.claim_one()
    driver.fail(first)
    driver.clock.advance(60_000)
    assert driver.runtime.dispatch_due_retries() == 1
    second = driver.claim_one()
    assert second.step.lease_epoch == first.step.lease_epoch + 1
    assert second.step.lease_token != first.step.lease_token
    assert second.step.attempt == 2


def test_claim_of_empty_inbox_returns_nothing(driver):
    assert driver.claim(5) == []


def test_stale_file_is_dropped_without_a_conflict_row(driver):
    # A second copy of an envelope whose message is already being processed
    # (the sweeper wrote it again, say) is not a race and is not recorded.
    driver.runtime.submit("echo", "x")
    first = driver.claim_one()
    copy = driver.root / "inbox" / "normal" / first.step.file_path.name
    copy.write_bytes(first.step.file_path.read_bytes())

    assert driver.claim(1, owner="node-b", worker="node-b/w0") == []
    assert driver.conflicts() == []
    assert driver.inbox() == []
    assert driver.files("processing/node-b") == []
    assert driver.files("dead") == []
    assert first.step.file_path.exists()
    row = driver.query("SELECT status, lease_owner, lease_epoch FROM steps")[0]
    assert row == {"status": "RUNNING", "lease_owner": "node-a", "lease_epoch": 1}


def test_malformed_envelope_file_goes_to_dead(driver):
    name = "0000000000001_msg_garbage.meta.json"
    (driver.root / "inbox" / "normal" / name).write_text("{not json")
    assert driver.claim(1) == []
    assert driver.files("dead") == [name]
    assert driver.inbox() == []
    assert driver.files("processing") == []
    assert driver.conflicts() == []


def test_envelope_missing_fields_goes_to_dead(driver):
    name = "0000000000002_msg_partial.meta.json"
    (driver.root / "inbox" / "low" / name).write_text(
        json.dumps({"msgId": "msg_partial"})
    )
    assert driver.claim(1) == []
    assert driver.files("dead") == [name]


def test_envelope_of_unknown_message_goes_to_dead(driver):
    driver.runtime.submit("echo", "x")
    [name] = driver.inbox()
    path = driver.root / "inbox" / "normal" / name
    document = json.loads(path.read_text())
    forged = dict(document, msgId="msg_forged")
    forged_name = f"{document['createdAtMs']:013d}_msg_forged.meta.json"
    (driver.root / "inbox" / "high" / forged_name).write_text(json.dumps(forged))

    claimed = driver.claim(2)
    assert [assignment.step.msg_id for assignment in claimed] == [document["msgId"]]
    assert driver.files("dead") == [forged_name]
    assert driver.scalar("SELECT COUNT(*) FROM messages") == 1


def test_second_message_for_a_running_step_is_a_recorded_claim_conflict(driver):
    driver.runtime.submit("echo", "x")
    store = driver.runtime.store
    # A duplicate message row for the same step, as a replica import could make.
    with store._tx() as db:
        step = db.execute("SELECT * FROM steps").fetchone()
        duplicate = store._new_message(db, step, driver.clock() + 1, 1)
    driver.runtime.bus.enqueue(duplicate)

    claimed = driver.claim(2)
    assert len(claimed) == 1
    [conflict] = driver.conflicts()
    assert conflict["event_type"] == "claim_conflict"
    assert conflict["worker_id"] == "node-a"
    assert conflict["expected_status"] == "PENDING"
    assert conflict["actual_status"] == "RUNNING"
    assert conflict["actual_lease_epoch"] == 1
    assert driver.files("dead") == [duplicate.file_name]
    assert (
        driver.scalar("SELECT state FROM messages WHERE msg_id = ?", duplicate.msg_id)
        == "DEAD"
    )


def test_unreadable_payload_is_reported_on_the_assignment(driver):
    submitted = driver.runtime.submit("echo", "x")
    (driver.root / "payload" / f"{submitted.envelopes[0].step_id}.payload").unlink()
    [assignment] = driver.claim(1)
    assert assignment.input_text is None
    assert "cannot read the step's payload" in assignment.input_error


# Renewals ---------------------------------------------------------------------


def test_renew_moves_the_heartbeat_of_a_held_lease(driver):
    driver.runtime.submit("echo", "x")
    assignment = driver.claim_one()
    driver.clock.advance(2_000)
    assert driver.runtime.renew_leases([lease_of(assignment)]) == []
    assert driver.scalar("SELECT heartbeat_at_ms FROM steps") == driver.clock()
    assert driver.conflicts() == []


def test_renew_after_a_reclaim_returns_the_lost_lease(driver):
    driver.runtime.submit("echo", "x")
    other = driver.runtime.submit("echo", "y")
    first, second = driver.claim(2)
    driver.clock.advance(20_000)
    # Only the first lease expires: the second was renewed in time.
    driver.runtime.renew_leases([lease_of(second)])
    expired = [
        lease
        for lease in driver.runtime.store.running_leases()
        if lease.step_id == first.step.step_id
    ]
    [reclaimed] = driver.runtime.reclaim_leases(expired, "lease expired")
    assert reclaimed.committed

    lost = driver.runtime.store.renew_leases(
        [lease_of(first), lease_of(second)], driver.clock()
    )
    assert lost == [lease_of(first)]
    [conflict] = driver.conflicts()
    assert conflict["event_type"] == "heartbeat_conflict"
    assert conflict["step_id"] == first.step.step_id
    assert conflict["expected_lease_token"] == first.step.lease_token
    assert conflict["actual_status"] == "RETRYING"
    assert driver.task(other.task_id)["status"] == "RUNNING"


# Completions ------------------------------------------------------------------


def test_success_commit_settles_step_message_attempt_and_file(driver):
    submitted = driver.runtime.submit("echo", "x")
    assignment = driver.claim_one()
    result = driver.succeed(assignment, output="done!")
    assert result.committed
    assert (result.step_status, result.task_status, result.file_destination) == (
        "SUCCESS",
        "SUCCESS",
        "done",
    )
    row = driver.query("SELECT * FROM steps")[0]
    assert row["result_payload"] == "done!"
    assert row["lease_owner"] is None
    assert row["lease_token"] is None
    assert row["lease_epoch"] == 1
    assert driver.scalar("SELECT state FROM messages") == "DONE"
    [attempt] = driver.attempts(assignment.step.step_id)
    assert (attempt["outcome"], attempt["ended_at_ms"]) == ("SUCCESS", driver.clock())
    assert driver.files("done") == [f"2023-11-14/{assignment.step.file_path.name}"]
    assert driver.files("processing") == []
    task = driver.task(submitted.task_id)
    assert (task["status"], task["resultPayload"], task["finishedAtMs"]) == (
        "SUCCESS",
        "done!",
        driver.clock(),
    )


def test_outcomes_of_many_steps_commit_in_one_call(driver):
    for index in range(5):
        driver.runtime.submit("echo", f"x{index}")
    claimed = driver.claim(5)
    outcomes = [driver.outcome(assignment) for assignment in claimed]
    outcomes[2] = driver.outcome(claimed[2], AttemptOutcome.FAILED, error="bad input")
    results = driver.runtime.commit_outcomes(outcomes)
    assert [result.step_status for result in results] == [
        "SUCCESS",
        "SUCCESS",
        "RETRYING",
        "SUCCESS",
        "SUCCESS",
    ]
    assert len(driver.files("done")) == 4
    assert len(driver.files("retry")) == 1


def test_success_with_a_wrong_token_is_refused_and_recorded(driver):
    submitted = driver.runtime.submit("echo", "x")
    assignment = driver.claim_one()
    forged = driver.outcome(assignment, token="lease_forged")
    [result] = driver.runtime.commit_outcomes([forged])
    assert not result.committed
    assert result.file_destination == "dead"
    [conflict] = driver.conflicts()
    assert conflict["event_type"] == "success_commit_conflict"
    assert conflict["expected_lease_token"] == "lease_forged"
    assert conflict["actual_lease_token"] == assignment.step.lease_token
    assert conflict["worker_id"] == "node-a/w0"
    row = driver.query("SELECT status, result_payload FROM steps")[0]
    assert row == {"status": "RUNNING", "result_payload": None}
    assert driver.task(submitted.task_id)["status"] == "RUNNING"


def test_timeout_outcome_counts_against_the_retry_budget(driver):
    driver.runtime.submit("echo", "x")
    assignment = driver.claim_one()
    outcome = driver.outcome(assignment, AttemptOutcome.TIMEOUT, error="timed out")
    [result] = driver.runtime.commit_outcomes([outcome])
    assert result.step_status == "RETRYING"
    assert driver.attempts(assignment.step.step_id)[0]["outcome"] == "TIMEOUT"


def test_cancelled_outcome_writes_only_the_attempt(driver):
    submitted = driver.runtime.submit("echo", "x")
    assignment = driver.claim_one()
    outcome = driver.outcome(assignment, AttemptOutcome.CANCELLED, error="stopped")
    [result] = driver.runtime.commit_outcomes([outcome])
    assert not result.committed
    assert driver.attempts(assignment.step.step_id)[0]["outcome"] == "CANCELLED"
    assert driver.scalar("SELECT status FROM steps") == "RUNNING"
    assert driver.task(submitted.task_id)["status"] == "RUNNING"


# Releases ---------------------------------------------------------------------


def test_release_returns_the_step_to_the_queue_with_its_attempt_restored(driver):
    submitted = driver.runtime.submit("echo", "x")
    assignment = driver.claim_one()
    step = assignment.step
    driver.clock.advance(500)

    [result] = driver.runtime.release_leases(
        [lease_of(assignment)], {step.step_id: step.file_path}
    )
    assert result.committed
    assert result.step_status == "PENDING"

    row = driver.query("SELECT * FROM steps")[0]
    assert (row["status"], row["attempt"], row["lease_owner"], row["lease_token"]) == (
        "PENDING",
        0,
        None,
        None,
    )
    assert row["lease_epoch"] == 1
    [attempt] = driver.attempts(step.step_id)
    assert attempt["outcome"] == "RELEASED"
    assert (
        driver.scalar("SELECT state FROM messages WHERE msg_id = ?", step.msg_id)
        == "RELEASED"
    )
    assert not step.file_path.exists()
    [new_file] = driver.inbox()
    assert step.msg_id not in new_file
    assert driver.task(submitted.task_id)["status"] == "PENDING"

    again = driver.claim_one(owner="node-b")
    assert again.step.attempt == 1
    assert again.step.lease_epoch == 2


def test_release_of_a_lost_lease_is_refused(driver):
    driver.runtime.submit("echo", "x")
    assignment = driver.claim_one()
    driver.clock.advance(20_000)
    reclaim_all(driver)
    [result] = driver.runtime.release_leases([lease_of(assignment)], {})
    assert not result.committed
    assert [row["event_type"] for row in driver.conflicts()] == ["release_conflict"]
    assert driver.scalar("SELECT status FROM steps") == "RETRYING"


# Reclaims ---------------------------------------------------------------------


def test_reclaim_schedules_a_retry_and_records_the_abandoned_attempt(driver):
    submitted = driver.runtime.submit("echo", "x")
    assignment = driver.claim_one()
    driver.clock.advance(20_000)
    [result] = reclaim_all(driver)
    assert (result.committed, result.step_status) == (True, "RETRYING")
    row = driver.query("SELECT * FROM steps")[0]
    assert row["lease_owner"] is None
    assert "lease expired (owner node-a, lease epoch 1)" in row["last_error"]
    assert row["next_retry_at_ms"] > driver.clock()
    [attempt] = driver.attempts(assignment.step.step_id)
    assert attempt["outcome"] == "ABANDONED"
    task = driver.task(submitted.task_id)
    assert task["status"] == "RETRYING"


def test_reclaim_of_the_last_attempt_dead_letters(make_driver):
    driver = make_driver(settings={"maxAttempts": 1})
    submitted = driver.runtime.submit("echo", "x")
    driver.claim_one()
    driver.clock.advance(20_000)
    [result] = reclaim_all(driver)
    assert result.step_status == "DEAD_LETTER"
    task = driver.task(submitted.task_id)
    assert task["status"] == "DEAD_LETTER"
    assert "step 'main' dead-lettered after attempt 1" in task["lastError"]


def test_reclaim_of_a_renewed_lease_is_refused(driver):
    # The reclaimer read the heartbeat before the owner renewed it, so the
    # fence on the heartbeat it read stops the reclaim.
    driver.runtime.submit("echo", "x")
    assignment = driver.claim_one()
    observed = driver.runtime.store.running_leases()
    driver.clock.advance(1_000)
    driver.runtime.renew_leases([lease_of(assignment)])
    [result] = driver.runtime.reclaim_leases(observed, "lease expired")
    assert not result.committed
    [conflict] = driver.conflicts()
    assert conflict["event_type"] == "reclaim_conflict"
    assert driver.scalar("SELECT status FROM steps") == "RUNNING"
    assert driver.succeed(assignment).committed


def test_running_leases_can_exclude_an_owner(driver):
    driver.runtime.submit("echo", "a")
    driver.runtime.submit("echo", "b")
    driver.claim_one(owner="node-a")
    driver.claim_one(owner="node-b")
    owners = {
        lease.lease_owner for lease in driver.runtime.store.running_leases("node-a")
    }
    assert owners == {"node-b"}
