"""The agents every registry has: `echo` and `fail`.

They exist for operators and tests, not for real work. `echo` shows what an
agent is handed (ids, trace context, input, upstream outputs), which makes
it the quickest way to check a workflow's wiring and trace propagation.
`fail` fails every attempt, which drives the retry and dead-letter paths
without writing a script.

Both run in-process and return after one checkpoint, so they also serve as
the zero-cost agent in benchmarks and simulations.
"""

from __future__ import annotations

import json

import trio

from relaymesh.agents.base import AgentResult, StepContext

__all__ = ["BUILTIN_AGENT_IDS", "EchoAgent", "FailAgent", "builtin_agents"]

BUILTIN_AGENT_IDS = ("echo", "fail")

FAIL_AGENT_ERROR = "intentional failure from fail agent"


class EchoAgent:
    """Succeeds with a JSON description of what it received."""

    agent_id = "echo"
    kind = "builtin"

    async def run(self, context: StepContext) -> AgentResult:
        await trio.lowlevel.checkpoint()
        report: dict[str, object] = {
            "agent": self.agent_id,
            "taskId": context.task_id,
            "stepId": context.step_id,
            "traceparent": context.traceparent,
            "received": context.input,
        }
        if context.dependency_outputs:
            report["dependencies"] = dict(sorted(context.dependency_outputs.items()))
        # json.dumps escapes quotes, control characters and non-ASCII text,
        # so any input yields valid JSON.
        return AgentResult.success(json.dumps(report))


class FailAgent:
    """Fails every attempt with the same error."""

    agent_id = "fail"
    kind = "builtin"

    async def run(self, context: StepContext) -> AgentResult:
        await trio.lowlevel.checkpoint()
        return AgentResult.failure(FAIL_AGENT_ERROR)


def builtin_agents() -> list[EchoAgent | FailAgent]:
    return [EchoAgent(), FailAgent()]
