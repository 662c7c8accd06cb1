"""Tests of submission through the store: ids, rows, bus files, idempotency
keys, priority tiers and the payload limit.

Submission is the one write a user makes directly, so its failures must be
clean: a payload over the limit, an unknown agent or a bad priority is
rejected before a row or a file is written. The limit is checked on UTF-8
bytes, not characters, and at its exact boundary.
"""

from __future__ import annotations

import json

import pytest

from relaymesh.errors import UsageError, ValidationError

SMALL_LIMIT = {"payloadMaxBytes": 1000}


def assert_nothing_written(driver) -> None:
    assert driver.row_counts() == dict.fromkeys(driver.row_counts(), 0)
    for folder in ("payload", "meta", "inbox/high", "inbox/normal", "inbox/low"):
        assert driver.files(folder) == [], folder


# Ids, rows and files --------------------------------------------------------


def test_submit_creates_task_step_message_and_idempotency_rows(driver):
    result = driver.runtime.submit("echo", "hello")
    assert result.task_id.startswith("tsk_")
    assert result.deduplicated is False
    assert result.status == "PENDING"
    assert result.result is None

    task = driver.query("SELECT * FROM tasks")[0]
    assert task["task_id"] == result.task_id
    assert task["status"] == "PENDING"
    assert task["kind"] == "single"
    assert len(task["trace_id"]) == 32
    assert task["created_at_ms"] == driver.clock()

    step = driver.query("SELECT * FROM steps")[0]
    assert step["step_id"].startswith("stp_")
    assert step["task_id"] == result.task_id
    assert (step["status"], step["attempt"], step["lease_epoch"]) == ("PENDING", 0, 0)
    assert step["priority"] == "NORMAL"
    assert step["is_enqueued"] == 1

    message = driver.query("SELECT * FROM messages")[0]
    assert message["msg_id"].startswith("msg_")
    assert message["state"] == "QUEUED"
    assert message["step_id"] == step["step_id"]
    assert message["from_agent"] == "system"

    record = driver.query("SELECT * FROM idempotency")[0]
    assert record["result_ref"] == result.task_id
    assert record["status"] == "PENDING"
    assert record["processed_at_ms"] is None


def test_submit_writes_payload_meta_and_inbox_files(driver):
    result = driver.runtime.submit("echo", "hello wörld")
    envelope = result.envelopes[0]
    step_id = envelope.step_id

    payload = driver.root / "payload" / f"{step_id}.payload"
    assert payload.read_text(encoding="utf-8") == "hello wörld"
    assert driver.files("meta") == [f"{envelope.msg_id}.meta.json"]
    inbox_name = f"{driver.clock():013d}_{envelope.msg_id}.meta.json"
    assert driver.inbox("normal") == [inbox_name]
    assert driver.inbox("high") == driver.inbox("low") == []

    document = json.loads((driver.root / "inbox" / "normal" / inbox_name).read_text())
    assert document == {
        "msgId": envelope.msg_id,
        "taskId": result.task_id,
        "stepId": step_id,
        "fromAgent": "system",
        "toAgent": "echo",
        "priority": "NORMAL",
        "createdAtMs": driver.clock(),
        "payloadPath": str(payload),
        "attempt": 1,
    }
    meta = driver.root / "meta" / f"{envelope.msg_id}.meta.json"
    assert (
        meta.read_text() == (driver.root / "inbox" / "normal" / inbox_name).read_text()
    )


def test_ids_are_distinct_across_submits(driver):
    results = [driver.runtime.submit("echo", f"input {index}") for index in range(20)]
    assert len({result.task_id for result in results}) == 20
    assert driver.scalar("SELECT COUNT(DISTINCT step_id) FROM steps") == 20
    assert driver.scalar("SELECT COUNT(DISTINCT msg_id) FROM messages") == 20


@pytest.mark.parametrize(
    ("given", "tier", "stored"),
    [
        ("high", "high", "HIGH"),
        ("HIGH", "high", "HIGH"),
        ("normal", "normal", "NORMAL"),
        ("Low", "low", "LOW"),
    ],
)
def test_priority_selects_the_inbox_tier(driver, given, tier, stored):
    driver.runtime.submit("echo", "x", priority=given)
    assert len(driver.inbox(tier)) == 1
    assert driver.scalar("SELECT priority FROM steps") == stored
    assert driver.scalar("SELECT priority FROM messages") == stored
    name = driver.inbox(tier)[0]
    document = json.loads((driver.root / "inbox" / tier / name).read_text())
    assert document["priority"] == stored


def test_unknown_priority_is_rejected_before_anything_is_written(driver):
    with pytest.raises(
        ValidationError, match="'urgent' is not one of high, normal, low"
    ):
        driver.runtime.submit("echo", "x", priority="urgent")
    assert_nothing_written(driver)


