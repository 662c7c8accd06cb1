"""Lease expiry as the reclaimer judges it: by local monotonic time first,
by wall time only after watching the lease stand still."""

from __future__ import annotations

import pytest

from relaymesh.actors.reclaimer import ExpiryJudge
from relaymesh.store import RunningLease

TIMEOUT_MS = 15_000
HEARTBEAT_MS = 2_000


def lease(heartbeat_at_ms: int, epoch: int = 1) -> RunningLease:
    return RunningLease("stp_1", "tsk_1", "node-a", epoch, heartbeat_at_ms)


@pytest.mark.parametrize(
    "observations, expected",
    [
        # (monotonic seconds, wall ms, heartbeat value) per look; expired at the end?
        ([(0, 100_000, 100_000), (14.9, 114_900, 100_000)], False),
        ([(0, 100_000, 100_000), (15.0, 115_000, 100_000)], True),
        # Heartbeat moved: the clock starts again.
        (
            [(0, 100_000, 99_000), (10, 110_000, 109_000), (23.9, 123_900, 109_000)],
            False,
        ),
        # Wall clock stalled or slow on the judge's host: monotonic time decides.
        ([(0, 100_000, 100_000), (15.0, 100_500, 100_000)], True),
        # First sight of a lease already stale by the wall clock: wait two beats.
        ([(0, 200_000, 100_000)], False),
        ([(0, 200_000, 100_000), (3.9, 203_900, 100_000)], False),
        ([(0, 200_000, 100_000), (4.0, 204_000, 100_000)], True),
        # Wall clock jumped forward on the judge's host: a renewing owner is safe.
        ([(0, 100_000, 99_000), (2, 900_000, 101_000), (4, 902_000, 103_000)], False),
    ],
)
def test_expiry_judgement(observations, expected):
    judge = ExpiryJudge(TIMEOUT_MS, HEARTBEAT_MS)
    result = []
    for monotonic_s, wall_ms, heartbeat in observations:
        result = judge.expired([lease(heartbeat)], monotonic_s, wall_ms)
    assert bool(result) is expected


def test_new_epoch_restarts_the_watch():
    judge = ExpiryJudge(TIMEOUT_MS, HEARTBEAT_MS)
    judge.expired([lease(1000, epoch=1)], 0, 2000)
    assert judge.expired([lease(1000, epoch=2)], 20, 22_000) == []


def test_finished_steps_are_forgotten():
    judge = ExpiryJudge(TIMEOUT_MS, HEARTBEAT_MS)
    judge.expired([lease(1000)], 0, 2000)
    judge.expired([], 1, 3000)
    assert judge.observations == {}
