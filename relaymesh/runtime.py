"""The runtime of one root: the store, the bus, the agents and the settings,
and the blocking operations that combine them.

Each method here is one batch of blocking work: a transaction plus the file
moves that follow it. The CLI calls them directly; a node's actors call them
through the executor seam, so each hop to a thread does one batch. The order
inside every method is the same: commit to the store first, then move files,
because the store is the source of truth and the sweeper repairs a bus that
lags it (see `relaymesh/bus.py`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from relaymesh._operator import OperatorMixin, unlink_all
from relaymesh.agents.builtin import builtin_agents
from relaymesh.agents.orphans import stop_attempt_processes
from relaymesh.agents.policies import RetryPolicies, RetryPolicy
from relaymesh.agents.registry import AgentRegistry
from relaymesh.bus import ClaimedFile, FileBus, msg_id_from_file_name, write_atomically
from relaymesh.config import DEFAULT_SETTINGS, Settings, changed_fields, load_settings
from relaymesh.errors import NotFoundError, ValidationError
from relaymesh.faults import crash_point
from relaymesh.observability.audit import AuditLog
from relaymesh.observability.logs import event
from relaymesh.paths import PRIORITIES, RootLayout
from relaymesh.store import (
    ClaimedStep,
    CommitResult,
    IdGenerator,
    LeaseRef,
    PreparedStep,
    PreparedTask,
    RunningLease,
    StepOutcome,
    Store,
    SubmitResult,
)
from relaymesh.store._operations import DAY_MS
from relaymesh.workflow import load_workflow_file, parse_priority, parse_workflow

__all__ = ["Assignment", "Runtime", "SweepReport", "TierSelector", "wall_clock_ms"]

log = logging.getLogger("relaymesh.runtime")


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class TierSelector:
    """Choose the inbox tier of each claim: 8 high, 3 normal, 1 low in turn.

    The weighted cycle alone serves a waiting low message within twelve
    claims. The guard covers what the cycle cannot see, such as low claims
    lost to other nodes: after `max_consecutive_high` high claims in a row,
    the next claim comes from the low tier if it has anything.
    """

    CYCLE = ("high",) * 8 + ("normal",) * 3 + ("low",)

    def __init__(self, max_consecutive_high: int) -> None:
        self.max_consecutive_high = max_consecutive_high
        self.cursor = 0
        self.consecutive_high = 0
        self.forced_low_claims = 0
        # Inbox listings reused across claims (see Runtime._inbox_listings).
        self.listings: dict[str, deque[str]] = {}
        self.listed_at_ms: dict[str, int] = {}

    def choose(self, nonempty: set[str]) -> str | None:
        if self.consecutive_high >= self.max_consecutive_high and "low" in nonempty:
            self.consecutive_high = 0
            self.forced_low_claims += 1
            return "low"
        for _ in range(len(self.CYCLE)):
            tier = self.CYCLE[self.cursor % len(self.CYCLE)]
            self.cursor += 1
            if tier in nonempty:
                self.consecutive_high = (
                    self.consecutive_high + 1 if tier == "high" else 0
                )
                return tier
        return None


@dataclass(frozen=True)
class Assignment:
    """A claimed step with its input, ready for a worker."""

    step: ClaimedStep
    input_text: str | None
    input_error: str = ""


@dataclass
class SweepReport:
    messages_rewritten: int = 0
    files_returned_to_inbox: int = 0
    files_settled: int = 0

    def total(self) -> int:
        return (
            self.messages_rewritten + self.files_returned_to_inbox + self.files_settled
        )


@dataclass
class Runtime(OperatorMixin):
    layout: RootLayout
    settings: Settings
    store: Store
    bus: FileBus
    agents: AgentRegistry
    policies: RetryPolicies
    clock_ms: Callable[[], int] = wall_clock_ms
    rng: random.Random = field(default_factory=random.Random)
    audit: AuditLog | None = None
    actor: str = "cli"  # the default actor of audit rows
    # Settings given on the command line; they win over the file, on every reload.
    overrides: dict = field(default_factory=dict)
    # Problems with the configuration files of a root opened leniently.
    configuration_errors: list[str] = field(default_factory=list)

    @classmethod
    def open(
        cls,
        root: Path,
        *,
        clock_ms: Callable[[], int] = wall_clock_ms,
        rng: random.Random | None = None,
        must_exist: bool = False,
        lenient: bool = False,
    ) -> Runtime:
        """Open (and create, unless `must_exist`) the root at `root`.

        An invalid settings, script agent or retry policy file raises
        ValidationError, unless `lenient`: then the defaults stand in for
        the invalid file and `configuration_errors` lists what was wrong.
        Read-only commands open leniently, so that a typo in a settings file
        does not hide the state of the root from the operator fixing it.
        """
        layout = RootLayout(root)
        if root.exists() and not root.is_dir():
            raise ValidationError(f"--root {root} is a file; a root must be a folder")
        if must_exist and not layout.database.exists():
            raise NotFoundError(
                f"no RelayMesh root at {root} (run 'relaymesh init --root {root}' first)"
            )
        errors: list[str] = []

        def load(loader, fallback):
            if not lenient:
                return loader()
            try:
                return loader()
            except ValidationError as error:
                errors.append(str(error))
                return fallback()

        settings = load(
            lambda: load_settings(layout.settings_file), lambda: DEFAULT_SETTINGS
        )
        agents = load(
            lambda: AgentRegistry.load(layout), lambda: AgentRegistry(builtin_agents())
        )
        policies = load(
            lambda: RetryPolicies.load(layout.retry_policies_file, settings),
            lambda: RetryPolicies(
                RetryPolicy.from_settings(settings), source="defaults"
            ),
        )
        load(lambda: policies.validate_agent_ids(agents.ids()), lambda: None)
        layout.ensure()
        rng = rng or random.Random()
        store = Store(layout.database, IdGenerator(rng if rng is not None else None))
        store.initialize()
        runtime = cls(
            layout, settings, store, FileBus(layout), agents, policies, clock_ms, rng
        )
        runtime.configuration_errors = errors
        runtime.audit = AuditLog(
            layout.audit,
            max_bytes=settings.audit_max_bytes,
            keep_files=settings.audit_keep_files,
        )
        return runtime

    def record(
        self,
        action: str,
        resource: str,
        result: str,
        *,
        actor: str | None = None,
        **fields,
    ) -> None:
        """Append one audit row; an I/O or encoding failure is logged, not raised."""
        self.record_many(
            [
                dict(
                    action=action,
                    actor=actor or self.actor,
                    resource=resource,
                    result=result,
                    **fields,
                )
            ]
        )

    def record_many(self, rows: list[dict]) -> None:
        if self.audit is None or not rows:
            return
        try:
            self.audit.append_many(rows)
        except (OSError, ValueError) as error:
            event(log, logging.ERROR, "audit.write_failed", rows=len(rows), error=error)

    def close(self) -> None:
        self.store.close()

    @property
    def idempotency_ttl_ms(self) -> int:
        return self.settings.idempotency_ttl_days * DAY_MS

    # Settings reload -------------------------------------------------------

    def load_configuration(self) -> tuple[Settings, RetryPolicies, AgentRegistry]:
        """Read and validate settings, retry policies and script agents together.

        Raises ValidationError if any of the three files is invalid; the
        caller applies all three or none, so a reload is atomic.
        """
        settings = load_settings(self.layout.settings_file)
        policies = RetryPolicies.load(self.layout.retry_policies_file, settings)
        agents = AgentRegistry.load(self.layout)
        policies.validate_agent_ids(agents.ids())
        return settings, policies, agents

    def settings_signature(self) -> tuple[int, int] | None:
        """(mtime in ns, size) of the settings file, or None if it is missing."""
        return _file_signature(self.layout.settings_file)

    def configuration_signature(self) -> tuple:
        """Signatures of the settings, script agent and retry policy files."""
        return tuple(
            _file_signature(path)
            for path in (
                self.layout.settings_file,
                self.layout.scripts_file,
                self.layout.retry_policies_file,
            )
        )

    def apply_configuration(
        self, configuration: tuple[Settings, RetryPolicies, AgentRegistry]
    ) -> list[str]:
        """Swap in a loaded configuration; return the changed settings keys.

        Call it from the trio loop (not a thread), so no actor can observe
        the new settings with the old policies in between.
        """
        settings, policies, agents = configuration
        if self.overrides:
            settings = settings.with_overrides(**self.overrides)
        changed = changed_fields(self.settings, settings)
        if agents.describe() != self.agents.describe():
            changed.append("agents/scripts.json")
        if policies.overrides() != self.policies.overrides():
            changed.append("agents/retry-policies.json")
        self.settings, self.policies, self.agents = settings, policies, agents
        return changed

    # Submission ------------------------------------------------------------

    def submit(
        self,
        agent_id: str,
        input_text: str,
        priority: str = "normal",
        idempotency_key: str | None = None,
    ) -> SubmitResult:
        """Submit one step for `agent_id`; a live key returns the existing task."""
        self.agents.require(agent_id)
        priority = parse_priority(priority, "--priority")
        self._check_payload_size(input_text, "input")
        key = (
            idempotency_key
            if idempotency_key is not None
            else _digest(f"{agent_id}\n{input_text}")
        )
        _check_key(key)
        now = self.clock_ms()
        existing = self.store.find_idempotent(key, now, self.idempotency_ttl_ms)
        if existing is not None:
            self._record_dedup("task.submit", existing, key)
            return existing

        task_id = self.store.ids.new("tsk")
        step_id = self.store.ids.new("stp")
        payload = self._write_payload(step_id, input_text)
        task = PreparedTask(
            task_id=task_id,
            kind="single",
            idempotency_key=key,
            trace_id=self.store.ids.trace_id(),
            steps=(
                PreparedStep(
                    step_id, "main", agent_id, priority.upper(), str(payload), ()
                ),
            ),
        )
        return self._insert(task, [payload])

    def submit_workflow(
        self, path: Path, idempotency_key: str | None = None
    ) -> SubmitResult:
        """Validate the workflow file at `path` completely, then submit it."""
        document = load_workflow_file(path)
        steps = parse_workflow(
            document,
            str(path),
            agent_exists=lambda agent: self.agents.get(agent) is not None,
            known_agents=self.agents.ids,
            payload_max_bytes=self.settings.payload_max_bytes,
        )
        canonical = json.dumps(document, sort_keys=True, separators=(",", ":"))
        key = idempotency_key if idempotency_key is not None else _digest(canonical)
        _check_key(key)
        now = self.clock_ms()
        existing = self.store.find_idempotent(key, now, self.idempotency_ttl_ms)
        if existing is not None:
            self._record_dedup("workflow.submit", existing, key)
            return existing

        task_id = self.store.ids.new("tsk")
        ids = {step.name: f"stp_{task_id[4:]}_{step.name}" for step in steps}
        payloads = [
            self._write_payload(ids[step.name], step.input_text) for step in steps
        ]
        task = PreparedTask(
            task_id=task_id,
            kind="workflow",
            idempotency_key=key,
            trace_id=self.store.ids.trace_id(),
            steps=tuple(
                PreparedStep(
                    ids[step.name],
                    step.name,
                    step.agent_id,
                    step.priority.upper(),
                    str(payload),
                    tuple(ids[name] for name in step.depends_on),
                )
                for step, payload in zip(steps, payloads)
            ),
        )
        return self._insert(task, payloads)

    def _insert(self, task: PreparedTask, payloads: list[Path]) -> SubmitResult:
        try:
            result = self.store.insert_task(
                task, self.clock_ms(), self.idempotency_ttl_ms
            )
        except BaseException:
            unlink_all(payloads)
            raise
        action = "task.submit" if task.kind == "single" else "workflow.submit"
        if result.deduplicated:
            unlink_all(payloads)  # another process won the race for this key
            self._record_dedup(action, result, task.idempotency_key)
            return result
        crash_point("submit.after_commit")
        self.bus.enqueue_many(list(result.envelopes))
        self.record(
            action,
            f"task/{task.task_id}",
            "submitted",
            task_id=task.task_id,
            trace_id=task.trace_id,
            details={
                "steps": len(task.steps),
                "ready_steps": len(result.envelopes),
                "agents": sorted({step.agent_id for step in task.steps}),
                "idempotency_key": task.idempotency_key,
            },
        )
        event(
            log,
            logging.INFO,
            "task.submitted",
            task_id=task.task_id,
            kind=task.kind,
            steps=len(task.steps),
        )
        return result

    def _record_dedup(self, action: str, result: SubmitResult, key: str) -> None:
        self.record(
            action,
            f"task/{result.task_id}",
            "deduplicated",
            task_id=result.task_id,
            trace_id=result.trace_id,
            details={"status": result.status, "idempotency_key": key},
        )

    def _check_payload_size(self, text: str, what: str) -> None:
        size = len(_utf8(text, what))
        limit = self.settings.payload_max_bytes
        if size > limit:
            raise ValidationError(
                f"{what} is {size} bytes; the limit is {limit} bytes (payloadMaxBytes)"
            )

    def _write_payload(self, step_id: str, text: str) -> Path:
        path = self.layout.payload / f"{step_id}.payload"
        write_atomically(path, text.encode("utf-8"), durable=True)
        return path

    # Claims, completions, leases ---------------------------------------------

    def claim_batch(
        self, selector: TierSelector, count: int, owner: str, worker_id: str
    ) -> list[Assignment]:
        """Claim up to `count` messages in tier order and lease their steps."""
        listings = self._inbox_listings(selector)
        files: list[ClaimedFile] = []
        forced_before = selector.forced_low_claims
        while len(files) < count:
            nonempty = {tier for tier, names in listings.items() if names}
            tier = selector.choose(nonempty)
            if tier is None:
                break
            claimed = self.bus.claim(tier, listings[tier].popleft(), owner)
            if claimed is not None:
                files.append(claimed)
        if not files:
            return []
        crash_point("claim.after_rename")

        now = self.clock_ms()
        steps, rejections = self.store.claim_files(files, owner, worker_id, now)
        forced = selector.forced_low_claims - forced_before
        if forced:
            self.store.add_counter("low_starvation_count", forced, now)
        for rejection in rejections:
            if rejection.reason == "stale":
                self.bus.discard(rejection.file_path)
            else:
                self.bus.finish(rejection.file_path, "dead", now)
            event(
                log,
                logging.WARNING if rejection.reason != "stale" else logging.DEBUG,
                "claim.rejected",
                msg_id=rejection.msg_id,
                reason=rejection.reason,
                file=rejection.file_path.name,
            )
        return [self._assignment(step) for step in steps]

    def _inbox_listings(self, selector: TierSelector) -> dict[str, deque[str]]:
        """The selector's cached inbox listings, listed again when stale.

        Listing and sorting a tier costs time in proportion to its length
        (about 15 ms for 8,000 files), so a busy node reuses one listing for
        many claims. A listing is redone when it runs dry or is older than
        `pollIntervalMs`, which bounds how long a newly queued message can go
        unseen; entries another node took meanwhile just fail to rename.
        """
        now = self.clock_ms()
        cache = selector.listings
        max_age_ms = self.settings.poll_interval_ms
        for tier in PRIORITIES:
            listed_at = selector.listed_at_ms.get(tier)
            if tier not in cache or not cache[tier] or now - listed_at >= max_age_ms:
                cache[tier] = deque(self.bus.list_tier(tier))
                selector.listed_at_ms[tier] = now
        return cache

    def _assignment(self, step: ClaimedStep) -> Assignment:
        try:
            text = Path(step.payload_path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            return Assignment(step, None, f"cannot read the step's payload: {error}")
        return Assignment(step, text)

    def commit_outcomes(self, outcomes: list[StepOutcome]) -> list[CommitResult]:
        """Persist attempt outcomes in one transaction, then move their files."""
        now = self.clock_ms()
        results = self.store.complete_steps(
            outcomes, now, self.policies.policy_for, self.rng
        )
        crash_point("commit.after_commit")
        for outcome, result in zip(outcomes, results):
            if outcome.file_path is not None:
                self.bus.finish(outcome.file_path, result.file_destination, now)
            self.bus.enqueue_many(result.envelopes)
        self.record_many(
            [_commit_row(outcome, result) for outcome, result in zip(outcomes, results)]
        )
        return results

    def renew_leases(
        self, leases: list[LeaseRef], owner: str | None = None
    ) -> list[LeaseRef]:
        return self.store.renew_leases(leases, self.clock_ms(), owner)

    def release_leases(
        self, leases: list[LeaseRef], files: dict[str, Path]
    ) -> list[CommitResult]:
        """Hand running steps back to the queue (graceful shutdown)."""
        results = self.store.release_leases(leases, self.clock_ms())
        crash_point("release.after_commit")
        for lease, result in zip(leases, results):
            path = files.get(lease.step_id)
            if path is not None:
                self.bus.discard(path)
            self.bus.enqueue_many(result.envelopes)
        self.record_many(
            [
                dict(
                    action="lease.release",
                    actor=self.actor,
                    resource=f"step/{lease.step_id}",
                    result="released" if result.committed else "release_conflict",
                    step_id=lease.step_id,
                    details={"lease_epoch": lease.lease_epoch},
                )
                for lease, result in zip(leases, results)
            ]
        )
        return results

    def reclaim_leases(
        self, leases: list[RunningLease], reason: str
    ) -> list[CommitResult]:
        results = self.store.reclaim_leases(
            leases, reason, self.clock_ms(), self.policies.policy_for, self.rng
        )
        rows = []
        for lease, result in zip(leases, results):
            if result.committed:
                stopped = stop_attempt_processes(lease.step_id, lease.lease_epoch)
                event(
                    log,
                    logging.INFO,
                    "lease.reclaimed",
                    step_id=lease.step_id,
                    owner=lease.lease_owner,
                    epoch=lease.lease_epoch,
                    reason=reason,
                    step_status=result.step_status,
                    stopped_processes=stopped,
                )
            rows.append(
                dict(
                    action="lease.reclaim",
                    actor=self.actor,
                    resource=f"step/{lease.step_id}",
                    result="reclaimed" if result.committed else "reclaim_conflict",
                    task_id=lease.task_id,
                    step_id=lease.step_id,
                    details={
                        "owner": lease.lease_owner,
                        "lease_epoch": lease.lease_epoch,
                        "reason": reason,
                        "step_status": result.step_status,
                    },
                )
            )
        self.record_many(rows)
        return results

    # Maintenance -------------------------------------------------------------

    def dispatch_due_retries(self) -> int:
        envelopes = self.store.dispatch_due_retries(
            self.clock_ms(), self.settings.retry_dispatch_limit
        )
        self.bus.enqueue_many(envelopes)
        return len(envelopes)

    def sweep(self, own_owner: str | None = None) -> SweepReport:
        """Repair the bus where it lags the store.

        A queued message with no file (a crash between commit and enqueue) is
        written again. A file in `processing/` is put back in the inbox if its
        message was never leased (a crash between rename and claim), or moved
        to where its message ended up. Files younger than `sweepGraceMs` are
        left alone, since their owner may be working on them right now; files
        in `processing/<own_owner>` are recovered at once, because a node that
        is starting owns nothing yet.
        """
        report = SweepReport()
        now = self.clock_ms()
        cutoff = now - self.settings.sweep_grace_ms
        present = self.bus.present_file_names()
        after = (-1, "")
        while page := self.store.queued_messages_older_than(cutoff, 1000, after):
            after = (page[-1].created_at_ms, page[-1].msg_id)
            for envelope in page:
                if envelope.file_name in present or self.bus.is_queued_or_claimed(
                    envelope
                ):
                    continue  # the second look covers a file claimed since the listing
                self.bus.enqueue(envelope)
                report.messages_rewritten += 1
                event(
                    log,
                    logging.WARNING,
                    "sweep.message_rewritten",
                    msg_id=envelope.msg_id,
                    step_id=envelope.step_id,
                )

        entries = self.bus.processing_entries()
        states = self.store.message_states(
            [msg_id_from_file_name(path.name) or "" for _, path, _ in entries]
        )
        for owner, path, mtime in entries:
            if owner != own_owner and mtime * 1000 > cutoff:
                continue
            row = states.get(msg_id_from_file_name(path.name) or "")
            state = row["state"] if row else None
            if state == "PROCESSING":
                continue  # the lease decides; the reclaimer takes it if it expires
            if state == "QUEUED":
                self.bus.return_to_inbox(path, row["priority"].lower())
                report.files_returned_to_inbox += 1
            elif state in ("RELEASED", "CANCELLED"):
                self.bus.discard(path)  # a fresh message replaced it, or none is due
                report.files_settled += 1
            else:
                destination = {"DONE": "done", "FAILED": "retry"}.get(
                    state or "", "dead"
                )
                self.bus.finish(path, destination, now)
                report.files_settled += 1
        self.bus.remove_empty_owner_folders(keep=own_owner, older_than_s=cutoff / 1000)
        if report.total():
            event(
                log,
                logging.INFO,
                "sweep.repaired",
                rewritten=report.messages_rewritten,
                returned=report.files_returned_to_inbox,
                settled=report.files_settled,
            )
        return report

    def cleanup_idempotency(self) -> int:
        return self.store.cleanup_idempotency(self.clock_ms(), self.idempotency_ttl_ms)


def _commit_row(outcome: StepOutcome, result: CommitResult) -> dict:
    """Build the audit row of one committed (or rejected) attempt outcome."""
    if result.committed:
        action, verdict = "step.execute", str(result.step_status).lower()
    elif result.conflict:
        action, verdict = "lease.conflict", result.message
    else:
        # Stopped by a cancel or a lost lease: the result was not wanted.
        action, verdict = "step.stopped", result.message or str(outcome.outcome).lower()
    return dict(
        action=action,
        actor=f"worker:{outcome.worker_id}" if outcome.worker_id else "worker",
        resource=f"step/{outcome.step_id}",
        result=verdict,
        task_id=outcome.task_id or None,
        step_id=outcome.step_id,
        trace_id=outcome.trace_id or None,
        span_id=outcome.span_id or None,
        details={
            "outcome": str(outcome.outcome),
            "attempt": outcome.attempt,
            "lease_epoch": outcome.lease_epoch,
            "task_status": result.task_status,
            "next_retry_at_ms": result.next_retry_at_ms,
            "error": outcome.error or None,
            "ready_steps": len(result.envelopes),
        },
    )


def _file_signature(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return stat.st_mtime_ns, stat.st_size


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _utf8(text: str, what: str) -> bytes:
    """Encode `text`; text from the command line may hold undecodable bytes."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationError(
            f"{what} is not valid UTF-8: it contains bytes that are not UTF-8 text"
        ) from None


def _check_key(key: str) -> None:
    _utf8(key, "idempotency key")
    if not key or len(key) > 256:
        raise ValidationError(
            f"idempotency key must be 1-256 characters (got {len(key)})"
        )