def test_unknown_agent_is_rejected_before_anything_is_written(driver):
    with pytest.raises(UsageError) as caught:
        driver.runtime.submit("no-such-agent", "x")
    assert "no-such-agent" in str(caught.value)
    assert_nothing_written(driver)


@pytest.mark.parametrize("key", ["", "k" * 257])
def test_bad_idempotency_key_is_rejected_before_anything_is_written(driver, key):
    with pytest.raises(ValidationError, match=f"1-256 characters \\(got {len(key)}\\)"):
        driver.runtime.submit("echo", "x", idempotency_key=key)
    assert_nothing_written(driver)


def test_longest_idempotency_key_is_accepted(driver):
    result = driver.runtime.submit("echo", "x", idempotency_key="k" * 256)
    assert result.deduplicated is False


# Idempotency ------------------------------------------------------------------


def test_same_input_returns_the_same_task_deduplicated(driver):
    first = driver.runtime.submit("echo", "same")
    second = driver.runtime.submit("echo", "same")
    assert second.task_id == first.task_id
    assert second.deduplicated is True
    assert second.status == "PENDING"
    assert second.envelopes == ()
    assert driver.row_counts()["tasks"] == 1
    assert len(driver.inbox()) == 1
    assert len(driver.files("payload")) == 1


def test_priority_is_not_part_of_the_default_key(driver):
    first = driver.runtime.submit("echo", "same", priority="low")
    second = driver.runtime.submit("echo", "same", priority="high")
    assert second.task_id == first.task_id
    assert second.deduplicated is True
    assert driver.inbox("high") == []


def test_same_input_for_another_agent_is_a_new_task(driver):
    first = driver.runtime.submit("echo", "same")
    second = driver.runtime.submit("fail", "same")
    assert second.task_id != first.task_id
    assert second.deduplicated is False


def test_explicit_key_deduplicates_different_inputs(driver):
    first = driver.runtime.submit("echo", "one", idempotency_key="order-42")
    second = driver.runtime.submit("echo", "two", idempotency_key="order-42")
    assert second.task_id == first.task_id
    assert second.deduplicated is True
    assert driver.row_counts()["tasks"] == 1


def test_deduplicated_submit_of_a_finished_task_returns_its_result(driver):
    first = driver.runtime.submit("echo", "hello")
    driver.succeed(driver.claim_one(), output="the result")
    again = driver.runtime.submit("echo", "hello")
    assert again.task_id == first.task_id
    assert again.deduplicated is True
    assert again.status == "SUCCESS"
    assert again.result == "the result"

    record = driver.query("SELECT * FROM idempotency")[0]
    assert record["status"] == "SUCCESS"
    assert record["processed_at_ms"] == driver.clock()
    assert record["result_hash_algo"] == "sha256"
    assert len(record["result_hash"]) == 64


def test_deduplicated_submit_of_a_running_task_returns_its_state(driver):
    first = driver.runtime.submit("echo", "hello")
    driver.claim_one()
    again = driver.runtime.submit("echo", "hello")
    assert (again.task_id, again.deduplicated, again.status) == (
        first.task_id,
        True,
        "RUNNING",
    )
    assert again.result is None


def test_key_lives_until_the_ttl_after_the_task_finished(make_driver, clock_ms):
    driver = make_driver(settings={"idempotencyTtlDays": 2})
    first = driver.runtime.submit("echo", "hello")
    driver.succeed(driver.claim_one())
    clock_ms.advance(2 * 86_400_000)  # exactly the TTL: still live
    assert driver.runtime.submit("echo", "hello").task_id == first.task_id
    clock_ms.advance(1)
    again = driver.runtime.submit("echo", "hello")
    assert again.deduplicated is False
    assert again.task_id != first.task_id


def test_unfinished_task_key_never_expires(make_driver, clock_ms):
    driver = make_driver(settings={"idempotencyTtlDays": 1})
    first = driver.runtime.submit("echo", "hello")
    clock_ms.advance(30 * 86_400_000)
    assert driver.runtime.cleanup_idempotency() == 0
    assert driver.runtime.submit("echo", "hello").task_id == first.task_id


def test_cleanup_removes_only_expired_finished_records(make_driver, clock_ms):
    driver = make_driver(settings={"idempotencyTtlDays": 1})
    driver.runtime.submit("echo", "done early")
    driver.succeed(driver.claim_one())
    clock_ms.advance(86_400_000)
    driver.runtime.submit("echo", "done late")
    driver.succeed(driver.claim_one())
    driver.runtime.submit("echo", "still queued")
    clock_ms.advance(1)
    assert driver.runtime.cleanup_idempotency() == 1
    assert driver.row_counts()["idempotency"] == 2


