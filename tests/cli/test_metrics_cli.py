"""Tests of the metrics commands: metrics and serve-metrics.

Parsing and the `metrics` handler run in-process, on a parser built here
with the module's `register`, as the `relaymesh` parser builds its own. Other
tests run `relaymesh` as a child process: printing from a fresh process,
serving over HTTP, a port already in use. They need the commands registered
in relaymesh/cli/main.py and the metrics mixin in the store, and are skipped
until both are there.

A served process runs in a session of its own on 127.0.0.1 and a free
port, and is killed with its whole process group and reaped when the test
ends, whether it passed or not.
"""

from __future__ import annotations

import argparse
import os
import select
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

import relaymesh.runtime
from relaymesh.cli import metrics as metrics_cli
from relaymesh.cli.arguments import ArgumentParser, add_common
from relaymesh.cli.output import Output
from relaymesh.errors import NotFoundError
from relaymesh.observability.metrics import CONTENT_TYPE, METRICS
from relaymesh.runtime import Runtime
from relaymesh.store import Store
from relaymesh.store._metrics import MetricsMixin

SERVER_START_TIMEOUT_S = 30.0


class MetricsStore(Store, MetricsMixin):
    """The store with the metrics mixin, for as long as `Store` lacks it."""


@pytest.fixture(autouse=True)
def store_with_metrics(monkeypatch: pytest.MonkeyPatch) -> None:
    if not hasattr(Store, "metrics_snapshot"):
        monkeypatch.setattr(relaymesh.runtime, "Store", MetricsStore)


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="relaymesh")
    common = ArgumentParser(add_help=False)
    add_common(common)
    commands = parser.add_subparsers(dest="command", parser_class=ArgumentParser)
    metrics_cli.register(commands, common)
    return parser


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(list(argv))


def registered_in_main() -> bool:
    from relaymesh.cli.main import build_parser as build_main_parser

    commands = next(
        action
        for action in build_main_parser()._actions
        if isinstance(action, argparse._SubParsersAction)
    )
    wired = {"metrics", "serve-metrics"} <= set(commands.choices)
    return wired and hasattr(Store, "metrics_snapshot")


needs_main = pytest.mark.skipif(
    not registered_in_main(),
    reason="relaymesh/cli/main.py does not register relaymesh/cli/metrics.py yet,"
    " or Store does not include MetricsMixin",
)


def counter_samples(text: str) -> dict[tuple[str, tuple], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        if family.type == "counter"
        for sample in family.samples
    }


def sample_value(text: str, name: str, **labels: str) -> float:
    (found,) = [
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and sample.labels == labels
    ]
    return found


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "root"
    runtime = Runtime.open(path)
    try:
        runtime.submit("echo", "one")
        runtime.submit("echo", "two", priority="high")
    finally:
        runtime.close()
    return path


# Parsing ---------------------------------------------------------------------------


def test_register_adds_both_commands():
    commands = next(
        action
        for action in build_parser()._actions
        if isinstance(action, argparse._SubParsersAction)
    )
    assert sorted(commands.choices) == ["metrics", "serve-metrics"]


def test_serve_defaults_to_loopback():
    args = parse("serve-metrics")
    assert args.host == "127.0.0.1"
    assert args.port == 9464


def test_serve_accepts_host_and_port():
    args = parse("serve-metrics", "--host", "::1", "--port", "1")
    assert (args.host, args.port) == ("::1", 1)
    assert parse("serve-metrics", "--port", "65535").port == 65535


