"""The file bus: queued messages as files that move between folders.

A message is a small JSON envelope. It is written once to `meta/` (the
record) and once to `inbox/<tier>/` (the queue entry), named
`<createdAtMs>_<msgId>.meta.json` so that a sorted listing of a tier is
oldest first. A claimer takes an entry by renaming it into
`processing/<owner>/`: `rename(2)` within one filesystem is atomic, so of two
claimers racing for one file exactly one succeeds and the other sees it gone.
Finishing moves the entry to `done/<UTC date>/`, `retry/` or `dead/`.

The bus is not the source of truth; the store is. Every envelope has a row in
`messages`, written in the same transaction as the state change that created
it, and the files are written after that commit. A crash in between leaves a
queued row without a file, which the sweeper finds and writes again; a crash
after a claim leaves a file in `processing/`, which the sweeper moves back or
away according to the row. So the bus may lag the store, never lead it.

Files are written to a hidden temporary name and renamed into place, so a
claimer never sees a half-written envelope.
"""

from __future__ import annotations

import json
import logging
import os
import stat
import time
from dataclasses import dataclass
from pathlib import Path

from relaymesh.errors import ValidationError
from relaymesh.paths import PRIORITIES, RootLayout

__all__ = ["Envelope", "ClaimedFile", "FileBus", "utc_date"]

log = logging.getLogger("relaymesh.bus")

ENVELOPE_SUFFIX = ".meta.json"
# Envelopes are a few hundred bytes; anything larger is not one of ours.
MAX_ENVELOPE_BYTES = 64 * 1024
ENVELOPE_FIELDS = (
    "msgId",
    "taskId",
    "stepId",
    "fromAgent",
    "toAgent",
    "priority",
    "createdAtMs",
    "payloadPath",
    "attempt",
)


def utc_date(epoch_ms: int) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(epoch_ms / 1000))


@dataclass(frozen=True)
class Envelope:
    msg_id: str
    task_id: str
    step_id: str
    to_agent: str
    priority: str  # "high", "normal" or "low"
    created_at_ms: int
    payload_path: str
    attempt: int
    from_agent: str = "system"

    @property
    def file_name(self) -> str:
        return f"{self.created_at_ms:013d}_{self.msg_id}{ENVELOPE_SUFFIX}"

    def to_json(self) -> str:
        document = {
            "msgId": self.msg_id,
            "taskId": self.task_id,
            "stepId": self.step_id,
            "fromAgent": self.from_agent,
            "toAgent": self.to_agent,
            "priority": self.priority.upper(),
            "createdAtMs": self.created_at_ms,
            "payloadPath": self.payload_path,
            "attempt": self.attempt,
        }
        return json.dumps(document, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str, source: str) -> Envelope:
        """Parse an envelope file; raise ValidationError naming `source` if bad."""
        try:
            document = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValidationError(f"envelope {source} is not valid JSON: {error}")
        except RecursionError:
            raise ValidationError(f"envelope {source} is nested too deeply") from None
        except ValueError as error:
            raise ValidationError(
                f"envelope {source} is not valid JSON: {error}"
            ) from None
        if not isinstance(document, dict):
            raise ValidationError(f"envelope {source} must be a JSON object")
        missing = [field for field in ENVELOPE_FIELDS if field not in document]
        if missing:
            raise ValidationError(f"envelope {source} is missing {', '.join(missing)}")
        priority = str(document["priority"]).lower()
        if priority not in PRIORITIES:
            raise ValidationError(
                f"envelope {source} has priority {document['priority']!r};"
                " allowed: HIGH, NORMAL, LOW"
            )
        for field in ("createdAtMs", "attempt"):
            if type(document[field]) is not int:
                raise ValidationError(
                    f"envelope {source} field {field} must be an integer"
                )
        return cls(
            msg_id=str(document["msgId"]),
            task_id=str(document["taskId"]),
            step_id=str(document["stepId"]),
            from_agent=str(document["fromAgent"]),
            to_agent=str(document["toAgent"]),
            priority=priority,
            created_at_ms=document["createdAtMs"],
            payload_path=str(document["payloadPath"]),
            attempt=document["attempt"],
        )


