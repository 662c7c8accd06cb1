"""What an agent is: the context it is given and the result it returns.

An agent is anything that turns one step's input into an output: a built-in
written in Python, or an external program declared by the operator. The
worker uses agents only through the `Agent` protocol below, so it treats a
shell script and the echo agent alike: it builds a `StepContext`, awaits
`run()` under a cancel scope, and persists the `AgentResult`.

Two decisions shape this module:

- An agent reports failure by returning `AgentResult(ok=False, ...)`, not by
  raising. A raised exception is a bug in the agent or in RelayMesh and is
  handled as such by the worker; a failed result is an ordinary outcome that
  enters the retry policy. The result also says whether the failure was a
  timeout, because the step state machine records `TIMEOUT` apart from
  `FAILED`.
- Delivery is at-least-once: after a crash or a lost lease a step runs again
  with a higher `attempt`. Agents that have side effects should key them on
  `task_id`, `step_name` and `attempt` or be idempotent.

The text an external program reads on standard input is defined once, in
`agent_stdin`, because it is the contract with script authors and must not
drift between the script adapter and the documentation.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

__all__ = [
    "OUTCOMES",
    "Agent",
    "AgentResult",
    "StepContext",
    "agent_stdin",
]

# Possible ends of an attempt, named as in the step state machine.
OUTCOMES = ("SUCCESS", "FAILED", "TIMEOUT")


@dataclass(frozen=True)
class StepContext:
    """Everything an agent may know about the attempt it is running."""

    task_id: str
    # Internal id of the step, unique across tasks (stp_<task>_<name>).
    step_id: str
    # The id the user gave the step in the workflow file, or "main" for a
    # task submitted as a single step.
    step_name: str
    # Starts at 1 and grows by one for every retry or re-delivery.
    attempt: int
    # W3C trace context: 32 and 16 lower-case hex digits.
    trace_id: str
    span_id: str
    parent_span_id: str | None
    # "00-<trace_id>-<span_id>-01", ready to hand on to a child process.
    traceparent: str
    input: str
    # Output of every step this one depends on, keyed by that step's name.
    dependency_outputs: Mapping[str, str] = field(default_factory=dict)
    # Fencing epoch of the lease this attempt runs under; with `step_id` it
    # names the attempt uniquely, so a reclaim can find its processes.
    lease_epoch: int = 0


@dataclass(frozen=True)
class AgentResult:
    """How one attempt ended.

    `ok` and `outcome` must agree: a success has outcome SUCCESS and no error,
    a failure has outcome FAILED or TIMEOUT. `error` is a single line meant
    for an operator reading a task listing. `success()` and `failure()` build
    consistent results, and `failure()` folds a multi-line error onto one line.
    """

    ok: bool
    output: str = ""
    error: str = ""
    outcome: str = "SUCCESS"

    def __post_init__(self) -> None:
        if self.outcome not in OUTCOMES:
            raise ValueError(
                f"agent result outcome {self.outcome!r} is not one of "
                f"{', '.join(OUTCOMES)}"
            )
        if self.ok and (self.outcome != "SUCCESS" or self.error):
            raise ValueError(
                f"a successful agent result must have outcome SUCCESS and no "
                f"error, got outcome {self.outcome!r} and error {self.error!r}"
            )
        if not self.ok and self.outcome == "SUCCESS":
            raise ValueError(
                "a failed agent result needs outcome FAILED or TIMEOUT, got SUCCESS"
            )

    @classmethod
    def success(cls, output: str) -> AgentResult:
        return cls(ok=True, output=output)

    @classmethod
    def failure(
        cls, error: str, *, outcome: str = "FAILED", output: str = ""
    ) -> AgentResult:
        one_line = " ".join(error.split())
        return cls(ok=False, output=output, error=one_line, outcome=outcome)


class Agent(Protocol):
    """The one interface the worker uses to run a step.

    `run` must honour trio cancellation: when the surrounding scope is
    cancelled (hard cancel, lost lease, shutdown) it releases what it holds,
    child processes included, before `Cancelled` propagates.
    """

    agent_id: str
    # "builtin" or "script"; shown by the agent listing.
    kind: str

    async def run(self, context: StepContext) -> AgentResult: ...


def agent_stdin(context: StepContext) -> str:
    """Return the text an external agent receives on standard input.

    This is the contract with script authors:

    - A step without dependencies gets its input text exactly as submitted,
      so a script for single steps can simply read standard input.
    - A step with dependencies gets one JSON object (keys sorted)::

          {"dependencies": {"<step name>": "<that step's output>", ...},
           "input": "<this step's input text>"}

      The dependency outputs are strings as the upstream agents printed
      them; a script that expects JSON from upstream parses them itself.

    The same values are never passed on the command line, where they would
    be visible to every user of the host and limited in size.
    """
    if not context.dependency_outputs:
        return context.input
    document = {
        "input": context.input,
        "dependencies": dict(context.dependency_outputs),
    }
    return json.dumps(document, sort_keys=True)
