"""Plain records passed in and out of the store."""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from relaymesh.bus import Envelope

__all__ = [
    "IdGenerator",
    "NewStep",
    "SubmitResult",
    "ClaimedStep",
    "ClaimRejection",
    "StepOutcome",
    "CommitResult",
    "LeaseRef",
    "RunningLease",
]


class IdGenerator:
    """Random ids with a prefix; seeded in simulation so runs repeat."""

    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng

    def hex(self, nbytes: int) -> str:
        if self._rng is None:
            return uuid.uuid4().hex[: nbytes * 2] if nbytes <= 16 else uuid.uuid4().hex
        return f"{self._rng.getrandbits(nbytes * 8):0{nbytes * 2}x}"

    def new(self, prefix: str) -> str:
        return f"{prefix}_{self.hex(16)}"

    def trace_id(self) -> str:
        return self.hex(16)

    def span_id(self) -> str:
        return self.hex(8)


@dataclass(frozen=True)
class NewStep:
    name: str
    agent_id: str
    priority: str
    input_text: str
    depends_on: tuple[str, ...] = ()


@dataclass(frozen=True)
class SubmitResult:
    task_id: str
    deduplicated: bool
    status: str
    result: str | None
    envelopes: tuple[Envelope, ...] = ()
    written_payloads: tuple[Path, ...] = ()
    trace_id: str | None = None


@dataclass(frozen=True)
class ClaimedStep:
    task_id: str
    step_id: str
    step_name: str
    agent_id: str
    priority: str
    attempt: int
    lease_owner: str
    lease_token: str
    lease_epoch: int
    trace_id: str
    span_id: str
    parent_span_id: str | None
    payload_path: str
    dependency_outputs: dict[str, str]
    file_path: Path
    msg_id: str


@dataclass(frozen=True)
class ClaimRejection:
    file_path: Path
    msg_id: str | None
    reason: str  # "stale", "unknown", "conflict", "malformed"


@dataclass(frozen=True)
class StepOutcome:
    """What a worker reports for one attempt, with the lease it ran under."""

    step_id: str
    lease_token: str
    lease_epoch: int
    outcome: str  # an AttemptOutcome value
    output: str = ""
    error: str = ""
    file_path: Path | None = None
    worker_id: str = ""
    task_id: str = ""
    trace_id: str = ""
    span_id: str = ""
    attempt: int = 0


@dataclass
class CommitResult:
    step_id: str
    committed: bool
    step_status: str | None
    task_status: str | None
    file_destination: str  # "done", "retry" or "dead"
    envelopes: list[Envelope] = field(default_factory=list)
    next_retry_at_ms: int | None = None
    message: str = ""
    conflict: bool = False  # a fenced write was rejected and recorded


@dataclass(frozen=True)
class LeaseRef:
    step_id: str
    lease_token: str
    lease_epoch: int


@dataclass(frozen=True)
class RunningLease:
    step_id: str
    task_id: str
    lease_owner: str
    lease_epoch: int
    heartbeat_at_ms: int | None