@pytest.mark.parametrize(
    ("port", "message"),
    [
        ("0", "out of range: must be at least 1 and at most 65535"),
        ("65536", "out of range: must be at least 1 and at most 65535"),
        ("-5", "out of range"),
        ("http", "is not an integer"),
    ],
)
def test_serve_rejects_bad_port(port, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse("serve-metrics", "--port", port)
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert "--port" in error
    assert message in error


# metrics, in-process -----------------------------------------------------------------


def test_metrics_prints_exposition(root, capsys):
    args = parse("metrics", "--root", str(root))
    assert args.handler(args, Output(args.json)) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    text = captured.out
    assert sample_value(text, "relaymesh_tasks_submitted_total", kind="single") == 2
    assert sample_value(text, "relaymesh_queue_depth", priority="high") == 1
    declared = [
        line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")
    ]
    assert declared == [definition.name for definition in METRICS]


def test_metrics_ignores_json_option(root, capsys):
    args = parse("metrics", "--root", str(root), "--json")
    assert args.handler(args, Output(args.json)) == 0
    assert capsys.readouterr().out.startswith("# HELP relaymesh_")


def test_metrics_requires_existing_root(tmp_path):
    args = parse("metrics", "--root", str(tmp_path / "missing"))
    with pytest.raises(NotFoundError, match="no RelayMesh root"):
        args.handler(args, Output(args.json))
    assert not (tmp_path / "missing").exists()


# Child processes ---------------------------------------------------------------------


@needs_main
def test_fresh_process_prints_durable_counters(cli_ok, seeded_root):
    first = cli_ok("metrics", "--root", seeded_root)
    second = cli_ok("metrics", "--root", seeded_root)
    assert first.stderr == ""
    counters = counter_samples(first.stdout)
    assert counters == counter_samples(second.stdout)
    assert counters[("relaymesh_tasks_submitted_total", (("kind", "single"),))] == 2
    assert counters[("relaymesh_tasks_submitted_total", (("kind", "workflow"),))] == 1
    assert counters[("relaymesh_steps_succeeded_total", ())] == 1


@needs_main
def test_metrics_leaves_root_unchanged(cli_ok, seeded_root, snapshot_root):
    before = snapshot_root(seeded_root)
    cli_ok("metrics", "--root", seeded_root)
    assert snapshot_root(seeded_root) == before


@needs_main
def test_metrics_missing_root_is_one_line(run_cli, tmp_path):
    result = run_cli("metrics", "--root", tmp_path / "missing")
    assert result.returncode == 1, result.describe()
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1
    assert "no RelayMesh root" in result.stderr


class ServedProcess:
    """`relaymesh serve-metrics` in a session of its own, with its stderr."""

    def __init__(self, root: Path, port: int, cwd: Path) -> None:
        environment = {
            name: value
            for name, value in os.environ.items()
            if name not in ("RELAYMESH_ROOT", "RELAYMESH_CRASH_AT")
        }
        self.process = subprocess.Popen(
            [
                sys.executable, "-m", "relaymesh.cli.main", "serve-metrics",
                "--root", str(root), "--port", str(port),
            ],
            cwd=cwd,
            env=environment,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )  # fmt: skip
        self.stderr = b""

    def wait_for_stderr(self, text: str, timeout_s: float) -> None:
        """Read stderr until it contains `text`; fail if the process exits first."""
        deadline = time.monotonic() + timeout_s
        fd = self.process.stderr.fileno()
        while text.encode() not in self.stderr:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                pytest.fail(
                    f"no {text!r} on stderr after {timeout_s} s: {self.stderr!r}"
                )
            readable, _, _ = select.select([fd], [], [], remaining)
            if readable:
                chunk = os.read(fd, 65536)
                if not chunk:
                    self.process.wait(timeout=10)
                    pytest.fail(
                        f"serve-metrics exited with {self.process.returncode}"
                        f" before {text!r}: {self.stderr!r}"
                    )
                self.stderr += chunk

    def stop(self) -> None:
        """Kill the whole process group and reap the process."""
        if self.process.returncode is None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.process.wait(timeout=30)
        self.process.stdout.close()
        self.process.stderr.close()


@pytest.fixture
def serve(tmp_path: Path) -> Iterator:
    started: list[ServedProcess] = []

    def start(root: Path, port: int) -> ServedProcess:
        served = ServedProcess(root, port, tmp_path)
        started.append(served)
        return served

    yield start
    for served in started:
        served.stop()


def http_get(port: int, path: str) -> tuple[int, dict[str, str], bytes]:
    url = f"http://127.0.0.1:{port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, dict(error.headers), error.read()


@needs_main
def test_serve_metrics_over_http(serve, seeded_root):
    port = free_port()
    served = serve(seeded_root, port)
    served.wait_for_stderr(
        f"serving metrics on http://127.0.0.1:{port}/metrics\n", SERVER_START_TIMEOUT_S
    )

    status, headers, body = http_get(port, "/metrics")
    assert status == 200
    assert headers["Content-Type"] == CONTENT_TYPE
    text = body.decode("utf-8")
    assert sample_value(text, "relaymesh_tasks_submitted_total", kind="workflow") == 1
    assert sample_value(text, "relaymesh_steps_succeeded_total") == 1

    status, _, body = http_get(port, "/not-metrics")
    assert status == 404
    assert b"/metrics" in body

    os.kill(served.process.pid, signal.SIGTERM)
    assert served.process.wait(timeout=30) == 0


@needs_main
def test_serve_metrics_stops_on_sigint(serve, seeded_root):
    port = free_port()
    served = serve(seeded_root, port)
    served.wait_for_stderr("serving metrics on", SERVER_START_TIMEOUT_S)
    assert http_get(port, "/metrics")[0] == 200
    os.kill(served.process.pid, signal.SIGINT)
    assert served.process.wait(timeout=30) == 0


@needs_main
def test_serve_metrics_port_in_use(run_cli, seeded_root):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("serve-metrics", "--root", seeded_root, "--port", str(port))
    assert result.returncode == 1, result.describe()
    errors = [line for line in result.stderr.splitlines() if "port" in line]
    assert len(errors) == 1, result.stderr
    assert f"port {port}" in errors[0]
    assert "Traceback" not in result.stderr


@needs_main
def test_serve_metrics_missing_root(run_cli, tmp_path):
    result = run_cli("serve-metrics", "--root", tmp_path / "missing", "--port", "9464")
    assert result.returncode == 1, result.describe()
    assert "no RelayMesh root" in result.stderr
