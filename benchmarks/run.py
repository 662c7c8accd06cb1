"""Benchmarks of RelayMesh's core runtime: `python benchmarks/run.py [--quick]`.

Runs every benchmark on fresh roots in a temporary folder, prints the
machine first and a table of results at the end. `--quick` runs the same
benchmarks on about a tenth of the work, to check that they still run. The
test suite runs it. Its figures are noisy and not worth quoting.

The benchmarks, each in its own module:

- `bench_submit.py`: submits through `Runtime.submit` in one process, and
  through one `relaymesh submit` process each, with the start-up split out;
- `bench_drain.py`: a queued backlog drained by one node, by two nodes on
  one root, by 1, 4 or 16 workers, and backlogs of different sizes. It also
  reads the node's peak memory;
- `bench_latency.py`: created-to-finished time of tasks submitted one at a
  time to a running node, with the default poll interval and a short one.

What the figures mean and what limits them is written up in
`docs/performance.md`. A benchmark that cannot produce its figure (a node
exits, a wait times out) stops the run with exit status 1 and the reason.
The rows of the groups that finished before it are still printed.
"""

from __future__ import annotations

import argparse
import dataclasses
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rich import box
from rich.console import Console
from rich.table import Table

import bench_drain
import bench_latency
import bench_submit
from bench_support import (
    BenchmarkError,
    Result,
    load_average,
    machine_description,
    warm_bytecode_cache,
)


@dataclass(frozen=True)
class Sizes:
    """How much work each benchmark does; `FULL` is what the docs quote."""

    runtime_submits: int
    cli_submits: int
    drain_tasks: int
    backlogs: tuple[int, ...]
    latency_tasks: int
    latency_rate_per_s: float
    repeats: int  # each benchmark runs this often; the table shows the median


FULL = Sizes(
    runtime_submits=2000,
    cli_submits=20,
    drain_tasks=2000,
    backlogs=(250, 1000, 4000),
    latency_tasks=100,
    latency_rate_per_s=10,
    repeats=3,
)
QUICK = Sizes(
    runtime_submits=200,
    cli_submits=3,
    drain_tasks=200,
    backlogs=(50, 200),
    latency_tasks=10,
    latency_rate_per_s=20,
    repeats=1,
)
GROUPS = ("submit", "cli", "drain", "workers", "backlog", "latency")


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="benchmarks/run.py",
        description="Benchmark RelayMesh's core runtime on fresh temporary roots.",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="about a tenth of the work: checks that the benchmarks run",
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=GROUPS,
        metavar="GROUP",
        help=f"run only this group (repeatable; one of: {', '.join(GROUPS)})",
    )
    parser.add_argument(
        "--markdown",
        action="store_true",
        help="print the machine and the results as Markdown instead of a table",
    )
    parser.add_argument(
        "--repeats",
        type=positive_integer,
        default=None,
        metavar="N",
        help="run each benchmark N times and show the median and range"
        " (default: 3, or 1 with --quick)",
    )
    return parser.parse_args(argv)


def positive_integer(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is too small: must be at least 1")
    return value


def run_groups(
    groups: tuple[str, ...],
    sizes: Sizes,
    folder: Path,
    collect: Callable[[Result], None],
) -> None:
    """Run the chosen groups in order, handing each row to `collect` as it comes."""
    measures: dict[str, Callable[[], list[Result]]] = {
        "submit": lambda: bench_submit.runtime_submit(folder, sizes.runtime_submits),
        "cli": lambda: bench_submit.cli_submit(folder, sizes.cli_submits),
        "drain": lambda: _drain_and_memory(folder, sizes.drain_tasks),
        "workers": lambda: bench_drain.worker_counts(folder, sizes.drain_tasks),
        "backlog": lambda: bench_drain.backlog_sizes(folder, sizes.backlogs),
        "latency": lambda: bench_latency.latency_results(
            folder, sizes.latency_tasks, sizes.latency_rate_per_s
        ),
    }
    warm_bytecode_cache(folder)
    for group in groups:
        started = time.perf_counter()
        runs = []
        for attempt in range(sizes.repeats):
            progress(f"running {group} ({attempt + 1} of {sizes.repeats}) ...")
            runs.append(measures[group]())
        for row in merge_runs(runs):
            collect(row)
        progress(f"  {group} done in {time.perf_counter() - started:.1f} s")


def _drain_and_memory(folder: Path, tasks: int) -> list[Result]:
    rows, one_node_run = bench_drain.end_to_end(folder, tasks)
    return rows + bench_drain.memory(one_node_run)


def merge_runs(runs: list[list[Result]]) -> list[Result]:
    """Merge repeated runs into one row per measurement: median and range."""
    if len(runs) == 1:
        return runs[0]
    merged = []
    for rows in zip(*runs, strict=True):
        values = [row.value for row in rows]
        merged.append(
            dataclasses.replace(
                rows[0],
                value=statistics.median(values),
                low=min(values),
                high=max(values),
            )
        )
    return merged


def progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def print_machine(markdown: bool, command: str) -> None:
    facts = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "command": command,
        **machine_description(),
    }
    for key, value in facts.items():
        print(f"- {key}: {value}" if markdown else f"{key:>16}: {value}")
    print(flush=True)


def print_results(results: list[Result], markdown: bool) -> None:
    if markdown:
        print("| benchmark | parameters | result | unit |")
        print("|---|---|--:|---|")
        for row in results:
            print(f"| {row.benchmark} | {row.parameters} | {row.text} | {row.unit} |")
        return
    table = Table(box=box.SIMPLE_HEAD)
    table.add_column("benchmark", no_wrap=True)
    table.add_column("parameters")
    table.add_column("result", justify="right", no_wrap=True)
    table.add_column("unit", no_wrap=True)
    for row in results:
        table.add_row(row.benchmark, row.parameters, row.text, row.unit)
    console = Console(width=None if sys.stdout.isatty() else 120, highlight=False)
    console.print(table)


def exit_on_sigterm(signum: int, frame: object) -> None:
    """Turn SIGTERM into SystemExit, so the nodes started so far are stopped."""
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(argv)
    signal.signal(signal.SIGTERM, exit_on_sigterm)
    sizes = QUICK if args.quick else FULL
    if args.repeats is not None:
        sizes = dataclasses.replace(sizes, repeats=args.repeats)
    groups = tuple(group for group in GROUPS if not args.only or group in args.only)
    arguments = sys.argv[1:] if argv is None else argv
    command = " ".join(["python", "benchmarks/run.py", *arguments])
    print_machine(args.markdown, command)

    results: list[Result] = []
    status = 0
    with tempfile.TemporaryDirectory(prefix="relaymesh-bench-") as folder:
        try:
            run_groups(groups, sizes, Path(folder), results.append)
        except BenchmarkError as error:
            progress(f"benchmark failed: {error}")
            status = 1
    print_results(results, args.markdown)
    ending = f"load average at the end: {load_average()}"
    print(f"\n- {ending}" if args.markdown else f"\n{ending}")
    return status


if __name__ == "__main__":
    sys.exit(main())