def test_race_lost_inside_the_transaction_deduplicates_and_removes_payload(driver):
    # Another process inserted the key between the lookup and the insert:
    # the insert's own check wins, and the payload written for the loser goes.
    first = driver.runtime.submit("echo", "raced")
    store = driver.runtime.store
    original = store.find_idempotent
    store.find_idempotent = lambda *args: None
    try:
        again = driver.runtime.submit("echo", "raced")
    finally:
        store.find_idempotent = original
    assert again.task_id == first.task_id
    assert again.deduplicated is True
    assert len(driver.files("payload")) == 1
    assert len(driver.inbox()) == 1


# Payload limit ------------------------------------------------------------------


@pytest.mark.parametrize("size", [999, 1000])
def test_payload_at_or_below_the_limit_is_accepted(make_driver, size):
    driver = make_driver(settings=SMALL_LIMIT)
    result = driver.runtime.submit("echo", "x" * size)
    assert result.deduplicated is False
    payload = driver.root / "payload" / f"{result.envelopes[0].step_id}.payload"
    assert payload.stat().st_size == size


def test_payload_one_byte_over_the_limit_is_rejected_before_any_write(make_driver):
    driver = make_driver(settings=SMALL_LIMIT)
    with pytest.raises(ValidationError) as caught:
        driver.runtime.submit("echo", "x" * 1001)
    message = str(caught.value)
    assert "1001 bytes" in message
    assert "1000" in message
    assert "payloadMaxBytes" in message
    assert_nothing_written(driver)


def test_payload_limit_counts_utf8_bytes_not_characters(make_driver):
    driver = make_driver(settings=SMALL_LIMIT)
    driver.runtime.submit("echo", "é" * 500)  # 1000 bytes
    with pytest.raises(ValidationError, match="1001 bytes"):
        driver.runtime.submit("echo", "é" * 500 + "!")
    assert driver.row_counts()["tasks"] == 1


def test_default_limit_is_ten_mebibytes(driver):
    limit = 10 * 1024 * 1024
    assert driver.runtime.settings.payload_max_bytes == limit
    with pytest.raises(ValidationError, match=f"{limit + 1} bytes"):
        driver.runtime.submit("echo", "x" * (limit + 1))
    assert_nothing_written(driver)
    result = driver.runtime.submit("echo", "x" * limit)
    payload = driver.root / "payload" / f"{result.envelopes[0].step_id}.payload"
    assert payload.stat().st_size == limit


def test_workflow_step_over_the_limit_is_rejected_before_any_write(make_driver):
    driver = make_driver(settings=SMALL_LIMIT)
    steps = [
        {"id": "small", "agent": "echo", "input": "x" * 1000},
        {"id": "big", "agent": "echo", "input": "x" * 1001, "dependsOn": ["small"]},
    ]
    with pytest.raises(ValidationError) as caught:
        driver.submit_workflow(steps)
    assert "'big'" in str(caught.value)
    assert "1001 bytes" in str(caught.value)
    assert_nothing_written(driver)


# Workflow submission -------------------------------------------------------------


def test_workflow_submit_stores_steps_dependencies_and_queues_roots(driver):
    result = driver.submit_workflow(
        [
            {"id": "a", "agent": "echo", "input": "A", "priority": "high"},
            {"id": "b", "agent": "echo", "input": "B"},
            {"id": "c", "agent": "echo", "input": "C", "dependsOn": ["a", "b"]},
        ]
    )
    assert result.deduplicated is False
    steps = driver.steps(result.task_id)
    assert {name: row["is_enqueued"] for name, row in steps.items()} == {
        "a": 1,
        "b": 1,
        "c": 0,
    }
    suffix = result.task_id[4:]
    assert steps["a"]["step_id"] == f"stp_{suffix}_a"
    dependencies = driver.query(
        "SELECT step_id, depends_on_step_id FROM step_dependencies ORDER BY 2"
    )
    assert dependencies == [
        {"step_id": f"stp_{suffix}_c", "depends_on_step_id": f"stp_{suffix}_a"},
        {"step_id": f"stp_{suffix}_c", "depends_on_step_id": f"stp_{suffix}_b"},
    ]
    assert len(driver.inbox("high")) == 1
    assert len(driver.inbox("normal")) == 1
    assert len(driver.files("payload")) == 3
    assert driver.row_counts()["messages"] == 2
    assert driver.task(result.task_id)["kind"] == "workflow"


def test_workflow_resubmit_is_deduplicated_without_new_files(driver):
    steps = [{"id": "a", "agent": "echo", "input": "A"}]
    first = driver.submit_workflow(steps)
    before = driver.snapshot()
    again = driver.submit_workflow(steps, name="copy.json")
    assert (again.task_id, again.deduplicated) == (first.task_id, True)
    after = driver.snapshot()
    assert after["rows"] == before["rows"]
    assert after["files"] == before["files"]


def test_missing_workflow_file_is_a_validation_error(driver, tmp_path):
    with pytest.raises(ValidationError, match="does not exist"):
        driver.runtime.submit_workflow(tmp_path / "nope.json")