def _read_envelope_file(path: Path) -> str:
    """Read a claimed envelope safely, and touch it for the sweeper.

    O_NOFOLLOW refuses a symbolic link, O_NONBLOCK keeps a FIFO from
    blocking the open, and the size check keeps a huge file out of memory.
    """
    descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        info = os.fstat(descriptor)
        if not stat.S_ISREG(info.st_mode):
            raise ValidationError(f"envelope {path} is not a regular file")
        if info.st_size > MAX_ENVELOPE_BYTES:
            raise ValidationError(
                f"envelope {path} is {info.st_size} bytes; envelopes are at most"
                f" {MAX_ENVELOPE_BYTES}"
            )
        # The sweeper judges how long a file sat in processing/ by its mtime.
        os.utime(descriptor)
        data = os.read(descriptor, MAX_ENVELOPE_BYTES + 1)
    finally:
        os.close(descriptor)
    return data.decode("utf-8")


def msg_id_from_file_name(name: str) -> str | None:
    if not name.endswith(ENVELOPE_SUFFIX) or "_" not in name:
        return None
    return name[: -len(ENVELOPE_SUFFIX)].split("_", 1)[1]


@dataclass(frozen=True)
class ClaimedFile:
    path: Path
    owner: str
    priority: str
    envelope: Envelope | None  # None when the file could not be parsed
    error: str = ""


