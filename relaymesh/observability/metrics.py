"""Prometheus metrics of a RelayMesh root, read from its durable state.

Every number here comes from the root, not from the memory of the process
that serves it. Counters are rows of the store's `durable_counters` table,
bumped in the same transaction as the change they count. So a counter never
resets when a node restarts, and a crash cannot count a change that was
rolled back. `relaymesh metrics` in a fresh process prints the same values
as a node that has run for a week. Gauges and histograms are recomputed from
the store and the bus folders on each scrape.

A scrape reads the store once (`Store.metrics_snapshot`, one read
transaction, so the families agree with each other) and then counts the bus
folders. The folder counts may lag or lead the store by the file moves in
flight. The snapshot is turned into families by a custom collector
registered in a fresh `CollectorRegistry` per exposition: there is no
global registry and no module state, so two roots served by one process
cannot leak into each other.

Consequences an operator should know (also stated in docs/metrics.md):

- Several nodes sharing one root expose identical values. Scrape one of
  them, or aggregate with `max`, never `sum`.
- The histograms cover the last hour only, because they are recomputed from
  `step_attempts` and `tasks` rather than accumulated. Their buckets can go
  down, so read them with `histogram_quantile` over the raw buckets, not
  over `rate()`. A cumulative histogram would need bucket counters bumped in
  the completion transaction.
- Names follow the reference implementation where its type was right. Its
  gauges named `*_total` are renamed (`relaymesh_tasks_total` becomes
  `relaymesh_tasks`) because a gauge must not end in `_total`, and its
  in-process counters are real counters now, whose exposed names
  prometheus-client ends in `_total` (`relaymesh_low_starvation_count` is
  exposed as `relaymesh_low_starvation_count_total`).

The HTTP endpoint is a small server on trio rather than the stdlib's
threaded one or prometheus-client's `start_http_server`: it reads one
request head, answers GET or HEAD on `/metrics` and 404 elsewhere, and does
the store read through the node's executor, so the blocking work stays off
the event loop and cancellation is the node's ordinary nursery
cancellation. `start_http_server` (prometheus-client 0.26) answers every
path but /favicon.ico with metrics, and serves from a daemon thread that
lives outside the node's nursery.

`docs/metrics.md` is generated from the definitions below:

    python -m relaymesh.observability.metrics > docs/metrics.md
"""

from __future__ import annotations

import logging
import sqlite3
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum

import trio
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from relaymesh.errors import ConflictError, StoreError, ValidationError
from relaymesh.executor import Executor
from relaymesh.fsm import StepState, TaskState
from relaymesh.observability.logs import event
from relaymesh.paths import PRIORITIES
from relaymesh.runtime import Runtime
from relaymesh.store._metrics import DurationCounts, MetricsSnapshot

__all__ = [
    "CONTENT_TYPE",
    "DURATION_BUCKETS_S",
    "LATENCY_QUANTILES",
    "METRICS",
    "METRICS_PATH",
    "RECENT_ATTEMPTS",
    "WINDOW_MS",
    "MetricDefinition",
    "MetricType",
    "MetricsReading",
    "RelayMeshCollector",
    "metric_families",
    "nearest_rank",
    "read_metrics",
    "render_exposition",
    "render_metrics_markdown",
    "serve_metrics",
]

log = logging.getLogger("relaymesh.metrics")

# The text format that `generate_latest` writes. prometheus-client 0.26
# calls it CONTENT_TYPE_PLAIN_0_0_4, but older releases allowed by the
# project's dependencies lack that name.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
METRICS_PATH = "/metrics"

# The window of the histograms and of relaymesh_dead_letter_growth_1h. The
# metric name fixes it at one hour.
WINDOW_MS = 3_600_000
# How many of the most recently ended attempts the latency quantiles use.
RECENT_ATTEMPTS = 5000
# Histogram bucket bounds in seconds, from a fast built-in agent to a script
# near its longest timeout.
DURATION_BUCKETS_S = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    120.0, 300.0,
)  # fmt: skip
# Quantile label value -> percentile, for relaymesh_step_latency_ms.
LATENCY_QUANTILES = {"0.95": 95, "0.99": 99}

