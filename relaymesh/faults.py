"""Crash points for testing recovery with real processes.

`crash_point("name")` ends the process at once, as SIGKILL would, when the
environment variable RELAYMESH_CRASH_AT names that point. It lets a test
kill a node or a CLI command between two writes that must survive a crash
apart (a commit and the file move after it), which no signal sent from
outside can hit reliably. Unset, a crash point is one dictionary lookup.

Points: submit.after_commit, claim.after_rename, commit.after_commit,
release.after_commit.
"""

from __future__ import annotations

import os

__all__ = ["CRASH_POINTS", "crash_point"]

CRASH_POINTS = (
    "submit.after_commit",
    "claim.after_rename",
    "commit.after_commit",
    "release.after_commit",
)
CRASH_EXIT_STATUS = 137


def crash_point(name: str) -> None:
    if os.environ.get("RELAYMESH_CRASH_AT") == name:
        os._exit(CRASH_EXIT_STATUS)
