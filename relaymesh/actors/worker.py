"""Workers: run one claimed step's agent under a cancel scope.

A worker builds the agent's context from the claim, registers the lease with
the lease manager (which may cancel the scope if the lease is lost), awaits
the agent, and hands the outcome to the committer. It never writes to the
store itself, so that completions of many workers share one transaction.

The cancel scope is the only way a running step is stopped: a lost lease, a
hard cancel or the end of the graceful shutdown window all cancel it, and the
script adapter kills its process group when that happens.
"""

from __future__ import annotations

import logging

import trio

from relaymesh.actors.lease import LeaseManager, RunningStep
from relaymesh.agents import AgentRegistry, StepContext
from relaymesh.fsm import AttemptOutcome
from relaymesh.observability.logs import event
from relaymesh.runtime import Assignment, Runtime
from relaymesh.store import StepOutcome

log = logging.getLogger("relaymesh.worker")


def step_context(assignment: Assignment) -> StepContext:
    step = assignment.step
    return StepContext(
        task_id=step.task_id,
        step_id=step.step_id,
        step_name=step.step_name,
        attempt=step.attempt,
        trace_id=step.trace_id,
        span_id=step.span_id,
        parent_span_id=step.parent_span_id,
        traceparent=f"00-{step.trace_id}-{step.span_id}-01",
        input=assignment.input_text or "",
        dependency_outputs=step.dependency_outputs,
        lease_epoch=step.lease_epoch,
    )


async def execute_step(
    assignment: Assignment,
    running: RunningStep,
    agents: AgentRegistry,
    worker_id: str,
    payload_max_bytes: int,
) -> StepOutcome | None:
    """Run the assignment's agent; return its outcome, or None if released.

    None means the node is shutting down and has handed the step back to the
    queue itself, so there is nothing left to commit.
    """
    step = assignment.step
    started = trio.current_time()
    event(
        log,
        logging.INFO,
        "step.started",
        step_id=step.step_id,
        agent=step.agent_id,
        attempt=step.attempt,
        epoch=step.lease_epoch,
        worker=worker_id,
    )

    def outcome(kind: str, output: str = "", error: str = "") -> StepOutcome:
        return StepOutcome(
            step_id=step.step_id,
            lease_token=step.lease_token,
            lease_epoch=step.lease_epoch,
            outcome=kind,
            output=output,
            error=error,
            file_path=step.file_path,
            worker_id=worker_id,
            task_id=step.task_id,
            trace_id=step.trace_id,
            span_id=step.span_id,
            attempt=step.attempt,
        )

    if running.released:
        return None
    if assignment.input_text is None:
        return outcome(AttemptOutcome.FAILED, error=assignment.input_error)
    agent = agents.get(step.agent_id)
    if agent is None:
        return outcome(
            AttemptOutcome.FAILED,
            error=f"agent {step.agent_id!r} is not registered on node"
            f" {step.lease_owner}; declare it in agents/scripts.json and run"
            " 'relaymesh reload-settings'",
        )

    with running.scope as scope:
        try:
            result = await agent.run(step_context(assignment))
        except Exception as error:  # a bug in an agent fails the attempt, not the node
            log.exception("agent %s raised on step %s", step.agent_id, step.step_id)
            result = None
            crash = f"agent {step.agent_id!r} raised {type(error).__name__}: {error}"

    elapsed_ms = int((trio.current_time() - started) * 1000)
    if running.released:
        return None
    if scope.cancelled_caught:
        reason = running.cancel_reason or "cancelled"
        kind = AttemptOutcome.ABANDONED if running.lost else AttemptOutcome.CANCELLED
        event(
            log,
            logging.WARNING,
            "step.stopped",
            step_id=step.step_id,
            reason=reason,
            elapsed_ms=elapsed_ms,
        )
        return outcome(kind, error=reason)
    if result is None:
        return outcome(AttemptOutcome.FAILED, error=crash)
    if result.ok:
        size = len(result.output.encode("utf-8"))
        if size > payload_max_bytes:
            return outcome(
                AttemptOutcome.FAILED,
                error=f"output is {size} bytes; the limit is {payload_max_bytes}"
                " (payloadMaxBytes)",
            )
        return outcome(AttemptOutcome.SUCCESS, output=result.output)
    return outcome(
        AttemptOutcome(result.outcome), output=result.output, error=result.error
    )


async def worker_loop(
    worker_id: str,
    assignments: trio.MemoryReceiveChannel[tuple[Assignment, RunningStep]],
    outcomes: trio.MemorySendChannel[StepOutcome],
    runtime: Runtime,
    leases: LeaseManager,
    slots: trio.Semaphore,
) -> None:
    """Take assignments until the channel closes; send each outcome on.

    Agents and the payload limit are read from `runtime` for every step, so
    a settings reload applies to the next step a worker takes.
    """
    async with assignments:
        async for assignment, running in assignments:
            result = await execute_step(
                assignment,
                running,
                runtime.agents,
                worker_id,
                runtime.settings.payload_max_bytes,
            )
            if result is None:
                leases.unregister(assignment.step.step_id)
                slots.release()
            else:
                leases.mark_finished(assignment.step.step_id)
                await outcomes.send(result)