# States a `messages` row can be in (written by relaymesh/store/_leases.py
# and relaymesh/store/_cancel.py). A state missing here still shows up once
# a row has it; listing it only makes its series exist at 0 beforehand.
MESSAGE_STATES = (
    "QUEUED",
    "PROCESSING",
    "DONE",
    "FAILED",
    "DEAD",
    "RELEASED",
    "CANCELLED",
)
MEMBER_STATES = ("ALIVE", "SUSPECT", "DEAD", "LEFT")
CONFLICT_EVENT_TYPES = (
    "claim_conflict",
    "heartbeat_conflict",
    "success_commit_conflict",
    "failure_commit_conflict",
    "release_conflict",
    "reclaim_conflict",
)

# Request limits of the HTTP endpoint. A scraper sends a head of a few
# hundred bytes at once, so these only cut off broken or idle clients.
REQUEST_HEAD_MAX_BYTES = 8192
REQUEST_TIMEOUT_S = 10.0
# How long a connection waits for the client to close after the response.
LINGER_TIMEOUT_S = 1.0


class MetricType(StrEnum):
    COUNTER = "counter"
    GAUGE = "gauge"
    HISTOGRAM = "histogram"


@dataclass(frozen=True)
class MetricsReading:
    """The inputs of one scrape: the store snapshot and the bus folder counts."""

    store: MetricsSnapshot
    # Keys "high", "normal", "low", "processing", "dead", "retry".
    bus_depths: Mapping[str, int]


# A reader returns a number for an unlabelled metric, or a mapping from the
# single label's value to a number; for histograms, DurationCounts instead.
Value = float | DurationCounts
Reader = Callable[[MetricsReading], Value | Mapping[str, Value]]


@dataclass(frozen=True)
class MetricDefinition:
    """One metric family: its exposed name, type, label, help and source."""

    # The name in the `# TYPE` line. Counters end in `_total`.
    name: str
    type: MetricType
    help: str
    # Source of the value, for the documentation.
    source: str
    label: str | None = None
    # Label values exposed even when they have no rows, so their series
    # exist at 0 before the first event (which `rate` and alerts need).
    label_values: tuple[str, ...] = ()
    # The row name in durable_counters, for counters.
    durable_counter: str | None = None
    read: Reader | None = None


def _counter(
    name: str,
    durable: str,
    help: str,
    *,
    label: str | None = None,
    label_values: Iterable[str] = (),
) -> MetricDefinition:
    return MetricDefinition(
        name, MetricType.COUNTER, help, f"`durable_counters` row `{durable}`",
        label, tuple(label_values), durable_counter=durable,
    )  # fmt: skip


def _gauge(
    name: str,
    help: str,
    source: str,
    read: Reader,
    *,
    label: str | None = None,
    label_values: Iterable[str] = (),
) -> MetricDefinition:
    return MetricDefinition(
        name, MetricType.GAUGE, help, source, label, tuple(label_values), read=read
    )


def _histogram(
    name: str, help: str, source: str, read: Reader, *, label: str | None = None
) -> MetricDefinition:
    return MetricDefinition(name, MetricType.HISTOGRAM, help, source, label, read=read)


