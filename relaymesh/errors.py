"""Exceptions that reach users.

Every error a person can cause by bad input is a `UsageError` (or a subclass)
whose message is one complete line: what was wrong, where, and what is
allowed. The CLI prints that line and exits non-zero, without a traceback.
Anything else escaping a command is a bug and is shown with its traceback.
"""

from __future__ import annotations

__all__ = [
    "UsageError",
    "ValidationError",
    "NotFoundError",
    "ConflictError",
    "StoreError",
]


class UsageError(Exception):
    """Bad input from a user: printed as one line, exit status 2."""

    exit_status = 2


class ValidationError(UsageError):
    """A file, payload or option failed validation; nothing was changed."""


class NotFoundError(UsageError):
    """A task, step or file named by the user does not exist."""

    exit_status = 1


class ConflictError(UsageError):
    """The request is valid but the current state does not allow it."""

    exit_status = 1


class StoreError(Exception):
    """The store cannot be used safely (a PRAGMA did not read back, say)."""

    exit_status = 3
