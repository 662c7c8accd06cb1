"""The folder layout of a RelayMesh root.

A root is one folder holding the SQLite store and the file bus. Several
processes (nodes, CLI commands) share it; every path they use is derived here
so that no module builds a path by hand.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["PRIORITIES", "RootLayout", "resolve_root"]

# Bus tiers, highest first. The names are also the folder names under inbox/.
PRIORITIES = ("high", "normal", "low")

ROOT_ENVIRONMENT_VARIABLE = "RELAYMESH_ROOT"
DEFAULT_ROOT = "relaymesh-data"


def resolve_root(option: str | None) -> Path:
    """Pick the root folder: the option, then RELAYMESH_ROOT, then ./relaymesh-data."""
    chosen = option or os.environ.get(ROOT_ENVIRONMENT_VARIABLE) or DEFAULT_ROOT
    return Path(chosen).expanduser().resolve()


@dataclass(frozen=True)
class RootLayout:
    """Paths of one root; creating them is `ensure()`."""

    root: Path

    @property
    def database(self) -> Path:
        return self.root / "relaymesh.db"

    @property
    def settings_file(self) -> Path:
        return self.root / "relaymesh-settings.json"

    @property
    def scripts_file(self) -> Path:
        return self.root / "agents" / "scripts.json"

    @property
    def retry_policies_file(self) -> Path:
        return self.root / "agents" / "retry-policies.json"

    @property
    def inbox(self) -> Path:
        return self.root / "inbox"

    def inbox_tier(self, priority: str) -> Path:
        return self.root / "inbox" / priority

    @property
    def processing(self) -> Path:
        return self.root / "processing"

    def processing_for(self, owner: str) -> Path:
        return self.root / "processing" / owner

    @property
    def done(self) -> Path:
        return self.root / "done"

    @property
    def dead(self) -> Path:
        return self.root / "dead"

    @property
    def retry(self) -> Path:
        return self.root / "retry"

    @property
    def payload(self) -> Path:
        return self.root / "payload"

    @property
    def meta(self) -> Path:
        return self.root / "meta"

    @property
    def audit(self) -> Path:
        return self.root / "audit"

    @property
    def reports(self) -> Path:
        return self.root / "reports"

    @property
    def agents(self) -> Path:
        return self.root / "agents"

    def folders(self) -> list[Path]:
        tiers = [self.inbox_tier(priority) for priority in PRIORITIES]
        return [
            *tiers,
            self.processing,
            self.done,
            self.dead,
            self.retry,
            self.payload,
            self.meta,
            self.audit,
            self.reports,
            self.agents,
        ]

    def ensure(self) -> None:
        for folder in self.folders():
            folder.mkdir(parents=True, exist_ok=True)