def nearest_rank(values: Iterable[int], percentile: int) -> int:
    """Return the nearest-rank percentile of `values`, or 0 when it is empty.

    The rank is ceil(percentile / 100 * n), computed on integers: in floating
    point 0.07 * 100 is 7.000000000000001, which would make the 7th
    percentile of 100 values rank 8.
    """
    if not 0 < percentile <= 100:
        raise ValueError(f"percentile must be in (0, 100], got {percentile}")
    ordered = sorted(values)
    if not ordered:
        return 0
    rank = -(-percentile * len(ordered) // 100)
    return ordered[rank - 1]


def _latency_quantiles(reading: MetricsReading) -> dict[str, float]:
    durations = reading.store.recent_attempt_durations_ms
    return {
        quantile: nearest_rank(durations, percentile)
        for quantile, percentile in LATENCY_QUANTILES.items()
    }


# In exposition order. Names must be unique, which a test checks.
METRICS: tuple[MetricDefinition, ...] = (
    _counter(
        "relaymesh_tasks_submitted_total", "tasks_submitted_total",
        "Tasks accepted by submit and submit-workflow. A deduplicated submission"
        " is not counted.",
        label="kind", label_values=("single", "workflow"),
    ),
    _counter(
        "relaymesh_steps_succeeded_total", "steps_succeeded_total",
        "Steps whose successful result was committed.",
    ),
    _counter(
        "relaymesh_retries_scheduled_total", "retries_scheduled_total",
        "Retries scheduled after a failed attempt or a reclaimed lease.",
    ),
    _counter(
        "relaymesh_dead_lettered_total", "dead_lettered_total",
        "Steps moved to DEAD_LETTER after their last allowed attempt.",
    ),
    _counter(
        "relaymesh_leases_reclaimed_total", "leases_reclaimed_total",
        "Running steps taken back from an owner whose lease expired or who died.",
    ),
    _counter(
        "relaymesh_lease_conflict_events_total", "lease_conflicts_total",
        "Fenced writes rejected because the step had another owner or epoch.",
        label="event_type", label_values=CONFLICT_EVENT_TYPES,
    ),
    _counter(
        "relaymesh_low_starvation_count_total", "low_starvation_count",
        "Claims taken from the low tier by the anti-starvation guard after a run"
        " of high claims.",
    ),
    _counter(
        "relaymesh_tasks_cancelled_total", "tasks_cancelled_total",
        "Tasks cancelled by an operator, by cancel mode.",
        label="mode", label_values=("soft", "hard"),
    ),
    _counter(
        "relaymesh_tasks_replayed_total", "tasks_replayed_total",
        "Dead-lettered or cancelled tasks sent back to the queue by replay.",
    ),
    _gauge(
        "relaymesh_tasks", "Tasks by current status.", "`tasks` rows",
        lambda r: r.store.task_status,
        label="status", label_values=TaskState,
    ),
    _gauge(
        "relaymesh_steps", "Steps by current status.", "`steps` rows",
        lambda r: r.store.step_status,
        label="status", label_values=StepState,
    ),
    _gauge(
        "relaymesh_messages", "Bus messages by state.", "`messages` rows",
        lambda r: r.store.message_state,
        label="state", label_values=MESSAGE_STATES,
    ),
    _gauge(
        "relaymesh_inbox_depth", "Envelope files waiting in each inbox tier.",
        "files in `inbox/<priority>/`",
        lambda r: {tier: r.bus_depths[tier] for tier in PRIORITIES},
        label="priority", label_values=PRIORITIES,
    ),
    _gauge(
        "relaymesh_processing_meta_files", "Envelope files claimed by a worker.",
        "files in `processing/`", lambda r: r.bus_depths["processing"],
    ),
    _gauge(
        "relaymesh_dead_meta_files", "Envelope files of dead-lettered messages.",
        "files in `dead/`", lambda r: r.bus_depths["dead"],
    ),
    _gauge(
        "relaymesh_retry_meta_files", "Envelope files of failed attempts.",
        "files in `retry/`", lambda r: r.bus_depths["retry"],
    ),
    _gauge(
        "relaymesh_queue_depth",
        "Steps queued and ready to be claimed, by priority.",
        "PENDING `steps` rows that are enqueued and not blocked",
        lambda r: r.store.ready_steps_by_priority,
        label="priority", label_values=PRIORITIES,
    ),
    _gauge(
        "relaymesh_running_steps", "Steps running under a lease now.",
        "RUNNING `steps` rows", lambda r: r.store.running_steps,
    ),
    _gauge(
        "relaymesh_queue_lag_ms",
        "Milliseconds since the oldest queued step became ready or the oldest"
        " due retry became due, or 0 when there is none.",
        "`steps.ready_at_ms` (or `created_at_ms`), `steps.next_retry_at_ms`",
        lambda r: r.store.queue_lag_ms,
    ),
    _gauge(
        "relaymesh_oldest_queued_message_age_ms",
        "Age in milliseconds of the oldest message not yet claimed, or 0 when"
        " there is none.",
        "QUEUED `messages` rows", lambda r: r.store.oldest_queued_message_age_ms,
    ),
    _gauge(
        "relaymesh_dead_letter_growth_1h",
        "Tasks now in DEAD_LETTER whose last change was in the last hour.",
        "`tasks` rows", lambda r: r.store.tasks_dead_lettered_in_window,
    ),
    _gauge(
        "relaymesh_step_latency_ms",
        f"Nearest-rank quantiles of attempt run time in milliseconds over the"
        f" {RECENT_ATTEMPTS} most recently finished attempts, or 0 when there is"
        f" none. Reclaimed, released and cancelled attempts are left out.",
        "`step_attempts` (end minus start)", _latency_quantiles,
        label="quantile", label_values=tuple(LATENCY_QUANTILES),
    ),
    _gauge(
        "relaymesh_mesh_nodes", "Nodes by membership status.", "`mesh_nodes` rows",
        lambda r: r.store.member_status,
        label="status", label_values=MEMBER_STATES,
    ),
    _histogram(
        "relaymesh_step_duration_seconds",
        "Run time of attempts that finished in the last hour, by agent. Reclaimed,"
        " released and cancelled attempts are left out.",
        "`step_attempts` joined with `steps.agent_id`",
        lambda r: r.store.attempt_durations_by_agent,
        label="agent",
    ),
    _histogram(
        "relaymesh_task_latency_seconds",
        "Time from submission to a final status of tasks that finished in the"
        " last hour.",
        "`tasks` (finish minus creation)", lambda r: r.store.task_latencies,
    ),
)  # fmt: skip


# Building families -----------------------------------------------------------


_FAMILY_CLASSES = {
    MetricType.COUNTER: CounterMetricFamily,
    MetricType.GAUGE: GaugeMetricFamily,
    MetricType.HISTOGRAM: HistogramMetricFamily,
}


def _empty_family(definition: MetricDefinition) -> Metric:
    labels = [definition.label] if definition.label else []
    family_class = _FAMILY_CLASSES[definition.type]
    return family_class(definition.name, definition.help, labels=labels)


def _counter_values(
    definition: MetricDefinition, counters: Mapping[tuple[str, str], float]
) -> Mapping[str, float] | float:
    rows = {
        labels: value
        for (name, labels), value in counters.items()
        if name == definition.durable_counter
    }
    if definition.label is None:
        return sum(rows.values())
    return rows


def _bucket_samples(
    counts: DurationCounts, bounds_ms: Iterable[int]
) -> list[tuple[str, float]]:
    """Turn per-bucket counts into the cumulative (le, count) pairs of a histogram."""
    samples = []
    running = 0
    for bound_ms, count in zip(bounds_ms, counts.bucket_counts):
        running += count
        samples.append((floatToGoString(bound_ms / 1000), running))
    samples.append(("+Inf", counts.count))
    return samples


def _with_label_values(
    definition: MetricDefinition, values: Mapping[str, Value]
) -> list[tuple[str, Value]]:
    """Pair each label value with its value: known values first, in order."""
    known = [str(value) for value in definition.label_values]
    extra = sorted(set(values) - set(known))
    pairs = []
    for label_value in [*known, *extra]:
        value = values.get(label_value)
        if value is None and definition.type == MetricType.HISTOGRAM:
            continue
        pairs.append((label_value, 0 if value is None else value))
    return pairs


def _family(definition: MetricDefinition, reading: MetricsReading) -> Metric:
    family = _empty_family(definition)
    if definition.durable_counter is not None:
        value = _counter_values(definition, reading.store.counters)
    else:
        value = definition.read(reading)

    if definition.label is None:
        pairs = [((), value)]
    else:
        pairs = [((label,), v) for label, v in _with_label_values(definition, value)]

    for labels, sample in pairs:
        if definition.type == MetricType.HISTOGRAM:
            buckets = _bucket_samples(sample, reading.store.bucket_bounds_ms)
            family.add_metric(list(labels), buckets, sample.sum_ms / 1000)
        else:
            family.add_metric(list(labels), sample)
    return family


def metric_families(reading: MetricsReading) -> list[Metric]:
    """Build every family of `METRICS` from one reading, in exposition order."""
    return [_family(definition, reading) for definition in METRICS]


# Reading and exposing ----------------------------------------------------------


def read_metrics(runtime: Runtime) -> MetricsReading:
    """Read the store snapshot and the bus folder counts (blocking)."""
    snapshot = runtime.store.metrics_snapshot(
        runtime.clock_ms(),
        window_ms=WINDOW_MS,
        bucket_bounds_ms=[round(bound * 1000) for bound in DURATION_BUCKETS_S],
        recent_attempts=RECENT_ATTEMPTS,
    )
    return MetricsReading(snapshot, runtime.bus.depths())


class RelayMeshCollector(Collector):
    """A collector that reads the root of `runtime` on every `collect()`.

    `collect()` blocks on SQLite and the file system, so call it (and
    `generate_latest` on a registry holding it) off the event loop.
    """

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def collect(self) -> Iterator[Metric]:
        yield from metric_families(read_metrics(self.runtime))

    def describe(self) -> Iterator[Metric]:
        # Names without samples, so that registering does not read the root.
        for definition in METRICS:
            yield _empty_family(definition)


def render_exposition(runtime: Runtime) -> bytes:
    """Read the root once and return the text exposition (blocking)."""
    registry = CollectorRegistry(auto_describe=True)
    registry.register(RelayMeshCollector(runtime))
    return generate_latest(registry)


# The HTTP endpoint -----------------------------------------------------------

_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
}


