"""A small wake-up primitive shared by actors."""

from __future__ import annotations

import trio


class Nudge:
    """A re-armable event: `set()` wakes the current waiter, if any.

    The scheduler waits on it while idle so that new work (a submit seen by
    the sweeper, successors unlocked by a commit, retries dispatched) starts
    at once instead of at the next poll.
    """

    def __init__(self) -> None:
        self._event = trio.Event()

    def set(self) -> None:
        self._event.set()

    async def wait(self, timeout_s: float) -> None:
        with trio.move_on_after(timeout_s):
            await self._event.wait()
        self._event = trio.Event()
