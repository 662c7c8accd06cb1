"""Tests of relaymesh/runtime.py: the facade that combines store and bus.

The runtime is driven the way a node drives it (claim a batch, run, commit
the outcomes), with the test standing in for the agents. The scheduler
fairness tests check `TierSelector` both alone, where the 8:3:1 cycle and
the anti-starvation guard can be pinned exactly, and through
`Runtime.claim_batch` on real inbox files, where they must survive the
listing, the renames and the claim transaction.
"""

from __future__ import annotations

import json
import random
import threading
from collections import Counter

import pytest

from relaymesh.errors import NotFoundError, ValidationError
from relaymesh.runtime import Runtime, TierSelector
from relaymesh.store import StepOutcome

ALL_TIERS = {"high", "normal", "low"}


# Opening a root -------------------------------------------------------------------


def test_open_creates_the_layout(runtime, root):
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
    ):
        assert (root / folder).is_dir(), folder
    assert (root / "relaymesh.db").is_file()


def test_open_with_must_exist_refuses_a_missing_root(tmp_path):
    with pytest.raises(NotFoundError, match="relaymesh init --root"):
        Runtime.open(tmp_path / "nowhere", must_exist=True)
    assert not (tmp_path / "nowhere").exists()


def test_reopening_a_root_keeps_its_data(open_runtime, clock_ms):
    first = open_runtime()
    submitted = first.submit("echo", "kept")
    first.close()
    second = open_runtime()
    assert second.store.task_view(submitted.task_id)["status"] == "PENDING"


def test_seeded_runtimes_generate_the_same_ids(tmp_path, clock_ms):

    ids = []
    for name in ("one", "two"):
        runtime = Runtime.open(tmp_path / name, clock_ms=clock_ms, rng=random.Random(7))
        try:
            ids.append(runtime.submit("echo", "x").task_id)
        finally:
            runtime.close()
    assert ids[0] == ids[1]


# One task, end to end ---------------------------------------------------------------


def test_single_task_runs_from_submit_to_done(driver):
    submitted = driver.runtime.submit("echo", "hello", priority="high")
    [assignment] = driver.claim(8)
    assert assignment.step.priority == "high"
    assert assignment.input_text == "hello"
    result = driver.succeed(assignment, output="HELLO")
    assert (result.step_status, result.task_status) == ("SUCCESS", "SUCCESS")

    view = driver.task(submitted.task_id)
    assert view["resultPayload"] == "HELLO"
    assert view["steps"][0]["attempts"][0]["outcome"] == "SUCCESS"
    stats = driver.runtime.stats()
    assert stats["taskStatus"] == {"SUCCESS": 1}
    assert stats["messageState"] == {"DONE": 1}
    assert (stats["inboxHigh"], stats["processingMetaFiles"]) == (0, 0)


def test_stats_count_files_and_rows(driver):
    driver.runtime.submit("echo", "a", priority="high")
    driver.runtime.submit("echo", "b", priority="low")
    driver.runtime.submit("fail", "c", priority="low")
    driver.runtime.submit("echo", "d")
    claimed = {a.step.agent_id + a.step.priority: a for a in driver.claim(2)}
    assert set(claimed) == {"echohigh", "echonormal"}
    driver.clock.advance(1_500)
    stats = driver.runtime.stats()
    assert (stats["inboxHigh"], stats["inboxNormal"], stats["inboxLow"]) == (0, 0, 2)
    assert stats["processingMetaFiles"] == 2
    assert stats["stepStatus"] == {"RUNNING": 2, "PENDING": 2}
    assert stats["queueLagMs"] == 1_500


def test_queue_lag_counts_ready_steps_and_due_retries(driver):
    assert driver.runtime.store.queue_lag_ms(driver.clock()) == 0
    task = driver.runtime.submit("fail", "x")
    driver.clock.advance(700)
    assert driver.runtime.store.queue_lag_ms(driver.clock()) == 700

    driver.fail(driver.claim_one())
    retry_at = driver.steps(task.task_id)["main"]["next_retry_at_ms"]
    driver.clock.set(retry_at - 1)
    # A retry waiting for its backoff is not lag.
    assert driver.runtime.store.queue_lag_ms(driver.clock()) == 0
    driver.clock.set(retry_at + 300)
    # A due retry counts from the moment it became due.
    assert driver.runtime.store.queue_lag_ms(driver.clock()) == 300