def _response(
    status: int,
    body: bytes,
    *,
    content_type: str = "text/plain; charset=utf-8",
    head_only: bool = False,
    extra_headers: Iterable[tuple[str, str]] = (),
) -> bytes:
    headers = [
        ("Content-Type", content_type),
        ("Content-Length", str(len(body))),
        ("Connection", "close"),
        *extra_headers,
    ]
    lines = [f"HTTP/1.1 {status} {_REASONS[status]}"]
    lines += [f"{name}: {value}" for name, value in headers]
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")
    return head if head_only else head + body


class _BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


async def _read_request_head(stream: trio.abc.Stream) -> bytes | None:
    """Read up to the blank line that ends the head; None if the peer closed."""
    buffer = bytearray()
    while b"\r\n\r\n" not in buffer and b"\n\n" not in buffer:
        if len(buffer) > REQUEST_HEAD_MAX_BYTES:
            raise _BadRequest(
                431, f"request head is larger than {REQUEST_HEAD_MAX_BYTES} bytes"
            )
        chunk = await stream.receive_some(4096)
        if not chunk:
            return None
        buffer += chunk
    return bytes(buffer)


def _parse_request_line(head: bytes) -> tuple[str, str]:
    """Return the method and path of the request line; raise _BadRequest."""
    line = head.split(b"\n", 1)[0].rstrip(b"\r")
    parts = line.split(b" ")
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/"):
        raise _BadRequest(400, "malformed request line")
    method = parts[0].decode("ascii", errors="replace")
    target = parts[1].decode("ascii", errors="replace")
    return method, target.split("?", 1)[0]


