"""Script agents: one operating-system process per step attempt.

An operator declares a script agent as a command line (see
`relaymesh/agents/registry.py` for the file format). Each attempt starts
that command afresh, writes the step's input to its standard input, and
takes what it prints on standard output as the step's output. Exit status
zero is success; anything else is a failure whose one-line error quotes the
end of what the script printed, so an operator can often diagnose a failed step
from the task listing alone.

How the process is handled, and why:

- Standard input, output and error are serviced concurrently, by three
  tasks, while the process runs. A script that prints a lot before it reads
  its input, or before it exits, therefore never blocks on a full pipe. The
  earlier implementation read the output only after the process ended and
  so deadlocked on any output larger than the pipe buffer.
- Output is capped (`max_output_bytes`, 10 MiB by default, the same limit as
  a submitted payload). A script that goes past the cap is stopped and the
  step fails, rather than the node growing without bound.
- Only the last 4 KiB of standard error are kept: enough for the final line
  of a traceback, which is what the error message quotes.
- The process runs in a session of its own, so it leads a new process
  group. Stopping a step signals the whole group, which also reaches the
  children a shell script started. Stopping means SIGTERM, a grace period
  (1 s) for the script to clean up, then SIGKILL; the direct child is always
  reaped before `run()` returns or raises. Grandchildren that detach into a
  session of their own are out of reach; nothing short of cgroups would
  catch them, and that is deliberately not attempted here.
- When the process exits on its own, members of its group still running
  (say a background job the script forgot) are killed at once, so they
  cannot hold the output pipe open and no process outlives its step.
- The deadline is a trio cancel scope, and cleanup runs in a shielded
  `finally`. The same path therefore serves a timeout, a hard cancel, a lost
  lease and node shutdown: the group is stopped and reaped before the
  cancellation travels on.

Spawning goes through `trio.lowlevel.open_process`, which starts the process
from a worker thread. This is real I/O, so script agents have no place in a
deterministic simulation, which uses the built-in agents instead.

NOTE: the deadline is read from trio's clock. Under a `MockClock` with
autojump, the clock jumps while the loop waits for the process, so the
timeout fires at once; tests of script agents use the real clock.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import signal
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import trio

from relaymesh.agents.base import AgentResult, StepContext, agent_stdin
from relaymesh.agents.orphans import LEASE_EPOCH_VARIABLE
from relaymesh.errors import ValidationError

__all__ = [
    "DEFAULT_MAX_OUTPUT_BYTES",
    "DEFAULT_SCRIPT_TIMEOUT_MS",
    "ScriptAgent",
    "ScriptSpec",
]

logger = logging.getLogger("relaymesh.agents")

DEFAULT_SCRIPT_TIMEOUT_MS = 60_000
DEFAULT_MAX_OUTPUT_BYTES = 10 * 1024 * 1024
# Time a script gets between SIGTERM and SIGKILL.
DEFAULT_KILL_GRACE_MS = 1_000

_STDERR_TAIL_BYTES = 4096
_ERROR_DETAIL_CHARS = 300
_READ_CHUNK_BYTES = 64 * 1024
# After the script exits, how long its pipes may stay open before the
# readers give up (only a detached grandchild can hold them that long).
_DRAIN_AFTER_EXIT_S = 1.0


@dataclass(frozen=True)
class ScriptSpec:
    """How to run one script agent."""

    agent_id: str
    # Program and arguments, never passed through a shell.
    command: tuple[str, ...]
    # Wall time one attempt may take before the process group is stopped.
    timeout_ms: int = DEFAULT_SCRIPT_TIMEOUT_MS
    # Added to (and overriding) the environment of the node.
    env: Mapping[str, str] = field(default_factory=dict)
    # Working folder of the process; None keeps the node's own.
    cwd: Path | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "command", tuple(self.command))
        texts = [*self.command, *self.env, *self.env.values()]
        if not self.command or not all(self.command) or any("\0" in t for t in texts):
            raise ValidationError(
                f"script agent '{self.agent_id}': command must be a non-empty "
                f"list of non-empty strings, and no command token or environment "
                f"entry may contain NUL; got {list(self.command)!r}"
            )
        if self.timeout_ms <= 0:
            raise ValidationError(
                f"script agent '{self.agent_id}': timeout must be a positive "
                f"number of milliseconds, got {self.timeout_ms}"
            )


@dataclass
class _Capture:
    """Output collected by the reader tasks from one process."""

    stdout_limit_bytes: int
    stdout: bytearray = field(default_factory=bytearray)
    stderr_tail: bytearray = field(default_factory=bytearray)
    overflowed: bool = False


class ScriptAgent:
    """Runs a `ScriptSpec` as one child process per attempt."""

    kind = "script"

    def __init__(
        self,
        spec: ScriptSpec,
        *,
        max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES,
        kill_grace_ms: int = DEFAULT_KILL_GRACE_MS,
    ) -> None:
        if max_output_bytes <= 0:
            raise ValueError(f"max_output_bytes must be positive: {max_output_bytes}")
        self.spec = spec
        self.agent_id = spec.agent_id
        self.max_output_bytes = max_output_bytes
        self.kill_grace_ms = kill_grace_ms

    def __repr__(self) -> str:
        return f"ScriptAgent({self.agent_id!r}, command={list(self.spec.command)!r})"

    async def run(self, context: StepContext) -> AgentResult:
        stdin_bytes = agent_stdin(context).encode("utf-8", errors="replace")
        try:
            process = await trio.lowlevel.open_process(
                list(self.spec.command),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=self._environment(context),
                cwd=self.spec.cwd,
                start_new_session=True,
            )
        except OSError as error:
            logger.warning(
                "script spawn failed agent=%s task=%s step=%s error=%s",
                self.agent_id,
                context.task_id,
                context.step_name,
                error.strerror or error,
            )
            return AgentResult.failure(self._spawn_error(error))
        logger.debug(
            "script started agent=%s pid=%s task=%s step=%s attempt=%s",
            self.agent_id,
            process.pid,
            context.task_id,
            context.step_name,
            context.attempt,
        )

        capture = _Capture(stdout_limit_bytes=self.max_output_bytes)
        drained = False
        try:
            with trio.move_on_after(self.spec.timeout_ms / 1000) as deadline:
                drained = await _communicate(process, stdin_bytes, capture)
        finally:
            with trio.CancelScope(shield=True):
                await _stop_group(process, self.kill_grace_ms / 1000, self.agent_id)
                await _close_pipes(process)

        result = self._result(process.returncode, capture, deadline, drained)
        # The error text is left out because it may quote the payload.
        logger.log(
            logging.DEBUG if result.ok else logging.INFO,
            "script ended agent=%s pid=%s task=%s step=%s status=%s outcome=%s",
            self.agent_id,
            process.pid,
            context.task_id,
            context.step_name,
            process.returncode,
            result.outcome,
        )
        return result

    def _environment(self, context: StepContext) -> dict[str, str]:
        environment = dict(os.environ)
        environment.update(self.spec.env)
        environment.update(
            {
                "TRACEPARENT": context.traceparent,
                "RELAYMESH_TASK_ID": context.task_id,
                "RELAYMESH_STEP_ID": context.step_id,
                "RELAYMESH_STEP_NAME": context.step_name,
                "RELAYMESH_ATTEMPT": str(context.attempt),
                LEASE_EPOCH_VARIABLE: str(context.lease_epoch),
            }
        )
        return environment

    def _spawn_error(self, error: OSError) -> str:
        program = self.spec.command[0]
        prefix = f"script '{self.agent_id}' could not start {program!r}"
        cwd = self.spec.cwd
        if cwd is not None and not cwd.is_dir():
            return f"{prefix}: working folder '{cwd}' does not exist"
        if isinstance(error, FileNotFoundError):
            return (
                f"{prefix}: no such program (a name without '/' is looked up "
                f"in PATH, a relative path from the working folder)"
            )
        if isinstance(error, PermissionError):
            return f"{prefix}: permission denied (is the file executable?)"
        if error.errno == errno.ENOEXEC:
            return f"{prefix}: not an executable format (missing '#!' line?)"
        return f"{prefix}: {error.strerror or error}"

    def _result(
        self,
        status: int | None,
        capture: _Capture,
        deadline: trio.CancelScope,
        drained: bool,
    ) -> AgentResult:
        name = f"script '{self.agent_id}'"
        if capture.overflowed:
            return AgentResult.failure(
                f"{name} output exceeds {self.max_output_bytes} bytes; "
                f"the script was stopped"
            )
        if deadline.cancelled_caught:
            seconds = _format_seconds(self.spec.timeout_ms)
            return AgentResult.failure(
                f"{name} timed out after {seconds} s", outcome="TIMEOUT"
            )
        if not drained:
            return AgentResult.failure(
                f"{name} exited with status {status} but a process it started "
                f"kept its output open; the output may be incomplete"
            )

        detail = _error_detail(capture)
        suffix = f": {detail}" if detail else ""
        assert status is not None
        if status < 0:
            return AgentResult.failure(
                f"{name} was killed by signal {_signal_name(-status)}{suffix}"
            )
        if status > 0:
            return AgentResult.failure(f"{name} exited with status {status}{suffix}")
        output = capture.stdout.decode("utf-8", errors="replace")
        return AgentResult.success(_strip_one_newline(output))


async def _communicate(
    process: trio.Process, stdin_bytes: bytes, capture: _Capture
) -> bool:
    """Feed and drain the pipes until the process exits and its pipes close.

    Returns False when the readers had to give up on a pipe that stayed open
    after the process exited.
    """
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_feed, process.stdin, stdin_bytes)
        nursery.start_soon(_read_stdout, process.stdout, capture, nursery.cancel_scope)
        nursery.start_soon(_read_stderr_tail, process.stderr, capture)
        await process.wait()

        # The script is gone; anything left in its group is a stray child
        # that could hold the pipes open.
        _signal_group(process.pid, signal.SIGKILL)
        nursery.cancel_scope.deadline = trio.current_time() + _DRAIN_AFTER_EXIT_S
    return capture.overflowed or not nursery.cancel_scope.cancelled_caught


async def _feed(stream: trio.abc.SendStream | None, data: bytes) -> None:
    assert stream is not None
    # A script may exit or close its input without reading all of it. That
    # is allowed, so a broken pipe here is not an error.
    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
        if data:
            await stream.send_all(data)
        await stream.aclose()


async def _read_stdout(
    stream: trio.abc.ReceiveStream | None,
    capture: _Capture,
    on_overflow: trio.CancelScope,
) -> None:
    assert stream is not None
    while chunk := await stream.receive_some(_READ_CHUNK_BYTES):
        if len(capture.stdout) + len(chunk) > capture.stdout_limit_bytes:
            capture.overflowed = True
            on_overflow.cancel()
            return
        capture.stdout += chunk


async def _read_stderr_tail(
    stream: trio.abc.ReceiveStream | None, capture: _Capture
) -> None:
    assert stream is not None
    while chunk := await stream.receive_some(_READ_CHUNK_BYTES):
        capture.stderr_tail += chunk
        if len(capture.stderr_tail) > _STDERR_TAIL_BYTES:
            del capture.stderr_tail[:-_STDERR_TAIL_BYTES]


async def _stop_group(process: trio.Process, grace_s: float, agent_id: str) -> None:
    """Stop the process and its group, then reap the process.

    Callers run this shielded, because it is the cleanup of a cancelled step.
    """
    if process.returncode is None:
        _signal_group(process.pid, signal.SIGTERM)
        _signal_process(process, signal.SIGTERM)
        with trio.move_on_after(grace_s):
            await process.wait()
        if process.returncode is None:
            logger.warning(
                "script ignored SIGTERM, killing agent=%s pid=%s",
                agent_id,
                process.pid,
            )
    # SIGKILL the group even when the leader is gone: stray children may
    # still be in it. The process itself is signalled too, in case it moved
    # to another group.
    _signal_group(process.pid, signal.SIGKILL)
    _signal_process(process, signal.SIGKILL)
    await process.wait()


def _signal_group(process_group_id: int, signal_number: signal.Signals) -> None:
    # The group id is the pid of the script, which start_new_session made a
    # group leader. It is not reused while any member of the group exists.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process_group_id, signal_number)


def _signal_process(process: trio.Process, signal_number: signal.Signals) -> None:
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal_number)


async def _close_pipes(process: trio.Process) -> None:
    for stream in (process.stdin, process.stdout, process.stderr):
        if stream is not None:
            await stream.aclose()


def _error_detail(capture: _Capture) -> str:
    """Return the last line of standard error, else the tail of standard output."""
    stderr_text = capture.stderr_tail.decode("utf-8", errors="replace")
    lines = [line for line in stderr_text.splitlines() if line.strip()]
    if lines:
        line = " ".join(lines[-1].split())
        if len(line) > _ERROR_DETAIL_CHARS:
            line = line[: _ERROR_DETAIL_CHARS - 3] + "..."
        return line
    tail_bytes = bytes(capture.stdout[-4 * _ERROR_DETAIL_CHARS :])
    tail = " ".join(tail_bytes.decode("utf-8", errors="replace").split())
    if len(tail) > _ERROR_DETAIL_CHARS:
        tail = "..." + tail[-(_ERROR_DETAIL_CHARS - 3) :]
    return tail


def _signal_name(signal_number: int) -> str:
    try:
        return f"{signal.Signals(signal_number).name} ({signal_number})"
    except ValueError:
        return str(signal_number)


def _format_seconds(milliseconds: int) -> str:
    """2000 -> "2.0", 1500 -> "1.5", 1234 -> "1.234"."""
    text = f"{milliseconds / 1000:.3f}".rstrip("0")
    return text + "0" if text.endswith(".") else text


def _strip_one_newline(text: str) -> str:
    if text.endswith("\r\n"):
        return text[:-2]
    if text.endswith("\n"):
        return text[:-1]
    return text
