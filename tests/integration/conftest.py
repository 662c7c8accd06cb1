"""Fixtures for the integration tests: real node processes on a real root.

- `root` is an initialized root under `tmp_path` (store created, folders
  made). Write its settings with `write_settings(root, ...)` and declare
  agents with `nodes.install_agent(...)` before starting nodes, which read
  both once at start.
- `nodes` is a `NodeSupervisor` for that root. Whatever it started (nodes,
  CLI commands, the script agents those nodes ran) is killed with SIGKILL
  to its process group and reaped when the test ends, passed or failed.
- `view` is a `RootView`: read-only SQL on the root's store and counts of
  its bus files, which is where every assertion of these tests looks.

See `tests/integration/processes.py` for why the tests are built this way.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from relaymesh.runtime import Runtime
from tests.integration.processes import NodeSupervisor, RootView


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "root"
    Runtime.open(path).close()
    return path


@pytest.fixture
def nodes(root: Path, tmp_path: Path) -> Iterator[NodeSupervisor]:
    supervisor = NodeSupervisor(root, tmp_path / "run")
    try:
        yield supervisor
    finally:
        supervisor.close()


@pytest.fixture
def view(root: Path) -> Iterator[RootView]:
    root_view = RootView(root)
    try:
        yield root_view
    finally:
        root_view.close()
