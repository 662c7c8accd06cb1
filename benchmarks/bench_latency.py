"""Latency: tasks submitted one at a time, at a modest rate, to a running node.

With a backlog, a task's `finished_at_ms - created_at_ms` is mostly time
spent queued behind the others, so latency is measured on its own. A node
is started and left idle. This process then submits echo tasks on a fixed
schedule, well below the node's capacity, and once all are done it reads
each task's creation and completion times from the store. The time to the
claim (the step attempt's start) is reported too, which separates waiting
to be noticed from running and committing.

A submit from another process does not wake an idle node; its scheduler
finds new files when it next looks at the inbox, every `pollIntervalMs`.
So the run is repeated with that setting lowered, to show how much of the
latency is the poll.

The idle node's resident memory is read before the first submit, as the
baseline for the peak figure of the drain benchmark.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from bench_support import (
    NodeProcess,
    Result,
    fresh_root,
    percentile,
    read_store,
    wait_until_finished,
)

from relaymesh.config import DEFAULT_SETTINGS
from relaymesh.runtime import Runtime


def latency(
    base: Path, count: int, rate_per_s: float, poll_interval_ms: int | None = None
) -> tuple[list[float], list[float], int]:
    """Submit `count` tasks at `rate_per_s`; return latencies, claim waits, idle RSS.

    Latencies and waits are in milliseconds; `poll_interval_ms` None keeps
    the default setting.
    """
    name = f"latency-{poll_interval_ms or 'default'}"
    root = fresh_root(base, name)
    if poll_interval_ms is not None:
        settings = {"pollIntervalMs": poll_interval_ms}
        (root / "relaymesh-settings.json").write_text(json.dumps(settings))

    with NodeProcess(root, "bench-latency", 4, base) as node:
        node.wait_started()
        idle_rss_kb = node.memory_kb("VmRSS")
        runtime = Runtime.open(root)
        try:
            warm_up = runtime.submit("echo", "warm-up").task_id
            wait_until_finished(root, 1, 30, [node])
            schedule_start = time.perf_counter()
            for index in range(count):
                due = schedule_start + index / rate_per_s
                pause = due - time.perf_counter()
                if pause > 0:
                    time.sleep(pause)
                runtime.submit("echo", f"latency {index}")
        finally:
            runtime.close()
        wait_until_finished(root, count + 1, 60, [node])
        node.stop()

    with read_store(root) as store:
        rows = store.execute(
            "SELECT t.finished_at_ms - t.created_at_ms AS total,"
            " a.started_at_ms - t.created_at_ms AS wait"
            " FROM tasks AS t JOIN step_attempts AS a USING (task_id)"
            " WHERE t.task_id != ? AND t.status = 'SUCCESS'",
            (warm_up,),
        ).fetchall()
    totals = [float(row["total"]) for row in rows]
    waits = [float(row["wait"]) for row in rows]
    return totals, waits, idle_rss_kb


def latency_results(base: Path, count: int, rate_per_s: float) -> list[Result]:
    results = []
    idle_rss_kb = 0
    for poll_ms in (None, 20):
        totals, waits, idle_kb = latency(base, count, rate_per_s, poll_ms)
        idle_rss_kb = idle_rss_kb or idle_kb
        if poll_ms is None:
            setting = f"default poll ({DEFAULT_SETTINGS.poll_interval_ms} ms)"
        else:
            setting = f"pollIntervalMs={poll_ms}"
        parameters = f"{count} tasks at {rate_per_s:g}/s, {setting}"
        results += [
            Result("latency p50", parameters, percentile(totals, 0.50), "ms"),
            Result("latency p95", parameters, percentile(totals, 0.95), "ms"),
            Result(
                "latency: queued p50",
                "created to claimed",
                percentile(waits, 0.50),
                "ms",
            ),
        ]
    results.append(
        Result(
            "memory",
            "RSS of an idle node (VmRSS after start-up)",
            idle_rss_kb / 1024,
            "MiB",
        )
    )
    return results
