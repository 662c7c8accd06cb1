"""The executor seam: where blocking work leaves the trio loop.

SQLite calls, file moves and other blocking I/O never run on the event loop
of a node. Actors hand them to an `Executor` instead. In production that is a
`ThreadExecutor`, which runs each call on a worker thread; in simulation it is
an `InlineExecutor`, which runs the call on the loop itself so that a seeded
run replays event for event.

Each call should do a batch of work (one transaction for many claims, say):
a hop to a thread costs tens of microseconds, a transaction commit in WAL
mode a few hundred, so batching is where the throughput comes from.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, TypeVar

import trio

__all__ = ["Executor", "ThreadExecutor", "InlineExecutor"]

T = TypeVar("T")


class Executor(Protocol):
    async def run(self, function: Callable[..., T], *args: object) -> T: ...


class ThreadExecutor:
    """Run blocking calls on trio's thread pool, at most `limit` at a time.

    The store serialises its own connection, so a limit of a few threads is
    plenty: more only queue behind SQLite's single writer.
    """

    def __init__(self, limit: int = 4) -> None:
        self._limiter = trio.CapacityLimiter(limit)

    async def run(self, function: Callable[..., T], *args: object) -> T:
        return await trio.to_thread.run_sync(function, *args, limiter=self._limiter)


class InlineExecutor:
    """Run blocking calls on the loop: deterministic, for simulation and tests."""

    async def run(self, function: Callable[..., T], *args: object) -> T:
        await trio.lowlevel.checkpoint()
        return function(*args)