async def _answer(
    stream: trio.SocketStream, runtime: Runtime, executor: Executor
) -> bytes | None:
    with trio.move_on_after(REQUEST_TIMEOUT_S) as timer:
        head = await _read_request_head(stream)
    if timer.cancelled_caught:
        event(log, logging.DEBUG, "metrics.request_timed_out",
              timeout_s=REQUEST_TIMEOUT_S)  # fmt: skip
        return _response(408, b"timed out waiting for the request\n")
    if head is None:
        return None

    method, path = _parse_request_line(head)
    head_only = method == "HEAD"
    if method not in ("GET", "HEAD"):
        return _response(
            405, f"method {method} is not allowed; use GET\n".encode(),
            extra_headers=[("Allow", "GET, HEAD")],
        )  # fmt: skip
    if path != METRICS_PATH:
        body = f"no such path {path}; metrics are at {METRICS_PATH}\n".encode()
        return _response(404, body, head_only=head_only)

    try:
        body = await executor.run(render_exposition, runtime)
    except (sqlite3.Error, OSError, StoreError) as error:
        event(log, logging.WARNING, "metrics.scrape_failed", error=repr(error))
        return _response(500, f"cannot read the root: {error}\n".encode())
    except Exception:  # a bug in rendering must not stop the node
        log.exception("metrics.render_failed")
        return _response(500, b"cannot render the metrics; see the server log\n")
    return _response(200, body, content_type=CONTENT_TYPE, head_only=head_only)


async def _handle_connection(
    stream: trio.SocketStream, runtime: Runtime, executor: Executor
) -> None:
    async with stream:
        try:
            try:
                response = await _answer(stream, runtime, executor)
            except _BadRequest as error:
                event(log, logging.DEBUG, "metrics.bad_request",
                      status=error.status, error=str(error))  # fmt: skip
                response = _response(error.status, f"{error}\n".encode())
            if response is not None:
                await stream.send_all(response)
                await _close_gently(stream)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            # The client disconnected, so there is no one to respond to.
            event(log, logging.DEBUG, "metrics.client_disconnected")


