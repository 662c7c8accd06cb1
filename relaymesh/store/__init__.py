"""The SQLite store: the only code in RelayMesh that runs SQL.

`Store` is assembled from one mixin per concern (submission, leases,
operations, queries) over a shared connection. Every method is blocking and
is meant to be called through the executor seam from async code.
"""

from relaymesh.store._base import StoreBase
from relaymesh.store._cancel import CANCEL_MODES, CancelMixin, CancelResult
from relaymesh.store._conflicts import ConflictsMixin
from relaymesh.store._leases import LeaseMixin
from relaymesh.store._metrics import MetricsMixin
from relaymesh.store._operations import OperationsMixin, PurgeResult, ReplayResult
from relaymesh.store._queries import QueriesMixin
from relaymesh.store._reclaims import ReclaimMixin
from relaymesh.store._settings import SettingsMixin
from relaymesh.store._submit import PreparedStep, PreparedTask, SubmitMixin
from relaymesh.store.records import (
    ClaimedStep,
    ClaimRejection,
    CommitResult,
    IdGenerator,
    LeaseRef,
    RunningLease,
    StepOutcome,
    SubmitResult,
)

__all__ = [
    "Store",
    "CANCEL_MODES",
    "CancelResult",
    "ClaimedStep",
    "ClaimRejection",
    "CommitResult",
    "IdGenerator",
    "LeaseRef",
    "PreparedStep",
    "PreparedTask",
    "PurgeResult",
    "ReplayResult",
    "RunningLease",
    "StepOutcome",
    "SubmitResult",
]


class Store(
    SubmitMixin,
    LeaseMixin,
    ReclaimMixin,
    CancelMixin,
    OperationsMixin,
    SettingsMixin,
    ConflictsMixin,
    MetricsMixin,
    QueriesMixin,
    StoreBase,
):
    """One root's SQLite database, with every read and fenced write."""