# Workflows ------------------------------------------------------------------------


def test_join_step_waits_for_all_dependencies_and_sees_their_outputs(driver):
    submitted = driver.submit_workflow(
        [
            {"id": "left", "agent": "echo", "input": "L"},
            {"id": "right", "agent": "echo", "input": "R", "priority": "low"},
            {
                "id": "join",
                "agent": "echo",
                "input": "J",
                "dependsOn": ["left", "right"],
            },
        ]
    )
    claimed = {a.step.step_name: a for a in driver.claim(5)}
    assert set(claimed) == {"left", "right"}

    first = driver.succeed(claimed["left"], output="left out")
    assert first.envelopes == []
    assert driver.task(submitted.task_id)["status"] == "RUNNING"
    second = driver.succeed(claimed["right"], output="right out")
    assert [envelope.step_id[-4:] for envelope in second.envelopes] == ["join"]

    join = driver.claim_one()
    assert join.step.dependency_outputs == {"left": "left out", "right": "right out"}
    assert join.step.parent_span_id == claimed["right"].step.span_id
    assert join.step.trace_id == claimed["left"].step.trace_id
    assert join.step.attempt == 1
    driver.succeed(join, output="joined")
    task = driver.task(submitted.task_id)
    assert task["status"] == "SUCCESS"
    assert json.loads(task["resultPayload"]) == {
        "join": "joined",
        "left": "left out",
        "right": "right out",
    }


def test_chain_runs_one_step_at_a_time_in_order(driver):
    chain = [{"id": "s0", "agent": "echo", "input": "0"}] + [
        {"id": f"s{i}", "agent": "echo", "input": str(i), "dependsOn": [f"s{i - 1}"]}
        for i in range(1, 40)
    ]
    submitted = driver.submit_workflow(chain)
    order = []
    while claimed := driver.claim(10):
        assert len(claimed) == 1
        order.append(claimed[0].step.step_name)
        driver.succeed(claimed[0])
    assert order == [f"s{i}" for i in range(40)]
    assert len(json.loads(driver.task(submitted.task_id)["resultPayload"])) == 40


def test_failed_dependency_holds_back_its_dependants_until_it_succeeds(driver):
    submitted = driver.submit_workflow(
        [
            {"id": "a", "agent": "echo", "input": "A"},
            {"id": "b", "agent": "echo", "input": "B", "dependsOn": ["a"]},
        ]
    )
    result = driver.fail(driver.claim_one(), error="transient")
    assert driver.claim(5) == []
    driver.clock.set(result.next_retry_at_ms)
    driver.runtime.dispatch_due_retries()
    retry = driver.claim_one()
    assert (retry.step.step_name, retry.step.attempt) == ("a", 2)
    driver.succeed(retry)
    assert driver.claim_one().step.step_name == "b"
    assert driver.task(submitted.task_id)["status"] == "RUNNING"


# Scheduler fairness ------------------------------------------------------------------


def test_selector_cycle_is_eight_high_three_normal_one_low():
    selector = TierSelector(100)
    picks = [selector.choose(ALL_TIERS) for _ in range(12)]
    assert picks == ["high"] * 8 + ["normal"] * 3 + ["low"]


def test_selector_serves_8_3_1_over_120_claims():
    selector = TierSelector(100)
    counts = Counter(selector.choose(ALL_TIERS) for _ in range(120))
    assert counts == {"high": 80, "normal": 30, "low": 10}
    assert selector.forced_low_claims == 0


def test_selector_skips_empty_tiers_and_returns_none_when_all_are_empty():
    selector = TierSelector(100)
    assert [selector.choose({"normal"}) for _ in range(3)] == ["normal"] * 3
    assert Counter(selector.choose({"high", "low"}) for _ in range(90)) == {
        "high": 80,
        "low": 10,
    }
    assert selector.choose(set()) is None