async def _close_gently(stream: trio.SocketStream) -> None:
    """Half-close, then drain what the client still sends, for a bounded time.

    Closing a socket whose receive buffer contains unread bytes makes the
    kernel send a reset, and a client that gets the reset before reading
    the response loses the response. That happens after a 431, which stops
    reading mid-head.
    """
    await stream.send_eof()
    with trio.move_on_after(LINGER_TIMEOUT_S):
        drained = 0
        while drained < REQUEST_HEAD_MAX_BYTES * 8:
            chunk = await stream.receive_some(4096)
            if not chunk:
                return
            drained += len(chunk)


async def serve_metrics(
    runtime: Runtime,
    host: str,
    port: int,
    executor: Executor,
    *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve GET /metrics for the root of `runtime` on `host`:`port` until cancelled.

    Port 0 picks a free port. `task_status.started` receives the bound port.
    With port 0, pass a host with a single address (127.0.0.1, not
    localhost): each address of a name gets a listener, and each listener
    its own free port, of which only the first is reported.
    Raises ValidationError for a port outside 0-65535 or an empty host, and
    ConflictError when the address cannot be bound (in use, not local, no
    permission).
    """
    if not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValidationError(f"metrics port {port!r} is out of range: use 0-65535")
    if not host:
        raise ValidationError("metrics host is empty: use an address such as 127.0.0.1")
    try:
        listeners = await trio.open_tcp_listeners(port, host=host)
    except OSError as error:
        raise ConflictError(
            f"cannot serve metrics on {host} port {port}:"
            f" {error.strerror or error} (choose another port or host)"
        ) from None

    bound_port = listeners[0].socket.getsockname()[1]
    event(log, logging.INFO, "metrics.serving", host=host, port=bound_port,
          root=runtime.layout.root)  # fmt: skip
    task_status.started(bound_port)
    try:
        await trio.serve_listeners(
            lambda stream: _handle_connection(stream, runtime, executor), listeners
        )
    finally:
        event(log, logging.INFO, "metrics.stopped", host=host, port=bound_port)


# Documentation ---------------------------------------------------------------

_DOC_INTRO = """\
# Metrics

RelayMesh exposes Prometheus metrics in the text format (version 0.0.4).

- `relaymesh metrics --root ROOT` prints them once.
- `relaymesh serve-metrics --root ROOT --port 9464` serves them at
  `http://127.0.0.1:9464/metrics` (`--host` chooses another address;
  other paths return 404).

This page is generated from `relaymesh/observability/metrics.py`
(`python -m relaymesh.observability.metrics > docs/metrics.md`); a test
fails when it is out of date.

## Where the numbers come from

Every value is read from the root, never from the memory of the process
that serves it:

- **Counters** are rows of the store's `durable_counters` table, bumped in
  the same transaction as the change they count. They never reset when a
  node or the metrics server restarts, and a rolled-back change is never
  counted. No command deletes or lowers them: a counter goes back to zero
  only with a new database.
- **Gauges** are recomputed from the store and the bus folders on each
  scrape.
- **Histograms** are recomputed on each scrape from the attempts and tasks
  that ended in the last hour (see below).

One scrape reads the store in one read transaction, so the families agree
with each other (a step is never counted both queued and running). The bus
folders are counted just after it and may differ by the file moves in
flight.

Every process that serves one root exposes the same values. When several
nodes share a root, scrape one of them, or aggregate with `max by (...)`.
A `sum` would multiply every value by the number of nodes.

## Metrics
"""

_DOC_GUIDANCE = """\

Label values that are listed above are exposed at 0 before their first
event, so `rate()` and alerts see the series from the start. Other values
(a new agent, a status added later) appear once a row has them.

## What to scale and alert on

- **Scale workers on `relaymesh_queue_depth{priority}`**: steps ready to
  run and not yet claimed. Weigh the priorities as the scheduler does
  (8:3:1 for high:normal:low), or scale on `high` alone when that tier has
  a latency target.
- **Alert on `relaymesh_oldest_queued_message_age_ms`**: it grows when no
  worker claims anything at all (no node running, every node paused, a
  stuck claim), while depth alone may stay flat.
- **Alert on `relaymesh_queue_lag_ms`**: the age of the oldest ready step,
  with a due retry counted from when it became due. It grows when workers
  are too few for the load. Retries still in their backoff, and workflow
  steps that wait for dependencies or can never run because one was
  dead-lettered, do not count.
- **Alert on dead letters** with `increase(relaymesh_dead_lettered_total[1h])`
  or `relaymesh_dead_letter_growth_1h`, and on lost work with
  `rate(relaymesh_leases_reclaimed_total[15m])`.
- **Lease conflicts** (`relaymesh_lease_conflict_events_total`) happen
  now and then after a reclaim or a cancel. A steady rate of
  `success_commit_conflict` usually means that owners lose leases of steps
  that are still running, so look at the heartbeat and lease settings.
- **Latency**: `relaymesh_step_latency_ms{quantile="0.99"}` for a
  dashboard; `histogram_quantile(0.99, max by (le, agent)
  (relaymesh_step_duration_seconds_bucket))` per agent.

## Histograms cover the last hour

`relaymesh_step_duration_seconds` and `relaymesh_task_latency_seconds` are
rebuilt on each scrape from what ended in the last hour, so their buckets
and counts go down as old entries leave the window. Read them with
`histogram_quantile` over the raw `_bucket` series. `rate()` and
`increase()` over them are wrong, because Prometheus takes each decrease
for a counter reset. Attempts that were reclaimed, handed back at shutdown
or cancelled are left out of both latency metrics, because their end time
is when someone else stopped them, not when the agent finished.

## Differences from the reference implementation

- The reference typed every metric as a gauge, kept its counters in the
  memory of each process (so `relaymesh metrics` printed 0 for them) and
  repeated every sample with a `namespace` label. Here counters are
  counters, durable and shared by all processes, and each family appears
  once.
- Gauges no longer end in `_total`: `relaymesh_tasks_total`,
  `relaymesh_steps_total`, `relaymesh_messages_total` and
  `relaymesh_mesh_nodes_total` are now `relaymesh_tasks`,
  `relaymesh_steps`, `relaymesh_messages` and `relaymesh_mesh_nodes`.
- `relaymesh_low_starvation_count` is a counter and is exposed as
  `relaymesh_low_starvation_count_total`.
- `relaymesh_lease_conflict_total` and `relaymesh_lease_conflict_1h` are
  removed: use `sum(relaymesh_lease_conflict_events_total)` and
  `sum(increase(relaymesh_lease_conflict_events_total[1h]))`.
- `relaymesh_step_latency_ms` measures each attempt's run time (end minus
  start in `step_attempts`), not a step's time from creation to its last
  update.
