"""End-to-end drain: a backlog of echo tasks, then node processes that run it.

All tasks are submitted first, so the figures are about the node, not the
submitter. Two rates come out of one run:

- the drain rate: tasks divided by the wall time from spawning the first
  node to the moment the store shows every task SUCCESS. This is what an
  operator waits for, start-up of the interpreter included;
- the steady rate: tasks divided by the span from the first claim to the
  last completion, both read from the timestamps the nodes wrote. It leaves
  out start-up and this process's polling, so it is the figure to compare
  across worker counts.

The node batches claims (up to the free worker slots, at most
`claimBatchSize`) and completions (whatever outcomes are waiting, up to 64)
into one transaction each. Transactions cannot be counted from outside, but
every claim in one transaction carries the same `now`, and so does every
completion. The number of distinct (node, millisecond) values is therefore
a lower bound on the number of transactions, and tasks divided by it is an
upper bound on the mean batch size.

Draining backlogs of different sizes with the same node shows whether the
cost of a step depends on how many steps are queued behind it.

The peak resident memory of each node (VmHWM in /proc/<pid>/status) is read
after the drain and before the node is stopped.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path

from bench_support import (
    BenchmarkError,
    NodeProcess,
    Result,
    fresh_root,
    read_store,
    seed_echo_tasks,
    wait_until_finished,
)

# Generous: one node drains hundreds of echo tasks per second on two cores.
SECONDS_PER_TASK_LIMIT = 0.05
MINIMUM_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class DrainRun:
    tasks: int
    nodes: int
    workers: int
    start_up_s: float  # spawn of the first node to its node.started line
    drain_s: float  # spawn of the first node to all tasks SUCCESS
    steady_steps_per_s: float
    attempts_by_node: dict[str, int]
    claims_per_transaction_max: float
    completions_per_transaction_max: float
    peak_rss_kb: tuple[int, ...]

    @property
    def drain_tasks_per_s(self) -> float:
        return self.tasks / self.drain_s


def drain(base: Path, tasks: int, nodes: int, workers: int) -> DrainRun:
    """Seed `tasks` echo tasks on a fresh root, run `nodes` nodes until done."""
    name = f"drain-{tasks}t-{nodes}n-{workers}w"
    root = fresh_root(base, name)
    seed_echo_tasks(root, tasks)
    timeout_s = max(MINIMUM_TIMEOUT_S, tasks * SECONDS_PER_TASK_LIMIT)

    with contextlib.ExitStack() as stack:
        started = [
            stack.enter_context(NodeProcess(root, f"bench-{index}", workers, base))
            for index in range(nodes)
        ]
        start_up_s = started[0].wait_started()
        wait_until_finished(root, tasks, timeout_s, started)
        drain_s = time.perf_counter() - started[0].started_at
        peaks = tuple(node.memory_kb("VmHWM") for node in started)
        for node in started:
            node.stop()

    with read_store(root) as store:
        return DrainRun(
            tasks=tasks,
            nodes=nodes,
            workers=workers,
            start_up_s=start_up_s,
            drain_s=drain_s,
            steady_steps_per_s=_steady_rate(store, tasks),
            attempts_by_node=dict(
                store.execute(
                    "SELECT node_id, count(*) FROM step_attempts GROUP BY node_id"
                )
            ),
            claims_per_transaction_max=_per_distinct_ms(store, tasks, "started_at_ms"),
            completions_per_transaction_max=_per_distinct_ms(
                store, tasks, "ended_at_ms"
            ),
            peak_rss_kb=peaks,
        )


def _steady_rate(store, tasks: int) -> float:
    first_claim_ms, last_finish_ms = store.execute(
        "SELECT (SELECT min(started_at_ms) FROM step_attempts),"
        " (SELECT max(finished_at_ms) FROM tasks)"
    ).fetchone()
    span_ms = max(1, last_finish_ms - first_claim_ms)
    return tasks / span_ms * 1000


def _per_distinct_ms(store, tasks: int, column: str) -> float:
    distinct = store.execute(
        f"SELECT count(*) FROM (SELECT DISTINCT node_id, {column} FROM step_attempts)"
    ).fetchone()[0]
    if not distinct:
        raise BenchmarkError(f"no step attempts recorded ({column})")
    return tasks / distinct


def check_exactly_once(run: DrainRun) -> None:
    """Raise BenchmarkError unless every step ran once, since retries skew rates."""
    attempts = sum(run.attempts_by_node.values())
    if attempts != run.tasks:
        raise BenchmarkError(
            f"{run.tasks} tasks took {attempts} attempts ({run.attempts_by_node});"
            " a clean drain should take one attempt per task"
        )


def end_to_end(base: Path, tasks: int) -> tuple[list[Result], DrainRun]:
    """One node and two nodes with 4 workers each; returns the one-node run too."""
    results = []
    single = drain(base, tasks, nodes=1, workers=4)
    pair = drain(base, tasks, nodes=2, workers=4)
    for run, label in ((single, "1 node x 4 workers"), (pair, "2 nodes x 4 workers")):
        check_exactly_once(run)
        parameters = f"{tasks} queued echo tasks, {label}"
        results += [
            Result("drain, wall", parameters, run.drain_s, "s", decimals=2),
            Result("drain, wall", parameters, run.drain_tasks_per_s, "tasks/s"),
            Result("drain, steady", parameters, run.steady_steps_per_s, "steps/s"),
        ]
    shares = sorted(pair.attempts_by_node.values())
    results.append(
        Result(
            "drain, 2 nodes",
            "share of the steps run by the busier node",
            shares[-1] / tasks * 100,
            "%",
        )
    )
    results.append(
        Result(
            "node start-up",
            "spawn to 'node.started'",
            single.start_up_s * 1000,
            "ms",
            decimals=0,
        )
    )
    return results, single


def worker_counts(base: Path, tasks: int) -> list[Result]:
    """Steady rate and batch sizes of one node with 1, 4 and 16 workers."""
    results = []
    for workers in (1, 4, 16):
        run = drain(base, tasks, nodes=1, workers=workers)
        check_exactly_once(run)
        plural = "worker" if workers == 1 else "workers"
        parameters = f"{tasks} tasks, 1 node x {workers} {plural}"
        results += [
            Result("workers", parameters, run.steady_steps_per_s, "steps/s"),
            Result(
                "workers: claims per tx",
                f"{workers} {plural}, upper bound",
                run.claims_per_transaction_max,
                "steps",
                decimals=2,
            ),
            Result(
                "workers: completions per tx",
                f"{workers} {plural}, upper bound",
                run.completions_per_transaction_max,
                "steps",
                decimals=2,
            ),
        ]
    return results


def backlog_sizes(base: Path, sizes: tuple[int, ...]) -> list[Result]:
    """Steady rate of one node x 4 workers for backlogs of different sizes.

    A node that did constant work per step would drain every backlog at the
    same rate. A rate that falls as the backlog grows shows work that grows
    with the number of queued files.
    """
    results = []
    for tasks in sizes:
        run = drain(base, tasks, nodes=1, workers=4)
        check_exactly_once(run)
        results.append(
            Result(
                "backlog",
                f"{tasks} queued tasks, 1 node x 4 workers",
                run.steady_steps_per_s,
                "steps/s",
            )
        )
    return results


def memory(run: DrainRun) -> list[Result]:
    return [
        Result(
            "memory",
            f"peak RSS (VmHWM), 1 node x {run.workers} workers, {run.tasks} tasks",
            run.peak_rss_kb[0] / 1024,
            "MiB",
        )
    ]