def test_guard_forces_a_low_claim_where_the_cycle_would_pick_high():
    selector = TierSelector(max_consecutive_high=5)
    assert [selector.choose({"high"}) for _ in range(5)] == ["high"] * 5
    assert selector.consecutive_high == 5
    # The cycle's cursor points at a high slot, yet low is taken.
    assert selector.CYCLE[selector.cursor % len(selector.CYCLE)] == "high"
    assert selector.choose({"high", "low"}) == "low"
    assert (selector.forced_low_claims, selector.consecutive_high) == (1, 0)
    assert selector.choose({"high", "low"}) == "high"


def test_guard_waits_while_the_low_tier_is_empty():
    selector = TierSelector(max_consecutive_high=2)
    assert [selector.choose({"high", "normal"}) for _ in range(3)] == ["high"] * 3
    assert selector.forced_low_claims == 0
    assert selector.choose({"high", "low"}) == "low"
    assert selector.forced_low_claims == 1


def test_claims_follow_8_3_1_with_all_tiers_queued(driver):
    queued = {
        tier: driver.queue_many(count, tier)
        for tier, count in (("high", 90), ("normal", 40), ("low", 20))
    }
    claimed = driver.claim(120)
    assert len(claimed) == 120
    tiers = [assignment.step.priority for assignment in claimed]
    assert Counter(tiers) == {"high": 80, "normal": 30, "low": 10}
    assert tiers[:12] == ["high"] * 8 + ["normal"] * 3 + ["low"]
    # Within a tier, oldest first: file names start with the submit time.
    for tier in queued:
        step_ids = [a.step.step_id for a in claimed if a.step.priority == tier]
        assert step_ids == queued[tier][: len(step_ids)]


def test_low_message_behind_500_high_is_claimed_within_12_claims(driver):
    driver.queue_many(500, "high")
    [low] = driver.queue_many(1, "low")
    claimed = []
    for _ in range(12):
        claimed.extend(driver.claim(1))
    step_ids = [assignment.step.step_id for assignment in claimed]
    assert low in step_ids
    assert step_ids.index(low) == 8  # right after the cycle's eight high slots
    assert driver.inbox("low") == []
    assert len(driver.inbox("high")) == 500 - 11


def test_forced_low_claims_are_counted_durably(make_driver):
    driver = make_driver()
    driver.selector = TierSelector(max_consecutive_high=5)
    for index in range(6):
        driver.runtime.submit("echo", f"high-{index}", priority="high")
    driver.runtime.submit("echo", "low", priority="low")
    # Five high claims in a row while low is still empty on this node.
    low_file = driver.root / "inbox" / "low" / driver.inbox("low")[0]
    parked = low_file.with_name("." + low_file.name)
    low_file.rename(parked)
    assert [a.step.priority for a in driver.claim(5)] == ["high"] * 5
    parked.rename(low_file)

    [forced] = driver.claim(1)
    assert forced.step.priority == "low"
    assert driver.runtime.stats()["lowStarvationCount"] == 1


# Sweep ---------------------------------------------------------------------------


def test_sweep_of_a_healthy_root_does_nothing(driver):
    driver.runtime.submit("echo", "queued")
    driver.runtime.submit("echo", "running")
    driver.runtime.submit("echo", "done")
    running, done = driver.claim(2)
    driver.succeed(done)
    driver.clock.advance(10 * 30_000)
    for path in (driver.root / "processing").rglob("*.meta.json"):
        driver.age_file(path, 10 * 30_000)
    before = driver.snapshot()
    assert driver.runtime.sweep().total() == 0
    assert driver.snapshot() == before


def test_sweep_sends_files_of_unknown_messages_to_dead(driver):
    folder = driver.root / "processing" / "node-x"
    folder.mkdir(parents=True)
    stray = folder / "0000000000001_msg_unknown.meta.json"
    stray.write_text("{}")
    driver.age_file(stray, 60_000)
    assert driver.runtime.sweep().files_settled == 1
    assert driver.files("dead") == [stray.name]


