"""Finding and stopping the scripts of an attempt whose node is gone.

A script agent runs in its own session so that its whole process group can
be killed. The price is that a node killed with SIGKILL leaves its scripts
running: nothing delivers the death of the node to them. When the step is
reclaimed and runs again elsewhere, two copies would then run at once.

So a reclaim looks for the processes of the reclaimed attempt and stops
them. Every script gets RELAYMESH_STEP_ID and RELAYMESH_LEASE_EPOCH in its
environment, which together name one attempt, and the reclaimer matches
them in `/proc/<pid>/environ`. Matching on the environment rather than on a
recorded pid means a pid reused by an unrelated process is never signalled.

This works where the reclaimer shares the host with the dead node, which is
always the case for a SQLite root. On systems without `/proc` (macOS, say)
nothing is found, and the old copy runs until its own timeout.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

__all__ = ["LEASE_EPOCH_VARIABLE", "find_attempt_processes", "stop_attempt_processes"]

STEP_VARIABLE = "RELAYMESH_STEP_ID"
LEASE_EPOCH_VARIABLE = "RELAYMESH_LEASE_EPOCH"
PROC = Path("/proc")


def find_attempt_processes(
    step_id: str, lease_epoch: int, proc: Path = PROC
) -> list[int]:
    """Pids whose environment names this attempt (step id and lease epoch)."""
    wanted = {
        f"{STEP_VARIABLE}={step_id}".encode(),
        f"{LEASE_EPOCH_VARIABLE}={lease_epoch}".encode(),
    }
    found = []
    try:
        entries = [entry for entry in os.scandir(proc) if entry.name.isdigit()]
    except OSError:
        return []
    for entry in entries:
        try:
            environment = Path(entry.path, "environ").read_bytes()
        except OSError:  # gone, or another user's process
            continue
        if wanted <= set(environment.split(b"\0")):
            found.append(int(entry.name))
    return found


def stop_attempt_processes(
    step_id: str, lease_epoch: int, grace_s: float = 1.0, proc: Path = PROC
) -> int:
    """SIGTERM the process groups of an attempt, SIGKILL what is left after
    `grace_s`; return how many processes were found."""
    pids = find_attempt_processes(step_id, lease_epoch, proc)
    if not pids:
        return 0
    groups = set()
    for pid in pids:
        try:
            groups.add(os.getpgid(pid))
        except ProcessLookupError:
            continue
    for group in groups:
        _signal_group(group, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and find_attempt_processes(
        step_id, lease_epoch, proc
    ):
        time.sleep(0.05)
    for group in groups:
        _signal_group(group, signal.SIGKILL)
    return len(pids)


def _signal_group(group: int, number: signal.Signals) -> None:
    if group == os.getpgrp():
        return  # never our own group: the script would share it only by mistake
    try:
        os.killpg(group, number)
    except (ProcessLookupError, PermissionError):
        pass
