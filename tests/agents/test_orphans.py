"""Stopping the scripts of a reclaimed attempt, found by their environment."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from relaymesh.agents.orphans import find_attempt_processes, stop_attempt_processes

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc"), reason="needs /proc")

SLEEPER = "import time; time.sleep(60)"


@pytest.fixture
def spawn():
    started: list[subprocess.Popen] = []

    def start(step_id: str, epoch: int) -> subprocess.Popen:
        environment = dict(os.environ)
        environment.update(RELAYMESH_STEP_ID=step_id, RELAYMESH_LEASE_EPOCH=str(epoch))
        process = subprocess.Popen(
            [sys.executable, "-c", SLEEPER], env=environment, start_new_session=True
        )
        started.append(process)
        return process

    yield start
    for process in started:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait()


def wait_for_environ(pid: int) -> None:
    # The child's environment is readable once it has exec'd.
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if b"RELAYMESH_LEASE_EPOCH" in open(f"/proc/{pid}/environ", "rb").read():
            return
        time.sleep(0.01)


def test_finds_only_the_named_attempt(spawn):
    target = spawn("stp_a", 3)
    other_epoch = spawn("stp_a", 4)
    other_step = spawn("stp_b", 3)
    for process in (target, other_epoch, other_step):
        wait_for_environ(process.pid)
    assert find_attempt_processes("stp_a", 3) == [target.pid]


def test_stop_kills_the_attempt_and_spares_others(spawn):
    target = spawn("stp_a", 3)
    survivor = spawn("stp_a", 4)
    for process in (target, survivor):
        wait_for_environ(process.pid)

    assert stop_attempt_processes("stp_a", 3, grace_s=0.5) == 1
    assert target.wait(timeout=5) == -signal.SIGTERM
    assert survivor.poll() is None


def test_stop_escalates_to_sigkill(spawn, tmp_path):
    environment = dict(os.environ, RELAYMESH_STEP_ID="stp_c", RELAYMESH_LEASE_EPOCH="1")
    stubborn = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN);"
            " time.sleep(60)",
        ],
        env=environment,
        start_new_session=True,
    )
    try:
        wait_for_environ(stubborn.pid)
        time.sleep(0.2)  # let it install the handler
        assert stop_attempt_processes("stp_c", 1, grace_s=0.3) == 1
        assert stubborn.wait(timeout=5) == -signal.SIGKILL
    finally:
        if stubborn.poll() is None:
            os.killpg(stubborn.pid, signal.SIGKILL)
            stubborn.wait()


def test_nothing_found_is_fine():
    assert stop_attempt_processes("stp_none", 1) == 0