- `relaymesh_queue_lag_ms` counts only steps that are ready to run and
  retries that are due, not retries in their backoff or steps blocked
  behind their dependencies.
- The endpoint listens on 127.0.0.1 unless `--host` says otherwise, answers
  only GET and HEAD on `/metrics`, and returns 404 for other paths.
"""


def _markdown_labels(definition: MetricDefinition) -> str:
    if definition.label is None:
        return "-"
    values = ", ".join(f"`{value}`" for value in definition.label_values)
    return f"`{definition.label}` ({values})" if values else f"`{definition.label}`"


def _markdown_name(definition: MetricDefinition) -> str:
    if definition.type == MetricType.HISTOGRAM:
        return f"`{definition.name}` (`_bucket`, `_sum`, `_count`)"
    return f"`{definition.name}`"


def render_metrics_markdown() -> str:
    """Render docs/metrics.md from `METRICS`."""
    rows = [
        "| Metric | Type | Labels | Meaning | Source |",
        "|---|---|---|---|---|",
    ]
    for definition in METRICS:
        rows.append(
            f"| {_markdown_name(definition)} | {definition.type} |"
            f" {_markdown_labels(definition)} | {definition.help} |"
            f" {definition.source} |"
        )
    buckets = ", ".join(floatToGoString(bound) for bound in DURATION_BUCKETS_S)
    bucket_note = f"\nHistogram buckets (seconds): {buckets}, +Inf.\n"
    return _DOC_INTRO + "\n" + "\n".join(rows) + "\n" + bucket_note + _DOC_GUIDANCE


if __name__ == "__main__":
    sys.stdout.write(render_metrics_markdown())