def write_atomically(path: Path, data: bytes, durable: bool = False) -> None:
    """Write `data` to `path` through a hidden temporary file and a rename."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(temporary, "wb") as handle:
        handle.write(data)
        if durable:
            handle.flush()
            os.fsync(handle.fileno())
    os.replace(temporary, path)


class FileBus:
    """The folders of one root seen as a queue; every method is blocking I/O."""

    def __init__(self, layout: RootLayout) -> None:
        self.layout = layout

    # Enqueue -----------------------------------------------------------

    def enqueue(self, envelope: Envelope) -> None:
        data = envelope.to_json().encode()
        write_atomically(self.layout.meta / f"{envelope.msg_id}{ENVELOPE_SUFFIX}", data)
        tier = self.layout.inbox_tier(envelope.priority)
        write_atomically(tier / envelope.file_name, data)

    def enqueue_many(self, envelopes: list[Envelope]) -> None:
        for envelope in envelopes:
            self.enqueue(envelope)

    # Claim -------------------------------------------------------------

    def list_tier(self, priority: str) -> list[str]:
        """Names of the queued entries of one tier, oldest first."""
        try:
            names = [
                entry.name
                for entry in os.scandir(self.layout.inbox_tier(priority))
                if entry.name.endswith(ENVELOPE_SUFFIX)
                and not entry.name.startswith(".")
            ]
        except FileNotFoundError:
            return []
        names.sort()
        return names

    def claim(self, priority: str, name: str, owner: str) -> ClaimedFile | None:
        """Move one inbox entry into `processing/<owner>/`; None if it was taken.

        The entry is read without following links, without blocking and up
        to `MAX_ENVELOPE_BYTES`: anything but a small regular file (a link,
        a FIFO, a folder, a huge file) comes back unparsed, to go to dead/.
        """
        source = self.layout.inbox_tier(priority) / name
        folder = self.layout.processing_for(owner)
        target = folder / name
        try:
            os.rename(source, target)
        except FileNotFoundError:
            if not folder.exists():
                folder.mkdir(parents=True, exist_ok=True)
                return self.claim(priority, name, owner)
            return None
        except OSError as error:  # a folder over a file name, say
            log.warning("bus entry %s cannot be claimed: %s", source, error)
            return None
        try:
            text = _read_envelope_file(target)
            envelope = Envelope.from_json(text, str(target))
        except (ValidationError, OSError, UnicodeDecodeError) as error:
            return ClaimedFile(target, owner, priority, None, str(error))
        return ClaimedFile(target, owner, priority, envelope)

    # Finish ------------------------------------------------------------

    def finish(self, path: Path, destination: str, now_ms: int) -> None:
        """Move a processing entry to `done`, `retry` or `dead`; missing is fine."""
        if destination == "done":
            folder = self.layout.done / utc_date(now_ms)
        elif destination == "retry":
            folder = self.layout.retry
        elif destination == "dead":
            folder = self.layout.dead
        else:
            raise ValueError(f"unknown bus destination {destination!r}")
        try:
            folder.mkdir(parents=True, exist_ok=True)
            os.replace(path, folder / path.name)
        except FileNotFoundError:
            pass
        except OSError as error:
            # A hostile or broken entry (a folder of the same name in the
            # destination, say) must not stop the caller: it stays where it
            # is, and the next sweep tries again.
            log.warning("bus entry %s cannot be moved to %s: %s", path, folder, error)

    def discard(self, path: Path) -> None:
        """Delete a processing entry whose message needs no record (stale copy)."""
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as error:
            log.warning("bus entry %s cannot be deleted: %s", path, error)

    def return_to_inbox(self, path: Path, priority: str) -> None:
        try:
            os.replace(path, self.layout.inbox_tier(priority) / path.name)
        except FileNotFoundError:
            pass
        except OSError as error:
            log.warning("bus entry %s cannot be returned to the inbox: %s", path, error)

    # Inspection --------------------------------------------------------

    def is_queued_or_claimed(self, envelope: Envelope) -> bool:
        name = envelope.file_name
        if (self.layout.inbox_tier(envelope.priority) / name).exists():
            return True
        return any(path.exists() for path in self._processing_candidates(name))

    def _processing_candidates(self, name: str) -> list[Path]:
        try:
            owners = [entry.path for entry in os.scandir(self.layout.processing)]
        except FileNotFoundError:
            return []
        return [Path(owner) / name for owner in owners]

    def remove_empty_owner_folders(self, keep: str | None, older_than_s: float) -> None:
        """Remove empty `processing/<owner>` folders left by finished workers.

        A folder modified after `older_than_s` may belong to a worker that is
        about to claim into it, so it stays; if a claim races the removal,
        the claim creates the folder again.
        """
        try:
            owners = list(os.scandir(self.layout.processing))
        except FileNotFoundError:
            return
        for owner in owners:
            if owner.name == keep or not owner.is_dir(follow_symlinks=False):
                continue
            try:
                if owner.stat().st_mtime < older_than_s:
                    os.rmdir(owner.path)
            except OSError:
                pass  # not empty, or gone already

    def present_file_names(self) -> set[str]:
        """Names of every envelope in the inbox tiers and in processing/."""
        names = {name for priority in PRIORITIES for name in self.list_tier(priority)}
        names.update(path.name for _, path, _ in self.processing_entries())
        return names

    def processing_entries(self) -> list[tuple[str, Path, float]]:
        """(owner, path, mtime in seconds) of every file in processing/."""
        entries = []
        try:
            owners = list(os.scandir(self.layout.processing))
        except FileNotFoundError:
            return []
        for owner in owners:
            if not owner.is_dir():
                continue
            for entry in os.scandir(owner.path):
                if entry.name.startswith(".") or not entry.name.endswith(
                    ENVELOPE_SUFFIX
                ):
                    continue
                try:
                    mtime = entry.stat(follow_symlinks=False).st_mtime
                except FileNotFoundError:
                    continue
                entries.append((owner.name, Path(entry.path), mtime))
        return entries

    def count_files(self, folder: Path) -> int:
        try:
            return sum(
                1
                for entry in os.scandir(folder)
                if entry.name.endswith(ENVELOPE_SUFFIX)
                and not entry.name.startswith(".")
            )
        except FileNotFoundError:
            return 0

    def depths(self) -> dict[str, int]:
        """Queued entries per tier plus processing, dead and retry file counts."""
        depths = {
            priority: self.count_files(self.layout.inbox_tier(priority))
            for priority in PRIORITIES
        }
        depths["processing"] = len(self.processing_entries())
        depths["dead"] = self.count_files(self.layout.dead)
        depths["retry"] = self.count_files(self.layout.retry)
        return depths