def test_sweep_moves_the_file_of_a_retried_message_to_retry(driver):
    driver.runtime.submit("echo", "x")
    assignment = driver.claim_one()
    driver.clock.advance(20_000)
    driver.runtime.reclaim_leases(driver.runtime.store.running_leases(), "expired")
    driver.age_file(assignment.step.file_path, 31_000)
    assert driver.runtime.sweep().files_settled == 1
    assert driver.files("retry") == [assignment.step.file_path.name]


def test_sweep_respects_a_longer_grace_from_settings(make_driver):
    driver = make_driver(settings={"sweepGraceMs": 120_000})
    driver.runtime.submit("echo", "x")
    [name] = driver.inbox()
    (driver.root / "inbox" / "normal" / name).unlink()
    driver.clock.advance(119_999)
    assert driver.runtime.sweep().messages_rewritten == 0
    driver.clock.advance(1)
    assert driver.runtime.sweep().messages_rewritten == 1


# Two nodes on one root ------------------------------------------------------------


def test_two_nodes_claiming_concurrently_each_get_distinct_steps(root, clock_ms):

    nodes = {
        name: Runtime.open(root, clock_ms=clock_ms, rng=random.Random(seed))
        for seed, name in enumerate(("node-a", "node-b"))
    }
    try:
        for index in range(60):
            nodes["node-a"].submit("echo", f"job-{index}")
        won: dict[str, list[str]] = {name: [] for name in nodes}
        errors: list[BaseException] = []
        start = threading.Barrier(2)

        def work(name: str) -> None:
            runtime = nodes[name]
            selector = TierSelector(100)
            try:
                start.wait(5)
                while claimed := runtime.claim_batch(selector, 4, name, f"{name}/w0"):
                    outcomes = []
                    for assignment in claimed:
                        step = assignment.step
                        won[name].append(step.step_id)
                        outcomes.append(
                            StepOutcome(
                                step.step_id,
                                step.lease_token,
                                step.lease_epoch,
                                "SUCCESS",
                                output=name,
                                file_path=step.file_path,
                            )
                        )
                    runtime.commit_outcomes(outcomes)
            except BaseException as error:  # pragma: no cover - reported below
                errors.append(error)

        threads = [threading.Thread(target=work, args=(name,)) for name in nodes]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert errors == []
        everything = won["node-a"] + won["node-b"]
        assert len(everything) == len(set(everything)) == 60
        store = nodes["node-b"].store
        assert store.status_counts()["taskStatus"] == {"SUCCESS": 60}
        assert store.lease_conflict_count() == 0
        assert set(store.successful_attempt_counts().values()) == {1}
    finally:
        for runtime in nodes.values():
            runtime.close()


def test_bad_settings_file_stops_open_before_anything_is_created(root):
    root.mkdir()
    (root / "relaymesh-settings.json").write_text('{"maxAttempts": 0}')
    with pytest.raises(ValidationError, match="maxAttempts"):
        Runtime.open(root)
    assert sorted(path.name for path in root.iterdir()) == ["relaymesh-settings.json"]


def test_workflow_steps_listed_in_dependency_order(driver):
    submitted = driver.submit_workflow(
        [
            {"id": "z_join", "agent": "echo", "input": "J", "dependsOn": ["b", "a"]},
            {"id": "b", "agent": "echo", "input": "B", "dependsOn": ["a"]},
            {"id": "a", "agent": "echo", "input": "A"},
        ]
    )
    view = driver.runtime.store.task_view(submitted.task_id)
    assert [step["name"] for step in view["steps"]] == ["a", "b", "z_join"]


def test_sweep_removes_empty_folders_of_gone_workers(driver):
    gone = driver.root / "processing" / "worker-gone"
    gone.mkdir(parents=True)
    busy = driver.root / "processing" / "worker-busy"
    busy.mkdir()
    (busy / "0000000000001_msg_x.meta.json").write_text("{}")
    grace_ms = driver.runtime.settings.sweep_grace_ms
    driver.age_file(gone, grace_ms * 2)
    driver.age_file(busy, grace_ms * 2)

    driver.runtime.sweep()
    assert not gone.exists()
    assert busy.exists()  # not empty: its file is settled first, the folder stays
