"""Nodes in one trio run on a virtual clock, sharing a root on real SQLite.

Blocking work runs inline (InlineExecutor) and the wall clock is derived
from trio's clock, so a test of minutes of lease time takes milliseconds and
repeats exactly.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass

import pytest
import trio

from relaymesh.agents import AgentRegistry, AgentResult, StepContext
from relaymesh.agents.builtin import builtin_agents
from relaymesh.runtime import Runtime

WALL_START_MS = 1_800_000_000_000


def virtual_wall_ms() -> int:
    return WALL_START_MS + int(trio.current_time() * 1000)


@dataclass
class SleepAgent:
    """Sleeps for the number of seconds in its input, then succeeds."""

    agent_id: str = "sleep"
    kind: str = "builtin"
    runs: int = 0

    async def run(self, context: StepContext) -> AgentResult:
        self.runs += 1
        await trio.sleep(float(context.input))
        return AgentResult.success(f"slept {context.input}")


@pytest.fixture
def settings_file(tmp_path):
    def write(**values):
        (tmp_path / "root").mkdir(exist_ok=True)
        path = tmp_path / "root" / "relaymesh-settings.json"
        path.write_text(json.dumps(values))

    return write


@pytest.fixture
def open_runtime(tmp_path):
    opened = []
    sleeper = SleepAgent()

    def open_one(seed: int = 1) -> Runtime:
        runtime = Runtime.open(
            tmp_path / "root", clock_ms=virtual_wall_ms, rng=random.Random(seed)
        )
        runtime.agents = AgentRegistry([*builtin_agents(), sleeper])
        opened.append(runtime)
        return runtime

    open_one.sleeper = sleeper
    yield open_one
    for runtime in opened:
        runtime.close()
